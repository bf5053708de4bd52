"""Tally's SQLite store, the default: one file in WAL mode. Counting views
(the writer's Backend), reading counts, owner controls and an import's
steps; the file itself, its connections and its copies are
stores/sqlite_file.py's.

It never imports bottle and never builds SVG. Its statements are here,
in stores/sql.py (those both stores share) or in schema.sql.
"""

from __future__ import annotations

import datetime
import itertools
import os
import queue
import shutil
import tempfile
import threading
import time
from typing import Iterable, Iterator

from stores import sql, sqlite_file
from stores.sqlite_file import (HAS_RETURNING, SCHEMA_VERSION, Connection, Error,
                                IntegrityError, OperationalError, connect, copy_database,
                                file_identity, open_writer, rollback, schema_version,
                                storage_error)
from stores.store import Staging, Store as Base
from stores.owners import PageOwners
from stores.traffic import KeptTraffic
from stores.values import (SALT_BYTES, TOTAL_MAX, VISITOR_GRACE, AlreadyExists, Counts,
                           Duplicate, FileGone, KnownVisitors, NotFound, Page, PageLimitReached,
                           TotalLimitReached, UnusableDatabase, day, day_rows, page_from_rows,
                           stamp, visitor_hash)
from stores.writer import Task, View, Writer

# Reads compare the open file with the path at most this often (seconds);
# every group commit compares them before it writes.
FILE_CHECK_INTERVAL = 1.0

SQL = sql.statements(sql.SQLITE)
_DAY = sql.SQLITE.day_number.format("?")

# Insert a page's first view, or add one. The first WHERE refuses a page
# that does not exist yet once max_pages (NULL: no cap) pages are stored;
# the second refuses a view past TOTAL_MAX (SQLite would turn the integer
# into a float at 2**63). Nothing is read first and written later, it is one
# statement. The number of pages is kept by schema.sql's triggers, so
# reading it costs the same at a million pages as at ten.
# Held views (the inflation guard's) are added the same way, to held.
_COUNT_PAGE = (
    "INSERT INTO pages (page_id, total, held, created_at, last_seen) "
    "SELECT ?, ?, ?, ?, ? "
    "WHERE ? IS NULL OR EXISTS (SELECT 1 FROM pages WHERE page_id = ?) "
    "OR (SELECT pages FROM page_count) < ? "
    "ON CONFLICT(page_id) DO UPDATE SET total = total + excluded.total, "
    "held = held + excluded.held, last_seen = excluded.last_seen "
    "WHERE total + excluded.total <= ?"
)
_COUNT_DAY = (
    f"INSERT INTO daily (page, day, views, visitors, bots, held) VALUES (?, {_DAY}, ?, ?, ?, ?) "
    "ON CONFLICT(page, day) DO UPDATE SET views = views + excluded.views, "
    "visitors = visitors + excluded.visitors, bots = bots + excluded.bots, "
    "held = held + excluded.held"
)
# A bot's view that does not count: only its day's bot views, and only on a
# page that exists (a crawler following links creates no pages).
_COUNT_BOTS = (
    f"INSERT INTO daily (page, day, views, visitors, bots) SELECT id, {_DAY}, 0, 0, ? "
    "FROM pages WHERE page_id = ? "
    "ON CONFLICT(page, day) DO UPDATE SET bots = bots + excluded.bots"
)


def by_page_and_day(batch: list[View]) -> list[list[View]]:
    """A batch's views grouped by page, UTC day and whether they count or
    are held, in the order they came: each group is counted with one
    UPSERT per table."""
    groups: dict[tuple[str, str, int, int], list[View]] = {}
    for view in batch:
        groups.setdefault((view.page_id, day(view.now), view.views, view.held), []).append(view)
    return list(groups.values())


class Backend:
    """The writer's side (stores.writer.Backend): its one connection, the
    group commit of a batch (the views of one page and day are one UPSERT
    per table, each view answered its own number of the range), the days'
    salts and the visitors it knows."""

    newest_from = SQL["newest_from"]

    def __init__(self, conn: Connection, store: "Store", max_pages: int | None,
                 use_returning: bool, timeout_s: float) -> None:
        self.conn = conn
        self._store = store  # its file check
        self.max_pages = max_pages
        self.use_returning = use_returning
        self._timeout = timeout_s
        self._salts: dict[str, bytes] = {}
        self._known = KnownVisitors()
        self._checkpoint_due = False

    def write_views(self, batch: list[View], new_days: list[str]) -> None:
        conn = self.conn
        self._store.check_file()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for new_day in new_days:
                conn.execute(SQL["mark_day"], (new_day,))
            for views in by_page_and_day(batch):
                self._count_views(conn, views)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            self._salts.clear()  # a salt created in this transaction is gone
            self._known.forget_pending()
            raise
        self._known.committed()

    def _count_views(self, conn: Connection, views: list[View]) -> None:
        """Count views of one page on one day with one UPSERT per table
        (a popular page's views arrive together): each view is answered
        its own number, total - k + 1 .. total, and its own visitors (one
        more for each view whose hash is new today). Held views are added
        to the page's and the day's held views, each answered the counts
        as they are."""
        counted, held = views[0].views, views[0].held
        if not counted and not held:  # bots not counted as views: their bot views only
            self._count_bots(conn, views)
            return
        k = len(views)
        page_id, now = views[0].page_id, max(v.now for v in views)
        try:
            key, total, visitors, page_held = self._add_views(conn, page_id, now, k * counted,
                                                              k * held)
        except PageLimitReached as e:
            for view in views:
                view.error = e
            return
        except TotalLimitReached as e:
            if k == 1:
                views[0].error = e
                return
            # Near TOTAL_MAX: one at a time, so the views below it still count.
            for view in views:
                self._count_views(conn, [view])
            return
        today_day = day(now)
        new = [self._new_visitor(conn, today_day, page_id, view.visitor if counted else None)
               for view in views]
        if sum(new):
            conn.execute("UPDATE pages SET visitors = visitors + ? WHERE id = ?", (sum(new), key))
        values = (key, today_day, k * counted, sum(new), sum(v.bots for v in views), k * held)
        if self.use_returning:
            today, today_visitors, today_held = conn.execute(
                _COUNT_DAY + " RETURNING views, visitors, held", values).fetchone()
        else:
            conn.execute(_COUNT_DAY, values)
            today, today_visitors, today_held = conn.execute(
                f"SELECT views, visitors, held FROM daily WHERE page = ? AND day = {_DAY}",
                (key, today_day)).fetchone()
        if held:
            result = Counts(total, today, visitors, today_visitors, page_held, today_held)
            for view in views:
                view.result = result
            return
        seen = 0
        for i, (view, is_new) in enumerate(zip(views, new), start=1 - k):
            seen += is_new
            view.result = Counts(total + i, today + i, visitors + seen,
                                 today_visitors - sum(new) + seen, page_held, today_held)

    def _add_views(self, conn: Connection, page_id: str, now: datetime.datetime,
                   k: int = 1, held: int = 0) -> tuple[int, int, int, int]:
        """Add k views to the page's total and `held` to its held views:
        (its key, the new total, its visitors, its held views)."""
        when, cap = stamp(now), self.max_pages
        values = (page_id, k, held, when, when, cap, page_id, cap, TOTAL_MAX)
        if self.use_returning:
            row = conn.execute(_COUNT_PAGE + " RETURNING id, total, visitors, held",
                               values).fetchone()
            if row is None:
                raise self._refusal(conn, page_id)
            return row
        cursor = conn.execute(_COUNT_PAGE, values)
        if cursor.rowcount == 0:
            raise self._refusal(conn, page_id)
        return conn.execute("SELECT id, total, visitors, held FROM pages WHERE page_id = ?",
                            (page_id,)).fetchone()

    @staticmethod
    def _refusal(conn: Connection, page_id: str) -> Exception:
        # The UPSERT wrote nothing: a known page is at TOTAL_MAX, a new one
        # is past max_pages. Read only on this rare path.
        if conn.execute("SELECT 1 FROM pages WHERE page_id = ?", (page_id,)).fetchone():
            return TotalLimitReached(page_id)
        return PageLimitReached(page_id)

    def _new_visitor(self, conn: Connection, today: str, page_id: str,
                     visitor: tuple[str, str] | None) -> int:
        """1 when this (address, User-Agent) is the page's new visitor today."""
        if visitor is None:
            return 0
        key = (today, visitor_hash(self.salt(conn, today), page_id, *visitor))
        if key in self._known:
            return 0
        self._known.written(key)
        return conn.execute("INSERT INTO visitors.visitor_hashes (day, hash) VALUES (?, ?) "
                            "ON CONFLICT DO NOTHING", key).rowcount

    def salt(self, conn: Connection, today: str) -> bytes:
        """The day's salt: made (random) by its first visitor, kept in the
        visitor file so a restart within the day knows today's visitors."""
        salt = self._salts.get(today)
        if salt is None:
            conn.execute("INSERT INTO visitors.visitor_salts (day, salt) VALUES (?, ?) "
                         "ON CONFLICT DO NOTHING", (today, os.urandom(SALT_BYTES)))
            salt = conn.execute("SELECT salt FROM visitors.visitor_salts WHERE day = ?",
                                (today,)).fetchone()[0]
            self._salts[today] = salt
        return salt

    def _count_bots(self, conn: Connection, views: list[View]) -> None:
        """Bot views of a page that exists, on their day; each is answered
        the page's counts, unchanged."""
        page_id, today = views[0].page_id, day(views[0].now)
        conn.execute(_COUNT_BOTS, (today, len(views), page_id))
        row = conn.execute(SQL["counts"], (today, page_id)).fetchone()
        for view in views:
            view.result = Counts(*row) if row else Counts(0, 0)

    def forget(self, conn: Connection, now: datetime.datetime) -> int:
        before = day(now - VISITOR_GRACE)
        if not conn.execute("SELECT 1 FROM visitors.visitor_salts WHERE day < ? UNION ALL "
                            "SELECT 1 FROM visitors.visitor_hashes WHERE day < ? LIMIT 1",
                            (before, before)).fetchone():
            return 0
        forgotten = conn.execute("DELETE FROM visitors.visitor_salts WHERE day < ?",
                                 (before,)).rowcount
        conn.execute("DELETE FROM visitors.visitor_hashes WHERE day < ?", (before,))
        for old in [old for old in self._salts if old < before]:
            del self._salts[old]
        self._known.forget_days_before(before)
        # secure_delete (open_writer) overwrites the deleted rows' bytes; the
        # WAL's copies go at the checkpoint after this transaction.
        self._checkpoint_due = True
        return forgotten

    def trim(self, conn: Connection, before: str, after: tuple | None,
             rows: int) -> tuple[tuple | None, int]:
        start = after or (-1, -1)
        last = conn.execute(SQL["trim_last"], (*start, before, rows - 1)).fetchone()
        if last is None:
            return None, conn.execute(SQL["trim_rest"], (*start, before)).rowcount
        return tuple(last), conn.execute(SQL["trim_upto"], (*start, *last, before)).rowcount

    def run_task(self, task: Task) -> object:
        conn = self.conn
        try:
            # A task that writes only temporary tables needs no write lock.
            conn.execute("BEGIN IMMEDIATE" if task.write else "BEGIN")
            result = task.fn(conn)
            conn.execute("COMMIT")
        finally:
            rollback(conn)
        if self._checkpoint_due:
            # A forgotten day's salt and hashes out of the WAL file too (when
            # no reader holds it: then at the next day's).
            self._checkpoint_due = False
            try:
                # Waiting at most a moment for readers: views queue meanwhile.
                conn.execute("PRAGMA busy_timeout = 200")
                conn.execute("PRAGMA visitors.wal_checkpoint(TRUNCATE)")
            except Error:
                pass
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        return result

    @staticmethod
    def classify(error: Exception) -> Exception:
        return storage_error(error) if isinstance(error, Error) else error


class Store(Base):
    """The counts in one SQLite file: one writer connection owned by the
    writer thread (its Backend above), plus a pool of read connections
    beside it (WAL). Chosen by measurement over a connection per thread and
    over group commit by whoever holds a lock (docs/design.md).
    """

    inline_reads = True
    sql = SQL

    def __init__(self, path: str, *, sync: str = "full", max_pages: int | None = None,
                 busy_timeout_s: float = 5.0, use_returning: bool | None = None,
                 max_page_count: int | None = None, readonly: bool = False,
                 keep_days: int | None = None):
        self.path = source_path = path
        self.keep_days = keep_days
        self._copy_folder: str | None = None
        self.sync = sync
        self.readonly = readonly
        use_returning = HAS_RETURNING if use_returning is None else use_returning
        if use_returning and not HAS_RETURNING:
            raise ValueError(f"SQLite {sqlite_file.sqlite_version()} has no RETURNING")
        self._timeout = busy_timeout_s
        self._readers: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._all_readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        if readonly:
            # Reading commands (top, show, export, import --dry-run): every
            # connection is opened with mode=ro, so the file's bytes never
            # change. Tasks that write only temporary tables run inline on
            # one of them.
            try:
                conn = connect(path, readonly=True, timeout_s=busy_timeout_s)
                version = schema_version(conn, path)
            except Error as e:
                raise UnusableDatabase(f"{path}: {e}") from None
            if 0 < version < SCHEMA_VERSION:
                # A file of an older schema (a backup, or a database no
                # server has opened since Tally was upgraded): read a copy
                # migrated as a server would, leaving the file as it is.
                conn.close()
                self._copy_folder = tempfile.mkdtemp(prefix="tally-upgraded-")
                self.path = path = os.path.join(self._copy_folder, "counts.db")
                copy_database(source_path, path, timeout_s=busy_timeout_s)
                open_writer(path, sync, busy_timeout_s).close()
                conn = connect(path, readonly=True, timeout_s=busy_timeout_s)
        else:
            conn = open_writer(path, sync, busy_timeout_s, max_page_count)
        self.backend = Backend(conn, self, max_pages, use_returning, busy_timeout_s)
        self.writer = Writer(self.backend, keep_days)
        self.github = KeptTraffic(sql.github_statements(sql.SQLITE), self._read, self.writer.wait)
        self.owners = PageOwners(sql.owner_statements(sql.SQLITE), self._read, self.writer.wait,
                                 self.backend.salt)
        self.staging = SqliteStaging()
        # The file this store opened; if the path stops naming it, counting
        # stops (FileGone) instead of writing where nobody will look.
        self._identity = file_identity(path)
        self._file_checked_at = time.monotonic()
        self._file_ok = True
        if not readonly:
            self.writer.start()

    def close(self) -> None:
        self.writer.stop()
        for conn in self._all_readers:
            conn.close()
        self.backend.conn.close()
        if self._copy_folder is not None:
            shutil.rmtree(self._copy_folder, ignore_errors=True)

    def describe(self) -> str:
        """For the start-up line."""
        return (f"SQLite {sqlite_file.sqlite_version()}, "
                f"{'RETURNING' if self.backend.use_returning else 'UPSERT then SELECT'}, "
                f"synchronous={self.sync}")

    def check_file(self, max_age_s: float = 0.0) -> None:
        """Raise FileGone unless the path still names the file this store opened.

        A stat, a few microseconds; with max_age_s, skipped while the last
        check was good and younger than that.
        """
        now = time.monotonic()
        if self._file_ok and now - self._file_checked_at < max_age_s:
            return
        try:
            same = file_identity(self.path) == self._identity
            reason = "the path now names another file"
        except OSError as e:
            same, reason = False, e.strerror or str(e)
        self._file_ok, self._file_checked_at = same, now
        if not same:
            raise FileGone(f"{FileGone.kind}: {self.path}: {reason}")

    # Reading ------------------------------------------------------------------

    def _reader(self) -> Connection:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        # A new connection opens whatever the path names now: check first.
        self.check_file()
        try:
            conn = connect(self.path, readonly=self.readonly, timeout_s=self._timeout)
        except Error as e:
            raise storage_error(e) from None
        with self._readers_lock:
            self._all_readers.append(conn)
        return conn

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        self.check_file(FILE_CHECK_INTERVAL)
        conn = self._reader()
        try:
            return conn.execute(sql, params).fetchall()
        except Error as e:
            raise storage_error(e) from None
        finally:
            self._readers.put(conn)

    def ping(self) -> None:
        """Raise StorageError unless the file is still in place, answers a
        query, and the writer runs."""
        self.check_file()
        super().ping()

    def page_count(self) -> int:
        return self._read("SELECT pages FROM page_count")[0][0]

    def pages(self) -> Iterator[Page]:
        """Every page with its history, ordered by page_id, from one snapshot
        (a read transaction held until the last page is read): one page in
        memory at a time, however many there are."""
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            rows = conn.execute(SQL["all_pages"])
            for _, group in itertools.groupby(rows, key=lambda row: row[0]):
                first, *others = group
                days = [row[6:] for row in [first, *others] if row[6] is not None]
                yield page_from_rows(first[:6], days)
        except Error as e:
            raise storage_error(e) from None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._readers.put(conn)

    # Owner controls ---------------------------------------------------------------

    def rename(self, old: str, new: str, merge: bool = False) -> None:
        def run(conn: Connection) -> None:
            if not conn.execute("SELECT 1 FROM pages WHERE page_id = ?", (old,)).fetchone():
                raise NotFound(old)
            exists = conn.execute("SELECT 1 FROM pages WHERE page_id = ?", (new,)).fetchone()
            if exists and not merge:
                raise AlreadyExists(new)
            if not exists:
                # The days follow the page's key: only its id changes.
                conn.execute(SQL["rename"], (new, old))
                return
            keys = tuple(conn.execute(SQL["key"], (page_id,)).fetchone()[0]
                         for page_id in (old, new))
            if conn.execute(SQL["merge_over"], (*keys, TOTAL_MAX, *keys, TOTAL_MAX)).fetchone()[0]:
                raise TotalLimitReached(new)
            conn.execute(
                "UPDATE pages SET total = pages.total + o.total, "
                "visitors = pages.visitors + o.visitors, held = pages.held + o.held, "
                "created_at = min(pages.created_at, o.created_at), "
                "last_seen = max(pages.last_seen, o.last_seen) "
                "FROM (SELECT * FROM pages WHERE id = ?) o WHERE pages.id = ?", keys)
            conn.execute(SQL["merge_days"], keys[::-1])
            conn.execute(SQL["delete_days"], keys[:1])
            conn.execute(SQL["delete_page"], keys[:1])
        self.writer.wait(Task(run))


class SqliteStaging(Staging):
    """An import's steps in temporary tables of the writer's connection."""

    def stage(self, conn: Connection, pages: Iterable[Page]) -> None:
        self.drop(conn)
        # number: the page's position, so chunks are ranges of it.
        # The CHECKs repeat schema.sql's (and TOTAL_MAX), so that a value the
        # database would refuse stops the import here, before any write.
        count = (f"INTEGER NOT NULL CHECK (typeof({{0}}) = 'integer' "
                 f"AND {{0}} BETWEEN 0 AND {TOTAL_MAX})")
        conn.execute("CREATE TEMP TABLE staged_pages (number INTEGER PRIMARY KEY, "
                     f"page_id TEXT NOT NULL UNIQUE, total {count.format('total')}, "
                     "created_at TEXT NOT NULL, last_seen TEXT NOT NULL, "
                     f"visitors {count.format('visitors')})")
        conn.execute("CREATE TEMP TABLE staged_days (number INTEGER NOT NULL, day TEXT NOT NULL, "
                     f"views {count.format('views')}, visitors {count.format('visitors')}, "
                     f"bots {count.format('bots')}, held {count.format('held')}, "
                     "PRIMARY KEY (number, day))")
        for number, page in enumerate(pages):
            try:
                conn.execute("INSERT INTO temp.staged_pages VALUES (?, ?, ?, ?, ?, ?)",
                             (number, page.page_id, page.total, page.created_at, page.last_seen,
                              page.visitors))
                conn.executemany("INSERT INTO temp.staged_days VALUES (?, ?, ?, ?, ?, ?)",
                                 day_rows(number, page))
            except IntegrityError as e:
                if "UNIQUE" not in str(e):
                    raise
                raise Duplicate(page.page_id) from None

    def report(self, conn: Connection, mode: str) -> dict[str, int]:
        changed, created, over = conn.execute(
            "SELECT count(p.page_id), count(*) - count(p.page_id), "
            "coalesce(sum(? = 'add' AND coalesce(p.total, 0) + s.total > ?), 0) "
            "FROM temp.staged_pages s LEFT JOIN pages p ON p.page_id = s.page_id",
            (mode, TOTAL_MAX)).fetchone()
        days = conn.execute(
            "SELECT count(*), coalesce(sum(? = 'add' AND coalesce(d.views, 0) + s.views > ?), 0) "
            "FROM temp.staged_days s JOIN temp.staged_pages p ON p.number = s.number "
            "LEFT JOIN pages k ON k.page_id = p.page_id "
            f"LEFT JOIN daily d ON d.page = k.id AND d.day = {sql.SQLITE.day_number.format('s.day')}",
            (mode, TOTAL_MAX)).fetchone()
        if over or days[1]:
            raise TotalLimitReached(f"adding would take a total past {TOTAL_MAX}")
        return {"created": created, "changed": changed, "days": days[0]}

    def merge(self, conn: Connection, mode: str, first: int, chunk: int) -> None:
        numbers, day_number = (first, first + chunk - 1), sql.SQLITE.day_number
        conn.execute(SQL[f"import_page_{mode}"].format(
            source="SELECT page_id, total, created_at, last_seen, visitors FROM temp.staged_pages "
                   "WHERE number BETWEEN ? AND ?"), numbers)
        conn.execute(SQL[f"import_day_{mode}"].format(
            source=f"SELECT k.id, {day_number.format('s.day')}, s.views, s.visitors, s.bots, "
                   "s.held FROM temp.staged_days s JOIN temp.staged_pages p ON p.number = s.number "
                   "JOIN pages k ON k.page_id = p.page_id WHERE s.number BETWEEN ? AND ?"),
            numbers)
        conn.execute(SQL["import_held"].format(
            source="SELECT page_id FROM temp.staged_pages WHERE number BETWEEN ? AND ?"), numbers)
        conn.execute(f"INSERT INTO view_days (day) SELECT DISTINCT {day_number.format('day')} "
                     "FROM temp.staged_days WHERE number BETWEEN ? AND ? "
                     "ON CONFLICT DO NOTHING", numbers)

    def progress(self, conn: Connection, key: str, mode: str
                 ) -> tuple[int, int, str | None] | None:
        try:
            return conn.execute(SQL["import_progress"], (key, mode)).fetchone()
        except OperationalError:
            return None  # a file of schema 1, read by import --dry-run: no import recorded

    def drop(self, conn: Connection) -> None:
        conn.execute("DROP TABLE IF EXISTS temp.staged_days")
        conn.execute("DROP TABLE IF EXISTS temp.staged_pages")
