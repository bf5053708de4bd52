<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Tally: {{problem}}</title>
<link rel="stylesheet" href="/static/tally.css">
</head>
<body>
<main>
<p><a href="/">Tally</a></p>
<h1>{{status}}: {{problem}}</h1>
<p class="error" role="alert">This page could not be shown: {{problem}}. The counts are kept; try again in a moment.</p>
</main>
</body>
</html>
