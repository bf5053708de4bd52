"""What Tally's two stores build on: values, errors, the interface both
implement (Store), and the group-commit writer with its error fan-out.

The stores: sqlite_store.py (the default, one file) and postgres_store.py
(several Tally processes on one database); each imports only this module.
database.py chooses between them. This module imports no store, no database
library, no other module of Tally's: every arrow points down to it.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import datetime
import hashlib
import logging
import queue
import re
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable, Iterator

log = logging.getLogger("tally")

# How many queued views one group commit may take at most.
BATCH_LIMIT = 512
# How many pages one import transaction writes: the server's writer waits
# for at most one such chunk (a few milliseconds), not for the whole file.
IMPORT_CHUNK = 2000


# Errors ####################################################################


class StorageError(Exception):
    """A database problem while serving; the server answers 503."""

    kind = "database error"


class StorageBusy(StorageError):
    kind = "database busy"


class StorageFull(StorageError):
    kind = "disk full"


class StorageReadOnly(StorageError):
    kind = "database read-only"


class StorageIOError(StorageError):
    kind = "database I/O error"


class StorageUnreachable(StorageError):
    """The database server cannot be reached (down, restarting, dropped)."""

    kind = "database server unreachable"


class FileGone(StorageError):
    """The database file was deleted, replaced or made unreachable under us.

    Counting on would write into a file nobody will ever open again: every
    count answered then would be lost at the next start.
    """

    kind = "database file removed or replaced"


class PageLimitReached(Exception):
    """TALLY_MAX_PAGES distinct pages exist; a new page_id is refused."""


class TotalLimitReached(Exception):
    """The page's total is at TOTAL_MAX; one more view is refused."""


class ImportInterrupted(Exception):
    """The database failed part-way through writing an import."""

    def __init__(self, written: int, total: int, error: Exception):
        super().__init__(f"{error}")
        self.written, self.total, self.error = written, total, error


class AlreadyImported(Exception):
    """An `add` import of this very file finished before: adding it again
    would count its numbers twice."""

    def __init__(self, finished: str):
        super().__init__(finished)
        self.finished = finished


class Duplicate(Exception):
    """An import names one page (or one page's day) twice."""


class ServerRunning(Exception):
    """Another process (a running server) holds the database's lock."""


class UnusableDatabase(Exception):
    """The database cannot be used at all: start-up stops, nothing is touched."""


class NotFound(Exception):
    """An owner command named a page_id that is not stored."""


class AlreadyExists(Exception):
    """rename would overwrite an existing page_id without --merge."""


# Values ####################################################################

# The largest total a page may hold. total + base then stays below 2**53:
# an integer that SQLite (2**63) and every JSON reader (doubles) keep exactly.
TOTAL_MAX = 9 * 10**15


@dataclasses.dataclass(frozen=True)
class Counts:
    total: int
    today: int
    # The sum of each day's unique visitors, and today's (docs/privacy.md).
    visitors: int = 0
    visitors_today: int = 0


@dataclasses.dataclass(frozen=True)
class Page:
    page_id: str
    total: int
    created_at: str
    last_seen: str
    days: dict[str, int]
    visitors: int = 0
    visitor_days: dict[str, int] = dataclasses.field(default_factory=dict)
    bot_days: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Day:
    """One page's numbers of one UTC day."""
    day: str
    views: int
    visitors: int = 0
    bots: int = 0


@dataclasses.dataclass(frozen=True)
class TrafficDay:
    """GitHub's numbers of one repository on one UTC day."""
    views: int
    visitors: int
    clones: int
    cloners: int


@dataclasses.dataclass(frozen=True)
class Popular:
    """One of GitHub's top referrers (kind "referrer") or paths ("path")."""
    kind: str
    name: str
    title: str
    views: int
    visitors: int


@dataclasses.dataclass(frozen=True)
class Repo:
    """A repository whose GitHub traffic Tally keeps, and how its syncs go."""
    repo: str
    page_id: str | None
    added_at: str
    synced_at: str | None
    status: str
    status_since: str
    failures: int
    next_sync_at: str
    days: int = 0
    first_day: str | None = None
    last_day: str | None = None

    @property
    def lost(self) -> int:
        """Days between the first and last kept day that GitHub's window
        dropped before a sync saw them."""
        if self.first_day is None or self.last_day is None:
            return 0
        span = (datetime.date.fromisoformat(self.last_day)
                - datetime.date.fromisoformat(self.first_day)).days + 1
        return span - self.days


@dataclasses.dataclass(frozen=True)
class Traffic:
    """A kept repository's sums, what a github: badge shows."""
    views: int
    visitors: int
    clones: int
    cloners: int
    views_today: int
    visitors_today: int
    clones_today: int
    first_day: str | None
    synced_at: str | None


@dataclasses.dataclass(frozen=True)
class KeptRepo:
    """A repository's kept traffic as export writes it and import reads it."""
    repo: str
    page_id: str | None
    added_at: str
    days: dict[str, TrafficDay]
    popular: dict[str, list[Popular]]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def day(now: datetime.datetime) -> str:
    """The UTC day of a moment: both stores compute it here, never in SQL,
    so a database's own time zone cannot move the day boundary."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d")


def page_from_rows(row: tuple, days: list[tuple]) -> Page:
    """A Page from (page_id, total, created_at, last_seen, visitors) and its
    (day, views, visitors, bots) rows, as both stores read them."""
    return Page(*row[:4], days={d[0]: d[1] for d in days}, visitors=row[4],
                visitor_days={d[0]: d[2] for d in days if d[2]},
                bot_days={d[0]: d[3] for d in days if d[3]})


def day_rows(number: int, page: Page) -> list[tuple[int, str, int, int, int]]:
    """(number, day, views, visitors, bots) of each day a page names, for
    an import's staging table."""
    days = sorted(set(page.days) | set(page.visitor_days) | set(page.bot_days))
    return [(number, d, page.days.get(d, 0), page.visitor_days.get(d, 0), page.bot_days.get(d, 0))
            for d in days]


def visitor_hash(salt: bytes, page_id: str, address: str, user_agent: str) -> bytes:
    """Who a visitor of a page is, for one day only: BLAKE2b keyed with the
    day's random salt (Plausible's and GoatCounter's method). Without the
    salt, which is deleted when the day ends, it leads back to no address."""
    text = "\0".join((page_id, address, user_agent)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, key=salt, digest_size=16).digest()


class KnownVisitors:
    """The visitor hashes this process wrote most recently (the newest
    KNOWN_VISITORS, plus those of the transaction being written): a visitor
    seen again (a reload, the next page view) needs no statement. A hash
    counts as known once written in the current transaction: if that
    transaction fails, every view of it fails, and forget_pending() drops
    them. Bounded, so a million visitors a day cost no more memory."""

    def __init__(self, size: int = 16384):
        self.size = size
        self._known: dict[tuple[str, bytes], None] = {}
        self._pending: set[tuple[str, bytes]] = set()

    def __contains__(self, key: tuple[str, bytes]) -> bool:
        return key in self._pending or key in self._known

    def written(self, key: tuple[str, bytes]) -> None:
        self._pending.add(key)

    def committed(self) -> None:
        for key in self._pending:
            self._known[key] = None
        self._pending.clear()
        while len(self._known) > self.size:  # dicts keep order: the oldest go
            del self._known[next(iter(self._known))]

    def forget_pending(self) -> None:
        self._pending.clear()

    def forget_days_before(self, day: str) -> None:
        self._known = {key: None for key in self._known if key[0] >= day}


SALT_BYTES = 32
# A day's salt and hashes are deleted this long after the day ends: a view
# answered at 23:59:59 is still written with them.
VISITOR_GRACE = datetime.timedelta(seconds=60)
# The writer looks for a day to forget when idle this long (seconds).
HOUSEKEEPING_S = 30.0
# TALLY_KEEP_DAYS: the day rows one transaction deletes at most; views
# queued meanwhile wait for one such transaction, then are written before
# the next (docs/settings.md).
TRIM_ROWS = 2000


def first_kept_day(keep_days: int, now: datetime.datetime,
                   newest_from: str | None = None) -> str:
    """With TALLY_KEEP_DAYS=keep_days: the oldest day kept. By the clock
    that is keep_days ago (today is the last of them); by the data it is
    newest_from, the first of the keep_days newest days on which views
    were written (view_days). The earlier of the two wins, so a clock that
    jumps forward (a Raspberry Pi before NTP, a restored VM) deletes
    nothing the newest counted days still need."""
    by_clock = last_days(keep_days, now)[0]
    return min(by_clock, newest_from) if newest_from else by_clock


def last_days(days: int, now: datetime.datetime | None = None) -> list[str]:
    """The last `days` UTC days to now's, oldest first."""
    end = datetime.date.fromisoformat(day(now or utc_now()))
    return [(end - datetime.timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]


def migrations(schema_file: Path) -> list[tuple[int, str]]:
    """The numbered migrations of a schema file ("-- migration N"), in order."""
    text = schema_file.read_text(encoding="utf-8")
    parts = re.split(r"^-- migration (\d+)\s*$", text, flags=re.MULTILINE)
    return [(int(number), body) for number, body in zip(parts[1::2], parts[2::2])]


def statements(body: str) -> list[str]:
    """Split a migration into statements (one per execute)."""
    lines = [line for line in body.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# Passwords in a database string #############################################

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@]*:)(.*)(?=@)", re.DOTALL)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*(?:'|$)|[^&\s]*)",
                               re.IGNORECASE | re.DOTALL)


def masked(db: str) -> str:
    """The database as logs and errors may show it: never a password, even
    in a URL or key=value string too broken for the driver to read.

    Everything between the user name's ":" and the last "@" goes (a password
    may hold "@" or "/" unencoded), and every password= value, quoted
    (an unterminated quote runs to the end) or not.

    >>> masked("postgresql://tally:s3cret@db:5432/tally")
    'postgresql://tally:***@db:5432/tally'
    >>> masked("host=/tmp password=s3cret dbname=t")
    'host=/tmp password=*** dbname=t'
    >>> masked("postgres://tally:s3cretpw@[::1"), masked("host=h password='s3 cret")
    ('postgres://tally:***@[::1', 'host=h password=***')
    """
    if _URL.match(db):
        db = _URL_PASSWORD.sub(r"\1***", db, count=1)
    return _KEYWORD_PASSWORD.sub(r"\1***", db)


def passwords(db: str) -> list[str]:
    """The password(s) a database string holds, as written and decoded."""
    found = [m.group(2) for m in _KEYWORD_PASSWORD.finditer(db)]
    if _URL.match(db):
        found += [m.group(2) for m in _URL_PASSWORD.finditer(db)]
    found = [p.strip("'") for p in found if p.strip("'")]
    return found + [urllib.parse.unquote(p) for p in found]


def scrubbed(text: str, db: str) -> str:
    """A message from the driver with any password of db (or a piece of
    one, split at blanks) replaced by ***."""
    pieces = {piece for password in passwords(db)
              for piece in [password, *password.split()] if len(piece) >= 3}
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


# The group-commit writer ###################################################


class Done:
    """A one-shot signal from the writer to one waiting caller: a bare lock,
    held until set(). Cheaper than threading.Event (no Condition), which
    counts when every view waits for one (docs/performance.md)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


class LoopDone:
    """The writer's signal to a caller awaiting on an asyncio loop: it wakes
    the loop, and no thread waits."""

    __slots__ = ("_loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future = loop.create_future()

    def set(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:
            pass  # the loop has closed (shutdown): nobody awaits any more

    def _resolve(self) -> None:
        if not self.future.done():  # cancelled when the client went away
            self.future.set_result(None)


class View:
    """One view waiting for the writer thread. visitor: the (address,
    User-Agent) it came from, when it may be a visitor (a browser Tally can
    see, not an image proxy); held in memory until written as a hash, never
    stored. views 1 counts it; bots 1 counts it as a bot view (a bot that
    is not counted: views 0)."""

    __slots__ = ("page_id", "now", "visitor", "views", "bots", "result", "error", "done")

    def __init__(self, page_id: str, now: datetime.datetime, done: Done | LoopDone | None = None,
                 visitor: tuple[str, str] | None = None, views: int = 1, bots: int = 0):
        self.page_id = page_id
        self.now = now
        self.visitor, self.views, self.bots = visitor, views, bots
        self.result: Counts | None = None
        self.error: Exception | None = None
        self.done = done or Done()


class Task:
    """An owner command run alone in its own transaction on the writer's
    connection. With write=False it writes only temporary tables and takes
    no write lock (import staging, dry runs)."""

    __slots__ = ("fn", "write", "result", "error", "done")

    def __init__(self, fn: Callable[[object], object], write: bool = True):
        self.fn = fn
        self.write = write
        self.result: object = None
        self.error: Exception | None = None
        self.done = Done()


class KeptTraffic(abc.ABC):
    """GitHub's traffic numbers kept in a store (github.py fetches them):
    the steps, the same on both backends, each store supplying its SQL in
    GITHUB_SQL. Every write is one task on the store's writer, so a sync
    never holds a badge up for longer than one short transaction."""

    GITHUB_SQL: dict[str, str]

    @abc.abstractmethod
    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one read statement."""

    @abc.abstractmethod
    def _wait(self, job: "Task") -> object:
        """Run a task on the writer, in one transaction; its result."""

    def github_add(self, repo: str, page_id: str | None, now: datetime.datetime) -> None:
        """Start keeping a repository, due for a sync at once; AlreadyExists
        when it is kept."""
        when = stamp(now)

        def run(conn: object) -> None:
            added = conn.execute(self.GITHUB_SQL["add"],  # type: ignore[attr-defined]
                                 (repo, page_id, when, when, when))
            if added.rowcount == 0:
                raise AlreadyExists(repo)
        self._wait(Task(run))

    def github_remove(self, repo: str, delete: bool) -> None:
        """Stop keeping a repository; with delete, its kept numbers go too.
        NotFound when there is nothing of it."""
        sql = self.GITHUB_SQL

        def run(conn: object) -> None:
            removed = conn.execute(sql["remove"], (repo,)).rowcount  # type: ignore[attr-defined]
            if delete:
                removed += conn.execute(sql["delete_days"], (repo,)).rowcount  # type: ignore
                conn.execute(sql["delete_popular"], (repo,))  # type: ignore[attr-defined]
            if removed == 0:
                raise NotFound(repo)
        self._wait(Task(run))

    def github_repos(self) -> list[Repo]:
        """Every kept repository with its days kept, first and last day."""
        return [Repo(*row) for row in self._read(self.GITHUB_SQL["repos"])]

    def github_claim(self, repo: str, now: datetime.datetime, lease: datetime.timedelta,
                     seen: Repo | None = None) -> bool:
        """Take the repository's next sync for this process (for lease), if
        no other process holds it and (seen) it is still as it was read:
        of several servers on one database that found it due, the first
        syncs it and the others find it changed."""
        def run(conn: object) -> bool:
            claimed = conn.execute(self.GITHUB_SQL["claim"], (  # type: ignore[attr-defined]
                stamp(now + lease), repo, stamp(now), seen is None,
                seen.next_sync_at if seen else "", seen.synced_at if seen else None))
            return claimed.rowcount == 1
        return bool(self._wait(Task(run)))

    def github_save(self, repo: str, listed: dict[str, TrafficDay], unlisted: list[str],
                    popular: list[Popular], github_day: str, now: datetime.datetime,
                    next_at: datetime.datetime) -> None:
        """One successful sync, in one transaction: each day GitHub listed
        replaces the kept one (a day synced twice is never added twice); a
        day of GitHub's window it left out is kept as 0 only where nothing
        is kept (an implied zero never replaces a number); the top
        referrers and paths of GitHub's day; the status ok."""
        sql, when = self.GITHUB_SQL, stamp(now)

        def run(conn: object) -> None:
            for date, numbers in sorted(listed.items()):
                conn.execute(sql["save_day"], (  # type: ignore[attr-defined]
                    repo, date, numbers.views, numbers.visitors, numbers.clones, numbers.cloners))
            for date in unlisted:
                conn.execute(sql["zero_day"], (repo, date))  # type: ignore[attr-defined]
            conn.execute(sql["clear_popular"], (repo, github_day))  # type: ignore[attr-defined]
            for item in popular:
                conn.execute(sql["save_popular"], (  # type: ignore[attr-defined]
                    repo, github_day, item.kind, item.name, item.title, item.views,
                    item.visitors))
            conn.execute(sql["synced"], (when, when, stamp(next_at), repo))  # type: ignore
        self._wait(Task(run))

    def github_failed(self, repo: str, status: str, now: datetime.datetime,
                      next_at: datetime.datetime, failures: int) -> str | None:
        """Record a failed sync's status; returns the status it had before
        (None: no longer kept), so a state is logged once, when it begins."""
        sql, when = self.GITHUB_SQL, stamp(now)

        def run(conn: object) -> str | None:
            row = conn.execute(sql["status"], (repo,)).fetchone()  # type: ignore[attr-defined]
            conn.execute(sql["failed"], (  # type: ignore[attr-defined]
                status, when, status, failures, stamp(next_at), repo))
            return row[0] if row else None
        return self._wait(Task(run))  # type: ignore[return-value]

    def github_traffic(self, repo: str, now: datetime.datetime | None = None) -> Traffic | None:
        """The kept sums of a repository (None when nothing of it is kept)."""
        rows = self._read(self.GITHUB_SQL["traffic"], (day(now or utc_now()), repo))
        kept, *numbers, first_day, synced_at, known = rows[0]
        if not kept and not known:
            return None
        return Traffic(*numbers, first_day, synced_at)  # type: ignore[arg-type]

    def github_days(self, repo: str, first: str, last: str) -> dict[str, TrafficDay]:
        """{day: numbers} of the kept days from first to last."""
        return {row[0]: TrafficDay(*row[1:]) for row in
                self._read(self.GITHUB_SQL["days"], (repo, first, last))}

    def github_history(self, repo: str, days: int, now: datetime.datetime | None = None
                       ) -> list[tuple[str, str, TrafficDay | None]]:
        """(day, state, numbers) for the last `days` UTC days, oldest first:
        "kept" with GitHub's numbers; "lost" between the first and the last
        kept day, where GitHub's window moved past a day before a sync saw
        it (no numbers: never a zero that looks real); else "not kept"
        (before keeping began, or not synced yet)."""
        window = last_days(days, now)
        kept = self.github_days(repo, window[0], window[-1])
        _, first, last = self._read(self.GITHUB_SQL["span"], (repo,))[0]
        history = []
        for date in window:
            if date in kept:
                history.append((date, "kept", kept[date]))
            elif first is not None and first < date < last:
                history.append((date, "lost", None))
            else:
                history.append((date, "not kept", None))
        return history

    def github_lost(self, repo: str) -> int:
        """How many days between the first and the last kept day were lost."""
        kept, first, last = self._read(self.GITHUB_SQL["span"], (repo,))[0]
        if first is None:
            return 0
        span = datetime.date.fromisoformat(last) - datetime.date.fromisoformat(first)
        return span.days + 1 - kept

    def github_popular(self, repo: str) -> tuple[str | None, list[Popular]]:
        """The top referrers and paths of the latest sync day, and that day."""
        rows = self._read(self.GITHUB_SQL["popular"], (repo, repo))
        return (rows[0][0] if rows else None), [Popular(*row[1:]) for row in rows]

    def github_top(self, limit: int) -> list[tuple[str, int]]:
        """(repo, views kept) of the repositories with the most views."""
        return [tuple(row) for row in self._read(self.GITHUB_SQL["top"], (limit,))]  # type: ignore

    def github_kept(self) -> list[KeptRepo]:
        """Every repository's kept traffic, for export (kept or removed)."""
        days: dict[str, dict[str, TrafficDay]] = {}
        for repo, date, *numbers in self._read(self.GITHUB_SQL["all_days"]):
            days.setdefault(repo, {})[date] = TrafficDay(*numbers)
        popular: dict[str, dict[str, list[Popular]]] = {}
        for repo, date, *item in self._read(self.GITHUB_SQL["all_popular"]):
            popular.setdefault(repo, {}).setdefault(date, []).append(Popular(*item))
        repos = {r.repo: r for r in self.github_repos()}
        names = sorted(set(repos) | set(days) | set(popular))
        return [KeptRepo(name, repos[name].page_id if name in repos else None,
                         repos[name].added_at if name in repos else "",
                         days.get(name, {}), popular.get(name, {})) for name in names]

    def github_import(self, kept: list[KeptRepo], now: datetime.datetime) -> int:
        """Write exported traffic back, in one transaction: each day's
        numbers are GitHub's own, so they replace (never add to) a kept day.
        A repository that was being kept (added_at) is kept again, due for
        a sync; one removed with its numbers kept stays removed."""
        sql, when = self.GITHUB_SQL, stamp(now)

        def run(conn: object) -> int:
            for item in kept:
                if item.added_at:
                    conn.execute(sql["import_repo"], (  # type: ignore[attr-defined]
                        item.repo, item.page_id, item.added_at, when, when))
                for date, numbers in item.days.items():
                    conn.execute(sql["save_day"], (  # type: ignore[attr-defined]
                        item.repo, date, numbers.views, numbers.visitors, numbers.clones,
                        numbers.cloners))
                for date, entries in item.popular.items():
                    conn.execute(sql["clear_popular"], (item.repo, date))  # type: ignore
                    for entry in entries:
                        conn.execute(sql["save_popular"], (  # type: ignore[attr-defined]
                            item.repo, date, entry.kind, entry.name, entry.title, entry.views,
                            entry.visitors))
            return len(kept)
        return self._wait(Task(run))  # type: ignore[return-value]


class Store(KeptTraffic):
    """What server.py and commands/ may ask of a store, whichever it is
    (database.open_store chooses). Both stores implement every method."""

    readonly = False
    # Reads fast enough to run on an event loop's own thread (a local file,
    # WAL: a reader never waits for the writer). PostgreSQL's go to threads.
    inline_reads = False

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """For the start-up line."""

    # Counting
    @abc.abstractmethod
    def record_view(self, page_id: str, now: datetime.datetime | None = None,
                    visitor: tuple[str, str] | None = None, bot: bool = False,
                    counted: bool = True) -> Counts: ...

    @abc.abstractmethod
    async def record_view_async(self, page_id: str, visitor: tuple[str, str] | None = None,
                                bot: bool = False, counted: bool = True) -> Counts: ...

    @abc.abstractmethod
    def forget_visitors(self, now: datetime.datetime | None = None) -> int:
        """Delete the salts and hashes of every day that ended (VISITOR_GRACE
        ago); how many days were forgotten."""

    # TALLY_KEEP_DAYS (None: every day is kept)
    keep_days: int | None = None
    # The first of the n newest view days (the rows of view_days; n the
    # one parameter; NULL when there are none), and the statement that adds
    # a day to them.
    VIEW_DAYS_SQL: dict[str, str]

    def kept_from(self, now: datetime.datetime | None = None) -> str | None:
        """The first day whose views per day are kept; None when all are."""
        if not self.keep_days:
            return None
        newest_from = self._read(self.VIEW_DAYS_SQL["newest_from"], (self.keep_days,))[0][0]
        return first_kept_day(self.keep_days, now or utc_now(), newest_from)

    # Reading
    @abc.abstractmethod
    def counts(self, page_id: str, now: datetime.datetime | None = None) -> Counts:
        """The page's total and today's views, 0 and 0 for an unknown page."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StorageError unless the database answers and the writer runs."""

    @abc.abstractmethod
    def page_count(self) -> int: ...

    @abc.abstractmethod
    def best_day(self, page_id: str) -> tuple[str, int] | None: ...

    @abc.abstractmethod
    def top(self, limit: int) -> list[tuple[str, int]]: ...

    @abc.abstractmethod
    def page(self, page_id: str) -> Page | None: ...

    @abc.abstractmethod
    def pages(self) -> Iterator[Page]:
        """Every page with its history, ordered by page_id, from one snapshot."""

    def history(self, page_id: str, days: int,
                now: datetime.datetime | None = None) -> list[tuple[str, int]]:
        """Views per day for the last `days` UTC days, oldest first, zeros included."""
        return [(d.day, d.views) for d in self.days(page_id, days, now)]

    def days(self, page_id: str, days: int, now: datetime.datetime | None = None) -> list[Day]:
        """Views, visitors and bot views per day for the last `days` UTC
        days, oldest first, zeros included."""
        window = last_days(days, now)
        stored = self._days_between(page_id, window[0], window[-1])
        return [stored.get(date) or Day(date, 0) for date in window]

    @abc.abstractmethod
    def _days_between(self, page_id: str, first: str, last: str) -> dict[str, Day]:
        """{day: Day} of the page's stored days from first to last."""

    # Owner controls
    @abc.abstractmethod
    def set_total(self, page_id: str, total: int, now: datetime.datetime | None = None) -> None: ...

    @abc.abstractmethod
    def rename(self, old: str, new: str, merge: bool = False) -> None: ...

    @abc.abstractmethod
    def delete(self, page_id: str) -> None: ...

    @abc.abstractmethod
    def import_pages(self, pages: Iterable[Page], mode: str, dry_run: bool = False,
                     chunk: int = IMPORT_CHUNK, source: Callable[[], str] | None = None,
                     again: bool = False) -> dict[str, int]: ...


class GroupCommitStore(Store):
    """One writer thread with group commit, fed by a queue; a backend
    supplies how a batch of views and a task are written in one transaction
    (raising, after rolling back, when it fails) and how its errors read.

    The views that queued up while the previous commit was being written go
    into one transaction (SQLite: one UPSERT per page and day, PostgreSQL:
    one per view, in one pipeline), and every caller is answered only after
    that COMMIT returned: an answered count is durable, and one commit (one
    fsync) serves many views. A caller waits on a thread (record_view) or
    awaits on an event loop (record_view_async). The answers are fanned out
    here, once for both backends: a failed batch gives every one of its
    views the error, and every waiting caller is woken whatever happened
    (one not woken would wait forever).
    """

    @abc.abstractmethod
    def _write_views(self, batch: list[View]) -> None:
        """Count the batch in one transaction, setting each view's result (or
        its own refusal: PageLimitReached, TotalLimitReached); raise when
        the transaction fails, after rolling it back."""

    @abc.abstractmethod
    def _run_task(self, task: Task) -> object:
        """Run task.fn in one transaction and return its result; raise when
        it fails, after rolling back."""

    @abc.abstractmethod
    def _classify(self, error: Exception) -> Exception:
        """A database library's error as a StorageError; any other unchanged."""

    @abc.abstractmethod
    def _forget(self, conn: object, now: datetime.datetime) -> int:
        """In the writer's transaction: delete the salts and hashes of the
        days that ended VISITOR_GRACE before now; how many days."""

    @abc.abstractmethod
    def _trim(self, conn: object, before: str, after: tuple | None,
              rows: int) -> tuple[tuple | None, int]:
        """In the writer's transaction: delete the day rows before the day
        `before`, at most `rows` of them, in (page, day) order from after the
        key `after` (None: the first); return the last key deleted (None
        when none was left) and how many rows."""

    def forget_visitors(self, now: datetime.datetime | None = None) -> int:
        return self._wait(Task(lambda conn: self._forget(conn, now or utc_now())))  # type: ignore

    def trim_history(self, now: datetime.datetime | None = None) -> int:
        """With keep_days: a new pass now, deleting every day row before the
        first kept day, TRIM_ROWS at a time between the views as the writer
        does by itself; how many rows the pass deleted."""
        def restart(conn: object) -> None:
            self._trim_pass = None  # a new pass, even if one ended today
            self._trim_step(conn, now or utc_now())
        self._wait(Task(restart))
        while self._trim_left:
            self._wait(Task(lambda conn: self._trim_step(conn, now or utc_now())))
        return self._trim_deleted

    def _trim_step(self, conn: object, now: datetime.datetime) -> int:
        """One transaction of trimming: TRIM_ROWS day rows at most. A pass
        walks the day rows once for each first kept day (so once a day)."""
        if not self.keep_days:
            self._trim_left = False
            return 0
        newest_from = conn.execute(  # type: ignore[attr-defined]
            self.VIEW_DAYS_SQL["newest_from"], (self.keep_days,)).fetchone()[0]
        before = first_kept_day(self.keep_days, now, newest_from)
        if before != self._trim_pass:
            self._trim_pass, self._trim_after, self._trim_left = before, None, True
            self._trim_deleted, self._trim_began = 0, time.monotonic()
        if not self._trim_left:
            return 0
        last, deleted = self._trim(conn, before, self._trim_after, TRIM_ROWS)
        self._trim_after, self._trim_deleted = last, self._trim_deleted + deleted
        self._trim_left = last is not None and deleted == TRIM_ROWS
        if not self._trim_left and self._trim_deleted:
            log.info("TALLY_KEEP_DAYS=%d: deleted %d day rows before %s in %.1f s",
                     self.keep_days, self._trim_deleted, before,
                     time.monotonic() - self._trim_began)
        return deleted

    def _start_writer(self) -> None:
        self._housekept_at = 0.0
        self._trim_pass: str | None = None
        self._trim_after: tuple | None = None
        self._trim_left = False
        self._trim_deleted = 0
        self._marked_days: set[str] = set()
        self._queue: queue.SimpleQueue[View | Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="tally-writer", daemon=True)
        self._thread.start()

    def _stop_writer(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join()

    def _writer_alive(self) -> bool:
        thread = getattr(self, "_thread", None)
        return thread is None or thread.is_alive()

    def _write_loop(self) -> None:
        pending: View | Task | None = None
        while True:
            if time.monotonic() - self._housekept_at >= HOUSEKEEPING_S:
                # At most every HOUSEKEEPING_S, busy or idle: the salt and
                # hashes of a day that ended are deleted, and a new pass of
                # TALLY_KEEP_DAYS begins when the first kept day moved.
                self._housekept_at = time.monotonic()
                self._run(Task(lambda conn: self._forget(conn, utc_now())))
                self._trim_once()
            elif self._trim_left:
                # A pass goes on one transaction at a time, between the
                # group commits of the views that queued meanwhile.
                self._trim_once()
            if pending is not None:
                job: View | Task | None = pending
            else:
                try:
                    job = self._queue.get(timeout=0 if self._trim_left else HOUSEKEEPING_S)
                except queue.Empty:
                    continue
            pending = None
            if job is None:
                return
            if isinstance(job, Task):
                self._run(job)
                continue
            batch = [job]
            while len(batch) < BATCH_LIMIT:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, View):
                    pending = nxt  # a task or the stop sentinel: after this batch
                    break
                batch.append(nxt)
            self._commit(batch)

    def _days_to_mark(self, batch: list[View]) -> list[str]:
        """The days of a batch's views that this writer has not yet added
        to view_days: the batch's transaction adds them (so once a day)."""
        return sorted({day(view.now) for view in batch} - self._marked_days)

    def _days_marked(self, days: list[str]) -> None:
        """After the commit that added them (a rollback adds none)."""
        self._marked_days.update(days)
        if len(self._marked_days) > 4:
            self._marked_days = set(sorted(self._marked_days)[-2:])

    def _trim_once(self) -> None:
        task = Task(lambda conn: self._trim_step(conn, utc_now()))
        self._run(task)
        if task.error is not None:
            # The pass begins again at the next housekeeping.
            self._trim_pass, self._trim_left = None, False

    def _commit(self, batch: list[View]) -> None:
        try:
            self._write_views(batch)
        except Exception as e:  # nothing of this batch is stored: every caller gets the error
            error = self._classify(e)
            for view in batch:
                view.result, view.error = None, error
        finally:
            for view in batch:
                view.done.set()

    def _run(self, task: Task) -> None:
        try:
            task.result = self._run_task(task)
        except Exception as e:  # a database error, or a refusal raised by the task itself
            task.error = self._classify(e)
        finally:
            task.done.set()

    def _submit(self, job: View | Task) -> None:
        if not self._thread.is_alive():
            raise StorageError("database writer has stopped")
        self._queue.put(job)

    def _wait(self, job: View | Task) -> object:
        if getattr(self, "_thread", None) is None:
            # A read-only store has no writer: tasks that write only
            # temporary tables run inline, nothing else may run.
            if not isinstance(job, Task) or job.write:
                raise StorageReadOnly(f"{StorageReadOnly.kind}: the database was opened read-only")
            self._run(job)
        else:
            self._submit(job)
            job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def record_view(self, page_id: str, now: datetime.datetime | None = None,
                    visitor: tuple[str, str] | None = None, bot: bool = False,
                    counted: bool = True) -> Counts:
        """Count one view; return the page's new counts. visitor: (address,
        User-Agent) of a client that may be a visitor of the page today;
        bot: a bot's view (counted among the day's bot views; as a view
        too only when counted).

        Raises PageLimitReached for a new page past max_pages,
        TotalLimitReached at TOTAL_MAX, StorageError when the database fails
        (nothing was counted then).
        """
        return self._wait(View(page_id, now or utc_now(), visitor=visitor,  # type: ignore
                               views=int(counted), bots=int(bot)))

    async def record_view_async(self, page_id: str, visitor: tuple[str, str] | None = None,
                                bot: bool = False, counted: bool = True) -> Counts:
        """record_view for a caller on an asyncio loop: the same group
        commit, awaited instead of holding a thread until it is written."""
        view = View(page_id, utc_now(), LoopDone(asyncio.get_running_loop()), visitor=visitor,
                    views=int(counted), bots=int(bot))
        self._submit(view)
        await view.done.future  # type: ignore[union-attr]
        if view.error is not None:
            raise view.error
        return view.result  # type: ignore[return-value]

    # Import, the same steps on both backends ---------------------------------

    def import_pages(self, pages: Iterable[Page], mode: str, dry_run: bool = False,
                     chunk: int = IMPORT_CHUNK, source: Callable[[], str] | None = None,
                     again: bool = False) -> dict[str, int]:
        """Write pages: mode "set" replaces a page's total and the given days,
        "add" adds them. Returns how many pages were created and changed,
        and how many an earlier, interrupted run had written ("resumed").

        pages may be a generator that reads and checks a file as it goes:
        it is first copied into temporary tables of the writer's connection
        (no write lock is taken, memory stays flat), so a bad line, a page
        named twice (Duplicate) or a total that "add" would push past
        TOTAL_MAX stops the import before anything is written. Then the pages
        are written in transactions of `chunk` pages, so a running server
        waits for one chunk at most. If the database fails between chunks,
        ImportInterrupted says how many pages were written.

        source() names the file read (its SHA-256, known once it is staged).
        Each chunk's transaction records how far that import got, so running
        it again after any interruption writes only the chunks still missing,
        and an "add" that finished is refused (AlreadyImported) unless again.
        """
        self._wait(Task(lambda conn: self._stage(conn, pages), write=False))
        try:
            report = self._wait(Task(lambda conn: self._staged_report(conn, mode), write=False))
            staged = report["created"] + report["changed"]  # type: ignore[index]
            key = source() if source is not None else None
            written = 0
            if key is not None:
                done = self._wait(Task(lambda conn: self._import_progress(conn, key, mode),
                                       write=False))
                if done is not None:
                    done_written, done_pages, finished = done  # type: ignore[misc]
                    if finished is not None and mode == "add" and not again:
                        raise AlreadyImported(finished)
                    if finished is None and done_pages == staged:
                        written = done_written
            if key is not None:
                report["resumed"] = written  # type: ignore[index]
            if dry_run:
                return report  # type: ignore[return-value]
            while written < staged:
                first, last = written, min(written + chunk, staged)

                def write(conn: object) -> None:
                    self._merge_staged(conn, mode, first, chunk)
                    if key is not None:
                        self._record_import(conn, key, mode, last, staged,
                                            stamp(utc_now()) if last == staged else None)
                try:
                    self._wait(Task(write))
                except StorageError as e:
                    raise ImportInterrupted(written, staged, e) from None
                written = last
            return report  # type: ignore[return-value]
        finally:
            self._wait(Task(self._drop_staging, write=False))

    @abc.abstractmethod
    def _import_progress(self, conn: object, key: str, mode: str
                         ) -> tuple[int, int, str | None] | None: ...

    @abc.abstractmethod
    def _record_import(self, conn: object, key: str, mode: str, written: int, pages: int,
                       finished: str | None) -> None: ...

    @abc.abstractmethod
    def _stage(self, conn: object, pages: Iterable[Page]) -> None: ...

    @abc.abstractmethod
    def _staged_report(self, conn: object, mode: str) -> dict[str, int]: ...

    @abc.abstractmethod
    def _merge_staged(self, conn: object, mode: str, first: int, chunk: int) -> None: ...

    @abc.abstractmethod
    def _drop_staging(self, conn: object) -> None: ...
