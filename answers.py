"""Tally's answers to the requests every view makes, without a web framework.

Badges.answer() takes a request's path, query, method and User-Agent and
gives the Answer (status, headers, body) to /badge, /api/count and every
URL of the old services (flavours.py): validated by params.py (flavours.py
for old URLs), counted or read through the store, drawn by badge.py.
Badges.failure() is the one place where every other outcome (a bad
parameter, a limit, database trouble, an unexpected error) becomes its
answer and its metric; bottle's routes in server.py use it too.

server.py serves this (its ASGI front calls answer() on the event loop).
This module imports no web framework, no HTTP server and no database
library: it sees the store through storage.Store.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import json
import logging
import re
import threading
import time
import traceback
import typing
import urllib.parse
from typing import Callable

import prometheus_client

import badge
import chart
import counting
import flavours
import pages
import params
import routes
import storage
from config import Config
from params import ParamError

log = logging.getLogger("tally")

# Answers ###################################################################

SVG_TYPE = "image/svg+xml; charset=utf-8"
JSON_TYPE = "application/json"
# GitHub's image proxy (Camo) caches what it may; every one of these says
# "do not". Expires is set per answer, ten minutes in the past.
NO_CACHE = "max-age=0, no-cache, no-store, s-maxage=0, must-revalidate, proxy-revalidate"
# An SVG opened directly in a browser tab may run nothing and load nothing
# (a data: logo is embedded, not loaded). The one style it may apply is the
# theme rule of an auto SVG (badge.THEME_STYLE), named by its hash.
SVG_CSP = ("default-src 'none'; img-src data:; style-src 'sha256-"
           + base64.b64encode(hashlib.sha256(badge.THEME_STYLE.encode()).digest()).decode()
           + "'; sandbox")


class Answer(typing.NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    # Whether the view counted, and if not why (counting.HEADER): "yes",
    # "yes; bot", "no; bot", "no; HEAD", ...; None where nothing could count.
    counted: str | None = None


# What an answer that only reads says (counting.HEADER).
READ_ONLY = counting.not_counted("read only").header


class _Expires:
    """The Expires value, ten minutes in the past: formatted once a second,
    not once per answer."""

    def __init__(self) -> None:
        self._cached = (0, "")

    def __call__(self) -> str:
        second, value = self._cached
        now = int(time.time())
        if now != second:
            value = email.utils.formatdate(now - 600, usegmt=True)
            self._cached = (now, value)
        return value


_expires = _Expires()


def svg_headers(error: str | None = None) -> list[tuple[str, str]]:
    """Every SVG answer's headers: never cached, and nothing in it may run."""
    return [("Content-Type", SVG_TYPE),
            ("Cache-Control", NO_CACHE if error is None else "no-store"),
            ("Pragma", "no-cache"), ("Expires", _expires()),
            ("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", SVG_CSP),
            *([("X-Tally-Error", error)] if error is not None else [])]


_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"})


def json_headers() -> list[tuple[str, str]]:
    return [("Content-Type", JSON_TYPE), ("Cache-Control", NO_CACHE), ("Pragma", "no-cache"),
            ("Expires", _expires()), ("X-Content-Type-Options", "nosniff")]


def json_body(payload: object) -> bytes:
    # <, >, & and ' escaped too (legal JSON), so no answer can be read as markup.
    return json.dumps(payload, ensure_ascii=True).translate(_JSON_ESCAPES).encode()


def svg_answer(body: str) -> Answer:
    return Answer(200, svg_headers(), body.encode())


def json_answer(payload: object, status: int = 200) -> Answer:
    return Answer(status, json_headers(), json_body(payload))


def loggable(text: str) -> str:
    """Text made safe for a log line: printable ASCII only."""
    return urllib.parse.quote(text, safe="/?&=:,.-_~%+", errors="surrogateescape")


# Metrics and the outage log ################################################


class Metrics:
    """Prometheus counters of one app (its own registry: no global state)."""

    def __init__(self, store: storage.Store) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "tally_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry)
        self.views = prometheus_client.Counter(
            "tally_views_recorded", "Views counted", registry=self.registry)
        self.held_views = prometheus_client.Counter(
            "tally_views_held", "Views the inflation guard held (docs/guard.md)",
            registry=self.registry)
        self.bot_views = prometheus_client.Counter(
            "tally_bot_views", "Views by known bots (counted as views only with "
            "TALLY_COUNT_BOTS=1)", registry=self.registry)
        self.errors = prometheus_client.Counter(
            "tally_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.db_seconds = prometheus_client.Histogram(
            "tally_db_seconds", "Time spent waiting on the database", ["operation"],
            registry=self.registry,
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
        pages = prometheus_client.Gauge("tally_pages", "Distinct page_ids stored",
                                        registry=self.registry)
        pages.set_function(store.page_count)

    def timed(self, operation: str, call: Callable[[], object]) -> object:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.db_seconds.labels(operation).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class OutageLog:
    """Logs a database problem once, with its cause, and its end once.

    A full disk fails every request until space returns; one line per
    request would fill the log of an unattended box (the count of failures
    is in /metrics). Belongs to one app: no module-level state.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: str | None = None

    def failed(self, error: storage.StorageError) -> None:
        with self._lock:
            if self._current != error.kind:
                self._current = error.kind
                log.error("database unavailable: %s (logged once until it recovers)", error)

    def succeeded(self) -> None:
        if self._current is not None:  # unlocked read: the common case costs nothing
            with self._lock:
                if self._current is not None:
                    log.error("database recovered after: %s", self._current)
                    self._current = None


# The requests every view makes #############################################


def drawn_chart(store: storage.Store, page: pages.Named, look: badge.Look, days: int,
                visitors: bool, title: str | None) -> str:
    """A page's chart (/chart, Hits' daily chart): its days read, never
    counted, and drawn in the look's colours and theme."""
    found = pages.chart_days(store, page, days, visitors)
    unit = "visitors" if visitors else "views"
    return chart.standalone(look, found.days, title or f"{unit} per day",
                            f"{chart.counted(found.total, unit)} in {days} days", unit,
                            found.empty, found.not_kept)


# Parsed /badge queries kept, by their exact text: a README's badge asks the
# same URL on every view. Long queries (a logo) are parsed each time, so the
# cache stays small (at most QUERY_CACHE x 1 KB).
QUERY_CACHE = 1024
QUERY_CACHE_TEXT = 1024


def shown(look: badge.Look, counts: storage.Counts) -> tuple[badge.Look, int, int]:
    """What a badge draws from a page's counts: (the look, the number, today's).
    Visitors are drawn as a total or today's number is."""
    if look.show == "visitors":
        return dataclasses.replace(look, show="total"), counts.visitors, counts.visitors_today
    if look.show == "visitors_today":
        return dataclasses.replace(look, show="today"), counts.visitors, counts.visitors_today
    return look, counts.total, counts.today


class _BadgeError(Exception):
    """A refusal to be drawn as an error badge, with the badge's label and style."""

    def __init__(self, error: Exception, label: str, style: str = "flat"):
        super().__init__(str(error))
        self.error, self.label, self.style = error, label, style


class Badges:
    """The answers to /badge, /api/count and the old services' URLs, and the
    one mapping of every failure to its answer and metric."""

    def __init__(self, config: Config, store: storage.Store) -> None:
        self.config, self.store = config, store
        self.metrics, self.outage = Metrics(store), OutageLog()
        self.allow = re.compile(config.allow) if config.allow else None
        self._cached_query = functools.lru_cache(maxsize=QUERY_CACHE)(self._parse_badge)
        self._cached_count = functools.lru_cache(maxsize=QUERY_CACHE)(self._parse_count)
        self._ok = {route: self.metrics.requests.labels(route, "200") for route in routes.FAST}
        self.guard = (counting.Guard(config.guard_burst, config.guard_factor, config.guard_floor)
                      if config.guard else None)
        self._record_seconds = self.metrics.db_seconds.labels("record_view")
        self._read_seconds = self.metrics.db_seconds.labels("counts")

    def resolve(self, request: params.BadgeQuery) -> tuple[params.BadgeQuery, pages.Named]:
        """The request with its page resolved (pages.name, under
        TALLY_ALLOW): a github: page is read, never counted, under its
        repository's lowercased name. What only GitHub's numbers have
        (show=clones) is refused on any other page."""
        page = pages.name(request.page_id, self.allow)
        if not page.countable:
            return dataclasses.replace(request, page_id=page.page_id, count=False), page
        if request.look.show in params.GITHUB_SHOWS:
            raise ParamError(f"show={request.look.show} needs a github: page")
        return request, page

    def shown_numbers(self, page: pages.Named, look: badge.Look
                      ) -> tuple[badge.Look, int, int]:
        """What a page's badge shows without counting: (the look to draw,
        the number, today's number). ParamError for a github: page that is
        not kept."""
        found = pages.numbers(self.store, page)
        if look.show == "clones":
            return dataclasses.replace(look, show="total"), found.clones, found.clones_today  # type: ignore[return-value]
        return shown(look, found.counts)

    # The one place outcomes become answers ---------------------------------

    def failure(self, error: Exception, route: str, method: str,
                drawn: tuple[str, str] | None = None) -> Answer:
        """The answer of a request that did not end in counts: an error
        badge (drawn: its label and style; status 200 so GitHub's proxy
        shows it) or JSON, with outcome()'s status and problem."""
        status, problem = self.outcome(error, route, method, drawn is not None)
        counted = counting.not_counted(
            "".join(c if " " <= c <= "~" else "?" for c in problem)).header
        if drawn is None:
            return json_answer({"error": problem}, status)._replace(counted=counted)
        label, style = drawn
        return Answer(status, svg_headers(problem), badge.render_error(label, problem, style).encode(),
                      counted)

    def outcome(self, error: Exception, route: str, method: str,
                drawn: bool = False) -> tuple[int, str]:
        """The status and the problem of a failure, and its metric: a bad
        parameter or a limit: 200 for a badge, else 400; database trouble:
        503, logged once; anything else: 500, logged with its traceback, no
        detail to the client."""
        if isinstance(error, (ParamError, storage.PageLimitReached, storage.TotalLimitReached)):
            problem = {storage.PageLimitReached: "page limit reached",
                       storage.TotalLimitReached: "count at its maximum"}.get(type(error), str(error))
            status, kind = (200 if drawn else 400), problem
        elif isinstance(error, storage.StorageError):
            self.outage.failed(error)
            status, problem, kind = 503, "database unavailable", error.kind
        else:
            log.error("unexpected error on %s %s\n%s", method, loggable(route),
                      traceback.format_exc())
            status, problem, kind = 500, "internal error", "internal"
        self.metrics.errors.labels(kind).inc()
        return status, problem

    def counted(self, route: str, status: int) -> None:
        """The request counter of /metrics for the requests answered here."""
        if status == 200 and route in self._ok:
            self._ok[route].inc()
        else:
            self.metrics.requests.labels(route, str(status)).inc()

    # Dispatch ------------------------------------------------------------------

    async def answer(self, path: str, method: str, query: str, user_agent: str,
                     client: str = "") -> Answer | None:
        """The answer to /badge, /api/count or an old service's URL; None
        for any other path (bottle's routes answer those). client: the
        address the view came from (the trusted proxy's word for it)."""
        old = None if path in routes.FAST else flavours.match_path(path)
        if path not in routes.FAST and old is None:
            return None
        route = path if old is None else routes.OLD_URLS
        if method not in ("GET", "HEAD"):
            answer = json_answer({"error": "method not allowed"}, 405)
        else:
            try:
                viewer = (user_agent, client)
                if path == "/badge":
                    answer = await self._badge(query, method, viewer)
                elif path == "/api/count":
                    answer = await self._count(query)
                elif path == "/chart":
                    answer = await self._chart(query)
                else:
                    answer = await self._old_url(old, query, method, viewer)
                self.outage.succeeded()
            except _BadgeError as e:
                answer = self.failure(e.error, path, method, (e.label, e.style))
            except Exception as e:
                # Where an image was asked for, even an unexpected error is one.
                drawn = old is None and path in ("/badge", "/chart") or (
                    old is not None and old.answer in ("badge", "chart"))
                answer = self.failure(e, path, method,
                                      (badge.DEFAULT_LABEL, "flat") if drawn else None)
        self.counted(route, answer.status)
        return answer

    # /badge and /api/count ---------------------------------------------------

    def _parse_badge(self, query: str
                     ) -> tuple[params.BadgeQuery | None, pages.Named | None, str, str, str]:
        """(the request or None, its page, its error badge's label, style, problem)."""
        values: dict[str, str] = {}
        try:
            values = params.parse_query_string(query)
            request, page = self.resolve(params.parse_badge_query(values))
            if request.count and page.kind == pages.SERVICE:
                # "ghpvc:alice" is counted by komarev's URL alone (with its
                # camo-only rule); shown with query_only it may be.
                raise ParamError("reserved page_id")
            return request, page, params.label_for_error(values), request.look.style, ""
        except ParamError as e:
            return (None, None, params.label_for_error(values), params.style_for_error(values),
                    str(e))

    async def _badge(self, query: str, method: str, viewer: tuple[str, str]) -> Answer:
        request, page, label, style, problem = (
            self._parse_badge(query) if len(query) > QUERY_CACHE_TEXT
            else self._cached_query(query))
        if request is None or page is None:
            raise _BadgeError(ParamError(problem), label, style)
        return await self._drawn(request, page, label, method, viewer)

    async def _drawn(self, request: params.BadgeQuery, page: pages.Named, label: str,
                     method: str, viewer: tuple[str, str],
                     read_only: str = "query_only") -> Answer:
        """A valid badge request (native or an old service's), counted or
        read; a github: page's numbers read. read_only: why a request
        that does not count does not (query_only; an old URL's own word)."""
        try:
            if not page.countable:
                look, number, today = await self._read(  # type: ignore[misc]
                    self.shown_numbers, page, request.look)
                return svg_answer(badge.render(look, number, today))._replace(
                    counted=counting.not_counted("github page").header)
            decision, counts = await self._record(
                request.page_id, self._decide(request, method, viewer, read_only))
        except Exception as e:
            raise _BadgeError(e, label, request.look.style) from None
        return svg_answer(badge.render(*shown(request.look, counts)))._replace(
            counted=decision.header)

    def _parse_count(self, query: str) -> tuple[pages.Named | None, str]:
        """(the page, "") or (None, the problem)."""
        try:
            return pages.name(params.parse_query_string(query).get("page_id"), self.allow), ""
        except ParamError as e:
            return None, str(e)

    async def _count(self, query: str) -> Answer:
        page, problem = (self._parse_count(query) if len(query) > QUERY_CACHE_TEXT
                         else self._cached_count(query))
        if page is None:
            raise ParamError(problem)
        if not page.countable:
            return json_answer(await self._read(pages.github_count, self.store, page))._replace(
                counted=READ_ONLY)
        counts = await self._fetch(page.page_id, None)
        return json_answer({"page_id": page.page_id, "total": counts.total,
                            "today": counts.today, "visitors": counts.visitors,
                            "visitors_today": counts.visitors_today, "held": counts.held,
                            "held_today": counts.held_today})._replace(counted=READ_ONLY)

    async def _chart(self, query: str) -> Answer:
        values: dict[str, str] = {}
        try:
            values = params.parse_query_string(query)
            request = params.parse_chart_query(values)
            page = pages.name(request.page_id, self.allow)
        except ParamError as e:
            raise _BadgeError(e, params.label_for_error(values),
                              params.style_for_error(values)) from None
        return await self._drawn_chart(page, request.look, request.days, request.visitors,
                                       request.title)

    async def _drawn_chart(self, page: pages.Named, look: badge.Look, days: int,
                           visitors: bool, title: str | None) -> Answer:
        svg = await self._read(self.metrics.timed, "history",
                               lambda: drawn_chart(self.store, page, look, days, visitors, title))
        return svg_answer(svg)._replace(counted=READ_ONLY)  # type: ignore[arg-type]

    def _decide(self, request: params.BadgeQuery, method: str, viewer: tuple[str, str],
                read_only: str) -> counting.Decision:
        user_agent, client = viewer
        return counting.decide(self.config, request.count, method, user_agent, client,
                               request.camo_only, read_only)

    async def _record(self, page_id: str, decision: counting.Decision
                      ) -> tuple[counting.Decision, storage.Counts]:
        """The view recorded as decided, once the inflation guard had its
        word on a view that would count (held instead, if it does not
        believe it); the decision as recorded, and the page's counts."""
        guard = self.guard
        if guard is None or not decision.recorded:
            return decision, await self._fetch(page_id, decision)
        now = time.time()
        if decision.view:
            found = (await self._read(self._guard_history, page_id, now)
                     if guard.needs(page_id, now) else None)
            if not guard.admits(page_id, now, found):  # type: ignore[arg-type]
                decision = counting.held(decision)
        counts = await self._fetch(page_id, decision)
        # What the database says the page counted today (every server's):
        # the guard's allowance is the page's.
        guard.observed(page_id, now, counts.today, decision.view)
        return decision, counts

    def _guard_history(self, page_id: str, now: float) -> counting.History:
        """The page's days the guard reads: today's and LOOK_BACK_DAYS before."""
        today = storage.day(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
        first = (datetime.date.fromisoformat(today)
                 - datetime.timedelta(days=counting.LOOK_BACK_DAYS)).isoformat()
        return counting.history(today, [(d.day, d.views, d.held) for d in
                                        self.store.stored_days(page_id, first, today)])

    async def _fetch(self, page_id: str, decision: counting.Decision | None) -> storage.Counts:
        """Record the view as decided (awaiting its group commit without
        holding a thread), or only read (None, or a view that does not
        count). Raises PageLimitReached, TotalLimitReached, StorageError."""
        started = time.perf_counter()
        if decision is not None and decision.recorded:
            result = await self.store.record_view_async(
                page_id, visitor=decision.visitor, bot=decision.bot, counted=decision.view,
                held=decision.held)
            self._record_seconds.observe(time.perf_counter() - started)
            if decision.bot:
                self.metrics.bot_views.inc()
            if decision.view:
                self.metrics.views.inc()
            if decision.held:
                self.metrics.held_views.inc()
            return result
        if self.store.inline_reads:  # the common case, without a coroutine more
            result = self.store.counts(page_id)
        else:
            result = await self._read(self.store.counts, page_id)  # type: ignore[assignment]
        self._read_seconds.observe(time.perf_counter() - started)
        return result

    async def _read(self, read: Callable[..., object], *args: object) -> object:
        """A read on the loop's own thread when the store's reads are that
        fast (SQLite), else in a thread (PostgreSQL)."""
        if self.store.inline_reads:
            return read(*args)
        return await asyncio.get_running_loop().run_in_executor(None, read, *args)

    # The old services' URLs --------------------------------------------------

    async def _old_url(self, route: flavours.Route, query: str, method: str,
                       viewer: tuple[str, str]) -> Answer:
        label = flavours.label_for_error(route, query)
        drawn = route.answer in ("badge", "chart")
        try:
            request = flavours.badge_query(route, query)
            page = pages.name(request.page_id, self.allow)
        except ParamError as e:
            if drawn:
                raise _BadgeError(e, label) from None
            raise
        if route.answer == "badge":
            return await self._drawn(request, page, label, method, viewer, "read only")
        if route.answer == "chart":  # Hits' 60-day chart, in Hits' colours
            return await self._drawn_chart(page, request.look, 60, False, None)
        if route.answer == "urn-json":  # hits.sh: 404 for a counter never seen
            page = await self._read(self.metrics.timed, "page",
                                    lambda: self.store.page(request.page_id))
            if page is None:
                return json_answer({"error": "not found"}, 404)
            return json_answer(flavours.urn_json(page.total, page.days,  # type: ignore[union-attr]
                                                 storage.day(storage.utc_now()))
                               )._replace(counted=READ_ONLY)
        decision, counts = await self._record(
            request.page_id, self._decide(request, method, viewer, "read only"))
        if route.answer == "shields-json":  # dwyl's .json counts too (show=unique: visitors)
            _, number, _ = shown(request.look, counts)
            return json_answer(flavours.shields_json(query, str(number)))._replace(
                counted=decision.header)
        return json_answer({"path": request.page_id.split(":", 1)[1], "total": counts.total,
                            "today": counts.today})._replace(counted=decision.header)
