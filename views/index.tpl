<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Tally: visitor-counter badges</title>
<link rel="stylesheet" href="/static/tally.css">
<script src="/static/tally.js" defer></script>
</head>
<body>
<main>
<h1>Tally</h1>
<p>Tally counts the views of a page and shows the number as a badge. Put one line in a README, an issue or a blog; every view of that page adds one.</p>
<pre class="embed"><code>![visitors]({{badge_url}})</code></pre>

<h2>Build your badge</h2>
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form id="builder" method="get" action="/">
  <div class="field">
    <label for="repo">GitHub repository (owner/repo)</label>
    <input id="repo" name="repo" value="" placeholder="alice/my-repo" autocomplete="off">
  </div>
  <div class="field">
    <label for="page_id">Page id</label>
    <input id="page_id" name="page_id" value="{{page_id}}" maxlength="256" placeholder="owner.repo">
  </div>
  <div class="field">
    <label for="left_text">Label</label>
    <input id="left_text" name="left_text" value="{{look.label}}" maxlength="64">
  </div>
  <div class="field color">
    <label for="left_color">Label colour</label>
    <input id="left_color" name="left_color" value="{{look.label_color}}">
    <input type="color" id="left_color_pick" aria-label="Pick label colour" value="{{look.label_color if len(look.label_color) == 7 else defaults.label_color}}">
  </div>
  <div class="field color">
    <label for="right_color">Value colour</label>
    <input id="right_color" name="right_color" value="{{look.color}}">
    <input type="color" id="right_color_pick" aria-label="Pick value colour" value="{{look.color if len(look.color) == 7 else defaults.color}}">
  </div>
  <div class="field">
    <label for="theme">Theme</label>
    <select id="theme" name="theme">
    % for theme, meaning in themes.items():
      <option value="{{theme}}" {{'selected' if theme == look.theme else ''}}>{{meaning}}</option>
    % end
    </select>
  </div>
  <div class="field color">
    <label for="left_color_dark">Label colour on dark pages (empty: the label colour)</label>
    <input id="left_color_dark" name="left_color_dark" value="{{look.label_color_dark or ''}}">
    <input type="color" id="left_color_dark_pick" aria-label="Pick label colour on dark pages" value="{{look.label_color_dark if look.label_color_dark and len(look.label_color_dark) == 7 else defaults.label_color}}">
  </div>
  <div class="field color">
    <label for="right_color_dark">Value colour on dark pages (empty: the value colour)</label>
    <input id="right_color_dark" name="right_color_dark" value="{{look.color_dark or ''}}">
    <input type="color" id="right_color_dark_pick" aria-label="Pick value colour on dark pages" value="{{look.color_dark if look.color_dark and len(look.color_dark) == 7 else defaults.color}}">
  </div>
  <fieldset class="field styles">
    <legend>Style</legend>
    % for style in styles:
    <label class="style"><input type="radio" name="style" value="{{style}}" {{'checked' if style == look.style else ''}}>
      <span>{{style}}</span>
      % if style != "pixel":
      <img class="sample" src="/badge?page_id=tally.sample&amp;query_only=true&amp;theme=auto&amp;style={{style}}" alt="" width="{{90 if style == 'for-the-badge' else 80}}" height="20">
      % end
    </label>
    % end
  </fieldset>
  <div class="field">
    <label for="format">Number format</label>
    <select id="format" name="format">
    % for fmt in formats:
      <option value="{{fmt}}" {{'selected' if fmt == look.format else ''}}>{{fmt}}</option>
    % end
    </select>
  </div>
  <div class="field">
    <label for="show">Show</label>
    <select id="show" name="show">
    % for show, meaning in shows.items():
      <option value="{{show}}" {{'selected' if show == look.show else ''}}>{{meaning}}</option>
    % end
    </select>
  </div>
  <div class="field">
    <label for="base">Start value</label>
    <input id="base" name="base" type="number" min="0" max="1000000000000" value="{{look.base}}">
  </div>
  <button type="submit">Update</button>
</form>

<h2>Preview</h2>
<div class="previews">
  <figure class="preview on-light"><img id="preview" src="{{previews['light']}}" alt="badge preview on a light page"><figcaption>on a light page</figcaption></figure>
  <figure class="preview on-dark"><img id="preview-dark" src="{{previews['dark']}}" alt="badge preview on a dark page"><figcaption>on a dark page</figcaption></figure>
</div>
<p class="note">The previews never count a view (they ask with <code>query_only=true</code>).</p>

<h2>Copy</h2>
% for key, title, text in snippets:
<div class="snippet">
  <label for="snippet-{{key}}">{{title}}</label>
  <textarea id="snippet-{{key}}" readonly rows="{{5 if key == 'picture' else 2}}">{{text}}</textarea>
  <button type="button" class="copy" data-target="snippet-{{key}}">Copy</button>
  <span class="copied" aria-live="polite"></span>
</div>
% end

<p class="note" id="pair-warning">A pair of images marked <code>#gh-dark-mode-only</code> and <code>#gh-light-mode-only</code> makes the browser fetch both, so every view counts twice: use <code>theme=auto</code> or the <code>&lt;picture&gt;</code> snippet, which fetch one.</p>

<h2>Moving from another counter?</h2>
<form id="moving" method="get" action="/">
  <div class="field">
    <label for="old_url">Paste its badge URL</label>
    <input id="old_url" name="old_url" value="{{old_url}}" autocomplete="off" placeholder="https://hits.seeyoufarm.com/api/count/incr/badge.svg?url=...">
  </div>
  <button type="submit">Show its Tally URL</button>
</form>
% if moving and moving["error"]:
<p class="error" role="alert">{{moving["error"]}}: Tally knows Hits, komarev, hits.sh, hits.dwyl.com, visitorbadge.io and visitor-badge URLs.</p>
% elif moving:
<dl class="moving">
  <div><dt>Tally URL (only the host changed)</dt><dd><code id="moved-url">{{moving["url"]}}</code></dd></div>
  <div><dt>Page id</dt><dd><code id="moved-page-id">{{moving["page_id"]}}</code> (<a href="/stats?page_id={{quote(moving["page_id"], safe='')}}">stats</a>)</dd></div>
</dl>
% end

<p><a id="stats-link" href="/stats?page_id={{quote(page_id, safe='')}}">Stats for {{page_id}}</a></p>
% if self_service:
<p><a id="manage-link" href="/manage?page_id={{quote(page_id, safe='')}}">Manage this counter</a> (set, reset, delete or export it with its owner key)</p>
% end
</main>
</body>
</html>
