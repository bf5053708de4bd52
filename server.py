"""Tally's HTTP side and command line.

HTTP only: the route table, headers, error answers, the server and the CLI
entry point. The only module importing bottle, granian and a2wsgi. It never
runs SQL (the stores do, behind database.open_store) and never builds SVG
(badge.py does); request values are validated by params.py before anything
else sees them.

How a request travels (`serve`): granian (Rust) -> AsgiFront, which checks
it and logs it -> /badge, /api/count and old services' badge URLs: FastPath,
on the event loop; everything else: a2wsgi -> FrontDoor -> bottle's routes
in create_app, in a thread pool. Tests call FrontDoor as plain WSGI.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import email.utils
import functools
import html
import ipaddress
import json
import logging
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
import traceback
import typing
import urllib.parse
from pathlib import Path
from typing import Callable, Mapping

import a2wsgi
import bottle
import granian.constants
import granian.http
import granian.log
import granian.server
import prometheus_client

import badge
import commands as commands_module
import config as config_module
import flavours
import params
import database
import storage
from config import Config, ConfigError
from params import ParamError

log = logging.getLogger("tally")
access_log = logging.getLogger("tally.access")

VIEWS = Path(__file__).with_name("views")

# Answers ###################################################################

SVG_TYPE = "image/svg+xml; charset=utf-8"
JSON_TYPE = "application/json"
# GitHub's image proxy (Camo) caches what it may; every one of these says
# "do not". Expires is set per answer, ten minutes in the past.
NO_CACHE = "max-age=0, no-cache, no-store, s-maxage=0, must-revalidate, proxy-revalidate"
# An SVG opened directly in a browser tab may run nothing and load nothing
# (a data: logo is embedded, not loaded; the badges use no <style>).
SVG_CSP = "default-src 'none'; img-src data:; sandbox"
PAGE_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

CAMO_AGENT = re.compile(r"^github-camo\b", re.IGNORECASE)


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


def _svg(body: str, status: int = 200, error: str | None = None) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body=body, status=status, headers=svg_headers(error))


_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"})


def json_headers() -> list[tuple[str, str]]:
    return [("Content-Type", JSON_TYPE), ("Cache-Control", NO_CACHE), ("Pragma", "no-cache"),
            ("Expires", _expires()), ("X-Content-Type-Options", "nosniff")]


def json_body(payload: object) -> bytes:
    # <, >, & and ' escaped too (legal JSON), so no answer can be read as markup.
    return json.dumps(payload, ensure_ascii=True).translate(_JSON_ESCAPES).encode()


def _json(payload: object, status: int = 200) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body=json_body(payload), status=status, headers=json_headers())


def _html(body: str, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(body=body, status=status)
    response.set_header("Content-Type", "text/html; charset=utf-8")
    response.set_header("Content-Security-Policy", PAGE_CSP)
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("Cache-Control", "no-cache")
    return response


# Metrics ###################################################################


class Metrics:
    """Prometheus counters of one app (its own registry: no global state)."""

    def __init__(self, store: storage.Store) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "tally_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry)
        self.views = prometheus_client.Counter(
            "tally_views_recorded", "Views counted", registry=self.registry)
        self.errors = prometheus_client.Counter(
            "tally_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.db_seconds = prometheus_client.Histogram(
            "tally_db_seconds", "Time spent waiting on the database", ["operation"],
            registry=self.registry,
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
        pages = prometheus_client.Gauge("tally_pages", "Distinct page_ids stored",
                                        registry=self.registry)
        pages.set_function(store.page_count)

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


# The fast path: the requests every view makes ###############################


class Answer(typing.NamedTuple):
    """An answer as plain WSGI sends it."""
    status: int
    headers: list[tuple[str, str]]
    body: bytes


# Parsed /badge queries kept, by their exact text: a README's badge asks the
# same URL on every view. Long queries (a logo) are parsed each time, so the
# cache stays small (at most QUERY_CACHE x 1 KB).
QUERY_CACHE = 1024
QUERY_CACHE_TEXT = 1024


FAST_ROUTES = ("/badge", "/api/count")
OLD_URLS_ROUTE = "/<path:path>"  # bottle's rule for them, the label in /metrics
# What a count or a read may end with besides counts: each has its answer.
OUTCOMES = (storage.StorageError, storage.PageLimitReached, storage.TotalLimitReached)
Outcome = typing.Union[storage.Counts, storage.StorageError, storage.PageLimitReached,
                       storage.TotalLimitReached]


class FastPath:
    """GET and HEAD /badge (the request every README view makes) and
    /api/count as plain WSGI: bottle's routing and response objects cost
    more than the rest of such a request (README, Performance). The same
    checks, counting and rendering as every other badge answer, which
    bottle's routes get from answer() and error() here."""

    def __init__(self, config: Config, store: storage.Store,
                 metrics: "Metrics", outage: "OutageLog") -> None:
        self.config, self.store, self.metrics, self.outage = config, store, metrics, outage
        self.allow = re.compile(config.allow) if config.allow else None
        self._cached_query = functools.lru_cache(maxsize=QUERY_CACHE)(self._parse)
        self._cached_count = functools.lru_cache(maxsize=QUERY_CACHE)(self._parse_count)
        self._ok = {route: metrics.requests.labels(route, "200") for route in FAST_ROUTES}
        self._record_seconds = metrics.db_seconds.labels("record_view")
        self._read_seconds = metrics.db_seconds.labels("counts")

    def check_allowed(self, page_id: str) -> None:
        if self.allow is not None and not self.allow.fullmatch(page_id):
            raise ParamError("page_id not allowed")

    def _parse(self, query_string: str) -> tuple[params.BadgeQuery | None, str, str, str]:
        """(the request or None, its error badge's label, style, problem)."""
        values: dict[str, str] = {}
        try:
            values = params.parse_query_string(query_string)
            request = params.parse_badge_query(values)
            self.check_allowed(request.page_id)
            if request.count and params.is_service_id(request.page_id):
                # "ghpvc:alice" is counted by komarev's URL alone (with its
                # camo-only rule); shown with query_only it may be.
                raise ParamError("reserved page_id")
            return request, params.label_for_error(values), request.look.style, ""
        except ParamError as e:
            return None, params.label_for_error(values), params.style_for_error(values), str(e)

    def parse(self, query_string: str) -> tuple[params.BadgeQuery | None, str, str, str]:
        if len(query_string) > QUERY_CACHE_TEXT:
            return self._parse(query_string)
        return self._cached_query(query_string)

    def counting(self, request: params.BadgeQuery, method: str, user_agent: str) -> bool:
        # HEAD must not count. With TALLY_CAMO_ONLY (or a flavour that
        # counted only GitHub's proxy) only GitHub's image proxy counts.
        return bool(request.count and method == "GET"
                    and (not (self.config.camo_only or request.camo_only)
                         or CAMO_AGENT.match(user_agent)))

    # Each request in three steps: what to do (or an error answer at once),
    # the database (sync for WSGI, awaited for ASGI), the answer.

    def fetch(self, page_id: str, counting: bool) -> storage.Counts:
        """Count the view, or only read. Raises PageLimitReached,
        TotalLimitReached, StorageError."""
        started = time.perf_counter()
        if counting:
            result = self.store.record_view(page_id)
            self._record_seconds.observe(time.perf_counter() - started)
            self.metrics.views.inc()
            return result
        result = self.store.counts(page_id)
        self._read_seconds.observe(time.perf_counter() - started)
        return result

    async def fetch_async(self, page_id: str, counting: bool) -> storage.Counts:
        """fetch() on an event loop: a count awaits its commit, a read runs
        inline when the store's reads are that fast, else in a thread."""
        started = time.perf_counter()
        if counting:
            result = await self.store.record_view_async(page_id)
            self._record_seconds.observe(time.perf_counter() - started)
            self.metrics.views.inc()
            return result
        if self.store.inline_reads:
            result = self.store.counts(page_id)
        else:
            result = await asyncio.get_running_loop().run_in_executor(
                None, self.store.counts, page_id)
        self._read_seconds.observe(time.perf_counter() - started)
        return result

    def error(self, label: str, problem: str, status: int, style: str = "flat") -> Answer:
        self.metrics.errors.labels(problem).inc()
        return Answer(status, svg_headers(problem),
                      badge.render_error(label, problem, style).encode())

    def badge_request(self, query_string: str, method: str,
                      user_agent: str) -> Answer | tuple[params.BadgeQuery, str, bool]:
        """(the request, its label, whether it counts), or the error badge."""
        request, label, style, problem = self.parse(query_string)
        if request is None:
            return self.error(label, problem, 200, style)
        return request, label, self.counting(request, method, user_agent)

    def old_badge_request(self, path: str, query_string: str, method: str, user_agent: str
                          ) -> Answer | tuple[params.BadgeQuery, str, bool] | None:
        """As badge_request, for another counter's badge URL (flavours.py);
        None when the path is not one (bottle answers the other old URLs)."""
        try:
            route = flavours.match_path(path)
            if route is None or route.answer != "badge":
                return None
            label = flavours.label_for_error(route, query_string)
            try:
                request = flavours.badge_query(route, query_string)
                self.check_allowed(request.page_id)
            except ParamError as e:
                return self.error(label, str(e), 200)
            return request, label, self.counting(request, method, user_agent)
        except Exception:
            return self.internal_error(path, method, svg=True)

    def badge_answer(self, request: params.BadgeQuery, label: str,
                     outcome: Outcome) -> Answer:
        """The badge for a valid request (native or an old service's URL)."""
        style = request.look.style
        if isinstance(outcome, storage.PageLimitReached):
            return self.error(label, "page limit reached", 200, style)
        if isinstance(outcome, storage.TotalLimitReached):
            return self.error(label, "count at its maximum", 200, style)
        if isinstance(outcome, storage.StorageError):
            self.outage.failed(outcome)
            return self.error(label, "database unavailable", 503, style)
        self.outage.succeeded()
        return Answer(200, svg_headers(), badge.render(request.look, outcome.total,
                                                       outcome.today).encode())

    def answer(self, request: params.BadgeQuery, label: str, method: str,
               user_agent: str) -> Answer:
        """All three steps for a request bottle routed (an old service's URL)."""
        try:
            outcome = self.fetch(request.page_id, self.counting(request, method, user_agent))
        except OUTCOMES as e:
            outcome = e
        return self.badge_answer(request, label, outcome)

    def _parse_count(self, query_string: str) -> tuple[str, str]:
        """(page id, "") or ("", the problem)."""
        try:
            page_id = params.validate_page_id(params.parse_query_string(query_string).get("page_id"))
            self.check_allowed(page_id)
        except ParamError as e:
            return "", str(e)
        return page_id, ""

    def count_request(self, query_string: str) -> Answer | str:
        """/api/count: the page id, or the error answer."""
        page_id, problem = (self._parse_count(query_string) if len(query_string) > QUERY_CACHE_TEXT
                            else self._cached_count(query_string))
        if problem:
            self.metrics.errors.labels(problem).inc()
            return Answer(400, json_headers(), json_body({"error": problem}))
        return page_id

    def count_answer(self, page_id: str, outcome: Outcome) -> Answer:
        if isinstance(outcome, storage.StorageError):
            self.metrics.errors.labels(outcome.kind).inc()
            self.outage.failed(outcome)
            return Answer(503, json_headers(), json_body({"error": "database unavailable"}))
        self.outage.succeeded()
        return Answer(200, json_headers(), json_body(
            {"page_id": page_id, "total": outcome.total, "today": outcome.today}))

    def internal_error(self, route: str, method: str, svg: bool = False) -> Answer:
        # Logged with its traceback; the client sees no detail.
        log.error("unexpected error on %s %s\n%s", method, _loggable(route), traceback.format_exc())
        self.metrics.errors.labels("internal").inc()
        if svg or route == "/badge":
            return Answer(500, svg_headers("internal error"),
                          badge.render_error(badge.DEFAULT_LABEL, "internal error").encode())
        return Answer(500, json_headers(), json_body({"error": "internal error"}))

    def counted(self, route: str, status: int) -> None:
        """The request counter of /metrics, for the routes bottle never sees."""
        if status == 200 and route in self._ok:
            self._ok[route].inc()
        else:
            self.metrics.requests.labels(route, str(status)).inc()

    # As WSGI (the tests, and any WSGI server) ----------------------------------

    def wsgi(self, environ: dict, start_response: Callable) -> list[bytes]:
        route, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        query_string = _wsgi_query(environ)
        try:
            if route == "/badge":
                step = self.badge_request(query_string, method, environ.get("HTTP_USER_AGENT", ""))
                if not isinstance(step, Answer):
                    request, label, counting = step
                    try:
                        outcome = self.fetch(request.page_id, counting)
                    except OUTCOMES as e:
                        outcome = e
                    step = self.badge_answer(request, label, outcome)
            else:
                step = self.count_request(query_string)
                if not isinstance(step, Answer):
                    try:
                        outcome = self.fetch(step, False)
                    except OUTCOMES as e:
                        outcome = e
                    step = self.count_answer(step, outcome)
            answer = step
        except Exception:
            answer = self.internal_error(route, method)
        self.counted(route, answer.status)
        start_response(f"{answer.status} {HTTP_REASONS[answer.status]}",
                       [*answer.headers, ("Content-Length", str(len(answer.body)))])
        return [b"" if method == "HEAD" else answer.body]

    # As ASGI (granian, as `serve` runs it) ----------------------------------

    async def asgi(self, route: str, method: str, query_string: str, user_agent: str,
                   step: Answer | tuple | None = None) -> Answer:
        """The answer to /badge, /api/count, or (with step) an old service's
        badge URL whose old_badge_request() step was taken."""
        try:
            if route == "/badge" or step is not None:
                if step is None:
                    step = self.badge_request(query_string, method, user_agent)
                if isinstance(step, Answer):
                    return step
                request, label, counting = step
                try:
                    outcome = await self.fetch_async(request.page_id, counting)
                except OUTCOMES as e:
                    outcome = e
                return self.badge_answer(request, label, outcome)
            page_id = self.count_request(query_string)
            if isinstance(page_id, Answer):
                return page_id
            try:
                outcome = await self.fetch_async(page_id, False)
            except OUTCOMES as e:
                outcome = e
            return self.count_answer(page_id, outcome)
        except Exception:
            return self.internal_error(route, method)


# In front: the WSGI app and the ASGI app granian serves ###################


class FrontDoor:
    """The WSGI app: GET and HEAD /badge and /api/count to FastPath, the
    rest to bottle. (The tests call it as WSGI; `serve` runs it behind
    AsgiFront.)"""

    def __init__(self, fast: FastPath, routes: bottle.Bottle) -> None:
        self.fast, self.routes = fast, routes

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        if environ["REQUEST_METHOD"] in ("GET", "HEAD") and environ["PATH_INFO"] in FAST_ROUTES:
            return self.fast.wsgi(environ, start_response)
        return self.routes(environ, start_response)


class AsgiFront:
    """The app granian serves (ASGI, README "Performance" says why not
    WSGI): the checks every request passes, the access log, then /badge and
    /api/count answered on the event loop (a count awaits its group commit
    without holding a thread), every other route by the WSGI app in a pool
    of config.threads threads (a2wsgi)."""

    def __init__(self, config: Config, app: FrontDoor) -> None:
        self.fast = app.fast
        self.routes = a2wsgi.WSGIMiddleware(app, workers=config.threads)
        self.trusted_proxy = config.trusted_proxy
        self.logging = not config.quiet

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        scope = self._proxied(scope)
        method, route = scope["method"], scope["path"]
        if not scope["query_string"].isascii():
            scope = dict(scope, query_string=_ascii_query(scope["query_string"]))
        query = scope["query_string"].decode("ascii")
        length, agent = b"0", b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"user-agent":
                agent = value
        if not _utf8_path(scope):
            # The path was decoded with replacement characters: refused
            # rather than routed by a guess (bottle's routes refuse it too).
            status = await self._send(send, Answer(400, json_headers(), json_body(
                {"error": "path is not UTF-8"})), method)
        elif not length.isdigit() or int(length) > MAX_BODY_BYTES:
            # No route reads a body; a large one is refused unread.
            too_large = length.isdigit()
            answer = Answer(413 if too_large else 400, json_headers(), json_body(
                {"error": "request body too large" if too_large else "invalid Content-Length"}))
            status = await self._send(send, answer, method)
        elif method in ("GET", "HEAD") and route in FAST_ROUTES:
            answer = await self.fast.asgi(route, method, query, agent.decode("latin-1"))
            self.fast.counted(route, answer.status)
            status = await self._send(send, answer, method)
        elif method in ("GET", "HEAD") and (old := self.fast.old_badge_request(
                route, query, method, agent.decode("latin-1"))) is not None:
            # Another counter's badge URL: counted on the loop like /badge
            # (Tally's own routes never match one: tests/test_flavours.py).
            answer = await self.fast.asgi(route, method, query, "", step=old)
            self.fast.counted(OLD_URLS_ROUTE, answer.status)
            status = await self._send(send, answer, method)
        else:
            status = await self._wsgi(scope, receive, send)
        if self.logging:
            client = scope.get("client") or ("-",)
            access_log.info("%s %s %s%s %s %.1fms", _loggable(client[0]), method, _loggable(route),
                            "?" + _loggable(urllib.parse.unquote(query)) if query else "",
                            status, (time.perf_counter() - started) * 1000)

    @staticmethod
    async def _send(send: Callable, answer: Answer, method: str) -> int:
        headers = [*_encoded(tuple(answer.headers)), (b"content-length", b"%d" % len(answer.body))]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer.body})
        return answer.status

    async def _wsgi(self, scope: dict, receive: Callable, send: Callable) -> int:
        seen = {"status": 500}

        async def watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)
        await self.routes(scope, receive, watched)
        return seen["status"]

    def _proxied(self, scope: dict) -> dict:
        """X-Forwarded-For, -Proto and -Host are believed from the trusted
        proxy only (its last hop: the address that connected to it, and
        only if it is an IP address), and removed from every other request,
        so nobody else can claim an address or a host name for the builder
        page's links."""
        headers = scope["headers"]
        if not any(_is_forwarded(name) for name, _ in headers):
            return scope
        forwarded = {name: value.decode("latin-1").rsplit(",", 1)[-1].strip()
                     for name, value in headers if name in _FORWARDED}
        # Dropped from every request, in every spelling: a2wsgi and bottle
        # read X_Forwarded_Host as HTTP_X_FORWARDED_HOST too.
        scope = dict(scope, headers=[(n, v) for n, v in headers if not _is_forwarded(n)])
        peer = (scope.get("client") or ("",))[0]
        if self.trusted_proxy is None or peer != self.trusted_proxy:
            return scope
        client = forwarded.get(b"x-forwarded-for", "")
        if _is_address(client):
            scope["client"] = (client, 0)
        scheme = forwarded.get(b"x-forwarded-proto", "").lower()
        if scheme in ("http", "https"):
            scope["scheme"] = scheme
        host = forwarded.get(b"x-forwarded-host", "")
        if host:
            scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"host"]
            scope["headers"].append((b"host", host.encode("latin-1")))
        return scope


@functools.lru_cache(maxsize=64)
def _encoded(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as ASGI sends them. The same few sets repeat (Expires moves
    once a second), so each is encoded once."""
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers)


_QUERY_SAFE = bytes(range(0x21, 0x7F))


def _ascii_query(raw: bytes) -> bytes:
    """A query string with every byte outside printable ASCII percent-escaped:
    raw "é" then reads as "%C3%A9" does (UTF-8, one page id), a byte that is
    not UTF-8 as a lone surrogate that validation refuses, and a2wsgi (which
    decodes the query as ASCII) never fails on it."""
    return raw if raw.isascii() else urllib.parse.quote_from_bytes(raw, _QUERY_SAFE).encode()


def _wsgi_query(environ: dict) -> str:
    """The same from a WSGI environ, where PEP 3333 carries the bytes as Latin-1."""
    return _ascii_query(environ.get("QUERY_STRING", "").encode("latin-1")).decode("ascii")


def _utf8_path(scope: dict) -> bool:
    raw = scope.get("raw_path")
    if raw is None or b"%" not in raw and raw.isascii():
        return True
    try:
        urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded")


def _is_forwarded(name: bytes) -> bool:
    return name.replace(b"_", b"-") in _FORWARDED


MAX_BODY_BYTES = 65536
HTTP_REASONS = {200: "OK", 400: "Bad Request", 413: "Content Too Large",
                500: "Internal Server Error", 503: "Service Unavailable"}


# The app ###################################################################


def create_app(config: Config, store: storage.Store) -> FrontDoor:
    """The WSGI app: /badge's fast path in front of bottle's route table."""
    app = bottle.Bottle()
    app.config["json.enable"] = False
    metrics = Metrics(store)
    outage = OutageLog()
    badges = FastPath(config, store, metrics, outage)  # also bottle's badge answers
    pages_view = bottle.SimpleTemplate(source=(VIEWS / "index.tpl").read_text("utf-8"))
    stats_view = bottle.SimpleTemplate(source=(VIEWS / "stats.tpl").read_text("utf-8"))
    static_files = {name: (VIEWS / name).read_bytes() for name in ("tally.css", "tally.js")}

    def timed(operation: str, call: Callable[[], object]) -> object:
        started = time.perf_counter()
        try:
            return call()
        finally:
            metrics.db_seconds.labels(operation).observe(time.perf_counter() - started)

    def query() -> dict[str, str]:
        return params.parse_query_string(_wsgi_query(bottle.request.environ))

    check_allowed = badges.check_allowed

    def respond(answer: Answer) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(body=answer.body, status=answer.status, headers=answer.headers)

    def badge_answer(request: params.BadgeQuery, label: str) -> bottle.HTTPResponse:
        return respond(badges.answer(request, label, bottle.request.method,
                                     bottle.request.get_header("User-Agent", "")))

    def view(request: params.BadgeQuery) -> storage.Counts:
        return badges.fetch(request.page_id, badges.counting(
            request, bottle.request.method, bottle.request.get_header("User-Agent", "")))

    # Routes ------------------------------------------------------------------
    # method  path           counts?            caching
    # GET     /badge         yes (HEAD: no)     never cached   (FastPath, not bottle)
    # GET     /api/count     no                 never cached   (FastPath, not bottle)
    # GET     /api/shields   no                 never cached
    # GET     /api/history   no                 never cached
    # GET     /healthz       no                 never cached
    # GET     /metrics       no (if enabled)    never cached
    # GET     /              no                 no-cache
    # GET     /stats         no                 no-cache
    # GET     /static/<f>    no                 a day
    # GET     /<old URL>     as the old service (flavours.py): Hits, komarev,
    #                        hits.sh, dwyl, visitorbadge.io; never cached

    def json_page_id(values: dict[str, str]) -> str:
        page_id = params.validate_page_id(values.get("page_id"))
        check_allowed(page_id)
        return page_id

    @app.get("/api/shields")
    def shields_route() -> bottle.HTTPResponse:
        values = query()
        page_id = json_page_id(values)
        look = params.parse_look(values)
        counts = timed("counts", lambda: store.counts(page_id))
        # shields.io's endpoint schema: schemaVersion, label, message, color,
        # labelColor. It draws the style itself.
        return _json({"schemaVersion": 1, "label": look.label,
                      "message": badge.message(look, counts.total, counts.today),
                      "color": look.color, "labelColor": look.label_color})

    @app.get("/api/history")
    def history_route() -> bottle.HTTPResponse:
        values = query()
        page_id = json_page_id(values)
        days = params.parse_days(values.get("days"))
        history = timed("history", lambda: store.history(page_id, days))
        counts = timed("counts", lambda: store.counts(page_id))
        return _json({"page_id": page_id, "total": counts.total, "today": counts.today,
                      "days": [{"day": day, "views": views} for day, views in history]})

    @app.get("/healthz")
    def health_route() -> bottle.HTTPResponse:
        try:
            store.ping()
        except storage.StorageError as e:
            outage.failed(e)
            return _json({"status": "unavailable"}, 503)
        return _json({"status": "ok"})

    @app.get("/metrics")
    def metrics_route() -> bottle.HTTPResponse:
        if not config.metrics:
            return _json({"error": "metrics are off (TALLY_METRICS=1 turns them on)"}, 404)
        response = bottle.HTTPResponse(body=metrics.render())
        response.set_header("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)
        return response

    @app.get("/")
    def index_route() -> bottle.HTTPResponse:
        try:
            values = query()
            look = params.parse_look(values)
            page_id = values.get("page_id") or params.page_id_from_repo(
                bottle.request.query.getunicode("repo") or "") or "owner.repo"
            page_id = params.validate_page_id(page_id)
            error = None
        except ParamError as e:
            look, page_id, error = badge.Look(), "owner.repo", str(e)
        base = public_base()
        badge_url = f"{base}/badge?{urllib.parse.urlencode(badge_params(page_id, look))}"
        # "Moving from another counter? Paste its badge URL": the same URL on
        # this host, and the page id it counts under.
        old_url = bottle.request.query.getunicode("old_url") or ""
        moving = None
        if old_url:
            try:
                moved_id, path_and_query = flavours.moved(old_url)
                moving = {"page_id": moved_id, "url": base + path_and_query, "error": None}
            except ParamError as e:
                moving = {"page_id": None, "url": None, "error": str(e)}
        return _html(pages_view.render(
            old_url=old_url, moving=moving,
            page_id=page_id, look=look, error=error, badge_url=badge_url,
            preview_url=badge_url.replace(base, "", 1) + "&query_only=true",
            snippets=snippets(look.label, badge_url), quote=urllib.parse.quote,
            styles=params.STYLES, formats=params.FORMATS, shows=params.SHOWS,
            defaults=badge.Look()), 400 if error else 200)

    @app.get("/stats")
    def stats_route() -> bottle.HTTPResponse:
        try:
            values = query()
            page_id = json_page_id(values)
            days = params.parse_days(values.get("days"))
        except ParamError as e:
            return _html(stats_view.render(error=str(e), page_id=None, counts=None,
                                           history=[], best=None, chart=""), 400)
        counts = timed("counts", lambda: store.counts(page_id))
        history = timed("history", lambda: store.history(page_id, days))
        best = timed("best_day", lambda: store.best_day(page_id))
        return _html(stats_view.render(error=None, page_id=page_id, counts=counts,
                                       history=history, best=best, quote=urllib.parse.quote,
                                       chart=badge.history_chart(history)))

    @app.get("/static/<name>")
    def static_route(name: str) -> bottle.HTTPResponse:
        if name not in static_files:
            return _json({"error": "not found"}, 404)
        response = bottle.HTTPResponse(body=static_files[name])
        response.set_header("Content-Type", "text/css; charset=utf-8" if name.endswith(".css")
                            else "text/javascript; charset=utf-8")
        response.set_header("Cache-Control", "public, max-age=86400")
        response.set_header("X-Content-Type-Options", "nosniff")
        return response

    # Other counters' URLs come last: Tally's own routes always win.
    @app.get("/<path:path>")
    def old_service_route(path: str) -> bottle.HTTPResponse:
        query_string = _wsgi_query(bottle.request.environ)
        step = badges.old_badge_request("/" + path, query_string, bottle.request.method,
                                        bottle.request.get_header("User-Agent", ""))
        if isinstance(step, Answer):
            return respond(step)
        if step is not None:
            return badge_answer(*step[:2])
        route = flavours.match_path("/" + path)
        if route is None:
            raise bottle.HTTPError(404)
        label = flavours.label_for_error(route, query_string)
        try:
            request = flavours.badge_query(route, query_string)
            check_allowed(request.page_id)
        except ParamError as e:
            if route.answer == "chart":
                return respond(badges.error(label, str(e), 200))
            raise
        if route.answer == "chart":  # Hits' 60-day chart
            history = timed("history", lambda: store.history(request.page_id, 60))
            return _svg(badge.history_chart(history))
        if route.answer == "urn-json":  # hits.sh: 404 for a counter never seen
            page = timed("page", lambda: store.page(request.page_id))
            if page is None:
                return _json({"error": "not found"}, 404)
            return _json(flavours.urn_json(page.total, page.days, storage.utc_now().date().isoformat()))
        try:
            result = view(request)
        except (storage.PageLimitReached, storage.TotalLimitReached) as e:
            return _json({"error": "page limit reached" if isinstance(e, storage.PageLimitReached)
                          else "count at its maximum"}, 400)
        if route.answer == "shields-json":  # dwyl's .json counts too
            return _json(flavours.shields_json(query_string, str(result.total)))
        return _json({"path": request.page_id.split(":", 1)[1], "total": result.total,
                      "today": result.today})

    def public_base() -> str:
        # The address visitors used, as the reverse proxy passed it on.
        parts = bottle.request.urlparts
        return f"{parts.scheme}://{parts.netloc}"

    # Errors ------------------------------------------------------------------

    def on_param_error(e: ParamError) -> bottle.HTTPResponse:
        metrics.errors.labels(str(e)).inc()
        return _json({"error": str(e)}, 400)

    def on_storage_error(e: storage.StorageError) -> bottle.HTTPResponse:
        metrics.errors.labels(e.kind).inc()
        outage.failed(e)
        return _json({"error": "database unavailable"}, 503)

    def guard(callback: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            try:
                return callback(*args, **kwargs)
            except ParamError as e:
                return on_param_error(e)
            except storage.StorageError as e:
                return on_storage_error(e)
            except bottle.HTTPResponse:
                raise
            except Exception:
                # Logged with its traceback; the client sees no detail.
                log.error("unexpected error on %s %s\n%s", bottle.request.method,
                          _loggable(bottle.request.path), traceback.format_exc())
                metrics.errors.labels("internal").inc()
                return _json({"error": "internal error"}, 500)
        return wrapper

    app.install(guard)

    @app.hook("before_request")
    def refuse_undecodable_path() -> None:
        # bottle drops bytes that are not UTF-8 from the path ("ignore"), so
        # /b%FFadge would reach /badge and count: refuse such a path instead.
        try:
            bottle.request.environ["bottle.raw_path"].encode("latin1").decode("utf-8")
        except UnicodeError:
            raise _json({"error": "path is not UTF-8"}, 400) from None

    @app.hook("after_request")
    def count_request() -> None:
        route = bottle.request.route.rule if "bottle.route" in bottle.request.environ else "unknown"
        metrics.requests.labels(route, str(bottle.response.status_code)).inc()

    @app.error(404)
    def not_found(error: bottle.HTTPError) -> str:
        bottle.response.content_type = JSON_TYPE
        return json.dumps({"error": "not found"})

    @app.error(405)
    def not_allowed(error: bottle.HTTPError) -> str:
        bottle.response.content_type = JSON_TYPE
        return json.dumps({"error": "method not allowed"})

    return FrontDoor(badges, app)


# Markdown's image text ends at "]"; a backslash escapes it (CommonMark).
_MARKDOWN_TEXT = str.maketrans({"\\": "\\\\", "[": "\\[", "]": "\\]"})


def snippets(label: str, badge_url: str) -> list[tuple[str, str, str]]:
    """The builder's copyable snippets: (key, title, text). tally.js builds
    the same texts in the browser, with the same escaping.

    >>> snippets('a"]', "https://x/badge?page_id=p")[1][2]
    '<img src="https://x/badge?page_id=p" alt="a&quot;]">'
    >>> snippets("[x]", "u")[0][2]
    '![\\\\[x\\\\]](u)'
    """
    return [
        ("markdown", "Markdown", f"![{label.translate(_MARKDOWN_TEXT)}]({badge_url})"),
        # The URL is urlencoded: it holds no quote or angle bracket.
        ("html", "HTML", f'<img src="{badge_url}" alt="{html.escape(label)}">'),
        ("rst", "reStructuredText", f".. image:: {badge_url}\n   :alt: {label}"),
    ]


def badge_params(page_id: str, look: badge.Look) -> dict[str, str]:
    """The query of a badge URL for a look, defaults left out."""
    defaults = badge.Look()
    query = {"page_id": page_id}
    names = {"label": "left_text", "label_color": "left_color", "color": "right_color",
             "style": "style", "format": "format", "show": "show", "base": "base"}
    for field, name in names.items():
        value = getattr(look, field)
        if value != getattr(defaults, field):
            query[name] = str(value)
    return query


def _loggable(text: str) -> str:
    """Query text made safe for a log line: printable ASCII only."""
    return urllib.parse.quote(text, safe="/?&=:,.-_~%+", errors="surrogateescape")


# Command line ##############################################################


class _AccessLogHandler(logging.StreamHandler):
    """The access log on stdout. When stdout's reader goes away (`serve |
    head -1`), the access log ends with one line on stderr; serving goes on
    (the logging module would print a traceback for every request)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handleError(record)
            return
        access_log.removeHandler(self)
        access_log.addHandler(logging.NullHandler())
        # Nothing buffered may fail again at exit: stdout points at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.error("access log stopped: standard output was closed (%s)",
                  type(sys.exc_info()[1]).__name__)


def _setup_logging(quiet: bool) -> None:
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.WARNING)
    errors.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(errors)
    log.setLevel(logging.INFO)
    log.propagate = False
    access = _AccessLogHandler(sys.stdout)
    access.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access_log.handlers[:] = [access]
    access_log.setLevel(logging.WARNING if quiet else logging.INFO)
    access_log.propagate = False


# Serving with granian ######################################################


def _die_with_parent() -> None:
    """In granian's worker process: end when the serving process ends, even
    by kill -9, so no orphan keeps the port and the database file (Linux)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: systemd or the container ends the worker
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1


def worker_app(config: Config) -> Callable:
    """granian's worker process builds the store and the app here: a SQLite
    connection must not cross a fork, so the serving process opens none."""
    _die_with_parent()
    store = database.open_store(config.db, sync=config.sync, max_pages=config.max_pages,
                               busy_timeout_s=config.busy_timeout)
    return AsgiFront(config, create_app(config, store))


def _free_port(host: str, port: int) -> int:
    """Refuse an address in use (granian would fail with a Rust backtrace);
    port 0 picks a free port, which the start line shows."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            # As granian binds: the connections of a server that just stopped
            # (TIME_WAIT, a minute) must not refuse a restart; a port that a
            # program listens on is still refused.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return probe.getsockname()[1]
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _connection_cap(wanted: int) -> int:
    """The connection cap this process can hold: each connection is an open
    file, so the soft limit is raised towards the hard one (systemd's
    default soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FILES_BESIDE_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning("TALLY_CONNECTION_LIMIT %d lowered to %d: this process may open %d files "
                    "(ulimit -Hn)", wanted, soft - FILES_BESIDE_CONNECTIONS, soft)
        return max(1, soft - FILES_BESIDE_CONNECTIONS)
    return wanted


# The database, its -wal and -shm, the lock, logs, granian's pipes.
FILES_BESIDE_CONNECTIONS = 64


def http_server(config: Config, port: int, wsgi: bool = False) -> granian.server.MPServer:
    """granian with Tally's settings: one worker process, ASGI (without
    lifespan events: Tally needs none). bench.py serves its trivial apps
    with the same, and with wsgi=True a WSGI one (config.threads threads)."""
    return granian.server.MPServer(
        "tally", address=config.host, port=port,
        interface=granian.constants.Interfaces.WSGI if wsgi else granian.constants.Interfaces.ASGINL,
        workers=1, blocking_threads=config.threads if wsgi else 1,
        # granian holds one permit per open connection: the connection cap.
        backpressure=_connection_cap(config.connection_limit), backlog=1024,
        http=granian.constants.HTTPModes.http1, websockets=False,
        http1_settings=granian.http.HTTP1Settings(
            # A deadline for a request's line and headers, counted from the
            # connection's start or its previous answer: trickling bytes
            # cannot extend it, and idle connections close at it.
            header_read_timeout=config.channel_timeout * 1000,
            keep_alive=True, max_buffer_size=config.max_header_bytes),
        log_level=granian.log.LogLevels.warning)


def serve(config: Config) -> int:
    """Serve with granian: this process holds the lock, checks the database
    and supervises one worker process, which answers the requests."""
    _setup_logging(config.quiet)
    # The lock first: a restore in progress holds it, and the store must not
    # open (and migrate) a file that is being replaced. (PostgreSQL: none.)
    lock = database.server_lock(config.db)
    try:
        # Start-up checks here, so a bad database ends `serve` with its
        # message and exit code before anything listens.
        with database.open_store(config.db, sync=config.sync, max_pages=config.max_pages,
                                busy_timeout_s=config.busy_timeout) as store:
            description = store.describe()
        port = _free_port(config.host, config.port)
        server = http_server(config, port)
        print(f"Tally serving http://{config.host}:{port}/ with "
              f"{storage.masked(config.db)} ({description})", flush=True)
        # granian handles SIGTERM and SIGINT: it stops the worker, which
        # answers what it has in hand; every answered count is committed.
        server.serve(target_loader=functools.partial(worker_app, config), wrap_loader=False)
    finally:
        lock.release()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server.py", description="Tally: self-hosted visitor-counter badges.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("serve", help="serve badges over HTTP")
    run.add_argument("--host", help="address to listen on (TALLY_HOST, default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (TALLY_PORT, default 8080)")
    run.add_argument("--db", help="SQLite file (TALLY_DB, default data/counts.db)")
    run.add_argument("--threads", type=int,
                     help="threads for the routes bottle answers (TALLY_THREADS, default 4)")
    run.add_argument("--sync", choices=("full", "normal"), help="durability (TALLY_SYNC)")
    run.add_argument("--quiet", action="store_const", const=True,
                     help="no access log (TALLY_QUIET)")
    commands_module.add_commands(commands)
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The command line: `serve` here, owner commands in commands.py."""
    args = build_parser().parse_args(argv)
    try:
        config = config_module.from_env(os.environ if environ is None else environ)
        config = config.with_overrides(**{name: getattr(args, name, None) for name in
                                          ("host", "port", "db", "threads", "sync", "quiet")})
        if args.command == "serve":
            return serve(config)
        return commands_module.run(args, config)
    except (ConfigError, ParamError, storage.UnusableDatabase, commands_module.CommandError) as e:
        print(f"tally: {e}", file=sys.stderr)
        return 2
    except storage.ServerRunning as e:
        print(f"tally: {e}", file=sys.stderr)
        return 3
    except storage.StorageError as e:
        print(f"tally: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C: every write is a transaction, so nothing is half-done;
        # an import records its chunks and goes on when run again.
        print("tally: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `show p | head -2`: the reader left. Point stdout at nothing so the
        # interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("tally: output closed early (broken pipe)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
