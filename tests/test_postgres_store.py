"""stores/postgres.py against a real PostgreSQL server, and real Tally server
processes on one database (the storage tests in test_storage.py run on both
backends too)."""

from __future__ import annotations

import collections
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

import conftest
import storage
from stores import values
from conftest import GUARD_OFF, ROOT, tally, wait_until

TOTAL_RE = re.compile(rb">(\d+)</text></g>")


@pytest.fixture
def pg() -> str:
    return conftest.fresh_postgres()


def with_password(url: str, password: str) -> str:
    """The URL with a user password (the test server trusts anyone: it is ignored)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


def shown(live, page_id: str) -> int:
    status, _, body = live.get("/badge?page_id=" + urllib.parse.quote(page_id))
    assert status == 200, body
    return int(TOTAL_RE.search(body).group(1))


def test_two_servers_on_one_database_count_exactly(live_server, pg):
    first, second = live_server(GUARD_OFF, db=pg), live_server(GUARD_OFF, db=pg)
    pages = [f"page-{i % 8}" for i in range(4000)]

    def one(item):
        i, page_id = item
        return page_id, shown(first if i % 2 else second, page_id)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, enumerate(pages)))
    for i in range(8):
        counts = sorted(n for p, n in results if p == f"page-{i}")
        assert counts == list(range(1, 501))
        for live in (first, second):
            answer = json.loads(live.get(f"/api/count?page_id=page-{i}")[2])
            assert answer["total"] == 500


def test_a_loop_split_between_servers_shares_one_allowance(live_server, pg):
    # The guard on: one loop on a new page, alternating between two servers
    # on one database, counts one burst (60), not one a server.
    servers = live_server(db=pg), live_server(db=pg)
    said = collections.Counter(
        servers[i % 2].get("/badge?page_id=looped")[1]["X-Tally-Counted"] for i in range(400))
    assert set(said) == {"yes", "no; held"} and 60 <= said["yes"] <= 62
    answer = json.loads(servers[0].get("/api/count?page_id=looped")[2])
    assert (answer["total"], answer["held"]) == (said["yes"], said["no; held"])


def test_servers_on_one_database_share_owners_and_rate_limits(live_server, pg):
    # Self-service (issue 32): a key made on one server works on the other,
    # and wrong keys sent to both count against one limit.
    on = {"TALLY_SELF_SERVICE": "1"}
    first, second = live_server(on, db=pg), live_server(on, db=pg)
    status, _, made = first.post("/api/pages", {"page_id": "shared.page"})
    assert status == 201
    key = made["owner_key"]
    assert second.post("/api/pages", {"page_id": "shared.page"})[0] == 409
    assert second.post("/api/pages/set", {"page_id": "shared.page", "total": 77}, key)[0] == 200
    assert json.loads(first.get("/api/count?page_id=shared.page")[2])["total"] == 77
    said = [(first, second)[i % 2].post("/api/pages/set", {"page_id": "shared.page", "total": 1},
                                        f"tally_guess{i}")[0] for i in range(7)]
    assert said == [403] * 5 + [429, 429]
    assert json.loads(second.get("/api/count?page_id=shared.page")[2])["total"] == 77


def test_kill_9_of_one_server_loses_no_answered_count(live_server, pg):
    victim, survivor = live_server(GUARD_OFF, db=pg), live_server(GUARD_OFF, db=pg)
    answered: list[int] = []
    stop = threading.Event()

    def load(live) -> None:
        while not stop.is_set():
            try:
                status, _, body = live.get("/badge?page_id=hot")
            except (OSError, http.client.HTTPException):
                continue  # the killed server's connections, some cut mid-answer
            if status == 200:
                answered.append(int(TOTAL_RE.search(body).group(1)))
    threads = [threading.Thread(target=load, args=(live,)) for live in (victim, survivor) * 4]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) > 300)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    before = len(answered)
    wait_until(lambda: len(answered) > before + 200)  # the other keeps serving
    stop.set()
    for t in threads:
        t.join()
    stored = json.loads(survivor.get("/api/count?page_id=hot")[2])["total"]
    assert len(set(answered)) == len(answered)  # no count answered twice
    assert max(answered) <= stored  # every answered count is stored
    assert stored - len(answered) <= 4  # at most the views in flight at the kill


@pytest.fixture
def own_postgres(pg):
    """A PostgreSQL server of the test's own (scripts/postgres.sh, in a folder
    the postgres user can reach), so that stopping it stops no other test's."""
    folder = tempfile.mkdtemp(prefix="tally-pg-own-")
    os.chmod(folder, 0o755)
    script = str(ROOT / "scripts" / "postgres.sh")
    url = subprocess.run([script, "start", folder], check=True, timeout=120, capture_output=True,
                         text=True).stdout.strip()
    yield url, folder
    subprocess.run([script, "stop", folder], timeout=60, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_restarted_under_load_answers_503_then_resumes(live_server, own_postgres):
    url, folder = own_postgres
    live = live_server(db=url, env={"TALLY_BUSY_TIMEOUT": "2", **GUARD_OFF})
    answered: list[int] = []
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, _, body = live.get("/badge?page_id=restart")
            statuses.append(status)
            if status == 200:
                answered.append(int(TOTAL_RE.search(body).group(1)))
            else:
                time.sleep(0.05)
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) > 100)
    script = str(ROOT / "scripts" / "postgres.sh")
    subprocess.run([script, "stop", folder], check=True, timeout=60)
    wait_until(lambda: 503 in statuses)
    assert live.get("/healthz")[0] == 503
    subprocess.run([script, "start", folder], check=True, timeout=60,
                   capture_output=True)
    resumed = len(answered)
    wait_until(lambda: len(answered) > resumed + 100, timeout=60)
    stop.set()
    for t in threads:
        t.join()
    assert live.get("/healthz")[0] == 200
    stored = json.loads(live.get("/api/count?page_id=restart")[2])["total"]
    assert sorted(answered) == list(range(1, len(answered) + 1))
    assert stored == len(answered)
    log = live.log.read_text()
    assert "database unavailable" in log and "database recovered" in log
    # One line per outage and recovery, nothing from the driver besides.
    assert len(log.splitlines()) <= 1 + 2 * log.count("database recovered") + 2, log


def test_export_from_sqlite_imports_into_postgresql_and_back_unchanged(db_path, tmp_path, pg):
    with storage.open_store(db_path) as s:
        for i in range(50):
            s.record_view(f"page-{i % 7}")
        s.set_total("=formula", 12)
        s.set_total("ünïcödé 访客", 3)
    first = tmp_path / "first.json"
    assert tally("export", "--out", str(first), db=db_path).returncode == 0
    assert tally("import", str(first), db=pg).returncode == 0
    again = tally("export", db=pg)
    back = json.loads(again.stdout)
    assert back["pages"] == json.loads(first.read_text())["pages"]
    csv_out = tmp_path / "pg.csv"
    assert tally("export", "--format", "csv", "--out", str(csv_out), db=pg).returncode == 0
    fresh = str(tmp_path / "fresh.db")
    assert tally("import", str(csv_out), db=fresh).returncode == 0
    assert json.loads(tally("export", db=fresh).stdout)["pages"] == back["pages"]


def test_every_owner_command_works_on_postgresql(pg, tmp_path):
    assert tally("set", "page-1", "5000", db=pg).returncode == 0
    assert tally("set", "page-2", "7", db=pg).returncode == 0
    top = tally("top", "--limit", "1", db=pg).stdout.split()
    assert top == ["page-1", "5,000"]
    assert tally("rename", "page-2", "page-1", db=pg).returncode == 2
    assert tally("rename", "page-2", "page-1", "--merge", db=pg).returncode == 0
    assert "total   5,007" in tally("show", "page-1", db=pg).stdout
    assert tally("rename", "page-1", "moved", db=pg).returncode == 0
    plain = tmp_path / "plain.csv"
    plain.write_text("moved,3\nnew,4\n")
    assert "would import 2 pages (1 new, 1 changed" in tally(
        "import", str(plain), "--dry-run", "--mode", "add", db=pg).stdout
    assert tally("import", str(plain), "--mode", "add", db=pg).returncode == 0
    assert "total   5,010" in tally("show", "moved", db=pg).stdout
    assert tally("delete", "moved", "--yes", db=pg).returncode == 0
    assert tally("show", "moved", db=pg).returncode == 2
    twice = tmp_path / "twice.csv"
    twice.write_text("a,1\na,2\n")
    result = tally("import", str(twice), db=pg)
    assert result.returncode == 2 and "page_id 'a' appears twice" in result.stderr


@pytest.mark.parametrize("command", [["backup", "x.db"], ["restore", "x.db"]])
def test_backup_and_restore_point_to_pg_dump(pg, command):
    result = tally(*command, db=pg)
    assert result.returncode == 2 and "pg_dump" in result.stderr
    assert result.stderr.count("\n") == 1


def test_the_password_never_shows(live_server, pg):
    url = with_password(pg, "s3cret-word")
    live = live_server(db=url, env={"TALLY_QUIET": "0"})
    live.get("/badge?page_id=p")
    conftest.stop_server(live)
    log = live.log.read_text()
    assert "postgresql://postgres:***@" in log and "s3cret-word" not in log
    refused = tally("serve", "--port", "0", db=with_password(
        "postgresql://postgres@127.0.0.1:1/tally", "s3cret-word"))
    assert refused.returncode == 2 and "s3cret-word" not in refused.stderr + refused.stdout
    assert "***" in refused.stderr


def test_a_server_that_never_answers_stops_start_up_in_bounded_time():
    # A loopback socket that accepts connections and never speaks.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        result = tally("serve", "--port", "0", db=f"postgresql://u@127.0.0.1:{port}/db",
                       env={"TALLY_BUSY_TIMEOUT": "2"})
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert time.monotonic() - started < 30
    finally:
        silent.close()


def test_a_newer_schema_or_foreign_tables_are_refused(pg):
    import psycopg
    storage.open_store(pg).close()
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("UPDATE tally_schema SET version = 99")
    result = tally("serve", "--port", "0", db=pg)
    assert result.returncode == 2 and "newer" in result.stderr
    conftest.fresh_postgres()
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("CREATE TABLE pages (id int)")
    result = tally("serve", "--port", "0", db=pg)
    assert result.returncode == 2 and "not a Tally database" in result.stderr


def test_a_server_older_than_13_is_refused_with_its_version():
    # No such server here: the check itself, with the numbers psycopg gives.
    conftest.needs_psycopg()
    from stores import postgres
    with pytest.raises(storage.UnusableDatabase,
                       match=r"PostgreSQL 12\.22; Tally needs 13 or newer") as refused:
        postgres.check_server(120022, "postgresql://u:secret@h/db")
    assert "secret" not in str(refused.value)
    postgres.check_server(130000, "postgresql://h/db")


def test_every_test_that_needs_psycopg_skips_where_it_cannot_be_imported(tmp_path):
    # As on 32-bit ARM without libpq: psycopg's own error on import.
    (tmp_path / "psycopg.py").write_text("raise ImportError('no pq wrapper available')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TALLY_TEST_POSTGRES")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(ROOT / "tests" / "test_postgres_store.py"), "-k",
                             "older_than_13 or unlogged or two_servers"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**env, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b4 skipped", result.stdout), result.stdout
    assert "failed" not in result.stdout and "passed" not in result.stdout


def test_without_psycopg_a_postgresql_url_is_one_line(tmp_path, pg):
    # A psycopg that cannot be imported, as on a SQLite-only install.
    (tmp_path / "psycopg.py").write_text("raise ImportError('no psycopg here')\n")
    result = subprocess.run([sys.executable, str(ROOT / "server.py"), "top", "--db", pg],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "make setup-postgres" in result.stderr
    assert result.stderr.count("\n") == 1


def test_libpq_key_value_form_selects_postgresql(pg):
    parts = urllib.parse.urlsplit(pg)
    query = dict(urllib.parse.parse_qsl(parts.query))
    keywords = (f"host={query['host']} port={query.get('port', 5432)} "
                f"dbname={parts.path.lstrip('/')} user={parts.username}")
    assert storage.is_postgres(keywords)
    with storage.open_store(keywords) as store:
        assert store.record_view("kv").total == 1
        assert store.describe().startswith("PostgreSQL")
    with storage.open_store(pg) as store:
        assert store.counts("kv").total == 1


# Hardening, round three ####################################################


@pytest.fixture
def other_database(pg):
    """A database of the test server made with given options; dropped after.
    Its name is the process's own under pytest-xdist: two processes running
    the same test's cases dropped each other's database."""
    import psycopg
    made = []

    def make(name: str, options: str) -> str:
        name = f"{name}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name} {options} TEMPLATE template0")
        made.append(name)
        parts = urllib.parse.urlsplit(pg)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))
    yield make
    with psycopg.connect(pg, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def tables_of(url: str) -> set[str]:
    import psycopg
    with psycopg.connect(url) as conn:
        return {name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["set", "p", "1"], ["top"],
                                     ["import", "-"]])
def test_a_database_that_is_not_utf8_is_refused_before_anything_is_created(
        other_database, encoding, command):
    url = other_database(f"tally_{encoding.lower()}", f"ENCODING '{encoding}' LC_COLLATE 'C' "
                                                       f"LC_CTYPE 'C'")
    result = tally(*command, db=url, stdin="p,1\n")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"encoding is {encoding}" in result.stderr and "Traceback" not in result.stderr
    assert tables_of(url) == set()


@pytest.mark.parametrize("command", [["top"], ["show", "p"], ["export"],
                                     ["import", "-", "--dry-run"]])
def test_a_reading_command_creates_nothing_in_another_applications_database(
        other_database, command):
    import psycopg
    url = other_database("tally_app2", "")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE users (id int)")
    result = tally(*command, db=url, stdin="p,1\n")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert tables_of(url) == {"users"}


def test_a_reading_command_on_an_empty_database_creates_nothing(other_database):
    url = other_database("tally_empty", "")
    result = tally("top", db=url)
    assert result.returncode == 2 and "no Tally tables" in result.stderr
    assert tables_of(url) == set()


def test_imports_beside_served_views_never_deadlock_under_an_icu_collation(other_database):
    # en-US sorts "a" before "B", Python (and COLLATE "C") "B" before "a": a
    # writer sorting one way and another the other way deadlocked.
    url = other_database("tally_icu", "ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                                      "LC_COLLATE 'C' LC_CTYPE 'C'")
    ids = [f"{c}{i}" for i in range(40) for c in ("a", "B", "b", "A")]
    pages = [storage.Page(p, 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                          {"2026-01-01": 1}) for p in ids]
    failures: list[Exception] = []
    views = {"n": 0}
    lock = threading.Lock()
    with storage.open_store(url) as server:
        def count(seed: int) -> None:
            for i in range(300):
                try:
                    server.record_view(ids[(seed * 7 + i * 13) % len(ids)])
                    with lock:
                        views["n"] += 1
                except storage.StorageError as e:
                    failures.append(e)

        def imports() -> None:
            with storage.open_store(url) as store:
                for _ in range(4):
                    try:
                        store.import_pages(pages, "add")
                    except (storage.StorageError, storage.ImportInterrupted) as e:
                        failures.append(e)
        threads = [threading.Thread(target=count, args=(s,)) for s in range(16)]
        threads += [threading.Thread(target=imports) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        total = sum(server.counts(p).total for p in ids)
    assert total == views["n"] + 3 * 4 * len(ids)


def hold_rows(url: str):
    """A connection that holds rows (SELECT ... FOR UPDATE) until commit()."""
    import psycopg
    return psycopg.connect(url)


def waiting_for_locks(url: str, n: int) -> None:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'").fetchone()[0] == n)


def in_thread(failures: list, store, page_id: str, **kwargs) -> threading.Thread:
    def run():
        try:
            store.record_view(page_id, **kwargs)
        except storage.StorageError as e:
            failures.append(e)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_one_visitor_through_two_servers_at_once_never_deadlocks(pg):
    # Each view's statement locked its visitor's hash, then its page. A batch
    # with a visitor known already (no hash to write) ahead of a new one locked
    # the page first, then the new hash; another server holding that hash
    # waited for the page: a deadlock, and 503 for one batch's views. The
    # order is forced with two connections holding rows the writers need.
    page, known, new = "shared", ("192.0.2.1", "Firefox"), ("192.0.2.2", "Firefox")
    failures: list[Exception] = []
    with storage.open_store(pg) as first, storage.open_store(pg) as second, \
            hold_rows(pg) as gate, hold_rows(pg) as hold:
        first.record_view("gate")
        first.record_view(page, visitor=known)
        gate.execute("SELECT 1 FROM pages WHERE page_id = 'gate' FOR UPDATE")
        hold.execute("SELECT 1 FROM pages WHERE page_id = %s FOR UPDATE", (page,))
        threads = [in_thread(failures, first, "gate")]
        waiting_for_locks(pg, 1)
        # Both wait in first's queue while its writer is held: one batch.
        threads += [in_thread(failures, first, page, visitor=known),
                    in_thread(failures, first, page, visitor=new)]
        wait_until(lambda: first.writer._queue.qsize() == 2)
        gate.commit()
        waiting_for_locks(pg, 1)
        threads.append(in_thread(failures, second, page, visitor=new))
        waiting_for_locks(pg, 2)
        hold.commit()
        for thread in threads:
            thread.join()
        assert failures == []
        assert (first.counts(page).total, first.counts(page).visitors) == (4, 2)


def test_a_key_rotated_on_another_server_meanwhile_stops_the_action_in_flight(pg):
    # An owner's action checked its key, then a rotate on another server (held
    # open here) changes it before the action is written: the action waits for
    # that row, sees the new key, and is rolled back with nothing recorded.
    now = datetime.datetime(2026, 12, 7, 12, tzinfo=datetime.timezone.utc)
    failures: list[Exception] = []
    with storage.open_store(pg) as store, hold_rows(pg) as other:
        store.owners.create("p", "old", now, None)
        store.set_total("p", 5, now)
        other.execute("UPDATE owners SET key_hash = 'new' WHERE page_id = 'p'")

        def act():
            try:
                store.set_total("p", 9, now, then=store.owners.recorded(
                    "p", "old", "set", lambda _: "total set to 9", None, now))
            except storage.KeyChanged as e:
                failures.append(e)
        thread = threading.Thread(target=act)
        thread.start()
        waiting_for_locks(pg, 1)
        other.commit()
        thread.join()
        assert len(failures) == 1
        assert store.counts("p").total == 5 and store.owners.key_hash("p") == "new"
        assert [a.action for a in store.owners.actions("p")] == ["created"]


def test_a_bot_s_view_beside_a_counted_one_never_deadlocks(pg):
    # A bot's view that does not count writes only its page's day row; ahead
    # of a counted view of the same page in one batch, it locked the day row
    # before the page's row, which another server's view, holding the page's
    # row, then waited for: a deadlock. A bot's view now locks the page's row first.
    page, failures = "shared", []
    with storage.open_store(pg) as first, storage.open_store(pg) as second, \
            hold_rows(pg) as gate, hold_rows(pg) as hold:
        first.record_view("gate")
        first.record_view(page)
        gate.execute("SELECT 1 FROM pages WHERE page_id = 'gate' FOR UPDATE")
        hold.execute("SELECT 1 FROM pages WHERE page_id = %s FOR UPDATE", (page,))
        threads = [in_thread(failures, second, page)]  # first in line for the page
        waiting_for_locks(pg, 1)
        threads.append(in_thread(failures, first, "gate"))
        waiting_for_locks(pg, 2)
        threads += [in_thread(failures, first, page, bot=True, counted=False),
                    in_thread(failures, first, page)]
        wait_until(lambda: first.writer._queue.qsize() == 2)
        gate.commit()
        waiting_for_locks(pg, 2)  # second and first wait for the page
        hold.commit()
        for thread in threads:
            thread.join()
        assert failures == []
        assert first.counts(page).total == 3
        assert first.days(page, 1)[-1].bots == 1


def test_the_page_cap_is_checked_exactly_only_near_it(pg):
    # Far from the cap the statements skip it (no count of the table per
    # new page); within a tenth of it (at least a batch) they check it exactly.
    with storage.open_store(pg, max_pages=100_000) as store:
        store.record_view("first")
        conn = store.backend.connection()
        assert store.backend.page_cap(conn) is None
        store.backend.pages_seen = 95_000
        assert store.backend.page_cap(conn) == 100_000
    with storage.open_store(pg, max_pages=3) as small:
        for page_id in ("a", "b"):
            small.record_view(page_id)
        with pytest.raises(storage.PageLimitReached):
            small.record_view("c")
        assert small.backend.pages_seen == 3  # read once, then its own new pages added


# The compact layout (schema 5, issue 23) ######################################


def version_4_database(url: str, pages: int) -> tuple[list, list]:
    """A database of schema 4 (the layout before the compact one) with
    `pages` pages of 1 to 4 days each; its rows, in order."""
    import psycopg
    from stores import postgres
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            for _, body in values.migrations(postgres.SCHEMA_FILE)[:4]:
                for statement in values.statements(body):
                    conn.execute(statement)
            conn.execute("UPDATE tally_schema SET version = 4")
            conn.execute(
                "INSERT INTO pages (page_id, total, created_at, last_seen, visitors) "
                "SELECT format('user%%s.repo-%%s', i, to_hex(i * 7919)), i %% 1000 + 40, "
                "'2026-01-01T00:00:00Z', '2026-12-01T00:00:00Z', i %% 17 "
                "FROM generate_series(0, %s) i", (pages - 1,))
            conn.execute(
                "INSERT INTO daily (page_id, day, views, visitors, bots) "
                "SELECT page_id, to_char(date '2026-11-01' + (j * 9 + total % 5)::int, 'YYYY-MM-DD'), "
                "total % 10 + j, (total % 10 + j) / 2, j % 2 "
                "FROM pages, generate_series(0, 3) j WHERE j <= total % 4")
        return rows(conn)


def rows(conn) -> tuple[list, list]:
    return (conn.execute('SELECT page_id, total, created_at, last_seen, visitors FROM pages '
                         'ORDER BY page_id COLLATE "C"').fetchall(),
            conn.execute('SELECT page_id, day, views, visitors, bots FROM daily '
                         'ORDER BY page_id COLLATE "C", day').fetchall())


def test_the_compact_migration_keeps_every_number_of_200000_pages(pg):
    pages, days = version_4_database(pg, 200_000)
    assert len(pages) == 200_000 and len(days) > 400_000
    with storage.open_store(pg, busy_timeout_s=1.0) as store:  # the migration has no time limit
        migrated = list(store.pages())
        assert store.page_count() == 200_000
    assert [(p.page_id, p.total, p.created_at, p.last_seen, p.visitors) for p in migrated] == pages
    assert [(p.page_id, day, p.days[day], p.visitor_days.get(day, 0), p.bot_days.get(day, 0))
            for p in migrated for day in sorted(p.days)] == days
    import psycopg
    from stores import postgres
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT version FROM tally_schema").fetchone()[0] == \
            postgres.SCHEMA_VERSION
        assert conn.execute("SELECT pg_typeof(page)::text, pg_typeof(day)::text FROM daily "
                            "LIMIT 1").fetchone() == ("bigint", "date")


def test_a_migration_that_would_change_a_count_is_rolled_back(pg, monkeypatch):
    import psycopg
    from stores import postgres
    before = version_4_database(pg, 50)
    real = values.migrations
    monkeypatch.setattr(postgres, "migrations", lambda path: [
        (n, body.replace("ON p.page_id = d.page_id", "ON p.page_id = d.page_id AND d.views != 1"))
        for n, body in real(path)])
    with pytest.raises(storage.UnusableDatabase, match="migration 5 would change the counts"):
        storage.open_store(pg)
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT version FROM tally_schema").fetchone()[0] == 4
        assert rows(conn) == before
    assert postgres.REWRITES == {5}


def test_reading_commands_ask_for_serve_on_an_older_schema(pg):
    version_4_database(pg, 3)
    result = tally("top", db=pg)
    assert result.returncode != 0 and "start `serve` once to migrate it" in result.stderr


def test_the_days_salt_and_hashes_are_unlogged_so_no_replica_or_wal_archive_holds_them(pg):
    with storage.open_store(pg) as store:
        store.record_view("blog", visitor=("198.51.100.1", conftest.BROWSER))
    import psycopg
    with psycopg.connect(pg) as conn:
        kinds = dict(conn.execute("SELECT relname, relpersistence FROM pg_class WHERE relname "
                                  "IN ('visitor_salts', 'visitor_hashes')").fetchall())
        assert kinds == {"visitor_salts": "u", "visitor_hashes": "u"}
        assert conn.execute("SELECT count(*) FROM visitor_hashes").fetchone()[0] == 1
