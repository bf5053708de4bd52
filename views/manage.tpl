<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>Tally: manage a counter</title>
<link rel="stylesheet" href="/static/tally.css">
</head>
<body>
<main>
<p><a href="/">Tally</a></p>
<h1>Manage a counter</h1>
% if error:
<p class="error" role="alert" id="error">{{error}}</p>
% end
% if done:
<p role="status" id="done">{{done}}</p>
% end
% if new_key:
<div class="field">
  <label for="new-key">Your new key (shown once: keep it somewhere safe)</label>
  <input id="new-key" readonly value="{{new_key}}">
</div>
% end
% if enabled:
<p>Your key is sent in this form's body only: never in the address, never stored in your browser. With it you can set, reset or delete this page's count and count the views the inflation guard held. Every action is recorded, and the server's operator can undo it.</p>
<form id="manage" method="post" action="/manage">
  <div class="field">
    <label for="page_id">Page id</label>
    <input id="page_id" name="page_id" value="{{page_id}}" maxlength="256" required>
  </div>
  <div class="field">
    <label for="key">Owner key</label>
    <input id="key" name="key" type="password" autocomplete="off" required>
  </div>
  <div class="field">
    <label for="total">New total (for "Set the total")</label>
    <input id="total" name="total" type="number" min="0" inputmode="numeric">
  </div>
  <div class="actions">
    <button type="submit" name="action" value="set">Set the total</button>
    <button type="submit" name="action" value="reset">Reset to 0</button>
    <button type="submit" name="action" value="release">Count held views</button>
    <button type="submit" name="action" value="actions">Show what was done</button>
    <button type="submit" name="action" value="export">Export</button>
    <button type="submit" name="action" value="rotate">New key</button>
    <button type="submit" name="action" value="delete">Delete the counts</button>
  </div>
</form>
% end
% if actions:
<table id="actions">
<caption>What was done to this page</caption>
<thead><tr><th scope="col">When (UTC)</th><th scope="col">Action</th><th scope="col">What</th></tr></thead>
<tbody>
% for a in reversed(actions):
<tr><td>{{a.at}}</td><td>{{a.action}}</td><td>{{a.detail}}</td></tr>
% end
</tbody>
</table>
% end
% if export:
<div class="field">
  <label for="export">The page as <code>export</code> writes it (<code>import</code> reads it back)</label>
  <textarea id="export" readonly rows="12">{{export}}</textarea>
</div>
% end
<p class="note">How to get a key, and how to claim a counter your README shows: <code>docs/owners.md</code>.</p>
</main>
</body>
</html>
