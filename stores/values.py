"""What Tally's stores build on, and what the rest of Tally reads from them:
the errors, the values (Counts, Page, Day, GitHub's numbers), the UTC day,
the visitor hash and the first kept day, and a database string with its
password masked.

Imports no module of Tally's and no database library: every store module
builds on it, and storage.py, the face, hands its names on to the rest.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import urllib.parse
from pathlib import Path

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


class KeyChanged(Exception):
    """An owner's key stopped being the page's (rotated, or removed by the
    operator) before the action it allowed was written: nothing changed."""


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
    # Views the inflation guard held (counting.Guard): never in total or
    # today until released.
    held: int = 0
    held_today: int = 0


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
    held: int = 0
    held_days: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Day:
    """One page's numbers of one UTC day."""
    day: str
    views: int
    visitors: int = 0
    bots: int = 0
    held: int = 0


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
    """A Page from (page_id, total, created_at, last_seen, visitors, held)
    and its (day, views, visitors, bots, held) rows, as both stores read
    them."""
    return Page(*row[:4], days={d[0]: d[1] for d in days}, visitors=row[4],
                visitor_days={d[0]: d[2] for d in days if d[2]},
                bot_days={d[0]: d[3] for d in days if d[3]}, held=row[5],
                held_days={d[0]: d[4] for d in days if d[4]})


def day_rows(number: int, page: Page) -> list[tuple[int, str, int, int, int, int]]:
    """(number, day, views, visitors, bots, held) of each day a page names,
    for an import's staging table."""
    days = sorted(set(page.days) | set(page.visitor_days) | set(page.bot_days)
                  | set(page.held_days))
    return [(number, d, page.days.get(d, 0), page.visitor_days.get(d, 0),
             page.bot_days.get(d, 0), page.held_days.get(d, 0)) for d in days]


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
