"""Tally's HTTP side and command line: the pages of routes.py's table
(Pages), the ASGI front granian serves, `serve` and main(). The only
module importing bottle, granian and a2wsgi. It never runs SQL (the
stores do, behind storage.open_store), never builds SVG (badge.py does),
and answers the requests every view makes through answers.Badges, which
holds no HTTP.

How a request travels (`serve`, and the in-process tests alike): granian
(Rust) -> App, a few steps in order (proxied, refusal, the query made ASCII,
dispatch, log_request) -> /badge, /api/count and the old services' URLs:
answers.Badges on the event loop (a count awaits its group commit without
holding a thread); every other route: a2wsgi -> bottle's routes (Pages) in a
pool of threads.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
import time
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

import answers
import badge
import builder
import chart
import commands as commands_module
import counting
import config as config_module
import flavours
import logs
import owners
import pages
import github
import params
import routes
import storage
from answers import Answer, json_answer, loggable
from config import Config, ConfigError
from params import ParamError

log = logging.getLogger("tally")
access_log = logging.getLogger("tally.access")

VIEWS = Path(__file__).with_name("views")
PAGE_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

# The route table is routes.py's: each path once, with its kind and handler.


def respond(answer: Answer) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body=answer.body, status=answer.status, headers=answer.headers)


def _json(payload: object, status: int = 200) -> bottle.HTTPResponse:
    return respond(json_answer(payload, status))


def _html(body: str, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(body=body, status=status)
    response.set_header("Content-Type", "text/html; charset=utf-8")
    response.set_header("Content-Security-Policy", PAGE_CSP)
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("Cache-Control", "no-cache")
    return response


def _query() -> dict[str, str]:
    """The request's query (a2wsgi hands bottle the ASCII the front made of it)."""
    return params.parse_query_string(bottle.request.environ.get("QUERY_STRING", ""))


# bottle's routes: the pages and the JSON that views do not ask for #########


class Pages:
    """The routes bottle answers (routes.PAGES), each a method named by its
    route; a failure becomes its answer through answers.Badges, as the
    badges' do, in the kind its route gives (an HTML page for /stats)."""

    def __init__(self, config: Config, store: storage.Store, badges: answers.Badges) -> None:
        self.config, self.store, self.badges = config, store, badges
        self.index_view = bottle.SimpleTemplate(source=(VIEWS / "index.tpl").read_text("utf-8"))
        self.stats_view = bottle.SimpleTemplate(source=(VIEWS / "stats.tpl").read_text("utf-8"))
        self.github_view = bottle.SimpleTemplate(source=(VIEWS / "github.tpl").read_text("utf-8"))
        self.error_view = bottle.SimpleTemplate(source=(VIEWS / "error.tpl").read_text("utf-8"))
        self.manage_view = bottle.SimpleTemplate(source=(VIEWS / "manage.tpl").read_text("utf-8"))
        self.self_service = owners.SelfService(config, store, badges.allow)
        self.static_files = {name: (VIEWS / name).read_bytes() for name in ("tally.css", "tally.js")}

    def app(self) -> bottle.Bottle:
        app = bottle.Bottle()
        app.config["json.enable"] = False
        for route in routes.PAGES:
            app.route(route.path, method=list(route.methods), callback=getattr(self, route.handler))
        app.install(self.guard)
        app.add_hook("after_request", self.count_request)
        app.error(404)(lambda error: self.error_text("not found"))
        app.error(405)(lambda error: self.error_text("method not allowed"))
        return app

    def guard(self, callback: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            try:
                return callback(*args, **kwargs)
            except bottle.HTTPResponse:
                raise
            except Exception as e:
                return self.failure(e)
        return wrapper

    def failure(self, error: Exception) -> bottle.HTTPResponse:
        """A failed route's answer, in its route's kind: an HTML page for
        a page a browser asked for, JSON for the rest."""
        path, method = bottle.request.path, bottle.request.method
        route = routes.by_path(path)
        if route is not None and route.kind == routes.HTML:
            status, problem = self.badges.outcome(error, path, method)
            return _html(self.error_view.render(status=status, problem=problem), status)
        return respond(self.badges.failure(error, path, method))

    def count_request(self) -> None:
        route = bottle.request.route.rule if "bottle.route" in bottle.request.environ else "unknown"
        self.badges.metrics.requests.labels(route, str(bottle.response.status_code)).inc()

    @staticmethod
    def error_text(message: str) -> str:
        bottle.response.content_type = answers.JSON_TYPE
        return answers.json_body({"error": message}).decode()

    def page(self, values: dict[str, str]) -> pages.Named:
        """The page asked for (TALLY_ALLOW; a github: page under its lowercased name)."""
        return pages.name(values.get("page_id"), self.badges.allow)

    def timed(self, operation: str, call: Callable[[], object]) -> object:
        return self.badges.metrics.timed(operation, call)

    def shields(self) -> bottle.HTTPResponse:
        values = _query()
        page = self.page(values)
        look = params.parse_look(values)
        if page.countable and look.show in params.GITHUB_SHOWS:
            raise ParamError(f"show={look.show} needs a github: page")
        look, total, today = self.timed(  # type: ignore[misc]
            "counts" if page.countable else "github",
            lambda: self.badges.shown_numbers(page, look))
        # shields.io's endpoint schema: schemaVersion, label, message, color,
        # labelColor. It draws the style itself.
        return _json({"schemaVersion": 1, "label": look.label,
                      "message": badge.message(look, total, today),
                      "color": look.color, "labelColor": look.label_color})

    def history(self) -> bottle.HTTPResponse:
        values = _query()
        page = self.page(values)
        days = params.parse_days(values.get("days"))
        return _json(self.timed("history" if page.countable else "github",
                                lambda: pages.history(self.store, page, days)))

    def health(self) -> bottle.HTTPResponse:
        try:
            self.store.ping()
        except storage.StorageError as e:
            self.badges.outage.failed(e)
            return _json({"status": "unavailable"}, 503)
        return _json({"status": "ok"})

    def metrics(self) -> bottle.HTTPResponse:
        if not self.config.metrics:
            return _json({"error": "metrics are off (TALLY_METRICS=1 turns them on)"}, 404)
        response = bottle.HTTPResponse(body=self.badges.metrics.render())
        response.set_header("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)
        return response

    def index(self) -> bottle.HTTPResponse:
        try:
            values = _query()
            look = params.parse_look(values)
            page_id = values.get("page_id") or params.page_id_from_repo(
                bottle.request.query.getunicode("repo") or "") or "owner.repo"
            page_id = params.validate_page_id(page_id)
            error = None
        except ParamError as e:
            look, page_id, error = badge.Look(), "owner.repo", str(e)
        base = _public_base()
        badge_url = f"{base}/badge?{urllib.parse.urlencode(builder.badge_params(page_id, look))}"
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
        previews = {scheme: "/badge?" + urllib.parse.urlencode(
            {**builder.badge_params(page_id, builder.in_scheme(look, scheme)),
             "query_only": "true"}) for scheme in ("light", "dark")}
        return _html(self.index_view.render(
            old_url=old_url, moving=moving,
            page_id=page_id, look=look, error=error, badge_url=badge_url, previews=previews,
            snippets=builder.snippets(look.label, badge_url,
                                      *builder.scheme_urls(base, page_id, look)),
            quote=urllib.parse.quote, styles=params.STYLES, formats=params.FORMATS,
            shows=builder.SHOW_CHOICES, themes=builder.THEME_CHOICES,
            self_service=self.config.self_service,
            defaults=badge.Look()), 400 if error else 200)

    def stats(self) -> bottle.HTTPResponse:
        try:
            values = _query()
            page = self.page(values)
            days = params.parse_days(values.get("days"))
        except ParamError as e:
            return self.stats_error(str(e), 400)
        if not page.countable:
            try:
                return self.github_stats(page, days)
            except ParamError as e:  # not kept
                return self.stats_error(f"{e}: {page.repo} (github add starts keeping it)", 404)
        shown = self.timed("history", lambda: pages.stats(self.store, page, days))
        history, kept_from = shown["history"], shown["kept_from"]  # type: ignore[index]
        bars = chart.inline([(d.day, d.views) for d in history],
                            not_kept={d.day for d in history
                                      if kept_from is not None and d.day < kept_from})
        return _html(self.stats_view.render(error=None, quote=urllib.parse.quote, chart=bars,
                                            base=_public_base(),
                                            **shown))  # type: ignore[arg-type]

    def stats_error(self, error: str, status: int) -> bottle.HTTPResponse:
        return _html(self.stats_view.render(error=error, page_id=None, counts=None, history=[],
                                            best=None, chart=""), status)

    def github_stats(self, page: pages.Named, days: int) -> bottle.HTTPResponse:
        shown = self.timed("github", lambda: pages.github_stats(self.store, page, days))
        history = shown["history"]  # type: ignore[index]
        bars = chart.inline([(day, numbers.views if numbers else None)
                             for day, _, numbers in history],
                            not_kept={day for day, kind, _ in history if kind == "not kept"})
        return _html(self.github_view.render(quote=urllib.parse.quote, chart=bars,
                                             base=_public_base(), **shown))  # type: ignore[arg-type]

    def owners(self) -> bottle.HTTPResponse:
        """The owners' JSON API: owners.py decides (docs/owners.md)."""
        status, payload = self.self_service.answer(_owner_request())
        response = _json(payload, status)
        if "retry_after" in payload:
            response.set_header("Retry-After", str(payload["retry_after"]))
        return response

    def manage(self) -> bottle.HTTPResponse:
        status, shown = self.self_service.manage(_owner_request())
        return _html(self.manage_view.render(quote=urllib.parse.quote, **shown), status)

    def static(self, name: str) -> bottle.HTTPResponse:
        if name not in self.static_files:
            return _json({"error": "not found"}, 404)
        response = bottle.HTTPResponse(body=self.static_files[name])
        response.set_header("Content-Type", "text/css; charset=utf-8" if name.endswith(".css")
                            else "text/javascript; charset=utf-8")
        response.set_header("Cache-Control", "public, max-age=86400")
        response.set_header("X-Content-Type-Options", "nosniff")
        return response


def _owner_request() -> owners.Request:
    r = bottle.request
    # REMOTE_ADDR is the front's (proxied): bottle's remote_addr would
    # believe any X-Forwarded-For.
    return owners.Request(r.path, r.method, r.get_header("Content-Type", ""),
                          r.get_header("Authorization", ""), r.body.read(owners.BODY_MAX + 1),
                          r.environ.get("REMOTE_ADDR", ""), _public_base(),
                          r.environ.get("QUERY_STRING", ""))


def _public_base() -> str:
    # The address visitors used, as the reverse proxy passed it on.
    parts = bottle.request.urlparts
    return f"{parts.scheme}://{parts.netloc}"


# The ASGI front: a few small steps ########################################

MAX_BODY_BYTES = 65536


class App:
    """The ASGI app granian serves (docs/performance.md says why ASGI), a few
    steps in order: the proxy's headers (proxied), what no route may get
    (refusal), the query made ASCII, then /badge, /api/count and the old
    services' URLs to answers.Badges on the event loop and every other
    route to bottle's (a2wsgi, config.threads threads), then the access log.
    The steps are plain functions called in turn, not apps wrapping apps: a
    count that awaits its commit resumes through as few frames as it can."""

    def __init__(self, config: Config, store: storage.Store) -> None:
        self.badges = answers.Badges(config, store)
        self.routes = Pages(config, store, self.badges).app()
        self.wsgi = a2wsgi.WSGIMiddleware(self.routes, workers=config.threads)
        self.trusted_proxy, self.logging = config.trusted_proxy, not config.quiet
        self.log_addresses = config.log_addresses

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":  # granian's ASGI without lifespan sends nothing else
            return
        started = time.perf_counter()
        scope = proxied(scope, self.trusted_proxy)
        method, length, agent = scope["method"], b"0", b""
        for name, value in scope["headers"]:  # one pass: every request pays for it
            if name == b"content-length":
                length = value
            elif name == b"user-agent":
                agent = value
        refused, counted = refusal(scope, length), None
        if refused is not None:
            status = await send_answer(send, refused, method)
        else:
            if not scope["query_string"].isascii():
                scope = dict(scope, query_string=_ascii_query(scope["query_string"]))
            answer = await self.badges.answer(scope["path"], method,
                                              scope["query_string"].decode("ascii"),
                                              agent.decode("latin-1"),
                                              (scope.get("client") or ("",))[0])
            if answer is None:
                status = await self._routes(scope, receive, send)
            else:
                status, counted = await send_answer(send, answer, method), answer.counted
        if self.logging:
            log_request(scope, status, started, self.log_addresses, counted)

    async def _routes(self, scope: dict, receive: Callable, send: Callable) -> int:
        seen = {"status": 500}

        async def watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        async def received() -> dict:
            # a2wsgi reads a body with a coroutine; granian's receive
            # returns another kind of awaitable.
            return await receive()
        await self.wsgi(scope, received, watched)
        return seen["status"]


async def send_answer(send: Callable, answer: Answer, method: str) -> int:
    headers = [*_encoded(tuple(answer.headers)), (b"content-length", b"%d" % len(answer.body))]
    if answer.counted is not None:
        headers.append((_COUNTED, answer.counted.encode("latin-1")))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer.body})
    return answer.status


_COUNTED = counting.HEADER.lower().encode()


@functools.lru_cache(maxsize=64)
def _encoded(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as ASGI sends them. The same few sets repeat (Expires moves
    once a second), so each is encoded once."""
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers)


_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded")


def _is_forwarded(name: bytes) -> bool:
    return name.replace(b"_", b"-") in _FORWARDED


def proxied(scope: dict, trusted_proxy: str | None) -> dict:
    """X-Forwarded-For, -Proto and -Host are believed from the trusted proxy
    only (its last hop: the address that connected to it, and only if it is
    an IP address), and removed from every other request, in every spelling
    (a2wsgi and bottle read X_Forwarded_Host as HTTP_X_FORWARDED_HOST too),
    so nobody else can claim an address or a host name for the builder
    page's links."""
    headers = scope["headers"]
    if not any(_is_forwarded(name) for name, _ in headers):
        return scope
    forwarded = {name: value.decode("latin-1").rsplit(",", 1)[-1].strip()
                 for name, value in headers if name in _FORWARDED}
    scope = dict(scope, headers=[(n, v) for n, v in headers if not _is_forwarded(n)])
    peer = (scope.get("client") or ("",))[0]
    if trusted_proxy is None or peer != trusted_proxy:
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


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def refusal(scope: dict, length: bytes) -> Answer | None:
    """What no route may get: a path that is not UTF-8 (decoded with
    replacement characters, it would be routed by a guess) and a body (no
    route reads one) past MAX_BODY_BYTES (length: its Content-Length),
    refused unread."""
    if not _utf8_path(scope):
        return json_answer({"error": "path is not UTF-8"}, 400)
    if not length.isdigit():
        return json_answer({"error": "invalid Content-Length"}, 400)
    if int(length) > MAX_BODY_BYTES:
        return json_answer({"error": "request body too large"}, 413)
    return None


_QUERY_SAFE = bytes(range(0x21, 0x7F))


def _ascii_query(raw: bytes) -> bytes:
    """Every byte outside printable ASCII percent-escaped: raw "é" then reads
    as "%C3%A9" does (UTF-8, one page id) on every route, a byte that is not
    UTF-8 as a lone surrogate that validation refuses, and a2wsgi, which
    decodes the query as ASCII, never fails on it."""
    return urllib.parse.quote_from_bytes(raw, _QUERY_SAFE).encode()


def _utf8_path(scope: dict) -> bool:
    raw = scope.get("raw_path")
    if raw is None or b"%" not in raw and raw.isascii():
        return True
    try:
        urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def log_request(scope: dict, status: int, started: float, addresses: bool = True,
                counted: str | None = None) -> None:
    """The access log's line: the client (as the trusted proxy named it;
    "-" with TALLY_LOG_ADDRESSES=0), method, path and query escaped to
    printable ASCII, status and time, then for a view whether it counted
    ("counted=yes", "counted=no;bot", "counted=no;reserved_page_id"). No
    User-Agent, no cookie."""
    client = (scope.get("client") or ("-",))[0] if addresses else "-"
    query = scope["query_string"].decode("latin-1")
    access_log.info("%s %s %s%s %s %.1fms%s", loggable(client), scope["method"],
                    loggable(scope["path"]),
                    "?" + loggable(urllib.parse.unquote(query)) if query else "",
                    status, (time.perf_counter() - started) * 1000,
                    "" if counted is None else
                    " counted=" + counted.replace("; ", ";").replace(" ", "_"))


def create_app(config: Config, store: storage.Store) -> App:
    """The app that serves a store with these settings."""
    return App(config, store)


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
    store = storage.open_store(config.db, sync=config.sync, max_pages=config.max_pages,
                              busy_timeout_s=config.busy_timeout, keep_days=config.keep_days)
    # GitHub's traffic numbers are synced in a thread of this process: the
    # event loop never waits on GitHub.
    github.Syncer(store, config).start()
    return create_app(config, store)


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """Refuse an address in use (granian would fail with a Rust backtrace);
    port 0 picks a free port, which the start line shows (the tests and
    the benchmark pick theirs with it too)."""
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


# How long a stopping worker may take to answer what it has in hand.
WORKER_KILL_S = 5


class SignalSafeEvent:
    """What granian's serving process waits on (main_loop_interrupt), set by
    its SIGTERM and SIGINT handlers. granian's own, a threading.Event, takes
    a lock in set() that its wait() holds for a moment on entry: a signal
    handled in that moment, in the same thread, deadlocked serve for good
    (seen about once in 50 SIGTERMs sent as the worker started). Here set()
    only sets a flag, and wait() looks at it every WAIT_STEP_S."""

    WAIT_STEP_S = 0.1

    def __init__(self) -> None:
        self._flag = False

    def set(self) -> None:
        self._flag = True

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.WAIT_STEP_S)
        return True


def http_server(config: Config, port: int, wsgi: bool = False) -> granian.server.MPServer:
    """granian with Tally's settings: one worker process, ASGI (without
    lifespan events: Tally needs none). bench/speed.py serves its trivial apps
    with the same, and with wsgi=True a WSGI one (config.threads threads)."""
    server = granian.server.MPServer(
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
        # A SIGTERM that reaches the worker before it has set its own
        # handlers (while granian and Tally start it) is swallowed, and
        # granian would wait for it forever: past this it is killed. A
        # worker killed loses no answered count (each is committed first).
        workers_kill_timeout=WORKER_KILL_S,
        log_level=granian.log.LogLevels.warning)
    server.main_loop_interrupt = SignalSafeEvent()  # type: ignore[assignment]
    return server


def serve(config: Config) -> int:
    """Serve with granian: this process holds the lock, checks the database
    and supervises one worker process, which answers the requests."""
    logs.setup(config.quiet)
    # The lock first: a restore in progress holds it, and the store must not
    # open (and migrate) a file that is being replaced. (PostgreSQL: none.)
    lock = storage.server_lock(config.db)
    try:
        # Start-up checks here, so a bad database ends `serve` with its
        # message and exit code before anything listens.
        with storage.open_store(config.db, sync=config.sync, max_pages=config.max_pages,
                               busy_timeout_s=config.busy_timeout) as store:
            description = store.describe()
        port = free_port(config.host, config.port)
        server = http_server(config, port)
        print(f"Tally serving http://{config.host}:{port}/ with "
              f"{storage.masked(config.db)} ({description})", flush=True)
        # granian handles SIGTERM and SIGINT: it stops the worker, which
        # answers what it has in hand; every answered count is committed.
        server.serve(target_loader=functools.partial(worker_app, config), wrap_loader=False)
    finally:
        lock.release()
    return 0


# Command line ##############################################################


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
    """The command line: `serve` here, owner commands in commands/."""
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
