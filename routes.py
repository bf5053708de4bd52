"""The route table: each of Tally's paths once, with the kind of answer it
gives (a failure on it answers in that kind too) and who answers it.

answers.Badges answers the requests every view makes, on the event loop:
/badge, /api/count, /chart and the old services' URLs (flavours.py matches those,
never under one of Tally's own first segments). server.Pages answers the
rest through bottle, a method named by the route's handler.

>>> sorted(OWN_SEGMENTS)
['', 'api', 'badge', 'chart', 'healthz', 'manage', 'metrics', 'static', 'stats']
>>> by_path("/stats").kind, by_path("/api/history").kind, by_path("/nowhere")
('html', 'json', None)
"""

from __future__ import annotations

import dataclasses

SVG, JSON, HTML, TEXT, FILE = "svg", "json", "html", "text", "file"
BADGES = "badges"  # answered by answers.Badges, on the event loop


@dataclasses.dataclass(frozen=True)
class Route:
    path: str      # a path, or bottle's pattern (/static/<name>)
    kind: str      # what it answers, and a failure on it too
    handler: str   # BADGES, or the server.Pages method
    counts: str    # whether a view counts (docs/parameters.md)
    caching: str   # what its answer tells caches
    methods: tuple[str, ...] = ("GET",)


TABLE = (
    Route("/badge", SVG, BADGES, "yes (HEAD: no)", "never cached"),
    Route("/api/count", JSON, BADGES, "no", "never cached"),
    Route("/chart", SVG, BADGES, "no", "never cached"),
    Route("/api/shields", JSON, "shields", "no", "never cached"),
    Route("/api/history", JSON, "history", "no", "never cached"),
    Route("/healthz", JSON, "health", "no", "never cached"),
    Route("/metrics", TEXT, "metrics", "no (if enabled)", "never cached"),
    Route("/", HTML, "index", "no", "no-cache"),
    Route("/stats", HTML, "stats", "no", "no-cache"),
    Route("/static/<name>", FILE, "static", "no", "a day"),
    # Self-service for page owners (owners.py; off unless TALLY_SELF_SERVICE=1).
    Route("/manage", HTML, "manage", "no", "no-cache", ("GET", "POST")),
    *(Route(path, JSON, "owners", "no", "never cached", ("POST",)) for path in (
        "/api/pages", "/api/claims", "/api/claims/verify", "/api/pages/set", "/api/pages/reset",
        "/api/pages/delete", "/api/pages/rotate", "/api/pages/release")),
    Route("/api/pages/export", JSON, "owners", "no", "never cached"),
    Route("/api/pages/actions", JSON, "owners", "no", "never cached"),
)
# The old services' URLs (Hits, komarev, hits.sh, dwyl, visitorbadge.io):
# answered by answers.Badges as the old service did (flavours.py), counted
# as it counted, never cached; labelled so in /metrics.
OLD_URLS = "/<path:path>"

FAST = tuple(route.path for route in TABLE if route.handler == BADGES)
PAGES = tuple(route for route in TABLE if route.handler != BADGES)
# The first path segments of Tally's own routes: a path under one of them
# is never an old service's (/stats/x.svg is not dwyl's user "stats").
OWN_SEGMENTS = frozenset(route.path[1:].split("/", 1)[0] for route in TABLE)


def by_path(path: str) -> Route | None:
    """A fixed path's route (None for /static/<name> and old URLs)."""
    return _BY_PATH.get(path)


_BY_PATH = {route.path: route for route in TABLE}
