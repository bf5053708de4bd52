<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Tally stats</title>
<link rel="stylesheet" href="/static/tally.css">
</head>
<body>
<main>
<p><a href="/">Tally</a></p>
% if error:
<h1>Stats</h1>
<p class="error" role="alert">{{error}}</p>
% else:
<h1>Stats for <span class="page-id">{{page_id}}</span></h1>
% if counts.total == 0:
<p class="empty">No views of this page yet. Embed its badge and they will show here.</p>
% end
<dl class="numbers">
  <div><dt>Total</dt><dd id="total">{{f"{counts.total:,}"}}</dd></div>
  <div><dt>Today (UTC)</dt><dd id="today">{{f"{counts.today:,}"}}</dd></div>
  <div><dt>Best day</dt><dd id="best">{{f"{best[1]:,} on {best[0]}" if best else "none yet"}}</dd></div>
  <div><dt>Visitors (unique per day, summed)</dt><dd id="visitors">{{f"{counts.visitors:,}"}}</dd></div>
  <div><dt>Visitors today</dt><dd id="visitors-today">{{f"{counts.visitors_today:,}"}}</dd></div>
  <div><dt>Bot views, last {{len(history)}} days (not counted)</dt><dd id="bots">{{f"{sum(d.bots for d in history):,}"}}</dd></div>
  <div><dt>Held views (not counted until released)</dt><dd id="held">{{f"{counts.held:,}"}}</dd></div>
  <div><dt>Held today</dt><dd id="held-today">{{f"{counts.held_today:,}"}}</dd></div>
</dl>
% if counts.held:
<p id="held-note">Views the inflation guard held: more than this page's own history explains (a loop fetching the badge, or a surge). They are kept, not counted, and not lost; the server's owner counts them with <code>server.py release</code>, and a sync of the linked repository's GitHub traffic counts a day's when GitHub's views explain them.</p>
% end
<h2>Last {{len(history)}} days</h2>
% if kept_from:
<p id="kept-from">History begins on {{kept_from}}: this server keeps views per day for {{keep_days}} days (TALLY_KEEP_DAYS). The total and the visitors above still count every day.</p>
% end
<figure class="chart">
{{!chart}}
<figcaption>Views per UTC day, oldest on the left. The numbers as JSON: <a href="/api/history?page_id={{quote(page_id, safe='')}}&amp;days={{len(history)}}">/api/history</a>.</figcaption>
</figure>
<p id="chart-embed">This chart for a README or a blog, following the reader's light or dark scheme (it counts nothing; put it beside the badge):</p>
<pre class="embed"><code>![views per day]({{base}}/chart?page_id={{quote(page_id, safe='')}}&amp;theme=auto)</code></pre>
<p>Visitors are counted without cookies and without storing addresses or browsers: a visitor is known for one UTC day only. Views through an image proxy, such as GitHub's for a README, are views and never visitors; known bots are not counted.</p>
<table id="history">
<caption>Views, unique visitors, bot views and held views per UTC day</caption>
<thead><tr><th scope="col">Day</th><th scope="col">Views</th><th scope="col">Visitors</th><th scope="col">Bot views</th><th scope="col">Held</th></tr></thead>
<tbody>
% for d in reversed(history):
% if kept_from and d.day < kept_from:
<tr class="not-kept"><td>{{d.day}}</td><td colspan="4">not kept</td></tr>
% else:
<tr><td>{{d.day}}</td><td>{{d.views}}</td><td>{{d.visitors}}</td><td>{{d.bots}}</td><td>{{d.held}}</td></tr>
% end
% end
</tbody>
</table>
% end
</main>
</body>
</html>
