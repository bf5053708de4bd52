"""The one face of storage the rest of Tally imports: which store a TALLY_DB
value means (open_store), the server's lock, the operations on a database
file that only SQLite has (backup's checked copy, restore, inspect), and
the stores' values and errors, so that nothing above this module knows a
store's module, its file names or its SQL.

The stores live in stores/ (stores/__init__.py maps it). This is the only
module that imports them (stores/postgres.py only when a PostgreSQL
database is asked for: psycopg is optional).
"""

from __future__ import annotations

import os
import re
from typing import Callable

from stores import sqlite, sqlite_file
from stores.store import Store
# The values and errors every caller of a store reads, named here once.
from stores.values import (TOTAL_MAX, AlreadyExists, AlreadyImported, Counts, Day, Duplicate,
                           FileGone, ImportInterrupted, KeptRepo, KeyChanged, NotFound, Page,
                           PageLimitReached, Popular, Repo, ServerRunning, StorageBusy,
                           StorageError, StorageFull, StorageIOError, StorageReadOnly,
                           StorageUnreachable, TotalLimitReached, Traffic, TrafficDay,
                           UnusableDatabase, day, last_days, masked, stamp, utc_now)

__all__ = [
    "TOTAL_MAX", "AlreadyExists", "AlreadyImported", "Counts", "Day", "Duplicate", "FileGone",
    "ImportInterrupted", "KeptRepo", "KeyChanged", "NotFound", "Page", "PageLimitReached",
    "Popular", "Repo", "ServerRunning", "Store", "StorageBusy", "StorageError", "StorageFull",
    "StorageIOError", "StorageReadOnly", "StorageUnreachable", "TotalLimitReached", "Traffic",
    "TrafficDay", "UnusableDatabase", "checked_copy", "day", "last_days", "inspect",
    "is_database_file", "is_postgres", "masked", "move_aside", "open_store", "replace_counts",
    "require_file", "server_lock", "stamp", "utc_now",
]

_POSTGRES_URL = re.compile(r"postgres(ql)?://", re.IGNORECASE)
_POSTGRES_KEYWORDS = re.compile(r"^\s*\w+\s*=", re.ASCII)


def is_postgres(db: str) -> bool:
    """A PostgreSQL URL (postgresql://, postgres://) or libpq's key=value
    form (host=/run/postgresql dbname=tally); anything else is a SQLite path.

    >>> is_postgres("postgres://u@h/db"), is_postgres("host=/tmp dbname=t"), is_postgres("data/c.db")
    (True, True, False)
    """
    return bool(_POSTGRES_URL.match(db) or _POSTGRES_KEYWORDS.match(db))


def open_store(db: str, *, sync: str = "full", max_pages: int | None = None,
               busy_timeout_s: float = 5.0, readonly: bool = False,
               keep_days: int | None = None) -> Store:
    """The store for a TALLY_DB value: PostgreSQL for a URL, else SQLite."""
    if is_postgres(db):
        try:
            from stores import postgres
        except ImportError:
            raise UnusableDatabase(
                "a PostgreSQL database needs psycopg: `make setup-postgres` installs it "
                "(requirements-postgres.txt)") from None
        return postgres.Store(db, max_pages=max_pages, timeout_s=busy_timeout_s,
                                    readonly=readonly, keep_days=keep_days)
    return sqlite.Store(db, sync=sync, max_pages=max_pages,
                              busy_timeout_s=busy_timeout_s, readonly=readonly,
                              keep_days=keep_days)


class _NoLock:
    def release(self) -> None:
        pass


def server_lock(db: str, create: bool = True) -> "sqlite_file.ServerLock | _NoLock":
    """The lock a serving process holds (restore takes it too): on a SQLite
    file, one server per file under any of its names; on PostgreSQL none,
    since several servers on one database are the point. Raises
    ServerRunning when a server holds it. release() ends it."""
    if is_postgres(db):
        return _NoLock()
    return sqlite_file.ServerLock(db, create=create)


# A SQLite file's operations (backup, restore) ##############################


def require_file(db: str, command: str) -> None:
    """One line pointing to PostgreSQL's own tools when db is not a file."""
    if is_postgres(db):
        raise UnusableDatabase(
            f"{command} copies a SQLite file; for PostgreSQL use pg_dump and pg_restore "
            f"(or Tally's export and import)")


def is_database_file(path: str, db: str) -> bool:
    """True when writing to path would write over the database or the files
    beside it (its -wal, -shm, -journal, lock), under any name of them;
    never for PostgreSQL, which has no file of ours."""
    return not is_postgres(db) and sqlite_file.is_database_file(path, db)


def inspect(path: str) -> tuple[int, int, int]:
    """(schema version, pages, total) of a SQLite file, checked without a
    change; UnusableDatabase with a one-line reason otherwise."""
    return sqlite_file.inspect_file(path)


def checked_copy(source: str, dest: str,
                 progress: Callable[[int, int], None] | None = None) -> tuple[int, int, int]:
    """Copy a SQLite database (live or not) to dest atomically: under a
    temporary name, switched to one standalone file, checked, fsynced, then
    renamed. Returns inspect()'s figures of the copy; a copy that fails its
    check raises UnusableDatabase and leaves nothing behind."""
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        sqlite_file.copy_database(source, tmp, progress)
        sqlite_file.set_standalone(tmp)
        checked = sqlite_file.inspect_file(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_folder(dest)
        return checked
    finally:
        for leftover in sqlite_file.companions(tmp):
            if os.path.exists(leftover):
                os.remove(leftover)


def replace_counts(db: str, source: str, keep: str, timeout_s: float) -> None:
    """Every count of db replaced by source's inside the live file, the
    replaced counts kept in keep first (sqlite_file.replace_counts); on a
    failure keep is removed and db is unchanged."""
    try:
        sqlite_file.replace_counts(db, source, keep, timeout_s=timeout_s)
    except BaseException:
        for leftover in (keep, keep + "-journal"):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise


def move_aside(db: str, suffix: str) -> str:
    """Move a database that cannot be read, and the files beside it, to
    <resolved path><suffix>: never deleted. Returns the new name."""
    real = os.path.realpath(db)
    aside = real + suffix
    for name, moved in zip(sqlite_file.companions(real), sqlite_file.companions(aside)):
        if os.path.exists(name):
            os.replace(name, moved)
    return aside


def _fsync_folder(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
