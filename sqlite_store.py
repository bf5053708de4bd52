"""Tally's SQLite store, the default: one file in WAL mode. Counting views,
reading counts, owner controls, import, and the file operations (backup,
restore) that only a file database has.

This is the only module that imports sqlite3. It never imports bottle and
never builds SVG. Every SQLite statement lives here or in schema.sql; what
both stores share (values, errors, the group-commit writer) is storage.py.
"""

from __future__ import annotations

import datetime
import fcntl
import itertools
import os
import queue
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import storage
from storage import (TOTAL_MAX, AlreadyExists, Counts, Duplicate, FileGone, NotFound, Page,
                     PageLimitReached, ServerRunning, StorageBusy, StorageError, StorageFull,
                     StorageIOError, StorageReadOnly, Task, TotalLimitReached, UnusableDatabase,
                     View, utc_now)

SCHEMA_FILE = Path(__file__).with_name("schema.sql")

# RETURNING arrived in SQLite 3.35. Debian 11 and Raspberry Pi OS Bullseye
# ship 3.34: there we UPSERT, then SELECT, inside the same BEGIN IMMEDIATE.
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# Reads compare the open file with the path at most this often (seconds);
# every group commit compares them before it writes.
FILE_CHECK_INTERVAL = 1.0


# Errors ####################################################################

_ERROR_BY_CODE = {
    "SQLITE_BUSY": StorageBusy,
    "SQLITE_LOCKED": StorageBusy,
    "SQLITE_FULL": StorageFull,
    "SQLITE_READONLY": StorageReadOnly,
    "SQLITE_IOERR": StorageIOError,
    "SQLITE_CANTOPEN": StorageIOError,
}
# Python 3.10's sqlite3 has no sqlite_errorname: fall back to the message.
_ERROR_BY_MESSAGE = [
    ("locked", StorageBusy),
    ("full", StorageFull),
    ("readonly", StorageReadOnly),
    ("read-only", StorageReadOnly),
    ("i/o", StorageIOError),
    ("unable to open", StorageIOError),
]


def _storage_error(error: sqlite3.Error) -> StorageError:
    name = getattr(error, "sqlite_errorname", "") or ""
    primary = re.sub(r"_[A-Z]+$", "", name) if name.count("_") > 1 else name
    cls = _ERROR_BY_CODE.get(name) or _ERROR_BY_CODE.get(primary)
    if cls is None:
        message = str(error).lower()
        cls = next((c for word, c in _ERROR_BY_MESSAGE if word in message), StorageError)
    return cls(f"{cls.kind}: {error}")


# Schema ####################################################################


def migrations() -> list[tuple[int, str]]:
    """The numbered migrations of schema.sql, in order."""
    return storage.migrations(SCHEMA_FILE)


SCHEMA_VERSION = migrations()[-1][0]

# Migrations that rewrite tables into a new layout (schema.sql's header):
# the numbers below, read before and after inside the migration's
# transaction, must be equal or it is rolled back and the server refuses to
# start. The same statement reads both layouts; the sums weighted by the
# id's length catch counts moved from one page to another. Migration 6 drops
# only the visitor tables (moved to their own file first): checked the same,
# so no count can go with them.
REWRITES = {5, 6}
_KEPT_NUMBERS = (
    "SELECT (SELECT pages FROM page_count), count(*), coalesce(sum(total), 0), "
    "coalesce(sum(visitors), 0), coalesce(sum(total * length(page_id)), 0), "
    "coalesce(sum(visitors * length(page_id)), 0), "
    "(SELECT count(*) FROM daily), (SELECT coalesce(sum(views), 0) FROM daily), "
    "(SELECT coalesce(sum(visitors), 0) FROM daily), (SELECT coalesce(sum(bots), 0) FROM daily) "
    "FROM pages"
)
# The day numbers of schema.sql's compact layout (migration 5), from and to
# a day's text.
_DAY_NUMBER = "CAST(julianday({}) - 2440587.5 AS INTEGER)"
_DAY_TEXT = "date({} * 86400, 'unixepoch')"
_DAY_PARAM = _DAY_NUMBER.format("?")


def _statements(body: str) -> list[str]:
    """A migration's statements, one per execute: split at each ";" that
    ends one (sqlite3.complete_statement), so a trigger's body stays whole."""
    text = "\n".join(line for line in body.splitlines() if not line.strip().startswith("--"))
    found, pending = [], ""
    for piece in text.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending.strip())
            pending = ""
    return found
_stamp, _day = storage.stamp, storage.day


def _connect(path: str, *, readonly: bool = False, timeout_s: float = 5.0) -> sqlite3.Connection:
    # isolation_level=None: we write BEGIN/COMMIT ourselves, so a transaction
    # is exactly what the code shows.
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s,
                               isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=timeout_s,
                               isolation_level=None, check_same_thread=False)
    return conn


def sqlite_version() -> str:
    return sqlite3.sqlite_version


class ServerLock:
    """The lock a serving process holds on a database file: an exclusive
    flock on <db>.lock beside the resolved path, and one on the database
    file itself.

    restore takes it too, so it never replaces counts under a live server,
    and two servers never share one file by mistake. The lock beside the
    resolved path covers symlinks and a file replaced by restore; the lock
    on the file itself covers a hard link (another name of the same inode,
    in any folder), which would otherwise start a second server with its
    own -wal and lose one server's counts at the next checkpoint. flock is
    not SQLite's kind of lock (POSIX fcntl), so the two never meet; the file
    is opened before SQLite opens it and closed after, as SQLite needs.
    """

    def __init__(self, db_path: str, create: bool = True):
        _make_folder(db_path)
        self.path = os.path.realpath(db_path) + ".lock"
        self._files: list[int] = []
        # A server creates a new database's file first (empty, as SQLite
        # would), so that it is locked before anyone can link to it; restore
        # locks only a file that exists.
        names = [self.path, os.path.realpath(db_path)]
        if not create and not os.path.exists(names[1]):
            names.pop()
        try:
            for name in names:
                fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._files.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise ServerRunning(f"{db_path} is in use by a running Tally server") from None
        except OSError as e:
            self.release()
            raise UnusableDatabase(f"{db_path}: cannot lock {name}: {e.strerror}") from None

    def release(self) -> None:
        while self._files:
            os.close(self._files.pop())  # closing ends the flock


def _make_folder(db_path: str) -> None:
    """Create the database's folder when missing, or refuse with one line."""
    folder = os.path.dirname(os.path.abspath(db_path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UnusableDatabase(f"{db_path}: cannot create folder {folder}: {e.strerror}") from None


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version; a newer one than this code's is refused,
    and so is another program's database (version 0 with tables in it)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UnusableDatabase(f"{path}: schema version {version} is newer than this Tally "
                               f"({SCHEMA_VERSION}); upgrade Tally")
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise UnusableDatabase(f"{path}: not a Tally database (it holds other tables)")
    return version


def file_identity(path: str) -> tuple[int, int]:
    """(device, inode) of a path; two names of one file give the same."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def same_file(a: str, b: str) -> bool:
    """True when a and b name one file: the same resolved path, or the same
    inode (a hard link). A path that does not exist is the same only by name."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return file_identity(a) == file_identity(b)
    except OSError:
        return False


def companions(path: str) -> list[str]:
    """A database file and the files SQLite keeps beside it, the day's
    visitor file among them."""
    return [name + suffix for name in (path, visitor_file(path))
            for suffix in ("", "-wal", "-shm", "-journal")]


def visitor_file(path: str) -> str:
    """Where the day's visitor salt and hashes are kept: a file of their
    own beside the database, so that no copy of the database (backup,
    restore's, Litestream's) ever holds them (docs/privacy.md)."""
    return path + "-visitors"


# The visitor file's tables (ATTACHed as "visitors" by the writer): a day's
# random salt, and the keyed hash of each (page, address, User-Agent) seen
# that day. Deleted when the day ends; nothing else is in the file.
_VISITOR_TABLES = (
    "CREATE TABLE IF NOT EXISTS visitors.visitor_salts ("
    "day TEXT PRIMARY KEY NOT NULL, salt BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS visitors.visitor_hashes ("
    "day TEXT NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (day, hash)) WITHOUT ROWID",
)


def _attach_visitors(conn: sqlite3.Connection, path: str) -> None:
    """Attach the database's visitor file: WAL, and synchronous=NORMAL, as
    losing its last writes to a power cut costs at most a visitor counted
    twice; what is deleted in it is overwritten."""
    conn.execute("ATTACH DATABASE ? AS visitors", (visitor_file(path),))
    conn.execute("PRAGMA visitors.journal_mode=WAL")
    conn.execute("PRAGMA visitors.synchronous=NORMAL")
    conn.execute("PRAGMA visitors.secure_delete=ON")
    for statement in _VISITOR_TABLES:
        conn.execute(statement)


def database_files(db_path: str) -> list[str]:
    """The database and the files SQLite keeps beside it (SQLite names them
    after the resolved path when the database is a symlink)."""
    names = {os.path.abspath(db_path), os.path.realpath(db_path)}
    return [file for name in sorted(names) for file in companions(name)]


def is_database_file(path: str, db_path: str) -> bool:
    """True when writing to path would write over the database or its companions."""
    return any(same_file(path, name) for name in database_files(db_path) + [
        os.path.realpath(db_path) + ".lock"])


def inspect_file(path: str) -> tuple[int, int, int]:
    """Check a database file without changing it; return (schema version, pages, total).

    Raises UnusableDatabase with a one-line reason when the file is missing,
    not SQLite, damaged or of a newer schema than this code.
    """
    if not os.path.isfile(path):
        raise UnusableDatabase(f"{path}: no such file")
    try:
        conn = _connect(path, readonly=True)
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path}: cannot open: {e}") from None
    try:
        version = _schema_version(conn, path)
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise UnusableDatabase(f"{path}: integrity check failed: {result}")
        if version < 1:
            raise UnusableDatabase(f"{path}: not a Tally database (schema version 0)")
        pages, total = conn.execute("SELECT count(*), coalesce(sum(total), 0) FROM pages").fetchone()
        return version, pages, total
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path}: {e}") from None
    finally:
        conn.close()


# Opening ###################################################################


def open_writer(path: str, sync: str, timeout_s: float,
                max_page_count: int | None = None) -> sqlite3.Connection:
    """The writer's connection to a file checked, set up (WAL, synchronous)
    and migrated, or UnusableDatabase with a one-line reason."""
    _make_folder(path)
    existed = os.path.exists(path) and os.path.getsize(path) > 0
    try:
        conn = _connect(path, timeout_s=timeout_s)
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path}: cannot open: {e}") from None
    try:
        # Read before any write: a file that is not SQLite, or is damaged
        # or newer, must be refused before WAL mode touches it.
        version = _schema_version(conn, path)
        if existed:
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise UnusableDatabase(f"{path}: database is damaged: {check}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise UnusableDatabase(f"{path}: cannot enable WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={'NORMAL' if sync == 'normal' else 'FULL'}")
        # What is deleted is overwritten, not left in free pages: a day's
        # visitor salt and hashes must be gone from the file once forgotten.
        conn.execute("PRAGMA secure_delete=ON")
        if max_page_count is not None:
            # Tests simulate a full disk with this.
            conn.execute(f"PRAGMA max_page_count={int(max_page_count)}")
        _attach_visitors(conn, path)
        if 4 <= version < 6:
            # Today's salt and hashes move to the visitor file before
            # migration 6 drops them here: today's visitors stay known.
            conn.execute("INSERT OR IGNORE INTO visitors.visitor_salts "
                         "SELECT day, salt FROM main.visitor_salts")
            conn.execute("INSERT OR IGNORE INTO visitors.visitor_hashes "
                         "SELECT day, hash FROM main.visitor_hashes")
        _migrate(conn, version, path)
        if version < 6:
            # The dropped tables' bytes out of the WAL file too.
            conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)")
        # A read-only file opens and even serves reads, then fails every
        # count: refuse it at start-up instead. The probe is rolled back.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        conn.close()
        raise UnusableDatabase(f"{path}: {e}") from None
    except UnusableDatabase:
        conn.close()
        raise
    return conn

def _migrate(conn: sqlite3.Connection, version: int, path: str) -> None:
    for number, body in migrations():
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            verified = number in REWRITES and version > 0
            before = conn.execute(_KEPT_NUMBERS).fetchone() if verified else None
            for statement in _statements(body):
                conn.execute(statement)
            after = conn.execute(_KEPT_NUMBERS).fetchone() if verified else None
            if before != after:
                raise UnusableDatabase(
                    f"{path}: migration {number} would change the counts (pages, days and their "
                    f"sums {before} became {after}); it was rolled back and nothing changed")
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


# The store #################################################################


def by_page_and_day(batch: list[View]) -> list[list[View]]:
    """A batch's views grouped by page, UTC day and whether they count, in
    the order they came: each group is counted with one UPSERT per table."""
    groups: dict[tuple[str, str, int], list[View]] = {}
    for view in batch:
        groups.setdefault((view.page_id, _day(view.now), view.views), []).append(view)
    return list(groups.values())


class Changes(storage.GroupCommitStore):
    """What the owner's commands write into a SQLite file (set, rename, delete,
    import's steps), each as a task in one transaction on the writer's
    connection; Store below opens the connections, counts and reads."""

    def set_total(self, page_id: str, total: int, now: datetime.datetime | None = None) -> None:
        stamp = _stamp(now or utc_now())

        def run(conn: sqlite3.Connection) -> None:
            # Visitors never exceed views: a total set lower lowers them too.
            conn.execute("INSERT INTO pages (page_id, total, created_at, last_seen) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT(page_id) DO UPDATE SET "
                         "total = excluded.total, visitors = min(visitors, excluded.total)",
                         (page_id, total, stamp, stamp))
        self._wait(Task(run))

    def rename(self, old: str, new: str, merge: bool = False) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if not conn.execute("SELECT 1 FROM pages WHERE page_id = ?", (old,)).fetchone():
                raise NotFound(old)
            exists = conn.execute("SELECT 1 FROM pages WHERE page_id = ?", (new,)).fetchone()
            if exists and not merge:
                raise AlreadyExists(new)
            if exists:
                # The sum must stay within TOTAL_MAX, as a view's would
                # (past 2**63 SQLite stores a float).
                keys = (_key(conn, old), _key(conn, new))
                over = conn.execute(
                    "SELECT (SELECT sum(total) FROM pages WHERE id IN (?, ?)) > ? "
                    "OR EXISTS (SELECT 1 FROM daily WHERE page IN (?, ?) "
                    "GROUP BY day HAVING sum(views) > ?)",
                    (*keys, TOTAL_MAX, *keys, TOTAL_MAX)).fetchone()[0]
                if over:
                    raise TotalLimitReached(new)
                conn.execute(
                    "UPDATE pages SET total = pages.total + o.total, "
                    "visitors = pages.visitors + o.visitors, created_at = min(pages.created_at, o.created_at), "
                    "last_seen = max(pages.last_seen, o.last_seen) "
                    "FROM (SELECT * FROM pages WHERE id = ?) o WHERE pages.id = ?", keys)
                conn.execute(
                    "INSERT INTO daily (page, day, views, visitors, bots) "
                    "SELECT ?, day, views, visitors, bots FROM daily WHERE page = ? AND true "
                    "ON CONFLICT(page, day) DO UPDATE SET views = views + excluded.views, "
                    "visitors = visitors + excluded.visitors, bots = bots + excluded.bots",
                    keys[::-1])
                conn.execute("DELETE FROM daily WHERE page = ?", keys[:1])
                conn.execute("DELETE FROM pages WHERE id = ?", keys[:1])
            else:
                # The days follow the page's key: only its id changes.
                conn.execute("UPDATE pages SET page_id = ? WHERE page_id = ?", (new, old))
        self._wait(Task(run))

    def delete(self, page_id: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            key = _key(conn, page_id)
            if key is None:
                raise NotFound(page_id)
            conn.execute("DELETE FROM daily WHERE page = ?", (key,))
            conn.execute("DELETE FROM pages WHERE id = ?", (key,))
        self._wait(Task(run))

    # Import staging: temporary tables of the writer's connection
    # (storage.GroupCommitStore.import_pages runs the steps) -----------------

    @staticmethod
    def _stage(conn: sqlite3.Connection, pages: Iterable[Page]) -> None:
        conn.execute("DROP TABLE IF EXISTS temp.staged_days")
        conn.execute("DROP TABLE IF EXISTS temp.staged_pages")
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
                     f"bots {count.format('bots')}, PRIMARY KEY (number, day))")
        for number, page in enumerate(pages):
            try:
                conn.execute("INSERT INTO temp.staged_pages VALUES (?, ?, ?, ?, ?, ?)",
                             (number, page.page_id, page.total, page.created_at, page.last_seen,
                              page.visitors))
                conn.executemany("INSERT INTO temp.staged_days VALUES (?, ?, ?, ?, ?)",
                                 storage.day_rows(number, page))
            except sqlite3.IntegrityError as e:
                if "UNIQUE" not in str(e):
                    raise
                raise Duplicate(page.page_id) from None

    @staticmethod
    def _staged_report(conn: sqlite3.Connection, mode: str) -> dict[str, int]:
        """Created, changed and days of the staged import; refuses (before any
        write) a sum past TOTAL_MAX in add mode."""
        changed, created, over = conn.execute(
            "SELECT count(p.page_id), count(*) - count(p.page_id), "
            "coalesce(sum(? = 'add' AND coalesce(p.total, 0) + s.total > ?), 0) "
            "FROM temp.staged_pages s LEFT JOIN pages p ON p.page_id = s.page_id",
            (mode, TOTAL_MAX)).fetchone()
        days = conn.execute(
            "SELECT count(*), coalesce(sum(? = 'add' AND coalesce(d.views, 0) + s.views > ?), 0) "
            "FROM temp.staged_days s JOIN temp.staged_pages p ON p.number = s.number "
            "LEFT JOIN pages k ON k.page_id = p.page_id "
            f"LEFT JOIN daily d ON d.page = k.id AND d.day = {_DAY_NUMBER.format('s.day')}",
            (mode, TOTAL_MAX)).fetchone()
        if over or days[1]:
            raise TotalLimitReached(f"adding would take a total past {TOTAL_MAX}")
        return {"created": created, "changed": changed, "days": days[0]}

    @staticmethod
    def _merge_staged(conn: sqlite3.Connection, mode: str, first: int, chunk: int) -> None:
        numbers = (first, first + chunk - 1)
        conn.execute(_IMPORT_PAGE[mode].format(
            source="SELECT page_id, total, created_at, last_seen, visitors FROM temp.staged_pages "
                   "WHERE number BETWEEN ? AND ?"), numbers)
        conn.execute(_IMPORT_DAY[mode].format(
            source=f"SELECT k.id, {_DAY_NUMBER.format('s.day')}, s.views, s.visitors, s.bots "
                   "FROM temp.staged_days s JOIN temp.staged_pages p ON p.number = s.number "
                   "JOIN pages k ON k.page_id = p.page_id WHERE s.number BETWEEN ? AND ?"),
            numbers)
        conn.execute(f"INSERT INTO view_days (day) SELECT DISTINCT {_DAY_NUMBER.format('day')} "
                     "FROM temp.staged_days WHERE number BETWEEN ? AND ? "
                     "ON CONFLICT DO NOTHING", numbers)

    @staticmethod
    def _import_progress(conn: sqlite3.Connection, key: str, mode: str
                         ) -> tuple[int, int, str | None] | None:
        try:
            return conn.execute("SELECT written, pages, finished FROM imports "
                                "WHERE sha256 = ? AND mode = ?", (key, mode)).fetchone()
        except sqlite3.OperationalError:
            return None  # a file of schema 1, read by import --dry-run: no import recorded

    @staticmethod
    def _record_import(conn: sqlite3.Connection, key: str, mode: str, written: int, pages: int,
                       finished: str | None) -> None:
        conn.execute("INSERT INTO imports (sha256, mode, written, pages, finished) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT(sha256, mode) DO UPDATE SET "
                     "written = excluded.written, pages = excluded.pages, "
                     "finished = excluded.finished", (key, mode, written, pages, finished))

    @staticmethod
    def _drop_staging(conn: sqlite3.Connection) -> None:
        conn.execute("DROP TABLE IF EXISTS temp.staged_days")
        conn.execute("DROP TABLE IF EXISTS temp.staged_pages")


class Store(Changes):
    """The counts in one SQLite file: one writer connection owned by the
    writer thread (group commit: the views of one page and day in a batch
    are one UPSERT per table, each view answered its own number of the
    range, every caller only after COMMIT), plus a pool of read connections
    beside it (WAL). Chosen by measurement over a connection per thread and
    over group commit by whoever holds a lock (docs/design.md).
    """

    inline_reads = True

    def __init__(self, path: str, *, sync: str = "full", max_pages: int | None = None,
                 busy_timeout_s: float = 5.0, use_returning: bool | None = None,
                 max_page_count: int | None = None, readonly: bool = False,
                 keep_days: int | None = None):
        self.path = source_path = path
        self.keep_days = keep_days
        self._copy_folder: str | None = None
        self.sync = sync
        self.max_pages = max_pages
        self.readonly = readonly
        self.use_returning = HAS_RETURNING if use_returning is None else use_returning
        if self.use_returning and not HAS_RETURNING:
            raise ValueError(f"SQLite {sqlite3.sqlite_version} has no RETURNING")
        self._timeout = busy_timeout_s
        self._salts: dict[str, bytes] = {}  # the writer's: the days' salts
        self._known = storage.KnownVisitors()  # the writer's too
        self._checkpoint_due = False
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if readonly:
            # Reading commands (top, show, export, import --dry-run): every
            # connection is opened with mode=ro, so the file's bytes never
            # change. Tasks that write only temporary tables run inline on
            # one of them.
            try:
                self._writer = _connect(path, readonly=True, timeout_s=busy_timeout_s)
                version = _schema_version(self._writer, path)
            except sqlite3.Error as e:
                raise UnusableDatabase(f"{path}: {e}") from None
            if 0 < version < SCHEMA_VERSION:
                # A file of an older schema (a backup, or a database no
                # server has opened since Tally was upgraded): read a copy
                # migrated as a server would, leaving the file as it is.
                self._writer.close()
                self._copy_folder = tempfile.mkdtemp(prefix="tally-upgraded-")
                self.path = path = os.path.join(self._copy_folder, "counts.db")
                copy_database(source_path, path, timeout_s=busy_timeout_s)
                open_writer(path, sync, busy_timeout_s).close()
                self._writer = _connect(path, readonly=True, timeout_s=busy_timeout_s)
        else:
            self._writer = open_writer(path, sync, busy_timeout_s, max_page_count)
            self._start_writer()
        # The file this store opened; if the path stops naming it, counting
        # stops (FileGone) instead of writing where nobody will look.
        self._identity = file_identity(path)
        self._file_checked_at = time.monotonic()
        self._file_ok = True

    def close(self) -> None:
        self._stop_writer()
        for conn in self._all_readers:
            conn.close()
        if self._writer is not None:
            self._writer.close()
        if self._copy_folder is not None:
            shutil.rmtree(self._copy_folder, ignore_errors=True)

    def describe(self) -> str:
        """For the start-up line."""
        return (f"SQLite {sqlite3.sqlite_version}, "
                f"{'RETURNING' if self.use_returning else 'UPSERT then SELECT'}, "
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

    # The writer thread (storage.GroupCommitStore runs the loop) ------------

    def _write_views(self, batch: list[View]) -> None:
        conn = self._writer
        self.check_file()
        new_days = self._days_to_mark(batch)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for new_day in new_days:
                conn.execute(Store.VIEW_DAYS_SQL["mark"], (new_day,))
            for views in by_page_and_day(batch):
                self._count_views(conn, views)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            self._salts.clear()  # a salt created in this transaction is gone
            self._known.forget_pending()
            raise
        self._known.committed()
        self._days_marked(new_days)

    def _count_views(self, conn: sqlite3.Connection, views: list[View]) -> None:
        """Count views of one page on one day with one UPSERT per table
        (a popular page's views arrive together): each view is answered
        its own number, total - k + 1 .. total, and its own visitors (one
        more for each view whose hash is new today)."""
        if not views[0].views:  # bots not counted as views: their bot views only
            self._count_bots(conn, views)
            return
        k = len(views)
        page_id, now = views[0].page_id, max(v.now for v in views)
        try:
            key, total, visitors = self._add_views(conn, page_id, now, k)
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
        day = _day(now)
        new = [self._new_visitor(conn, day, page_id, view.visitor) for view in views]
        if sum(new):
            conn.execute("UPDATE pages SET visitors = visitors + ? WHERE id = ?", (sum(new), key))
        values = (key, day, k, sum(new), sum(v.bots for v in views))
        if self.use_returning:
            today, today_visitors = conn.execute(_COUNT_DAY + " RETURNING views, visitors",
                                                 values).fetchone()
        else:
            conn.execute(_COUNT_DAY, values)
            today, today_visitors = conn.execute(
                f"SELECT views, visitors FROM daily WHERE page = ? AND day = {_DAY_PARAM}",
                (key, day)).fetchone()
        seen = 0
        for i, (view, is_new) in enumerate(zip(views, new), start=1 - k):
            seen += is_new
            view.result = Counts(total + i, today + i, visitors + seen,
                                 today_visitors - sum(new) + seen)

    def _add_views(self, conn: sqlite3.Connection, page_id: str, now: datetime.datetime,
                   k: int = 1) -> tuple[int, int, int]:
        """Add k views to the page's total: (its key, the new total, its visitors)."""
        stamp = _stamp(now)
        cap = self.max_pages
        values = (page_id, k, stamp, stamp, cap, page_id, cap, k, k, TOTAL_MAX)
        if self.use_returning:
            row = conn.execute(_COUNT_PAGE + " RETURNING id, total, visitors", values).fetchone()
            if row is None:
                raise self._refusal(conn, page_id)
            return row
        cursor = conn.execute(_COUNT_PAGE, values)
        if cursor.rowcount == 0:
            raise self._refusal(conn, page_id)
        return conn.execute("SELECT id, total, visitors FROM pages WHERE page_id = ?",
                            (page_id,)).fetchone()

    def _new_visitor(self, conn: sqlite3.Connection, day: str, page_id: str,
                     visitor: tuple[str, str] | None) -> int:
        """1 when this (address, User-Agent) is the page's new visitor today."""
        if visitor is None:
            return 0
        key = (day, storage.visitor_hash(self._salt(conn, day), page_id, *visitor))
        if key in self._known:
            return 0
        self._known.written(key)
        return conn.execute("INSERT INTO visitors.visitor_hashes (day, hash) VALUES (?, ?) "
                            "ON CONFLICT DO NOTHING", key).rowcount

    def _salt(self, conn: sqlite3.Connection, day: str) -> bytes:
        """The day's salt: made (random) by its first visitor, kept in the
        visitor file so a restart within the day knows today's visitors."""
        salt = self._salts.get(day)
        if salt is None:
            conn.execute("INSERT INTO visitors.visitor_salts (day, salt) VALUES (?, ?) "
                         "ON CONFLICT DO NOTHING", (day, os.urandom(storage.SALT_BYTES)))
            salt = conn.execute("SELECT salt FROM visitors.visitor_salts WHERE day = ?",
                                (day,)).fetchone()[0]
            self._salts[day] = salt
        return salt

    def _count_bots(self, conn: sqlite3.Connection, views: list[View]) -> None:
        """Bot views of a page that exists, on their day; each is answered
        the page's counts, unchanged."""
        page_id, day = views[0].page_id, _day(views[0].now)
        conn.execute(_COUNT_BOTS, (day, len(views), page_id))
        row = conn.execute(_COUNTS, (day, page_id)).fetchone()
        for view in views:
            view.result = Counts(*row) if row else Counts(0, 0)

    def _forget(self, conn: sqlite3.Connection, now: datetime.datetime) -> int:
        before = _day(now - storage.VISITOR_GRACE)
        if not conn.execute("SELECT 1 FROM visitors.visitor_salts WHERE day < ? UNION ALL "
                            "SELECT 1 FROM visitors.visitor_hashes WHERE day < ? LIMIT 1",
                            (before, before)).fetchone():
            return 0
        forgotten = conn.execute("DELETE FROM visitors.visitor_salts WHERE day < ?",
                                 (before,)).rowcount
        conn.execute("DELETE FROM visitors.visitor_hashes WHERE day < ?", (before,))
        for day in [day for day in self._salts if day < before]:
            del self._salts[day]
        self._known.forget_days_before(before)
        # secure_delete (open_writer) overwrites the deleted rows' bytes; the
        # WAL's copies go at the checkpoint after this transaction.
        self._checkpoint_due = True
        return forgotten

    def _trim(self, conn: sqlite3.Connection, before: str, after: tuple | None,
              rows: int) -> tuple[tuple | None, int]:
        start = after or (-1, -1)
        last = conn.execute(_TRIM_LAST, (*start, before, rows - 1)).fetchone()
        if last is None:
            return None, conn.execute(_TRIM_REST, (*start, before)).rowcount
        return tuple(last), conn.execute(_TRIM_UPTO, (*start, *last, before)).rowcount

    @staticmethod
    def _refusal(conn: sqlite3.Connection, page_id: str) -> Exception:
        # The UPSERT wrote nothing: a known page is at TOTAL_MAX, a new one
        # is past max_pages. Read only on this rare path.
        if conn.execute("SELECT 1 FROM pages WHERE page_id = ?", (page_id,)).fetchone():
            return TotalLimitReached(page_id)
        return PageLimitReached(page_id)

    def _run_task(self, task: Task) -> object:
        conn = self._writer
        try:
            # A task that writes only temporary tables needs no write lock.
            conn.execute("BEGIN IMMEDIATE" if task.write else "BEGIN")
            result = task.fn(conn)
            conn.execute("COMMIT")
        finally:
            _rollback(conn)
        if self._checkpoint_due:
            # A forgotten day's salt and hashes out of the WAL file too (when
            # no reader holds it: then at the next day's).
            self._checkpoint_due = False
            try:
                # Waiting at most a moment for readers: views queue meanwhile.
                conn.execute("PRAGMA busy_timeout = 200")
                conn.execute("PRAGMA visitors.wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        return result

    @staticmethod
    def _classify(error: Exception) -> Exception:
        return _storage_error(error) if isinstance(error, sqlite3.Error) else error

    # Reading ------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        # A new connection opens whatever the path names now: check first.
        self.check_file()
        try:
            conn = _connect(self.path, readonly=self.readonly, timeout_s=self._timeout)
        except sqlite3.Error as e:
            raise _storage_error(e) from None
        with self._readers_lock:
            self._all_readers.append(conn)
        return conn

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        self.check_file(FILE_CHECK_INTERVAL)
        conn = self._reader()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise _storage_error(e) from None
        finally:
            self._readers.put(conn)

    def counts(self, page_id: str, now: datetime.datetime | None = None) -> Counts:
        """The page's total and today's views, 0 and 0 for an unknown page."""
        rows = self._read(_COUNTS, (_day(now or utc_now()), page_id))
        return Counts(*rows[0]) if rows else Counts(0, 0)

    def ping(self) -> None:
        """Raise StorageError unless the file is still in place, answers a
        query, and the writer runs."""
        self.check_file()
        self._read("SELECT count(*) FROM (SELECT 1 FROM pages LIMIT 1)")
        if not self._writer_alive():
            raise StorageError("database writer has stopped")

    def page_count(self) -> int:
        return self._read("SELECT pages FROM page_count")[0][0]

    def _days_between(self, page_id: str, first: str, last: str) -> dict[str, storage.Day]:
        return {row[0]: storage.Day(*row) for row in self._read(
            f"SELECT {_DAY_TEXT.format('d.day')}, d.views, d.visitors, d.bots FROM pages p "
            f"JOIN daily d ON d.page = p.id WHERE p.page_id = ? AND d.day >= {_DAY_PARAM} "
            f"AND d.day <= {_DAY_PARAM}", (page_id, first, last))}

    def best_day(self, page_id: str) -> tuple[str, int] | None:
        rows = self._read(f"SELECT {_DAY_TEXT.format('d.day')}, d.views FROM pages p "
                          "JOIN daily d ON d.page = p.id WHERE p.page_id = ? "
                          "ORDER BY d.views DESC, d.day DESC LIMIT 1", (page_id,))
        return rows[0] if rows else None

    def top(self, limit: int) -> list[tuple[str, int]]:
        return self._read("SELECT page_id, total FROM pages ORDER BY total DESC, page_id "
                          "LIMIT ?", (limit,))

    def page(self, page_id: str) -> Page | None:
        rows = self._read("SELECT page_id, total, created_at, last_seen, visitors FROM pages "
                          "WHERE page_id = ?", (page_id,))
        if not rows:
            return None
        days = self._read(f"SELECT {_DAY_TEXT.format('d.day')}, d.views, d.visitors, d.bots "
                          "FROM pages p JOIN daily d ON d.page = p.id WHERE p.page_id = ? "
                          "ORDER BY d.day", (page_id,))
        return storage.page_from_rows(rows[0], days)

    def pages(self) -> Iterator[Page]:
        """Every page with its history, ordered by page_id, from one snapshot
        (a read transaction held until the last page is read): one page in
        memory at a time, however many there are."""
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT p.page_id, p.total, p.created_at, p.last_seen, p.visitors, "
                f"{_DAY_TEXT.format('d.day')}, d.views, d.visitors, d.bots FROM pages p "
                "LEFT JOIN daily d ON d.page = p.id ORDER BY p.page_id, d.day")
            for _, group in itertools.groupby(rows, key=lambda row: row[0]):
                first, *others = group
                days = [row[5:] for row in [first, *others] if row[5] is not None]
                yield storage.page_from_rows(first[:5], days)
        except sqlite3.Error as e:
            raise _storage_error(e) from None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._readers.put(conn)


def copy_database(source_path: str, dest_path: str,
                  progress: Callable[[int, int], None] | None = None,
                  pages_per_step: int = 256, timeout_s: float = 5.0,
                  source_conn: sqlite3.Connection | None = None) -> None:
    """Copy a database (live or not) into dest with SQLite's online backup API.

    The source is opened read-only. It copies pages_per_step pages at a
    time and releases the lock between steps, so a running server's writes
    are never held up for long; writes made meanwhile restart the copy from
    a consistent point (SQLite does this). Python retries a busy step
    forever: a copy that makes no progress for timeout_s is stopped with
    StorageBusy instead.
    """
    try:
        source = source_conn or _connect(source_path, readonly=True, timeout_s=timeout_s)
        target = _connect(dest_path, timeout_s=timeout_s)
    except sqlite3.Error as e:
        raise _storage_error(e) from None
    moved = {"at": time.monotonic(), "remaining": None}

    def step(status: int, remaining: int, total: int) -> None:
        now = time.monotonic()
        if status == sqlite3.SQLITE_OK or remaining != moved["remaining"]:
            moved["at"], moved["remaining"] = now, remaining
        elif now - moved["at"] > timeout_s:
            raise StorageBusy(f"{StorageBusy.kind}: {source_path} stayed locked for "
                              f"{timeout_s:g} s; nothing was copied")
        if progress is not None:
            progress(total - remaining, total)
    try:
        source.backup(target, pages=pages_per_step, progress=step)
    except sqlite3.Error as e:
        raise _storage_error(e) from None
    finally:
        target.close()
        if source_conn is None:
            source.close()


def replace_counts(db_path: str, source_path: str, keep_path: str,
                   timeout_s: float = 5.0) -> None:
    """Replace every count in db_path with source_path's, and save the
    counts replaced to keep_path, all under one write lock.

    A running server's views wait (up to its busy timeout) while this runs:
    every view answered before it is in keep_path, every view after it
    counts on top of the restored numbers. Nothing is lost in between. The
    replacement is SQL inside the live file, not a new file, so a server
    keeps its connections. keep_path is written and synced before COMMIT;
    if anything fails the database is unchanged.

    A backup of an older schema is first copied beside keep_path and
    migrated there, as a server would migrate it; a database of an older
    schema (no server has opened it since Tally was upgraded) is migrated
    in place first.
    """
    upgraded = keep_path + ".upgraded"
    try:
        if _file_version(source_path) < SCHEMA_VERSION:
            copy_database(source_path, upgraded, timeout_s=timeout_s)
            open_writer(upgraded, "full", timeout_s).close()
            set_standalone(upgraded)
            source_path = upgraded
        _replace_counts(db_path, source_path, keep_path, timeout_s)
    finally:
        for name in companions(upgraded):
            if os.path.exists(name):
                os.remove(name)


def _file_version(path: str) -> int:
    try:
        conn = _connect(path, readonly=True)
        try:
            return conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path}: {e}") from None


def _replace_counts(db_path: str, source_path: str, keep_path: str, timeout_s: float) -> None:
    source_uri = Path(source_path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(Path(db_path).resolve().as_uri(), uri=True, timeout=timeout_s,
                               isolation_level=None)
        reader = _connect(db_path, readonly=True, timeout_s=timeout_s)
    except sqlite3.Error as e:
        raise _storage_error(e) from None
    try:
        _migrate(conn, conn.execute("PRAGMA user_version").fetchone()[0], db_path)
        conn.execute("ATTACH DATABASE ? AS restored", (source_uri,))
        _attach_visitors(conn, db_path)
        conn.execute("BEGIN IMMEDIATE")
        # Nobody else can commit now: the reader's snapshot is the final
        # state of the counts being replaced.
        copy_database(db_path, keep_path, source_conn=reader, timeout_s=timeout_s)
        set_standalone(keep_path)
        with open(keep_path, "rb+") as f:
            os.fsync(f.fileno())
        conn.execute("DELETE FROM main.daily")
        conn.execute("DELETE FROM main.pages")
        # The restored counts' visitors start afresh today: who was seen
        # belongs to the counts replaced (and an older backup's salt, if it
        # has one, is never read: only the tables below are).
        conn.execute("DELETE FROM visitors.visitor_salts")
        conn.execute("DELETE FROM visitors.visitor_hashes")
        # source_path has this Tally's schema (restore migrates a copy of an
        # older backup first): the same columns.
        for table in ("pages", "daily"):
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM restored.{table}")
        # GitHub's kept traffic too, when the backup has it (schema 3); an
        # older backup has no word on it, and the traffic kept stays.
        if conn.execute("SELECT 1 FROM restored.sqlite_master WHERE name = 'github_days'"
                        ).fetchone():
            for table in _GITHUB_TABLES:
                conn.execute(f"DELETE FROM main.{table}")
                conn.execute(f"INSERT INTO main.{table} SELECT * FROM restored.{table}")
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        _rollback(conn)
        raise _storage_error(e) from None
    finally:
        reader.close()
        conn.close()


def _key(conn: sqlite3.Connection, page_id: str) -> int | None:
    """A page's integer key (schema.sql, migration 5), None when it has none."""
    row = conn.execute("SELECT id FROM pages WHERE page_id = ?", (page_id,)).fetchone()
    return row[0] if row else None


def set_standalone(path: str) -> None:
    """Switch a copied file to rollback-journal mode: one file, no -wal beside it."""
    conn = _connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as e:
        raise _storage_error(e) from None
    finally:
        conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    # After SQLITE_FULL or an I/O error SQLite may have rolled back already,
    # and ROLLBACK itself can fail the same way: the transaction is gone then.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# Insert a page's first view, or add one. The first WHERE refuses a page
# that does not exist yet once max_pages (NULL: no cap) pages are stored;
# the second refuses a view past TOTAL_MAX (SQLite would turn the integer
# into a float at 2**63). Nothing is read first and written later, it is one
# statement. The number of pages is kept by schema.sql's triggers, so
# reading it costs the same at a million pages as at ten.
_COUNT_PAGE = (
    "INSERT INTO pages (page_id, total, created_at, last_seen) "
    "SELECT ?, ?, ?, ? "
    "WHERE ? IS NULL OR EXISTS (SELECT 1 FROM pages WHERE page_id = ?) "
    "OR (SELECT pages FROM page_count) < ? "
    "ON CONFLICT(page_id) DO UPDATE SET total = total + ?, last_seen = excluded.last_seen "
    "WHERE total + ? <= ?"
)
_COUNT_DAY = (
    f"INSERT INTO daily (page, day, views, visitors, bots) VALUES (?, {_DAY_PARAM}, ?, ?, ?) "
    "ON CONFLICT(page, day) DO UPDATE SET views = views + excluded.views, "
    "visitors = visitors + excluded.visitors, bots = bots + excluded.bots"
)
# A bot's view that does not count: only its day's bot views, and only on a
# page that exists (a crawler following links creates no pages).
_COUNT_BOTS = (
    f"INSERT INTO daily (page, day, views, visitors, bots) SELECT id, {_DAY_PARAM}, 0, 0, ? "
    "FROM pages WHERE page_id = ? "
    "ON CONFLICT(page, day) DO UPDATE SET bots = bots + excluded.bots"
)
_COUNTS = (
    "SELECT p.total, coalesce(d.views, 0), p.visitors, coalesce(d.visitors, 0) FROM pages p "
    f"LEFT JOIN daily d ON d.page = p.id AND d.day = {_DAY_PARAM} WHERE p.page_id = ?"
)
# TALLY_KEEP_DAYS (storage.GroupCommitStore._trim_step): the day rows before
# the first kept day, TRIM_ROWS at a time in key order. A row value compared
# with the primary key's columns is a range of it: each transaction reads on
# from where the last one stopped, not from the table's start.
_TRIM_LAST = (f"SELECT page, day FROM daily WHERE (page, day) > (?, ?) AND day < {_DAY_PARAM} "
              "ORDER BY page, day LIMIT 1 OFFSET ?")
_TRIM_UPTO = ("DELETE FROM daily WHERE (page, day) > (?, ?) AND (page, day) <= (?, ?) "
              f"AND day < {_DAY_PARAM}")
_TRIM_REST = f"DELETE FROM daily WHERE (page, day) > (?, ?) AND day < {_DAY_PARAM}"

# Import: {source} is a SELECT of the staged rows ("WHERE true" is already
# in it as a BETWEEN: SQLite's parser needs a WHERE before ON CONFLICT).
_IMPORT_PAGE = {
    "set": "INSERT INTO pages (page_id, total, created_at, last_seen, visitors) {source} "
           "ON CONFLICT(page_id) DO UPDATE SET total = excluded.total, "
           "visitors = excluded.visitors, "
           "created_at = min(created_at, excluded.created_at), "
           "last_seen = max(last_seen, excluded.last_seen)",
    "add": "INSERT INTO pages (page_id, total, created_at, last_seen, visitors) {source} "
           "ON CONFLICT(page_id) DO UPDATE SET total = total + excluded.total, "
           "visitors = visitors + excluded.visitors, "
           "created_at = min(created_at, excluded.created_at), "
           "last_seen = max(last_seen, excluded.last_seen)",
}
_IMPORT_DAY = {
    "set": "INSERT INTO daily (page, day, views, visitors, bots) {source} "
           "ON CONFLICT(page, day) DO UPDATE SET views = excluded.views, "
           "visitors = excluded.visitors, bots = excluded.bots",
    "add": "INSERT INTO daily (page, day, views, visitors, bots) {source} "
           "ON CONFLICT(page, day) DO UPDATE SET views = views + excluded.views, "
           "visitors = visitors + excluded.visitors, bots = bots + excluded.bots",
}

# GitHub's traffic numbers (storage.KeptTraffic runs these) ##################
_GITHUB_TABLES = ("github_repos", "github_days", "github_popular")
_REPO_COLUMNS = ("r.repo, r.page_id, r.added_at, r.synced_at, r.status, r.status_since, "
                 "r.failures, r.next_sync_at")
# TALLY_KEEP_DAYS (storage.first_kept_day): the days on which views were
# written, one row each (schema.sql, migration 7).
Store.VIEW_DAYS_SQL = {
    "newest_from": f"SELECT {_DAY_TEXT.format('min(day)')} FROM "
                   "(SELECT day FROM view_days ORDER BY day DESC LIMIT ?)",
    "mark": f"INSERT INTO view_days (day) VALUES ({_DAY_PARAM}) ON CONFLICT DO NOTHING",
}
Store.GITHUB_SQL = {
    "add": "INSERT INTO github_repos (repo, page_id, added_at, status, status_since, failures, "
           "next_sync_at) VALUES (?, ?, ?, 'new', ?, 0, ?) ON CONFLICT (repo) DO NOTHING",
    "remove": "DELETE FROM github_repos WHERE repo = ?",
    "delete_days": "DELETE FROM github_days WHERE repo = ?",
    "delete_popular": "DELETE FROM github_popular WHERE repo = ?",
    "repos": f"SELECT {_REPO_COLUMNS}, count(d.day), min(d.day), max(d.day) "
             "FROM github_repos r LEFT JOIN github_days d ON d.repo = r.repo "
             "GROUP BY r.repo ORDER BY r.repo",
    # Taken when nobody holds it (or a holder's lease ran out), and (unless
    # forced) it is still as the claimer read it: one statement, so of several
    # servers asking at once one gets the row.
    "claim": "UPDATE github_repos SET claimed_until = ? WHERE repo = ? "
             "AND (claimed_until IS NULL OR claimed_until < ?) "
             "AND (? OR next_sync_at = ? AND synced_at IS ?)",
    "save_day": "INSERT INTO github_days (repo, day, views, visitors, clones, cloners) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repo, day) DO UPDATE SET "
                "views = excluded.views, visitors = excluded.visitors, "
                "clones = excluded.clones, cloners = excluded.cloners",
    # A day GitHub left out of its window: 0, unless a number is kept.
    "zero_day": "INSERT INTO github_days (repo, day, views, visitors, clones, cloners) "
                "VALUES (?, ?, 0, 0, 0, 0) ON CONFLICT (repo, day) DO NOTHING",
    "clear_popular": "DELETE FROM github_popular WHERE repo = ? AND day = ?",
    "save_popular": "INSERT INTO github_popular (repo, day, kind, name, title, views, visitors) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "synced": "UPDATE github_repos SET synced_at = ?, status_since = CASE WHEN status = 'ok' "
              "THEN status_since ELSE ? END, status = 'ok', failures = 0, next_sync_at = ?, "
              "claimed_until = NULL WHERE repo = ?",
    "status": "SELECT status FROM github_repos WHERE repo = ?",
    "failed": "UPDATE github_repos SET status_since = CASE WHEN status = ? THEN status_since "
              "ELSE ? END, status = ?, failures = ?, next_sync_at = ?, claimed_until = NULL "
              "WHERE repo = ?",
    "traffic": "SELECT count(d.day), coalesce(sum(d.views), 0), coalesce(sum(d.visitors), 0), "
               "coalesce(sum(d.clones), 0), coalesce(sum(d.cloners), 0), "
               "coalesce(sum(CASE WHEN d.day = t.today THEN d.views END), 0), "
               "coalesce(sum(CASE WHEN d.day = t.today THEN d.visitors END), 0), "
               "coalesce(sum(CASE WHEN d.day = t.today THEN d.clones END), 0), min(d.day), "
               "(SELECT synced_at FROM github_repos WHERE repo = t.repo), "
               "EXISTS (SELECT 1 FROM github_repos WHERE repo = t.repo) "
               "FROM (SELECT ? AS today, ? AS repo) t "
               "LEFT JOIN github_days d ON d.repo = t.repo",
    "span": "SELECT count(*), min(day), max(day) FROM github_days WHERE repo = ?",
    "days": "SELECT day, views, visitors, clones, cloners FROM github_days "
            "WHERE repo = ? AND day >= ? AND day <= ? ORDER BY day",
    "popular": "SELECT day, kind, name, title, views, visitors FROM github_popular "
               "WHERE repo = ? AND day = (SELECT max(day) FROM github_popular WHERE repo = ?) "
               "ORDER BY kind DESC, views DESC, name",
    "top": "SELECT repo, sum(views) FROM github_days GROUP BY repo "
           "ORDER BY sum(views) DESC, repo LIMIT ?",
    "all_days": "SELECT repo, day, views, visitors, clones, cloners FROM github_days "
                "ORDER BY repo, day",
    "all_popular": "SELECT repo, day, kind, name, title, views, visitors FROM github_popular "
                   "ORDER BY repo, day, kind DESC, views DESC, name",
    "import_repo": "INSERT INTO github_repos (repo, page_id, added_at, status, status_since, "
                   "failures, next_sync_at) VALUES (?, ?, ?, 'imported', ?, 0, ?) "
                   "ON CONFLICT (repo) DO UPDATE SET page_id = coalesce(excluded.page_id, "
                   "github_repos.page_id)",
}
