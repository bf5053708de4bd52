"""Tally's PostgreSQL store: several Tally processes counting into one
database, exactly. Selected by a PostgreSQL URL in TALLY_DB.

The only module that imports psycopg. It never imports bottle and never
builds SVG. Its statements are here, in stores/sql.py (those both stores
share) or in schema_postgres.sql.

Counting is the same as with SQLite, nothing read first and written later:
one statement per view, an INSERT ... ON CONFLICT DO UPDATE ... RETURNING on
pages and on daily, and each process's writer puts the views that arrive
together into one transaction, sent as one pipeline (psycopg's executemany
with returning: one round trip for the batch instead of one per view; the
batch's new visitors' hashes are written first, in the same pipeline) and
answered only after COMMIT, with synchronous_commit left as the server has
it (on).
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Iterator

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import errors

from stores import sql
from stores.store import IMPORT_CHUNK, Staging, Store as Base
from stores.owners import PageOwners
from stores.traffic import KeptTraffic
from stores.values import (SALT_BYTES, TOTAL_MAX, VISITOR_GRACE, AlreadyExists, Counts,
                           Duplicate, KnownVisitors, NotFound, Page, PageLimitReached,
                           StorageBusy, StorageError, StorageFull, StorageReadOnly,
                           StorageUnreachable, TotalLimitReached, UnusableDatabase, day,
                           day_rows, masked, migrations, page_from_rows, scrubbed, stamp,
                           statements, visitor_hash)
from stores.writer import BATCH_LIMIT, Task, View, Writer

SQL = sql.statements(sql.POSTGRES)

# psycopg and its pool log each failed reconnect and each discarded
# connection: through a long outage that would flood an unattended box's log.
# Tally logs an outage once, with its cause, and its end (server.OutageLog).
logging.getLogger("psycopg").setLevel(logging.CRITICAL)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema_postgres.sql"
SCHEMA_VERSION = migrations(SCHEMA_FILE)[-1][0]
# Any fixed number: migrations of concurrent start-ups take turns on it.
_MIGRATION_LOCK = 0x74616C6C79
READER_POOL_SIZE = 4
# How often the writer counts the pages, when TALLY_MAX_PAGES is set.
PAGE_COUNT_REFRESH_S = 1.0


# Errors ####################################################################

_ERROR_BY_CLASS: list[tuple[type, type[StorageError]]] = [
    (errors.QueryCanceled, StorageBusy),           # statement_timeout
    (errors.LockNotAvailable, StorageBusy),        # lock_timeout
    (errors.DeadlockDetected, StorageBusy),
    (errors.DiskFull, StorageFull),
    (errors.InsufficientResources, StorageFull),
    (errors.ReadOnlySqlTransaction, StorageReadOnly),
    (psycopg.OperationalError, StorageUnreachable),  # down, restarting, connection dropped
    (psycopg_pool.PoolTimeout, StorageUnreachable),
]


def _storage_error(error: Exception) -> StorageError:
    cls = next((c for k, c in _ERROR_BY_CLASS if isinstance(error, k)), StorageError)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return cls(f"{cls.kind}: {first_line}")


# Counting: one statement per view ##########################################

# allowed: whether this view is written (views 1, or held 1: a view the
# inflation guard holds, written as a counted one is but to held; and
# neither refusal below);
# the first refusal is a new page once max_pages exist (NULL: no cap), the
# second a view past TOTAL_MAX. seen: 1 when _ADD_VISITORS wrote the view's
# hash in this transaction (the row's xmin is this transaction's id; a hash
# there before, or written by another server meanwhile, has another), else
# 0. daily is written when pages was, or, for a bot's view that does not
# count, only its bot views, only on a page that exists, whose row it locks
# first (bot_page): every writer takes a page's row before its days' rows
# (taking the day's row first deadlocked with another server's counted view
# of the page). The snapshot columns (cur_*) answer such a bot's view: the
# statement's own changes are not visible to them. existed tells the two refusals apart. Several
# processes may each add a new page at the same moment: the page cap can
# then be passed by at most one page per process.
_COUNT = """
WITH allowed AS (
    SELECT %(views)s::int + %(held)s::int > 0 AND (
        EXISTS (SELECT 1 FROM pages WHERE page_id = %(page_id)s
                AND total + %(views)s::int <= %(max_total)s)
        OR NOT EXISTS (SELECT 1 FROM pages WHERE page_id = %(page_id)s)
           AND (%(max_pages)s::bigint IS NULL
                OR (SELECT count(*) FROM pages) < %(max_pages)s::bigint)) AS ok
), seen AS (
    SELECT count(*) AS new FROM visitor_hashes
    WHERE %(hash)s::bytea IS NOT NULL AND day = %(day)s AND hash = %(hash)s::bytea
      AND xmin = pg_current_xact_id()::xid
), page AS (
    INSERT INTO pages (page_id, total, held, visitors, created_at, last_seen)
    SELECT %(page_id)s, %(views)s, %(held)s, (SELECT new FROM seen), %(stamp)s, %(stamp)s
    WHERE (SELECT ok FROM allowed)
    ON CONFLICT (page_id) DO UPDATE SET total = pages.total + excluded.total,
        held = pages.held + excluded.held,
        visitors = pages.visitors + excluded.visitors, last_seen = excluded.last_seen
    WHERE pages.total + excluded.total <= %(max_total)s
    RETURNING id, total, visitors, held
), bot_page AS (
    SELECT id FROM pages WHERE page_id = %(page_id)s AND %(views)s::int + %(held)s::int = 0
    FOR NO KEY UPDATE
), today AS (
    INSERT INTO daily (page, day, views, visitors, bots, held)
    SELECT coalesce((SELECT id FROM page), (SELECT id FROM bot_page)),
           %(day)s::date, %(views)s, (SELECT new FROM seen), %(bots)s, %(held)s
    WHERE EXISTS (SELECT 1 FROM page) OR EXISTS (SELECT 1 FROM bot_page)
    ON CONFLICT (page, day) DO UPDATE SET views = daily.views + excluded.views,
        visitors = daily.visitors + excluded.visitors, bots = daily.bots + excluded.bots,
        held = daily.held + excluded.held
    RETURNING views, visitors, held
), current AS (
    SELECT p.total, p.visitors, d.views AS today, d.visitors AS today_visitors,
           p.held, d.held AS today_held FROM pages p
    LEFT JOIN daily d ON d.page = p.id AND d.day = %(day)s::date WHERE p.page_id = %(page_id)s
)
SELECT (SELECT total FROM page), (SELECT views FROM today),
       EXISTS (SELECT 1 FROM current),
       (SELECT visitors FROM page), (SELECT visitors FROM today),
       (SELECT held FROM page), (SELECT held FROM today),
       (SELECT total FROM current), (SELECT today FROM current),
       (SELECT visitors FROM current), (SELECT today_visitors FROM current),
       (SELECT held FROM current), (SELECT today_held FROM current)
"""
# A batch's new visitors, written before its views: every hash in one
# statement, in hash order, before any page's row is locked. Each view's
# statement used to write its own hash, then its page: a process with a page
# locked (an earlier view of the batch) could then wait for a hash another
# process held while that one waited for the page (a deadlock: PostgreSQL
# aborted one of the batches, and each of its views answered 503). Now every writer takes hashes, then pages in page_id order,
# then their days: always in that order. Of two servers writing the same
# hash at once, one adds it (ON CONFLICT). A view refused for the page cap or
# TOTAL_MAX writes no hash (the same test as _COUNT's allowed).
_ADD_VISITORS = """
INSERT INTO visitor_hashes (day, hash)
SELECT v.day, v.hash FROM unnest(%(days)s::text[], %(hashes)s::bytea[], %(page_ids)s::text[])
    AS v(day, hash, page_id)
WHERE EXISTS (SELECT 1 FROM pages WHERE page_id = v.page_id AND total < %(max_total)s)
   OR NOT EXISTS (SELECT 1 FROM pages WHERE page_id = v.page_id)
      AND (%(max_pages)s::bigint IS NULL OR (SELECT count(*) FROM pages) < %(max_pages)s::bigint)
ORDER BY v.day, v.hash
ON CONFLICT DO NOTHING
"""
# Opening ###################################################################


def check_encoding(conn: psycopg.Connection, url: str) -> None:
    """Refuse, before anything is created, a database that is not UTF-8:
    on LATIN1 one emoji page id failed a whole group commit, and on
    SQL_ASCII names come back as bytes."""
    encoding = conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database "
                            "WHERE datname = current_database()").fetchone()[0]
    if isinstance(encoding, bytes):  # SQL_ASCII: psycopg answers bytes
        encoding = encoding.decode("ascii", "replace")
    if encoding != "UTF8":
        raise UnusableDatabase(
            f"{masked(url)}: the database's encoding is {encoding}; Tally needs "
            f"UTF8 (createdb --encoding=UTF8 --template=template0 ...)")

# Counting finds a visitor's new hash by its row's xmin and the
# transaction's id, pg_current_xact_id() (PostgreSQL 13).
OLDEST_SERVER = 130000


def check_server(version: int, url: str) -> None:
    """Refuse, before anything is created, a server older than OLDEST_SERVER."""
    if version < OLDEST_SERVER:
        raise UnusableDatabase(
            f"{masked(url)}: PostgreSQL {version // 10000}.{version % 10000}; Tally "
            f"needs {OLDEST_SERVER // 10000} or newer")


# Migrations that rewrite tables into a new layout (schema_postgres.sql's
# header): the numbers below, read before and after inside the migration's
# transaction, must be equal or nothing is changed and the server refuses
# to start (stores/sqlite_file.py reads the same numbers).
REWRITES = {5}
_KEPT_NUMBERS = (
    "SELECT count(*), coalesce(sum(total), 0), coalesce(sum(visitors), 0), "
    "coalesce(sum(total * length(page_id)), 0), coalesce(sum(visitors * length(page_id)), 0), "
    "(SELECT count(*) FROM daily), (SELECT coalesce(sum(views), 0) FROM daily), "
    "(SELECT coalesce(sum(visitors), 0) FROM daily), (SELECT coalesce(sum(bots), 0) FROM daily) "
    "FROM pages"
)


def migrate(conn: psycopg.Connection, url: str) -> None:
    """Create or update Tally's tables, once for several servers starting at once."""
    with conn.transaction():
        # No time limit here: a migration that rewrites a million pages'
        # days takes minutes, and another server starting meanwhile waits
        # for it rather than failing.
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("SET LOCAL lock_timeout = 0")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        version = schema_version(conn, url)
        for number, body in migrations(SCHEMA_FILE):
            if number <= version:
                continue
            verified = number in REWRITES and version > 0
            before = conn.execute(_KEPT_NUMBERS).fetchone() if verified else None
            for statement in statements(body):
                conn.execute(statement)
            after = conn.execute(_KEPT_NUMBERS).fetchone() if verified else None
            if before != after:
                raise UnusableDatabase(
                    f"{masked(url)}: migration {number} would change the counts "
                    f"(pages, days and their sums {before} became {after}); it was rolled "
                    f"back and nothing changed")
            conn.execute("UPDATE tally_schema SET version = %s", (number,))

def schema_version(conn: psycopg.Connection, url: str) -> int:
    """The schema version (0: no Tally tables); another program's tables or a
    newer version are refused."""
    tables = {name for (name,) in conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name IN "
        "('tally_schema', 'pages', 'daily')")}
    if "tally_schema" not in tables:
        if tables:
            raise UnusableDatabase(f"{masked(url)}: not a Tally database "
                                   f"(it has a table {sorted(tables)[0]} of its own)")
        return 0
    version = conn.execute("SELECT version FROM tally_schema").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UnusableDatabase(f"{masked(url)}: schema version {version} is "
                               f"newer than this Tally ({SCHEMA_VERSION}); upgrade Tally")
    return version


def check_readable(conn: psycopg.Connection, url: str) -> None:
    """A reading command never creates or migrates anything: pointed at
    another application's database it only reads."""
    with conn.transaction():
        version = schema_version(conn, url)
        if version == 0:
            raise UnusableDatabase(f"{masked(url)}: no Tally tables in it (`serve` creates them)")
        if version < SCHEMA_VERSION:
            raise UnusableDatabase(
                f"{masked(url)}: schema version {version}, older than this "
                f"Tally's ({SCHEMA_VERSION}): start `serve` once to migrate it")


def _key(conn: psycopg.Connection, page_id: str) -> int | None:
    """A page's integer key (schema_postgres.sql, migration 5), None when it has none."""
    row = conn.execute(SQL["key"], (page_id,)).fetchone()
    return row[0] if row else None


class Backend:
    """The writer's side (stores.writer.Backend): its one connection, opened
    again when it was lost, a batch's views as one pipeline, the days'
    salts, the visitors it knows, and its count of pages for the cap."""

    newest_from = SQL["newest_from"]

    def __init__(self, url: str, kwargs: dict, max_pages: int | None) -> None:
        self.url = url
        self._kwargs = kwargs
        self.max_pages = max_pages
        self._conn: psycopg.Connection | None = None
        # The writer's count of pages, for the cap (page_cap).
        self.pages_seen: int | None = None
        self._pages_seen_at = 0.0
        self._salts: dict[str, bytes] = {}
        self._known = KnownVisitors()

    def connection(self) -> psycopg.Connection:
        """The writer's connection, opened again when it was lost."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = psycopg.connect(self.url, autocommit=True, **self._kwargs)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # closing a connection the server already dropped
            self._conn = None

    def write_views(self, batch: list[View], new_days: list[str]) -> None:
        try:
            conn = self.connection()
            cap = self.page_cap(conn)
            values = [self._values(conn, view, cap) for view in batch]
            # The new visitors' hashes first (_ADD_VISITORS), then the views
            # in page_id order: two processes then lock rows in the same order
            # and never deadlock each other. Python orders str by code
            # point, which is UTF-8's byte order: COLLATE "C", as import and
            # rename sort, whatever the database's own collation ("B" < "a"
            # in both).
            ordered = sorted(zip(batch, values), key=lambda pair: pair[0].page_id)
            with conn.transaction(), conn.pipeline(), conn.cursor() as cursor:
                for new_day in new_days:  # first: a server waiting here holds no row yet
                    conn.execute(SQL["mark_day"], (new_day,))
                hashed = [v for v in values if v["hash"] is not None]
                if hashed:  # in the same pipeline, before the views
                    conn.execute(_ADD_VISITORS, {
                        "days": [v["day"] for v in hashed], "hashes": [v["hash"] for v in hashed],
                        "page_ids": [v["page_id"] for v in hashed], "max_pages": cap,
                        "max_total": TOTAL_MAX})
                cursor.executemany(_COUNT, [v for _, v in ordered], returning=True)
                rows = []
                while True:
                    rows.append(cursor.fetchone())
                    if not cursor.nextset():
                        break
        except BaseException:
            # A pipeline cut off by the server can leave the connection neither
            # broken nor usable ("cannot exit pipeline mode while busy"): it is
            # dropped, and the next batch opens a new one.
            self.close()
            self._salts.clear()
            self._known.forget_pending()
            raise
        self._known.committed()
        for (view, _), (total, today, existed, visitors, today_visitors, held, today_held,
                        *current) in zip(ordered, rows):
            if not view.views and not view.held:
                # a bot's view that does not count: the counts as they were
                cur_total, cur_today, cur_visitors, cur_today_visitors, cur_held, \
                    cur_today_held = current
                view.result = (Counts(cur_total, cur_today or 0, cur_visitors,
                                      cur_today_visitors or 0, cur_held, cur_today_held or 0)
                               if cur_total is not None else Counts(0, 0))
            elif total is not None:
                view.result = Counts(total, today, visitors, today_visitors, held, today_held)
                if not existed and self.pages_seen is not None:
                    self.pages_seen += 1
            else:
                view.error = (TotalLimitReached if existed else PageLimitReached)(view.page_id)

    def salt(self, conn: psycopg.Connection, today: str) -> bytes:
        """The day's salt, shared by every server on this database: made
        (random) by the first that needs it, in a transaction of its own."""
        salt = self._salts.get(today)
        if salt is None:
            with conn.transaction():
                conn.execute("INSERT INTO visitor_salts (day, salt) VALUES (%s, %s) "
                             "ON CONFLICT DO NOTHING", (today, os.urandom(SALT_BYTES)))
                salt = bytes(conn.execute("SELECT salt FROM visitor_salts WHERE day = %s",
                                          (today,)).fetchone()[0])
            self._salts[today] = salt
        return salt

    def page_cap(self, conn: psycopg.Connection) -> int | None:
        """The page cap this batch's statements check, or None.

        Checking it counts the pages table (22 ms at 500,000 pages), inside
        the writer's transaction, for every view of a new page: a flood of
        new ids then starved every other page's views. PostgreSQL keeps no
        cheap exact count, and a counter row would be one lock every
        process's new pages wait for. So the writer counts at most once a
        second, adds the pages it creates itself, and lets the statements
        check the cap (exactly, as before) only within a tenth of it.
        """
        if self.max_pages is None:
            return None
        now = time.monotonic()
        if self.pages_seen is None or now - self._pages_seen_at >= PAGE_COUNT_REFRESH_S:
            self.pages_seen = conn.execute("SELECT count(*) FROM pages").fetchone()[0]
            self._pages_seen_at = now
        margin = max(BATCH_LIMIT, self.max_pages // 10)
        return self.max_pages if self.pages_seen + margin >= self.max_pages else None

    def _values(self, conn: psycopg.Connection, view: View, cap: int | None) -> dict:
        today = day(view.now)
        hashed = None
        if view.visitor is not None and view.views:
            key = (today, visitor_hash(self.salt(conn, today), view.page_id, *view.visitor))
            # A visitor this process wrote already: known to every server
            # (it is in the table), so no insert is needed.
            if key not in self._known:
                self._known.written(key)
                hashed = key[1]
        return {"page_id": view.page_id, "stamp": stamp(view.now), "day": today,
                "max_pages": cap, "max_total": TOTAL_MAX, "views": view.views,
                "bots": view.bots, "held": view.held, "hash": hashed}

    def forget(self, conn: psycopg.Connection, now: datetime.datetime) -> int:
        before = day(now - VISITOR_GRACE)
        forgotten = conn.execute("DELETE FROM visitor_salts WHERE day < %s", (before,)).rowcount
        conn.execute("DELETE FROM visitor_hashes WHERE day < %s", (before,))
        for old in [old for old in self._salts if old < before]:
            del self._salts[old]
        self._known.forget_days_before(before)
        return forgotten

    def trim(self, conn: psycopg.Connection, before: str, after: tuple | None,
             rows: int) -> tuple[tuple | None, int]:
        start = after or (0, datetime.date.min)
        last = conn.execute(SQL["trim_last"], (*start, before, rows - 1)).fetchone()
        if last is None:
            return None, conn.execute(SQL["trim_rest"], (*start, before)).rowcount
        return tuple(last), conn.execute(SQL["trim_upto"], (*start, *last, before)).rowcount

    def run_task(self, task: Task) -> object:
        try:
            conn = self.connection()
            with conn.transaction():
                return task.fn(conn)
        except psycopg.Error as e:
            if self._conn is not None and (self._conn.broken or self._conn.info.transaction_status
                                           != psycopg.pq.TransactionStatus.IDLE):
                self.close()
            if isinstance(e, errors.UniqueViolation) and not task.write:
                # Staging an import: "Key (page_id)=(alice.repo) already exists."
                detail = e.diag.message_detail or ""
                raise Duplicate(detail[detail.find("=(") + 2:detail.rfind(") already")]) from None
            raise

    @staticmethod
    def classify(error: Exception) -> Exception:
        return (_storage_error(error) if isinstance(error, (psycopg.Error, psycopg_pool.PoolTimeout))
                else error)


class Store(Base):
    """The counts in one PostgreSQL database, shared by any number of Tally
    processes. One writer connection per process (its writer thread does
    group commit), a small pool of reader connections. A dropped connection
    fails the requests that were using it (503) and is opened again for the
    next ones: no restart needed after the database comes back."""

    sql = SQL

    def __init__(self, url: str, *, max_pages: int | None = None, timeout_s: float = 5.0,
                 readonly: bool = False, keep_days: int | None = None):
        self.url = url
        self.keep_days = keep_days
        self.readonly = readonly
        ms = max(1, int(timeout_s * 1000))
        # Every wait is bounded: connecting, a lock, a statement.
        kwargs = {"connect_timeout": max(1, int(round(timeout_s))), "application_name": "tally",
                  "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"}
        self.backend = Backend(url, kwargs, max_pages)
        self.writer = Writer(self.backend, keep_days)
        self.github = KeptTraffic(sql.github_statements(sql.POSTGRES), self._read, self.writer.wait)
        self.owners = PageOwners(sql.owner_statements(sql.POSTGRES), self._read, self.writer.wait,
                                 self.backend.salt)
        self.staging = PostgresStaging()
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            # libpq's message quotes the piece it could not read, which may
            # be (part of) the password: none of it is shown.
            raise UnusableDatabase(
                f"{masked(url)}: not a valid PostgreSQL URL or key=value string "
                f"(check its quoting and percent-encoding)") from None
        try:
            conn = self.backend.connection()
            check_server(conn.info.server_version, url)
            check_encoding(conn, url)
            if readonly:
                check_readable(conn, url)
            else:
                migrate(conn, url)
            self._server_version = conn.info.server_version
        except psycopg.Error as e:
            self.backend.close()
            raise UnusableDatabase(f"{masked(url)}: "
                                   f"{scrubbed(str(_storage_error(e)), url)}") from None
        except UnusableDatabase:
            self.backend.close()
            raise
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=READER_POOL_SIZE, kwargs=kwargs | {"autocommit": True},
            timeout=timeout_s, name="tally-readers", open=True)
        if not readonly:
            self.writer.start()

    def describe(self) -> str:
        """For the start-up line."""
        v = self._server_version
        return f"PostgreSQL {v // 10000}.{v % 10000}, group commit through a pipeline"

    def close(self) -> None:
        self.writer.stop()
        self.backend.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    # Reading ------------------------------------------------------------------

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._read_once(sql, params)
        except psycopg.OperationalError:
            # A pooled connection that sat idle through a database restart
            # fails on first use, and the pool drops it. A read changes
            # nothing: it is tried once more, on a fresh connection.
            pass
        except (psycopg.Error, psycopg_pool.PoolTimeout) as e:
            raise _storage_error(e) from None
        try:
            return self._read_once(sql, params)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as e:
            raise _storage_error(e) from None

    def _read_once(self, sql: str, params: tuple) -> list[tuple]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def page_count(self) -> int:
        return self._read("SELECT count(*) FROM pages")[0][0]

    def pages(self) -> Iterator[Page]:
        """Every page with its history, ordered by page_id, from one snapshot
        (a server-side cursor: one page in memory at a time)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # Sorting a million pages' days before the first row takes
                # longer than TALLY_BUSY_TIMEOUT allows a statement; a read
                # holds no lock anyone waits for.
                conn.execute("SET LOCAL statement_timeout = 0")
                with conn.cursor(name="tally_pages") as cursor:
                    cursor.itersize = 2000
                    cursor.execute(SQL["all_pages"])
                    for _, group in itertools.groupby(cursor, key=lambda row: row[0]):
                        first, *others = group
                        days = [row[6:] for row in [first, *others] if row[6] is not None]
                        yield page_from_rows(first[:6], days)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as e:
            raise _storage_error(e) from None

    # Owner controls ---------------------------------------------------------------

    def rename(self, old: str, new: str, merge: bool = False) -> None:
        def run(conn: psycopg.Connection) -> None:
            # Both rows locked in one statement, in the order every writer
            # takes page rows (byte order, COLLATE "C"): no deadlock with a batch.
            found = {page_id for (page_id,) in conn.execute(
                'SELECT page_id FROM pages WHERE page_id IN (%s, %s) '
                'ORDER BY page_id COLLATE "C" FOR UPDATE', (old, new))}
            if old not in found:
                raise NotFound(old)
            exists = new in found
            if exists and not merge:
                raise AlreadyExists(new)
            if not exists:
                # The days follow the page's key: only its id changes.
                conn.execute(SQL["rename"], (new, old))
                return
            keys = tuple(_key(conn, page_id) for page_id in (old, new))
            if conn.execute(SQL["merge_over"], (*keys, TOTAL_MAX, *keys, TOTAL_MAX)).fetchone()[0]:
                raise TotalLimitReached(new)
            conn.execute(
                "UPDATE pages SET total = pages.total + o.total, "
                "visitors = pages.visitors + o.visitors, held = pages.held + o.held, "
                "created_at = LEAST(pages.created_at, o.created_at), "
                "last_seen = GREATEST(pages.last_seen, o.last_seen) "
                "FROM pages o WHERE o.page_id = %s AND pages.page_id = %s", (old, new))
            conn.execute(SQL["merge_days"], keys[::-1])
            conn.execute(SQL["delete_days"], keys[:1])
            conn.execute(SQL["delete_page"], keys[:1])
        self.writer.wait(Task(run))


class PostgresStaging(Staging):
    """An import's steps in temporary tables of the writer's connection."""

    def stage(self, conn: psycopg.Connection, pages: Iterable[Page]) -> None:
        # Staging and its report touch only this connection's temporary
        # tables and read the counts (no lock a view waits for): a file of a
        # million pages takes longer than TALLY_BUSY_TIMEOUT allows a
        # statement. Each chunk's writes keep the limit (merge).
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("DROP TABLE IF EXISTS pg_temp.staged_days, pg_temp.staged_pages")
        # The CHECKs repeat schema_postgres.sql's (and TOTAL_MAX), so that a
        # value the database would refuse stops the import here.
        count = f"BIGINT NOT NULL CHECK ({{0}} BETWEEN 0 AND {TOTAL_MAX})"
        conn.execute("CREATE TEMP TABLE staged_pages (number BIGINT PRIMARY KEY, "
                     f"page_id TEXT NOT NULL UNIQUE, total {count.format('total')}, "
                     "created_at TEXT NOT NULL, last_seen TEXT NOT NULL, "
                     f"visitors {count.format('visitors')})")
        conn.execute("CREATE TEMP TABLE staged_days (number BIGINT NOT NULL, day TEXT NOT NULL, "
                     f"views {count.format('views')}, visitors {count.format('visitors')}, "
                     f"bots {count.format('bots')}, held {count.format('held')}, "
                     "PRIMARY KEY (number, day))")
        # COPY: one stream, not one round trip per line; the pages and
        # their days in turns of IMPORT_CHUNK pages, so one turn is held in
        # memory at a time however large the file.
        numbered = enumerate(pages)
        with conn.cursor() as cursor:
            while chunk := list(itertools.islice(numbered, IMPORT_CHUNK)):
                with cursor.copy("COPY staged_pages FROM STDIN") as pages_copy:
                    for number, page in chunk:
                        pages_copy.write_row((number, page.page_id, page.total, page.created_at,
                                              page.last_seen, page.visitors))
                with cursor.copy("COPY staged_days FROM STDIN") as days_copy:
                    for number, page in chunk:
                        for row in day_rows(number, page):
                            days_copy.write_row(row)

    def report(self, conn: psycopg.Connection, mode: str) -> dict[str, int]:
        """Created, changed and days of the staged import; refuses (before any
        write) a sum past TOTAL_MAX in add mode."""
        conn.execute("SET LOCAL statement_timeout = 0")  # as _stage's
        # Autovacuum never analyzes temporary tables: without statistics the
        # planner scanned all staged days for every chunk's merge.
        conn.execute("ANALYZE pg_temp.staged_pages, pg_temp.staged_days")
        add = mode == "add"
        changed, created, over = conn.execute(
            "SELECT count(p.page_id), count(*) - count(p.page_id), "
            "count(*) FILTER (WHERE %s AND coalesce(p.total, 0) + s.total > %s) "
            "FROM staged_pages s LEFT JOIN pages p ON p.page_id = s.page_id",
            (add, TOTAL_MAX)).fetchone()
        days, days_over = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE %s AND coalesce(d.views, 0) + s.views > %s) "
            "FROM staged_days s JOIN staged_pages p ON p.number = s.number "
            "LEFT JOIN pages k ON k.page_id = p.page_id "
            "LEFT JOIN daily d ON d.page = k.id AND d.day = s.day::date",
            (add, TOTAL_MAX)).fetchone()
        if over or days_over:
            raise TotalLimitReached(f"adding would take a total past {TOTAL_MAX}")
        return {"created": created, "changed": changed, "days": days}

    def merge(self, conn: psycopg.Connection, mode: str, first: int, chunk: int) -> None:
        # Rows in COLLATE "C" order, the order a group commit locks them in
        # (Backend.write_views): a database collation such as ICU's en-US sorts
        # "a" before "B" and deadlocked imports with served views.
        numbers = (first, first + chunk - 1)
        conn.execute(SQL[f"import_page_{mode}"].format(
            source="SELECT page_id, total, created_at, last_seen, visitors FROM staged_pages "
                   'WHERE number BETWEEN %s AND %s ORDER BY page_id COLLATE "C"'), numbers)
        conn.execute(SQL[f"import_day_{mode}"].format(
            source="SELECT k.id, s.day::date, s.views, s.visitors, s.bots, s.held "
                   "FROM staged_days s JOIN staged_pages p ON p.number = s.number "
                   "JOIN pages k ON k.page_id = p.page_id "
                   'WHERE s.number BETWEEN %s AND %s ORDER BY p.page_id COLLATE "C", s.day'),
            numbers)
        conn.execute(SQL["import_held"].format(
            source="SELECT page_id FROM staged_pages WHERE number BETWEEN %s AND %s"), numbers)
        conn.execute("INSERT INTO view_days (day) SELECT DISTINCT day::date FROM staged_days "
                     "WHERE number BETWEEN %s AND %s ORDER BY 1 ON CONFLICT DO NOTHING", numbers)

    def progress(self, conn: psycopg.Connection, key: str, mode: str
                 ) -> tuple[int, int, str | None] | None:
        if conn.execute("SELECT to_regclass('imports')").fetchone()[0] is None:
            return None  # schema 1, read by import --dry-run: no import recorded
        row = conn.execute(SQL["import_progress"], (key, mode)).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def drop(self, conn: psycopg.Connection) -> None:
        conn.execute("DROP TABLE IF EXISTS pg_temp.staged_days, pg_temp.staged_pages")


