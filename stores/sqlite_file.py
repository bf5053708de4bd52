"""A SQLite database file and the library that opens it: connections and
their errors, the schema's migrations, the server's lock, the files beside
the database (its WAL, its visitor file), and what only a file database has
(backup's copy, restore's replacement of the counts, a file's check).

The only module that imports sqlite3: stores/sqlite.py counts and reads
through the connections it opens and catches the errors named here.
Imports stores.values alone.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Callable

from stores.values import (ServerRunning, StorageBusy, StorageError, StorageFull,
                           StorageIOError, StorageReadOnly, UnusableDatabase)
from stores.values import migrations as schema_migrations

# The library's names the store needs, so that it need not import it.
Connection = sqlite3.Connection
Error = sqlite3.Error
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError
# The schema sits at the top level, beside server.py (the design card).
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"

# RETURNING arrived in SQLite 3.35. Debian 11 and Raspberry Pi OS Bullseye
# ship 3.34: there we UPSERT, then SELECT, inside the same BEGIN IMMEDIATE.
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)



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


def storage_error(error: sqlite3.Error) -> StorageError:
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
    return schema_migrations(SCHEMA_FILE)


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


def connect(path: str, *, readonly: bool = False, timeout_s: float = 5.0) -> sqlite3.Connection:
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
        make_folder(db_path)
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


def make_folder(db_path: str) -> None:
    """Create the database's folder when missing, or refuse with one line."""
    folder = os.path.dirname(os.path.abspath(db_path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UnusableDatabase(f"{db_path}: cannot create folder {folder}: {e.strerror}") from None


def schema_version(conn: sqlite3.Connection, path: str) -> int:
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


def attach_visitors(conn: sqlite3.Connection, path: str) -> None:
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
        conn = connect(path, readonly=True)
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path}: cannot open: {e}") from None
    try:
        version = schema_version(conn, path)
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
    make_folder(path)
    existed = os.path.exists(path) and os.path.getsize(path) > 0
    try:
        conn = connect(path, timeout_s=timeout_s)
    except sqlite3.Error as e:
        raise UnusableDatabase(f"{path}: cannot open: {e}") from None
    try:
        # Read before any write: a file that is not SQLite, or is damaged
        # or newer, must be refused before WAL mode touches it.
        version = schema_version(conn, path)
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
        attach_visitors(conn, path)
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
        source = source_conn or connect(source_path, readonly=True, timeout_s=timeout_s)
        target = connect(dest_path, timeout_s=timeout_s)
    except sqlite3.Error as e:
        raise storage_error(e) from None
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
        raise storage_error(e) from None
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
        conn = connect(path, readonly=True)
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
        reader = connect(db_path, readonly=True, timeout_s=timeout_s)
    except sqlite3.Error as e:
        raise storage_error(e) from None
    try:
        _migrate(conn, conn.execute("PRAGMA user_version").fetchone()[0], db_path)
        conn.execute("ATTACH DATABASE ? AS restored", (source_uri,))
        attach_visitors(conn, db_path)
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
        rollback(conn)
        raise storage_error(e) from None
    finally:
        reader.close()
        conn.close()


def set_standalone(path: str) -> None:
    """Switch a copied file to rollback-journal mode: one file, no -wal beside it."""
    conn = connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as e:
        raise storage_error(e) from None
    finally:
        conn.close()


def rollback(conn: sqlite3.Connection) -> None:
    # After SQLITE_FULL or an I/O error SQLite may have rolled back already,
    # and ROLLBACK itself can fail the same way: the transaction is gone then.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# The tables restore replaces when the backup has them (schema 3).
_GITHUB_TABLES = ("github_repos", "github_days", "github_popular")
