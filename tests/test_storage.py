"""The stores (storage.py, stores/) against real SQLite files."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import conftest
import params
import storage
from stores import sqlite, sqlite_file, writer
from conftest import wait_until

DAY1 = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY2 = datetime.datetime(2026, 11, 2, 9, 30, tzinfo=datetime.timezone.utc)

both_paths = pytest.mark.parametrize("use_returning", [True, False],
                                     ids=["returning", "upsert-then-select"])


@pytest.fixture(params=["sqlite-returning", "sqlite-upsert-then-select", "postgres"])
def counting(request, db_path):
    """Open a store on each way of counting: SQLite with RETURNING, SQLite
    3.34's UPSERT then SELECT, and PostgreSQL."""
    stores = []
    url = conftest.fresh_postgres() if request.param == "postgres" else None

    def make(**settings):
        if url is not None:
            s = storage.open_store(url, **settings)
        else:
            s = sqlite.Store(db_path, use_returning=request.param == "sqlite-returning",
                                   **settings)
        stores.append(s)
        return s
    yield make
    for s in stores:
        s.close()


def test_first_view_creates_the_page_with_total_one(counting):
    with counting() as s:
        assert s.record_view("alice.repo", DAY1) == storage.Counts(total=1, today=1)


def test_views_add_up_and_today_restarts_each_utc_day(counting):
    with counting() as s:
        for _ in range(3):
            s.record_view("p", DAY1)
        assert s.record_view("p", DAY2) == storage.Counts(total=4, today=1)
        assert s.history("p", 2, DAY2) == [("2026-11-01", 3), ("2026-11-02", 1)]


def test_concurrent_views_get_each_count_exactly_once(counting):
    seen: list[int] = []
    lock = threading.Lock()
    with counting() as s:
        def worker():
            for _ in range(100):
                total = s.record_view("hot").total
                with lock:
                    seen.append(total)
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seen) == list(range(1, 1601))
        assert s.counts("hot").total == 1600


def test_unknown_page_reads_as_zero(any_store):
    assert any_store.counts("nobody") == storage.Counts(0, 0)


def test_reading_does_not_count(any_store):
    any_store.record_view("p")
    any_store.counts("p")
    assert any_store.counts("p").total == 1


def test_page_ids_are_compared_exactly(any_store):
    any_store.record_view("Alice.Repo")
    any_store.record_view("alice.repo ")
    assert any_store.counts("alice.repo") == storage.Counts(0, 0)
    assert any_store.counts("Alice.Repo").total == 1


def test_database_is_in_wal_mode_with_full_sync(db_path, store):
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.backend.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sync_normal_is_applied(db_path):
    with sqlite.Store(db_path, sync="normal") as s:
        assert s.backend.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_new_file_gets_the_current_schema_version(db_path, store):
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_file.SCHEMA_VERSION


def test_reopening_keeps_counts_and_version(db_path):
    with sqlite.Store(db_path) as s:
        s.record_view("p")
    with sqlite.Store(db_path) as s:
        assert s.counts("p").total == 1
        assert s.record_view("p").total == 2


def test_an_empty_sqlite_file_is_upgraded(db_path):
    os.makedirs(os.path.dirname(db_path))
    sqlite3.connect(db_path).execute("PRAGMA page_size=4096").connection.close()
    with sqlite.Store(db_path) as s:
        assert s.record_view("p").total == 1
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_file.SCHEMA_VERSION


def test_another_programs_sqlite_file_is_refused_and_left_alone(db_path):
    os.makedirs(os.path.dirname(db_path))
    sqlite3.connect(db_path).execute("CREATE TABLE unrelated (x)").connection.close()
    before = open(db_path, "rb").read()
    with pytest.raises(storage.UnusableDatabase, match="not a Tally database"):
        sqlite.Store(db_path)
    assert open(db_path, "rb").read() == before
    assert not os.path.exists(db_path + "-wal")


def test_newer_schema_version_is_refused_and_file_untouched(db_path):
    os.makedirs(os.path.dirname(db_path))
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = open(db_path, "rb").read()
    with pytest.raises(storage.UnusableDatabase, match="newer"):
        sqlite.Store(db_path)
    assert open(db_path, "rb").read() == before
    assert not os.path.exists(db_path + "-wal")


def test_file_that_is_not_sqlite_is_refused_and_untouched(db_path):
    os.makedirs(os.path.dirname(db_path))
    with open(db_path, "wb") as f:
        f.write(b"these are my notes, not a database\n" * 200)
    before = open(db_path, "rb").read()
    with pytest.raises(storage.UnusableDatabase, match="not a database"):
        sqlite.Store(db_path)
    assert open(db_path, "rb").read() == before


def test_truncated_database_is_refused(db_path):
    with sqlite.Store(db_path) as s:
        for i in range(2000):
            s.record_view(f"page-{i}")
    size = os.path.getsize(db_path)
    with open(db_path, "r+b") as f:
        f.truncate(size // 2)
    before = open(db_path, "rb").read()
    with pytest.raises(storage.UnusableDatabase):
        sqlite.Store(db_path)
    assert open(db_path, "rb").read() == before


def test_migrations_are_numbered_in_order_and_only_verified_rewrites_drop():
    numbers = [n for n, _ in sqlite_file.migrations()]
    assert numbers == list(range(1, len(numbers) + 1))
    dropping = {n for n, body in sqlite_file.migrations() if "drop " in body.lower()}
    assert dropping == sqlite_file.REWRITES == {5, 6}


def test_page_limit_refuses_new_pages_but_keeps_counting_old_ones(counting):
    with counting(max_pages=2) as s:
        s.record_view("a")
        s.record_view("b")
        with pytest.raises(storage.PageLimitReached):
            s.record_view("c")
        assert s.record_view("a").total == 2
        assert s.counts("c") == storage.Counts(0, 0)
        assert s.page_count() == 2


def test_page_limit_holds_on_both_paths(counting):
    with counting(max_pages=1) as s:
        s.record_view("a")
        with pytest.raises(storage.PageLimitReached):
            s.record_view("b")
        assert s.page_count() == 1


def test_full_disk_refuses_counts_keeps_stored_ones_and_recovers(db_path):
    with sqlite.Store(db_path) as s:
        s.record_view("kept")
    pages = os.path.getsize(db_path) // 4096
    with sqlite.Store(db_path, max_page_count=pages + 1) as s:
        with pytest.raises(storage.StorageFull):
            for i in range(5000):
                s.record_view(f"filler-{i:05d}-" + "x" * 200)
        assert s.counts("kept").total == 1
        stored = s.page_count()
        with pytest.raises(storage.StorageFull):
            s.record_view("another-new-page-" + "y" * 200)
        assert s.page_count() == stored
    with sqlite.Store(db_path) as s:  # space is back
        assert s.record_view("kept").total == 2


def test_read_only_database_fails_to_count_with_a_clear_error(db_path):
    with sqlite.Store(db_path) as s:
        s.record_view("p")
    with sqlite.Store(db_path) as s:
        s.backend.conn.execute("PRAGMA query_only = ON")
        with pytest.raises(storage.StorageReadOnly):
            s.record_view("p")
        assert s.counts("p").total == 1


def test_set_total_rename_and_delete(any_store):
    any_store.record_view("old", DAY1)
    any_store.record_view("old", DAY2)
    any_store.set_total("old", 500)
    any_store.rename("old", "new")
    page = any_store.page("new")
    assert (page.total, page.days) == (500, {"2026-11-01": 1, "2026-11-02": 1})
    assert any_store.page("old") is None
    any_store.delete("new")
    assert any_store.page("new") is None
    assert any_store.history("new", 3, DAY2) == [("2026-10-31", 0), ("2026-11-01", 0), ("2026-11-02", 0)]


def test_rename_refuses_to_overwrite_unless_merging(any_store):
    any_store.record_view("a", DAY1)
    any_store.record_view("b", DAY1)
    with pytest.raises(storage.AlreadyExists):
        any_store.rename("a", "b")
    assert any_store.counts("a", DAY1).total == 1
    any_store.rename("a", "b", merge=True)
    assert any_store.page("b").total == 2
    assert any_store.page("b").days == {"2026-11-01": 2}
    assert any_store.page("a") is None


def test_rename_of_unknown_page_changes_nothing(any_store):
    any_store.record_view("a")
    with pytest.raises(storage.NotFound):
        any_store.rename("zzz", "b")
    assert [p.page_id for p in any_store.pages()] == ["a"]


def test_import_is_all_or_nothing(any_store):
    any_store.record_view("existing")
    good = storage.Page("new", 10, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", {"2026-01-01": 10})
    # A negative total breaks the CHECK constraint half-way through.
    bad = storage.Page("broken", -5, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", {})
    with pytest.raises(storage.StorageError):
        any_store.import_pages([good, bad], "set")
    assert any_store.page("new") is None
    assert any_store.counts("existing").total == 1


def test_import_add_and_set_modes(any_store):
    any_store.record_view("p", DAY1)
    page = storage.Page("p", 10, "2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z", {"2026-11-01": 4})
    assert any_store.import_pages([page], "add") == {"created": 0, "changed": 1, "days": 1}
    assert any_store.page("p").total == 11 and any_store.page("p").days == {"2026-11-01": 5}
    any_store.import_pages([page], "set")
    assert any_store.page("p").total == 10 and any_store.page("p").days == {"2026-11-01": 4}
    assert any_store.page("p").created_at == "2020-01-01T00:00:00Z"


def test_import_dry_run_changes_nothing(any_store):
    page = storage.Page("p", 10, "2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z", {})
    assert any_store.import_pages([page], "set", dry_run=True)["created"] == 1
    assert any_store.page("p") is None


def test_copy_database_makes_a_checked_standalone_copy(tmp_path, store):
    for i in range(50):
        store.record_view(f"p{i % 5}")
    dest = str(tmp_path / "copy.db")
    sqlite_file.copy_database(store.path, dest)
    sqlite_file.set_standalone(dest)
    assert sqlite_file.inspect_file(dest) == (sqlite_file.SCHEMA_VERSION, 5, 50)


def test_server_lock_is_exclusive(db_path):
    lock = sqlite_file.ServerLock(db_path)
    with pytest.raises(storage.ServerRunning):
        sqlite_file.ServerLock(db_path)
    lock.release()
    sqlite_file.ServerLock(db_path).release()


def test_health_ping_fails_once_the_writer_stopped(db_path):
    s = sqlite.Store(db_path)
    s.ping()
    s.writer.stop()  # the writer thread ends, as if it had died; reads still answer
    with pytest.raises(storage.StorageError, match="writer has stopped"):
        s.ping()
    with pytest.raises(storage.StorageError):
        s.record_view("p")
    s.close()


# Hardening ##################################################################


def test_a_view_past_the_total_cap_is_refused_and_changes_nothing(counting):
    with counting() as s:
        s.set_total("full", params.TOTAL_MAX - 1)
        assert s.record_view("full", DAY1).total == params.TOTAL_MAX
        with pytest.raises(storage.TotalLimitReached):
            s.record_view("full", DAY1)
        assert s.counts("full", DAY1) == storage.Counts(params.TOTAL_MAX, 1)
        assert isinstance(s.counts("full").total, int)


def test_a_removed_database_file_stops_counting(store, db_path):
    store.record_view("p")
    os.remove(db_path)
    with pytest.raises(storage.FileGone):
        store.record_view("p")
    with pytest.raises(storage.FileGone):
        store.ping()


def test_reads_notice_a_replaced_file_within_the_check_interval(store, db_path):
    store.record_view("p")
    os.replace(db_path, db_path + ".elsewhere")
    open(db_path, "wb").close()

    def refused() -> bool:
        try:
            store.counts("p")
        except storage.FileGone:
            return True
        except storage.StorageError:
            pass  # a fresh reader may open the new, empty file first
        return False
    wait_until(refused, timeout=sqlite.FILE_CHECK_INTERVAL + 5)


def test_a_read_only_store_reads_and_never_writes(db_path, tmp_path):
    with sqlite.Store(db_path) as s:
        s.record_view("p")
    copy = str(tmp_path / "copy.db")
    sqlite_file.copy_database(db_path, copy)
    sqlite_file.set_standalone(copy)
    before = open(copy, "rb").read()
    with sqlite.Store(copy, readonly=True) as s:
        assert s.counts("p").total == 1
        with pytest.raises(storage.StorageReadOnly):
            s.record_view("p")
        assert s.import_pages([storage.Page("q", 1, "2026-01-01T00:00:00Z",
                                            "2026-01-01T00:00:00Z", {})], "set", dry_run=True) \
            == {"created": 1, "changed": 0, "days": 0}
    assert open(copy, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["copy.db", "data"]


def test_import_writes_in_chunks_and_reports_pages(any_store):
    pages = [storage.Page(f"p{i}", i, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                          {"2026-01-01": i}) for i in range(10)]
    assert any_store.import_pages(iter(pages), "set", chunk=3) == {"created": 10, "changed": 0, "days": 10}
    assert [any_store.counts(f"p{i}").total for i in range(10)] == list(range(10))
    assert any_store.history("p9", 1, datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)) \
        == [("2026-01-01", 9)]


def test_import_refuses_a_page_named_twice_before_writing(any_store):
    page = storage.Page("twice", 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", {})
    with pytest.raises(storage.Duplicate):
        any_store.import_pages([page, page], "set")
    assert any_store.page("twice") is None


def test_restore_by_replace_counts_keeps_the_replaced_counts(db_path, tmp_path):
    source = str(tmp_path / "source.db")
    with sqlite.Store(source) as s:
        s.set_total("restored", 7)
    with sqlite.Store(db_path) as s:
        s.record_view("replaced")
        keep = str(tmp_path / "kept.db")
        sqlite_file.replace_counts(db_path, source, keep)
        assert s.counts("restored").total == 7 and s.counts("replaced").total == 0
    assert sqlite_file.inspect_file(keep)[1:] == (1, 1)


def test_copy_gives_up_when_the_target_stays_locked(db_path, tmp_path):
    with sqlite.Store(db_path) as s:
        s.record_view("p")
    target = str(tmp_path / "locked.db")
    holder = sqlite3.connect(target, isolation_level=None)
    holder.execute("CREATE TABLE x (y)")
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(storage.StorageBusy):
        sqlite_file.copy_database(db_path, target, timeout_s=0.2)
    assert time.monotonic() - started < 30
    holder.close()


def one_batch(s, views: list[tuple[str, datetime.datetime]]) -> list[object]:
    """Count views that are certainly written in one batch: the writer is
    held by a task until all of them have queued."""
    release = threading.Event()
    holder = threading.Thread(target=lambda: s.writer.wait(writer.Task(lambda conn: release.wait(5),
                                                                  write=False)))
    holder.start()
    outcomes: list[object] = [None] * len(views)

    def count(n: int, page_id: str, when: datetime.datetime) -> None:
        try:
            outcomes[n] = s.record_view(page_id, when)
        except storage.TotalLimitReached as e:
            outcomes[n] = e
    threads = [threading.Thread(target=count, args=(n, *view)) for n, view in enumerate(views)]
    for t in threads:
        t.start()
    conftest.wait_until(lambda: s.writer._queue.qsize() == len(views))
    release.set()
    for t in threads + [holder]:
        t.join()
    return outcomes


def test_views_of_one_page_in_one_batch_get_each_number_once(counting):
    with counting() as s:
        s.record_view("p", DAY1)
        views = [("p", DAY1)] * 6 + [("q", DAY1)] * 3 + [("p", DAY2)] * 2
        outcomes = one_batch(s, views)
        assert sorted(o.total for o in outcomes[:6]) == [2, 3, 4, 5, 6, 7]
        assert sorted(o.today for o in outcomes[:6]) == [2, 3, 4, 5, 6, 7]
        assert sorted(o.total for o in outcomes[6:9]) == [1, 2, 3]
        assert sorted(o.total for o in outcomes[9:]) == [8, 9]
        assert sorted(o.today for o in outcomes[9:]) == [1, 2]
        assert s.counts("p", DAY2) == storage.Counts(9, 2)
        assert s.history("p", 2, DAY2) == [("2026-11-01", 7), ("2026-11-02", 2)]


def test_a_batch_reaching_the_total_cap_counts_the_views_below_it(counting):
    with counting() as s:
        s.set_total("full", params.TOTAL_MAX - 2)
        outcomes = one_batch(s, [("full", DAY1)] * 5)
        counted = sorted(o.total for o in outcomes if isinstance(o, storage.Counts))
        assert counted == [params.TOTAL_MAX - 1, params.TOTAL_MAX]
        assert sum(isinstance(o, storage.TotalLimitReached) for o in outcomes) == 3
        assert s.counts("full", DAY1) == storage.Counts(params.TOTAL_MAX, 2)


def test_a_view_awaited_on_a_closed_loop_leaves_the_writer_running(any_store):
    # A server shutting down closes its loop while views may be in flight:
    # the writer's signal to it must not raise (it would end the writer).
    loop = asyncio.new_event_loop()
    done = writer.LoopDone(loop)
    loop.close()
    done.set()
    view = writer.View("gone", storage.utc_now(), writer.LoopDone(asyncio.new_event_loop()))
    view.done._loop.close()
    any_store.writer._submit(view)
    conftest.wait_until(lambda: view.result is not None)
    assert any_store.record_view("gone").total == 2


def test_record_view_async_counts_on_an_event_loop(any_store):
    async def many() -> list[int]:
        views = await asyncio.gather(*(any_store.record_view_async("loop") for _ in range(50)))
        return sorted(v.total for v in views)
    assert asyncio.run(many()) == list(range(1, 51))


# Hardening, round three ####################################################

STAMP = "2026-01-01T00:00:00Z"


def pages_of(n: int, total: int = 10) -> list[storage.Page]:
    return [storage.Page(f"p{i:03}", total, STAMP, STAMP, {"2026-01-01": total}) for i in range(n)]


def test_an_import_interrupted_between_chunks_goes_on_when_run_again(any_store, monkeypatch):
    for i in range(3):
        any_store.record_view(f"p{i:03}", DAY1)
    merge = any_store.staging.merge
    calls = {"n": 0}

    def failing(conn, mode, first, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise storage.StorageFull("disk full: simulated")
        return merge(conn, mode, first, chunk)
    monkeypatch.setattr(any_store.staging, "merge", failing)
    with pytest.raises(storage.ImportInterrupted) as interrupted:
        any_store.import_pages(pages_of(10), "add", chunk=2, source=lambda: "sha-1")
    assert interrupted.value.written == 4
    monkeypatch.setattr(any_store.staging, "merge", merge)
    report = any_store.import_pages(pages_of(10), "add", chunk=2, source=lambda: "sha-1")
    assert report["resumed"] == 4
    # Exactly one run's worth: 10 added once to every page, never twice.
    assert [any_store.counts(f"p{i:03}").total for i in range(10)] == [11] * 3 + [10] * 7
    assert [any_store.page(f"p{i:03}").days["2026-01-01"] for i in range(10)] == [10] * 10


def test_a_finished_add_import_is_not_added_twice_unless_asked(any_store):
    any_store.import_pages(pages_of(3), "add", source=lambda: "sha-2")
    with pytest.raises(storage.AlreadyImported):
        any_store.import_pages(pages_of(3), "add", source=lambda: "sha-2")
    assert any_store.counts("p000").total == 10
    any_store.import_pages(pages_of(3), "add", source=lambda: "sha-2", again=True)
    assert any_store.counts("p000").total == 20
    # Another file, or the same in set mode, is another import.
    any_store.import_pages(pages_of(3), "add", source=lambda: "sha-3")
    any_store.import_pages(pages_of(3), "set", source=lambda: "sha-2")
    any_store.import_pages(pages_of(3), "set", source=lambda: "sha-2")
    assert any_store.counts("p000").total == 10


def test_merging_past_the_total_cap_is_refused_and_changes_nothing(any_store):
    big = params.TOTAL_MAX // 2 + 1
    any_store.set_total("a", big)
    any_store.set_total("b", big)
    with pytest.raises(storage.TotalLimitReached):
        any_store.rename("a", "b", merge=True)
    assert (any_store.counts("a").total, any_store.counts("b").total) == (big, big)
    any_store.set_total("a", params.TOTAL_MAX - big)
    any_store.rename("a", "b", merge=True)
    assert any_store.counts("b").total == params.TOTAL_MAX and any_store.page("a") is None


def test_the_page_count_follows_every_write(any_store, tmp_path):
    any_store.record_view("a")
    any_store.record_view("a")
    any_store.record_view("b")
    any_store.set_total("c", 5)
    assert any_store.page_count() == 3
    any_store.rename("c", "d")
    any_store.rename("d", "a", merge=True)
    any_store.delete("b")
    assert any_store.page_count() == 1
    any_store.import_pages(pages_of(5), "set")
    assert any_store.page_count() == 6


def test_the_page_cap_reads_a_kept_count_not_the_table(store):
    # The cap is checked against schema.sql's page_count, kept by triggers:
    # the table is not counted in the writer's transaction.
    capped = sqlite.Store(store.path, max_pages=2)
    try:
        capped.record_view("a")
        capped.record_view("b")
        with pytest.raises(storage.PageLimitReached):
            capped.record_view("c")
        capped.delete("a")
        capped.record_view("c")
        assert capped.page_count() == 2
    finally:
        capped.close()
    assert "count(*)" not in sqlite._COUNT_PAGE


def test_a_version_1_file_gets_its_page_count_when_migrated(db_path):
    # A file made by the previous Tally (schema 1), with pages in it.
    sqlite_file.make_folder(db_path)
    conn = sqlite3.connect(db_path)
    conn.executescript(sqlite_file.migrations()[0][1] + "PRAGMA user_version=1;")
    conn.executemany("INSERT INTO pages VALUES (?, 3, ?, ?)", [(f"x{i}", STAMP, STAMP)
                                                               for i in range(7)])
    conn.commit()
    conn.close()
    with sqlite.Store(db_path, max_pages=8) as s:
        assert s.page_count() == 7
        s.record_view("new")
        with pytest.raises(storage.PageLimitReached):
            s.record_view("one-too-many")


def test_a_version_2_file_keeps_every_count_and_gains_githubs_tables(db_path):
    # A file made by the previous Tally (schema 2), with counts in it.
    sqlite_file.make_folder(db_path)
    conn = sqlite3.connect(db_path)
    for _, body in sqlite_file.migrations()[:2]:
        for statement in sqlite_file._statements(body):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=2")
    conn.executemany("INSERT INTO pages VALUES (?, ?, ?, ?)", [(f"x{i}", i, STAMP, STAMP)
                                                               for i in range(5)])
    conn.execute("INSERT INTO daily VALUES ('x3', '2026-01-01', 3)")
    conn.commit()
    conn.close()
    with sqlite.Store(db_path) as s:
        assert s.top(10) == [("x4", 4), ("x3", 3), ("x2", 2), ("x1", 1), ("x0", 0)]
        assert s.page("x3").days == {"2026-01-01": 3}
        s.github.add("alice/repo", None, storage.utc_now())
        assert [r.repo for r in s.github.repos()] == ["alice/repo"]
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_file.SCHEMA_VERSION
    conn.close()


def test_restore_replaces_the_kept_github_traffic_with_the_backups(db_path, tmp_path):
    now = storage.utc_now()
    backup = str(tmp_path / "backup.db")
    with sqlite.Store(backup) as s:
        s.github.add("alice/old", None, now)
        s.github.save("alice/old", {"2026-01-01": storage.TrafficDay(9, 3, 0, 0)}, [], [],
                      "2026-01-01", now, now)
    with sqlite.Store(db_path) as s:
        s.github.add("alice/new", None, now)
    sqlite_file.replace_counts(db_path, backup, str(tmp_path / "kept.db"))
    with sqlite.Store(db_path) as s:
        assert [r.repo for r in s.github.repos()] == ["alice/old"]
        assert s.github.traffic("alice/old").views == 9
    with sqlite.Store(str(tmp_path / "kept.db")) as s:  # the replaced one is saved
        assert [r.repo for r in s.github.repos()] == ["alice/new"]


# The compact layout (schema 5, issue 23) ######################################

FIXTURES = conftest.ROOT / "tests" / "fixtures"


def version_4_file(path: str) -> sqlite3.Connection:
    """An empty file of schema 4, the layout before the compact one."""
    sqlite_file.make_folder(path)
    conn = sqlite3.connect(path, isolation_level=None)
    for _, body in sqlite_file.migrations()[:4]:
        for statement in sqlite_file._statements(body):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=4")
    return conn


def fill_version_4(conn: sqlite3.Connection, pages: int) -> None:
    """pages pages with 1 to 4 days each (views, visitors, bots), as schema 4 held them."""
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO pages (page_id, total, created_at, last_seen, visitors) "
        "SELECT printf('user%d.repo-%x', i, i * 7919), i % 1000 + 40, '2026-01-01T00:00:00Z', "
        "'2026-12-01T00:00:00Z', i % 17 FROM n", (pages - 1,))
    conn.execute(
        "WITH RECURSIVE d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j < 3) "
        "INSERT INTO daily (page_id, day, views, visitors, bots) "
        "SELECT page_id, date('2026-11-01', '+' || (j * 9 + total % 5) || ' days'), "
        "total % 10 + j, (total % 10 + j) / 2, j % 2 FROM pages, d WHERE j <= total % 4")
    conn.execute("COMMIT")


def version_4_rows(conn: sqlite3.Connection) -> tuple[list, list]:
    return (conn.execute("SELECT page_id, total, created_at, last_seen, visitors FROM pages "
                         "ORDER BY page_id").fetchall(),
            conn.execute("SELECT page_id, day, views, visitors, bots FROM daily "
                         "ORDER BY page_id, day").fetchall())


def test_the_compact_migration_keeps_every_number_of_200000_pages(db_path):
    conn = version_4_file(db_path)
    fill_version_4(conn, 200_000)
    pages, days = version_4_rows(conn)
    conn.close()
    assert len(pages) == 200_000 and len(days) > 400_000
    with sqlite.Store(db_path, readonly=False) as s:
        assert s.page_count() == 200_000
        migrated = list(s.pages())
    assert [(p.page_id, p.total, p.created_at, p.last_seen, p.visitors) for p in migrated] == pages
    assert [(p.page_id, day, p.days[day], p.visitor_days.get(day, 0), p.bot_days.get(day, 0))
            for p in migrated for day in sorted(p.days)] == days
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_file.SCHEMA_VERSION
    assert conn.execute("SELECT typeof(page), typeof(day) FROM daily LIMIT 1").fetchone() == (
        "integer", "integer")
    conn.close()


def test_a_migration_that_would_change_a_count_is_rolled_back(db_path, monkeypatch):
    conn = version_4_file(db_path)
    fill_version_4(conn, 50)
    before = version_4_rows(conn)
    conn.close()
    # Migration 5 with a fault: the day rows of one view are left behind.
    broken = [(n, body.replace("ON p.page_id = d.page_id", "ON p.page_id = d.page_id "
                               "AND d.views != 1")) for n, body in sqlite_file.migrations()]
    assert broken != sqlite_file.migrations()
    monkeypatch.setattr(sqlite_file, "migrations", lambda: broken)
    with pytest.raises(storage.UnusableDatabase, match="migration 5 would change the counts"):
        sqlite.Store(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert version_4_rows(conn) == before
    conn.close()


def test_a_file_made_by_tally_at_schema_4_exports_what_it_exported_then(tmp_path):
    # tests/fixtures: a file made by Tally at 9227a7c (schema 4: import, views
    # with visitors, a bot's view, GitHub's traffic) and its export then.
    db = str(tmp_path / "counts.db")
    shutil.copy(FIXTURES / "tally-v4.db", db)
    then = json.loads((FIXTURES / "tally-v4-export.json").read_text(encoding="utf-8"))
    before = open(db, "rb").read()
    # Read first (export reads a migrated copy: the file keeps its bytes),
    # then opened by a server, which migrates it.
    for opened_by_a_server in (False, True):
        if opened_by_a_server:
            sqlite.Store(db).close()
        out = str(tmp_path / f"export-{opened_by_a_server}.json")
        result = conftest.tally("export", "--out", out, db=db)
        assert result.returncode == 0, result.stderr
        now = json.loads(open(out, encoding="utf-8").read())
        # Schema 4 knew no held views: none are held now.
        assert conftest.without_held(now["pages"]) == then["pages"]
        assert now["github"] == then["github"]
        assert sum(p["total"] for p in now["pages"]) == 9000000000001242
        if not opened_by_a_server:
            assert open(db, "rb").read() == before
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == (
            sqlite_file.SCHEMA_VERSION if opened_by_a_server else 4)
        conn.close()
    assert not [name for name in os.listdir(tempfile.gettempdir())
                if name.startswith("tally-upgraded-")]


def test_an_older_tally_refuses_the_compact_file(db_path, tmp_path):
    older = conftest.older_tally(tmp_path / "older")
    with sqlite.Store(db_path) as s:
        s.record_view("p")
    before = open(db_path, "rb").read()
    result = subprocess.run(
        [sys.executable, "-c", "import sys, sqlite_store\n"
         "try:\n    sqlite_store.Store(sys.argv[1])\n"
         "except Exception as e:\n    print(e)", db_path],
        cwd=older, capture_output=True, text=True, timeout=60)
    assert (f"schema version {sqlite_file.SCHEMA_VERSION} is newer than this Tally (4); "
            f"upgrade Tally") in result.stdout, result
    assert open(db_path, "rb").read() == before


def test_an_older_backup_restores_into_the_compact_layout(db_path, tmp_path):
    with sqlite.Store(db_path) as s:
        s.record_view("replaced")
    backup = str(tmp_path / "old-backup.db")
    shutil.copy(FIXTURES / "tally-v4.db", backup)
    sqlite_file.replace_counts(db_path, backup, str(tmp_path / "kept.db"))
    with sqlite.Store(db_path) as s:
        assert s.counts("replaced").total == 0
        assert s.page("alice.my-repo").days["2026-12-05"] == 1024
        assert s.page("old-1970").days == {"1970-01-01": 1, "1999-12-31": 8999999999999999}
    assert not [name for name in os.listdir(tmp_path) if ".upgraded" in name]


# TALLY_KEEP_DAYS ##############################################################


def test_keep_days_deletes_exactly_the_days_before_the_first_kept_one(make_store, monkeypatch):
    monkeypatch.setattr(writer, "TRIM_ROWS", 7)  # many small transactions
    today = storage.utc_now().date()
    store = make_store(keep_days=30)
    pages = [storage.Page(f"page-{n}", 1000 + n, STAMP, STAMP,
                          {(today - datetime.timedelta(days=back)).isoformat(): back + 1
                           for back in range(n, 80, 3)}, visitors=n,
                          visitor_days={(today - datetime.timedelta(days=n)).isoformat(): 1},
                          bot_days={(today - datetime.timedelta(days=60)).isoformat(): 2})
             for n in range(40)]
    store.import_pages(pages, "set")
    first = (today - datetime.timedelta(days=29)).isoformat()
    assert store.kept_from() == first
    expected_deleted = sum(1 for p in pages for day in set(p.days) | set(p.bot_days)
                           if day < first)
    assert store.trim_history() == expected_deleted > 7 * 10
    for p in pages:
        kept = store.page(p.page_id)
        assert (kept.total, kept.visitors) == (p.total, p.visitors)  # never touched
        assert kept.days == {day: views for day, views in p.days.items() if day >= first}
        assert kept.visitor_days == {day: 1 for day in p.visitor_days if day >= first}
        assert kept.bot_days == {}
    assert store.trim_history() == 0  # nothing more to delete


@pytest.mark.parametrize("ahead", [datetime.timedelta(days=40), datetime.timedelta(days=365),
                                   datetime.timedelta(days=3 * 365 + 1)])
def test_a_clock_that_jumps_forward_deletes_no_day_the_newest_counted_days_need(
        make_store, ahead):
    # Issue 28, 8: the first kept day is judged from the data as well as the
    # clock: the keep_days newest days on which views were written stay.
    today = storage.utc_now().replace(hour=12)
    store = make_store(keep_days=30)
    back = {n: (today - datetime.timedelta(days=n)).date().isoformat() for n in range(60)}
    pages = [storage.Page(f"page-{n}", 60, STAMP, STAMP, {day: 1 for day in back.values()})
             for n in range(5)]
    store.import_pages(pages, "set")
    store.record_view("page-0", now=today)
    jumped = today + ahead
    assert store.kept_from(jumped) == back[29] == store.kept_from(today)
    assert store.trim_history(jumped) == 5 * 30  # the days before back[29], as by the clock
    # The wrong clock's first views: each of its days is one of the newest.
    store.record_view("page-0", now=jumped)
    assert store.kept_from(jumped) == back[28]
    assert store.trim_history(jumped) == 5
    assert store.page("page-0").days == {
        **{back[n]: 1 for n in range(1, 29)}, back[0]: 2, storage.day(jumped): 1}
    for n in range(1, 5):
        assert len(store.page(f"page-{n}").days) == 29
    # When the clock is right again, its own first kept day is the earlier one.
    assert store.kept_from(today) == back[29]


def test_view_days_holds_each_day_a_view_was_written_once(make_store):
    store = make_store(keep_days=2)
    first = storage.utc_now().replace(hour=1)
    for hour in range(3):  # three batches on one day, a bot's view on the next
        store.record_view("p", now=first + datetime.timedelta(hours=hour))
    store.record_view("p", now=first + datetime.timedelta(days=1), bot=True, counted=False)
    assert store._read("SELECT count(*) FROM view_days") == [(2,)]
    days = [storage.day(first + datetime.timedelta(days=n)) for n in range(2)]
    assert store.kept_from(first + datetime.timedelta(days=1)) == days[0]
    # Fewer days with views than keep_days: none is deleted, however far the clock.
    assert store.kept_from(first + datetime.timedelta(days=900)) == days[0]
    assert store.trim_history(first + datetime.timedelta(days=900)) == 0
    assert (store.page("p").days, store.page("p").bot_days) == ({days[0]: 3, days[1]: 0}, {days[1]: 1})


def test_migration_7_seeds_view_days_from_the_kept_days(tmp_path):
    # A schema-4 file (its days written before view_days existed): opened
    # with TALLY_KEEP_DAYS and a clock years ahead, the newest days stay.
    db_path = str(tmp_path / "v4.db")
    shutil.copy(FIXTURES / "tally-v4.db", db_path)
    with sqlite.Store(db_path) as s:
        before = {p.page_id: p.days for p in s.pages()}
    newest = sorted({day for days in before.values() for day in days})
    assert len(newest) > 3
    with sqlite.Store(db_path, keep_days=3) as s:
        assert s.kept_from(datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc)) == newest[-3]
        s.trim_history(datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc))
        after = {p.page_id: p.days for p in s.pages()}
    assert after == {page: {d: v for d, v in days.items() if d >= newest[-3]}
                     for page, days in before.items()}


def test_without_keep_days_every_day_is_kept(any_store):
    old = storage.Page("p", 5, STAMP, STAMP, {"2001-01-01": 5})
    any_store.import_pages([old], "set")
    assert any_store.kept_from() is None and any_store.trim_history() == 0
    assert any_store.page("p").days == {"2001-01-01": 5}


# Held views (the inflation guard's, issue 30) ###################################


def test_held_views_are_recorded_apart_and_never_in_the_counts(counting):
    with counting() as s:
        for _ in range(3):
            s.record_view("p", DAY1)
        held = [s.record_view("p", DAY1, held=True) for _ in range(4)]
        # A held view is answered the counts as they are, its own among the held.
        assert held[-1] == storage.Counts(3, 3, held=4, held_today=4)
        assert s.record_view("p", DAY2, held=True) == storage.Counts(3, 0, held=5, held_today=1)
        assert s.record_view("p", DAY2) == storage.Counts(4, 1, held=5, held_today=1)
        assert [(d.day, d.views, d.held) for d in s.days("p", 2, DAY2)] == [
            ("2026-11-01", 3, 4), ("2026-11-02", 1, 1)]
        page = s.page("p")
        assert (page.total, page.held, page.held_days) == (4, 5, {"2026-11-01": 4,
                                                                  "2026-11-02": 1})


def test_a_batch_of_counted_and_held_views_is_written_in_one_group_commit(counting):
    # One batch (the writer thread stopped while they queue): each view is
    # counted or held as its own decision says, none lost, none twice.
    with counting() as s:
        s.record_view("p", DAY1)
        views = [writer.View("p", DAY1, views=0 if n % 3 else 1, held=1 if n % 3 else 0)
                 for n in range(30)]
        s.writer.backend.write_views(views, [])
        assert all(v.error is None for v in views)
        page = s.page("p")
        assert (page.total, page.held) == (1 + 10, 20)
        assert sorted(v.result.total for v in views if v.views) == list(range(2, 12))


def test_release_counts_a_day_or_every_day_in_one_transaction(counting):
    with counting() as s:
        s.record_view("p", DAY1)
        for when, n in ((DAY1, 4), (DAY2, 2)):
            for _ in range(n):
                s.record_view("p", when, held=True)
        assert s.release("p", "2026-11-02") == [("2026-11-02", 2)]
        assert (s.page("p").total, s.page("p").held) == (3, 4)
        assert s.release("p", "2026-11-02") == []  # nothing left that day
        assert s.release("p") == [("2026-11-01", 4)]
        page = s.page("p")
        assert (page.total, page.held, page.held_days) == (7, 0, {})
        assert page.days == {"2026-11-01": 5, "2026-11-02": 2}
        assert s.release("p") == []
        with pytest.raises(storage.NotFound):
            s.release("unknown")


def test_release_past_the_largest_total_moves_nothing(counting):
    with counting() as s:
        s.record_view("p", DAY1, held=True)
        s.record_view("p", DAY1, held=True)
        s.set_total("p", storage.TOTAL_MAX - 1)
        with pytest.raises(storage.TotalLimitReached):
            s.release("p")
        assert (s.page("p").total, s.page("p").held) == (storage.TOTAL_MAX - 1, 2)


def test_held_views_travel_with_rename_merge_and_import(counting):
    with counting() as s:
        s.record_view("a", DAY1)
        s.record_view("a", DAY1, held=True)
        s.record_view("b", DAY1, held=True)
        s.rename("a", "b", merge=True)
        page = s.page("b")
        assert (page.held, page.held_days) == (2, {"2026-11-01": 2})
        # set replaces the days it names (their held views too), add adds.
        s.import_pages([storage.Page("b", 9, STAMP, STAMP, {"2026-11-02": 1}, held=3,
                                     held_days={"2026-11-02": 3})], "set")
        assert s.page("b").held_days == {"2026-11-01": 2, "2026-11-02": 3}
        assert s.page("b").held == 5
        s.import_pages([storage.Page("b", 1, STAMP, STAMP, {}, held=1,
                                     held_days={"2026-11-01": 1})], "add")
        assert (s.page("b").held, s.page("b").held_days["2026-11-01"]) == (6, 3)


def test_keep_days_never_deletes_a_day_that_holds_held_views(make_store):
    today = storage.utc_now().date()
    old = (today - datetime.timedelta(days=100)).isoformat()
    also_old = (today - datetime.timedelta(days=90)).isoformat()
    store = make_store(keep_days=30)
    recent = {(today - datetime.timedelta(days=back)).isoformat(): 1 for back in range(40)}
    store.import_pages([storage.Page("p", 10, STAMP, STAMP, {old: 5, also_old: 5},
                                     held=7, held_days={old: 7}),
                        storage.Page("recent", 40, STAMP, STAMP, recent)], "set")
    assert store.trim_history() == 1 + 10  # p's day without held views, recent's oldest 10
    page = store.page("p")
    assert (page.days, page.held_days) == ({old: 5}, {old: 7})
    assert store.release("p") == [(old, 7)]
    assert store.trim_history() == 1  # released: now an old day like any other


# Page owners (stores/owners.py, issue 32) ###################################

NOW = datetime.datetime(2026, 12, 7, 12, tzinfo=datetime.timezone.utc)


def test_a_new_counter_takes_no_page_with_views_or_an_owner(any_store):
    owners = any_store.owners
    owners.create("new.page", "hash1", NOW, None)
    assert owners.key_hash("new.page") == "hash1" and any_store.counts("new.page").total == 0
    with pytest.raises(storage.AlreadyExists):
        owners.create("new.page", "hash2", NOW, None)
    any_store.record_view("viewed.page")
    with pytest.raises(storage.AlreadyExists):
        owners.create("viewed.page", "hash3", NOW, None)
    assert owners.key_hash("new.page") == "hash1" and owners.key_hash("viewed.page") is None
    assert [a.action for a in owners.actions("new.page")] == ["created"]


def test_new_counters_count_against_the_page_cap(make_store):
    store = make_store(max_pages=2)
    store.record_view("one")
    store.owners.create("two", "h", NOW, 2)
    with pytest.raises(storage.PageLimitReached):
        store.owners.create("three", "h", NOW, 2)
    assert store.page_count() == 2 and store.owners.key_hash("three") is None


def test_rotate_claim_and_remove(any_store):
    owners = any_store.owners
    owners.create("p", "old", NOW, None)
    assert owners.rotate("p", "old", "new", NOW) and not owners.rotate("p", "old", "other", NOW)
    owners.add_claim("token-hash", "p", "alice/repo", "2026-12-08T12:00:00Z")
    assert owners.claim("token-hash") == ("p", "alice/repo", "2026-12-08T12:00:00Z")
    owners.claimed("p", "claimed", "alice/repo", "token-hash", NOW)
    assert owners.key_hash("p") == "claimed" and owners.claim("token-hash") is None
    [owner] = owners.owners()
    assert (owner.page_id, owner.how, owner.actions) == ("p", "claim alice/repo", 3)
    owners.remove("p", NOW)
    assert owners.key_hash("p") is None
    with pytest.raises(storage.NotFound):
        owners.remove("p", NOW)


def test_an_owners_action_is_written_with_its_record_by_a_key_still_the_pages(any_store):
    owners = any_store.owners
    owners.create("p", "key", NOW, None)
    any_store.set_total("p", 5, NOW, then=owners.recorded(
        "p", "key", "set", lambda _: "total set to 5", '{"before": 0}', NOW))
    assert any_store.counts("p").total == 5
    assert owners.action(owners.actions("p")[-1].id)[1] == '{"before": 0}'
    # The key is rotated after it was checked, before the action is written:
    # each control is rolled back, nothing is recorded.
    owners.rotate("p", "key", "new", NOW)
    controls = {"set": lambda then: any_store.set_total("p", 9, NOW, then=then),
                "delete": lambda then: any_store.delete("p", then=then),
                "release": lambda then: any_store.release("p", then=then)}
    for action, control in controls.items():
        with pytest.raises(storage.KeyChanged):
            control(owners.recorded("p", "key", action, lambda _: "stale", None, NOW))
    assert any_store.counts("p").total == 5
    assert [a.action for a in owners.actions("p")] == ["created", "set", "rotate"]


def test_tries_count_per_slot_and_keep_no_address(any_store):
    tries = any_store.owners.tries
    assert [tries("key", "203.0.113.9", "2026-12-07T12:00", NOW, client=True) for _ in range(3)] \
        == [1, 2, 3]
    assert tries("key", "203.0.113.9", "2026-12-07T12:00", NOW, client=True, add=False) == 3
    assert tries("key", "203.0.113.8", "2026-12-07T12:00", NOW, client=True, add=False) == 0
    # A new slot starts at one, and the slots that passed are gone.
    assert tries("key", "203.0.113.9", "2026-12-07T12:01", NOW, client=True) == 1
    rows = any_store._read("SELECT subject, slot FROM attempts")
    assert rows == [(rows[0][0], "2026-12-07T12:01")] and "203.0.113" not in rows[0][0]
