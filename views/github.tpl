<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Tally stats: {{page_id}}</title>
<link rel="stylesheet" href="/static/tally.css">
</head>
<body>
<main>
<p><a href="/">Tally</a></p>
<h1>GitHub traffic of <span class="page-id">{{repo}}</span></h1>
<p>GitHub's own numbers for this repository, kept by Tally past GitHub's 14 days.
% if traffic["first_day"]:
Kept since {{traffic["first_day"]}}; last synced {{traffic["synced_at"] or "never"}}.
% end
% if state is None:
No longer synced (github remove kept its numbers).
% elif state.status != "ok":
The last sync: <strong id="status">{{state.status}}</strong>.
% end
</p>
% if lost:
<p class="error" id="lost">{{lost}} day{{"s" if lost != 1 else ""}} lost: GitHub's 14-day window moved past them before a sync saw them. They are marked below, not counted as zeros.</p>
% end
<dl class="numbers">
  <div><dt>Views</dt><dd id="total">{{f"{traffic['total']:,}"}}</dd></div>
  <div><dt>Unique visitors (daily, summed)</dt><dd id="visitors">{{f"{traffic['visitors']:,}"}}</dd></div>
  <div><dt>Clones</dt><dd id="clones">{{f"{traffic['clones']:,}"}}</dd></div>
  <div><dt>Today (UTC)</dt><dd id="today">{{f"{traffic['today']:,}"}}</dd></div>
</dl>
<h2>Last {{len(history)}} days</h2>
<figure class="chart">
{{!chart}}
<figcaption>GitHub's views per UTC day, oldest on the left; shaded: no data. The numbers as JSON: <a href="/api/history?page_id={{quote(page_id, safe='')}}&amp;days={{len(history)}}">/api/history</a>.</figcaption>
</figure>
<p id="chart-embed">This chart for a README, following the reader's light or dark scheme:</p>
<pre class="embed"><code>![views per day]({{base}}/chart?page_id={{quote(page_id, safe='')}}&amp;theme=auto)</code></pre>
<table id="history">
<caption>GitHub's numbers per UTC day{{", beside the views Tally counted for " + linked if linked else ""}}</caption>
<thead><tr><th scope="col">Day</th><th scope="col">Views</th><th scope="col">Unique visitors</th><th scope="col">Clones</th><th scope="col">Unique cloners</th>
% if linked:
<th scope="col">Tally's views of {{linked}}</th>
% end
</tr></thead>
<tbody>
% for day, kind, numbers in reversed(history):
% if numbers:
<tr><td>{{day}}</td><td>{{numbers.views}}</td><td>{{numbers.visitors}}</td><td>{{numbers.clones}}</td><td>{{numbers.cloners}}</td>
% else:
<tr class="{{'lost' if kind == 'lost' else 'not-kept'}}"><td>{{day}}</td><td colspan="4">{{"lost" if kind == "lost" else "not kept"}}</td>
% end
% if linked:
<td>{{camo.get(day, 0)}}</td>
% end
</tr>
% end
</tbody>
</table>
% if popular:
<h2>Top referrers and paths</h2>
<p>As GitHub listed them on {{popular_day}} (its last 14 days).</p>
<table id="popular">
<thead><tr><th scope="col">Referrer or path</th><th scope="col">Views</th><th scope="col">Unique visitors</th></tr></thead>
<tbody>
% for item in popular:
<tr><td>{{item.title if item.kind == "path" else item.name}}{{" (" + item.name + ")" if item.kind == "path" and item.title != item.name else ""}}</td><td>{{item.views}}</td><td>{{item.visitors}}</td></tr>
% end
</tbody>
</table>
% end
</main>
</body>
</html>
