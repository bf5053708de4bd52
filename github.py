"""GitHub's own traffic numbers, kept past GitHub's 14 days: the one honest
source of unique visitors for a README (GitHub's image proxy hides every
viewer from a badge). For each repository an owner adds, Tally asks
GitHub's REST API for views and unique visitors per day, clones and unique
cloners per day, and the top referrers and paths, and keeps every day.

Client is the only place that speaks to GitHub (the standard library's
urllib: four GETs per repository every few hours need nothing more, and it
verifies TLS with the system's certificates). sync_pass() syncs the
repositories that are due; Syncer runs it in a thread of the serving
process, so no badge ever waits on GitHub. The token is read here (from
the setting or its file, at each pass) and never stored, printed or logged.

Imports storage (values, errors) and config; never a store module, never
the web side. server.py starts a Syncer; commands/traffic.py runs the `github`
commands on these functions.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import email.utils
import http.client
import json
import logging
import os
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import storage
from config import Config, ConfigError
from storage import Popular, TrafficDay

log = logging.getLogger("tally")

API_VERSION = "2022-11-28"
# GitHub keeps the last 14 UTC days, today's (still growing) included.
WINDOW_DAYS = 14
# A sync in progress holds its repository this long at most (four
# requests, each within the timeout), so a server that died mid-sync does
# not keep the others from it.
LEASE = datetime.timedelta(minutes=10)
# After a 5xx, a timeout or a bad answer: 1, 2, 4 ... minutes, at most the
# sync interval.
BACKOFF_FIRST = datetime.timedelta(minutes=1)
# The longest wait GitHub may ask for (Retry-After, x-ratelimit-reset): its
# primary limit resets within the hour, its secondary limits ask for
# seconds; a later time (9999-12-31) is a bad header, not a reason to stop.
RETRY_CAP = datetime.timedelta(hours=1)
MAX_ANSWER_BYTES = 1 << 20
# The days GitHub's traffic can have: from GitHub's start to a year no box
# will see. With at most COUNT_MAX per day, a repository's sums over every
# such day stay far below storage.TOTAL_MAX (33,600 days x 10**10 < 4 x
# 10**14), so no sum in SQL can overflow.
FIRST_DAY, LAST_DAY = datetime.date(2008, 1, 1), datetime.date(2099, 12, 31)
COUNT_MAX = 10**10
TEXT_MAX = 1000
USER_AGENT = "Tally (self-hosted visitor counter; github traffic sync)"

# Statuses a repository can have (github list shows them).
OK, NEW = "ok", "new"
TOKEN_REFUSED, NO_TOKEN = "token refused", "no token"
NO_ACCESS, NOT_FOUND, RATE_LIMITED = "no push access", "not found", "rate limited"
TIMED_OUT, UNREACHABLE, BAD_ANSWER = "timed out", "unreachable", "bad answer"
INTERNAL = "internal error"  # a bug of Tally's, logged with its traceback
# These say nothing about one repository but about the token: the rest of a
# pass is not asked (it would fail the same way).
STOPS_PASS = (TOKEN_REFUSED, RATE_LIMITED, NO_TOKEN)
# These will not change by asking again soon: the next try is a sync
# interval away, not a back-off.
SETTLED = (TOKEN_REFUSED, NO_ACCESS, NOT_FOUND, NO_TOKEN)


class GitHubError(Exception):
    """A request to GitHub failed; status is what github list shows,
    retry_at when GitHub said when to ask again."""

    def __init__(self, status: str, retry_at: datetime.datetime | None = None):
        super().__init__(status)
        self.status, self.retry_at = status, retry_at


def read_token(config: Config) -> str | None:
    """The token (TALLY_GITHUB_TOKEN, or the file TALLY_GITHUB_TOKEN_FILE
    names, read now so a replaced file is used at the next pass), None
    when neither is set. ConfigError names the setting, never the value."""
    if config.github_token_file is not None:
        try:
            token = _read_small_file(config.github_token_file).strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"TALLY_GITHUB_TOKEN_FILE: cannot read "
                              f"{config.github_token_file}: {reason}") from None
        name = "TALLY_GITHUB_TOKEN_FILE"
    elif config.github_token is not None:
        token, name = config.github_token.strip(), "TALLY_GITHUB_TOKEN"
    else:
        return None
    # A header value cannot hold these; http.client's error would quote it.
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(f"{name}: not a GitHub token (empty, or holds spaces or "
                          f"characters a token cannot have)")
    return token


def _read_small_file(path: str) -> str:
    """The first 4 KiB of a regular file. Opened without blocking and
    checked first: a FIFO or a device would hold the sync thread forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        return os.read(fd, 4096).decode("utf-8")
    finally:
        os.close(fd)


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follow a redirect (a renamed repository) only to the same scheme and
    host: the token must never travel anywhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise GitHubError(BAD_ANSWER)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """One deadline for a whole request, redirects, headers and body: at
    it, the connection's socket is shut, which ends any read waiting on it.
    (A socket's timeout bounds each read only: an answer dripping a byte
    a second would never end.)"""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.passed:
            self._expire()

    def _expire(self) -> None:
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def cancel(self) -> None:
        self._timer.cancel()


def _connection_class(base: type, deadline: _Deadline) -> type:
    class Connection(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)
    return Connection


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(_connection_class(http.client.HTTPConnection, self.deadline), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(_connection_class(http.client.HTTPSConnection, self.deadline), req,
                            context=self._context)  # type: ignore[attr-defined]


class Client:
    """GitHub's REST API (or a GitHub Enterprise Server's) with one token."""

    def __init__(self, api: str, token: str | None, timeout: float):
        self.api, self.timeout = api.rstrip("/"), timeout
        # Without a token: public repositories only (a README claim).
        self._headers = {"Accept": "application/vnd.github+json",
                         "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT,
                         **({"Authorization": f"Bearer {token}"} if token else {})}

    def get(self, path: str) -> tuple[object, datetime.date]:
        """The JSON of one GET and GitHub's UTC day by its Date header, or
        GitHubError with the status it means. The whole request, however
        slowly it is answered, takes at most the timeout."""
        request = urllib.request.Request(self.api + path, headers=self._headers)
        deadline = _Deadline(self.timeout)
        opener = urllib.request.build_opener(_SameOrigin, _HTTP(deadline), _HTTPS(deadline))
        try:
            with opener.open(request, timeout=self.timeout) as answer:
                body = answer.read(MAX_ANSWER_BYTES + 1)
                date = answer.headers.get("Date")
        except urllib.error.HTTPError as e:
            e.close()
            raise _refusal(e.code, e.headers) from None
        except (TimeoutError, socket.timeout):
            raise GitHubError(TIMED_OUT) from None
        except urllib.error.URLError as e:
            timed_out = isinstance(e.reason, (TimeoutError, socket.timeout)) or deadline.passed
            raise GitHubError(TIMED_OUT if timed_out else UNREACHABLE) from None
        except (OSError, ValueError, http.client.HTTPException):  # reset mid-answer, a broken status line
            raise GitHubError(TIMED_OUT if deadline.passed else UNREACHABLE) from None
        finally:
            deadline.cancel()
        if deadline.passed:  # the body was cut short at the deadline
            raise GitHubError(TIMED_OUT)
        if len(body) > MAX_ANSWER_BYTES:
            raise GitHubError(BAD_ANSWER)
        try:
            return json.loads(body), _github_day(date)
        except (ValueError, RecursionError):
            raise GitHubError(BAD_ANSWER) from None

    def traffic(self, repo: str) -> TrafficAnswer:
        """GitHub's window of a repository: the days it lists, the days of
        its window it leaves out (they had no views), and the top referrers
        and paths. The window is GitHub's own, from its Date header, never
        this box's clock: a day that has left GitHub's window is never
        taken for a day without views."""
        base = f"/repos/{urllib.parse.quote(repo)}/traffic"
        views_answer, today = self.get(f"{base}/views?per=day")
        views = _per_day(views_answer, "views", today)
        clones = _per_day(self.get(f"{base}/clones?per=day")[0], "clones", today)
        referrers = _popular(self.get(f"{base}/popular/referrers")[0], "referrer")
        paths = _popular(self.get(f"{base}/popular/paths")[0], "path")
        listed = sorted(set(views) | set(clones))
        return TrafficAnswer(today, {day: TrafficDay(*views.get(day, (0, 0)), *clones.get(day, (0, 0)))
                               for day in listed},
                       [day for day in window(today) if day not in listed], referrers + paths)


    def readme(self, repo: str) -> str:
        """The text of a repository's README (GitHub's REST reference,
        "Get a repository README": its content in base64), within the
        same deadline and size limit as every answer; GitHubError when
        GitHub cannot serve it (NOT_FOUND: no README, or a private
        repository without a token that reaches it)."""
        answer, _ = self.get(f"/repos/{urllib.parse.quote(repo)}/readme")
        if not isinstance(answer, dict) or answer.get("encoding") != "base64" or \
                not isinstance(answer.get("content"), str):
            raise GitHubError(BAD_ANSWER)
        try:
            return base64.b64decode(answer["content"]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise GitHubError(BAD_ANSWER) from None


@dataclasses.dataclass(frozen=True)
class TrafficAnswer:
    """One sync's answer: GitHub's UTC day, the days it listed, the days of
    its window it left out (zeros, kept only where nothing is kept), and
    the top referrers and paths."""
    today: datetime.date
    listed: dict[str, TrafficDay]
    unlisted: list[str]
    popular: list[Popular]


def window(today: datetime.date) -> list[str]:
    """The UTC days GitHub's traffic answers cover on its day `today`."""
    return [(today - datetime.timedelta(days=back)).isoformat()
            for back in range(WINDOW_DAYS - 1, -1, -1)]


def _github_day(date: str | None) -> datetime.date:
    """GitHub's UTC day by its Date header; an answer without one (or with
    one outside the days GitHub can have) is a bad answer."""
    try:
        moment = email.utils.parsedate_to_datetime(date or "")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        today = moment.astimezone(datetime.timezone.utc).date()
    except (TypeError, ValueError, IndexError, OverflowError):
        raise GitHubError(BAD_ANSWER) from None
    if not FIRST_DAY <= today <= LAST_DAY:
        raise GitHubError(BAD_ANSWER)
    return today


def _refusal(code: int, headers: "email.message.Message") -> GitHubError:
    """What an HTTP error from GitHub means (GitHub's REST docs: rate limits
    answer 403 or 429 with x-ratelimit-remaining: 0 and x-ratelimit-reset,
    or with Retry-After)."""
    retry_at = _retry_at(headers)
    spent = (headers.get("x-ratelimit-remaining") or "").strip() == "0"
    if code == 429 or code == 403 and (spent or retry_at is not None):
        # Without a time to wait, GitHub asks for a minute at least, then
        # longer: the back-off below.
        return GitHubError(RATE_LIMITED, retry_at)
    if code == 401:
        return GitHubError(TOKEN_REFUSED)
    if code == 403:  # "Must have push access", "Resource not accessible by ... token"
        return GitHubError(NO_ACCESS)
    if code == 404:
        return GitHubError(NOT_FOUND)
    return GitHubError(f"GitHub error {code}")


def _retry_at(headers: "email.message.Message") -> datetime.datetime | None:
    """When GitHub asked to be asked again (Retry-After: seconds or a date;
    x-ratelimit-reset: epoch seconds), never later than RETRY_CAP from now
    and never earlier than now. A header that is not one of these forms
    (a superscript digit, 5,000 digits, an offset out of range) says
    nothing: the back-off applies."""
    now = storage.utc_now()
    after = (headers.get("Retry-After") or "").strip()
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    when = None
    if _SECONDS.fullmatch(after):
        when = now + datetime.timedelta(seconds=min(int(after), RETRY_CAP.total_seconds()))
    elif after:
        try:
            when = email.utils.parsedate_to_datetime(after).astimezone(datetime.timezone.utc)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    if when is None and (headers.get("x-ratelimit-remaining") or "").strip() == "0" \
            and _SECONDS.fullmatch(reset):
        when = datetime.datetime.fromtimestamp(min(int(reset), 2**33), datetime.timezone.utc)
    if when is None:
        return None
    return min(max(when, now), now + RETRY_CAP)


# Seconds as GitHub writes them: ASCII digits ("²".isdigit() is True), and
# few enough that int() reads them at once.
_SECONDS = re.compile(r"[0-9]{1,12}", re.ASCII)


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= COUNT_MAX:
        raise GitHubError(BAD_ANSWER)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise GitHubError(BAD_ANSWER)
    return value[:TEXT_MAX]


def _per_day(document: object, key: str, today: datetime.date) -> dict[str, tuple[int, int]]:
    """{day: (count, uniques)} of a views or clones answer. Every day must
    lie in GitHub's window on its day `today` (or be the day just before
    it, which GitHub may still list in its first minutes of a day):
    anything else is a bad answer, and nothing of it is kept."""
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise GitHubError(BAD_ANSWER)
    first = today - datetime.timedelta(days=WINDOW_DAYS)
    days = {}
    for item in document[key]:
        if not isinstance(item, dict):
            raise GitHubError(BAD_ANSWER)
        try:
            moment = datetime.datetime.fromisoformat(_text(item.get("timestamp"))
                                                     .replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.timezone.utc)
            date = moment.astimezone(datetime.timezone.utc).date()
        except (ValueError, OverflowError):
            raise GitHubError(BAD_ANSWER) from None
        if not first <= date <= today:
            raise GitHubError(BAD_ANSWER)
        days[date.isoformat()] = (_count(item.get("count")), _count(item.get("uniques")))
    return days


def _popular(document: object, kind: str) -> list[Popular]:
    """A referrers or paths answer (a list of at most GitHub's top 10)."""
    if not isinstance(document, list):
        raise GitHubError(BAD_ANSWER)
    found = []
    for item in document:
        if not isinstance(item, dict):
            raise GitHubError(BAD_ANSWER)
        name = _text(item.get(kind))
        title = _text(item.get("title", name))
        found.append(Popular(kind, name, title, _count(item.get("count")),
                             _count(item.get("uniques"))))
    return found


# Syncing ####################################################################


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one repository's sync did (github sync prints these)."""
    repo: str
    status: str
    days: int = 0
    retry_at: str | None = None
    released: int = 0  # held views of the linked page that GitHub's views explained


def sync_one(store: storage.Store, client: Client, state: storage.Repo,
             now: datetime.datetime, interval: datetime.timedelta) -> Outcome:
    """Sync one repository that this process has claimed: the days GitHub
    lists replace the kept ones, a day of its window it leaves out is kept
    as 0 only where nothing was kept, or the failure is recorded (and
    logged when it is a new state)."""
    try:
        answer = client.traffic(state.repo)
    except GitHubError as e:
        return fail(store, state, e, now, interval)
    store.github.save(state.repo, answer.listed, answer.unlisted, answer.popular,
                      answer.today.isoformat(), now, now + interval)
    if state.status not in (OK, NEW):
        log.warning("github %s: syncing again (was: %s)", state.repo, state.status)
    # GitHub's own views confirm the held views of a day they explain
    # (docs/github.md): those are counted now.
    released = store.release_confirmed(state.repo)
    if released:
        log.info("github %s: released %d held views of %s on %d days (GitHub's views explain "
                 "them)", state.repo, sum(n for _, n in released), state.page_id, len(released))
    return Outcome(state.repo, OK, len(answer.listed) + len(answer.unlisted),
                   released=sum(n for _, n in released))


def fail(store: storage.Store, state: storage.Repo, error: GitHubError,
         now: datetime.datetime, interval: datetime.timedelta) -> Outcome:
    """Record a failed sync: when to ask again (GitHub's word for a rate
    limit, the interval for a refusal, a growing back-off for trouble on
    GitHub's side), and log the state once, when it begins."""
    failures = state.failures + 1
    if error.retry_at is not None:
        next_at = min(error.retry_at, now + RETRY_CAP)
    elif error.status == TOKEN_REFUSED:
        # Due at once: the Syncer does not ask again with the token that
        # was refused, and asks as soon as it changes.
        next_at = now
    elif error.status in SETTLED:
        next_at = now + interval
    else:
        next_at = now + min(interval, BACKOFF_FIRST * 2 ** min(failures - 1, 20))
    before = store.github.failed(state.repo, error.status, now, next_at, failures)
    if before is not None and before != error.status:
        until = f" until {storage.stamp(next_at)}" if error.status == RATE_LIMITED else ""
        log.warning("github %s: %s%s (logged once until it changes)", state.repo,
                    error.status, until)
    return Outcome(state.repo, error.status, retry_at=storage.stamp(next_at))


def due(state: storage.Repo, now: datetime.datetime, interval: datetime.timedelta) -> bool:
    """Whether a repository is due for a sync now, by the interval in force
    (not the one stored with the last sync, which may have been another
    process's). A time further ahead than any schedule could set (a
    rate limit's RETRY_CAP, the interval) was set by a clock that was
    wrong, or by a longer interval than today's: due now, so a schedule
    corrects itself when the clock does."""
    planned = _moment(state.next_sync_at)
    if state.status == RATE_LIMITED:
        return planned <= now or planned > now + RETRY_CAP
    if state.status == OK and state.synced_at is not None:
        synced = _moment(state.synced_at)
        return synced + interval <= now or synced > now + LEASE
    return planned <= now or planned > now + interval


def sync_pass(store: storage.Store, config: Config, now: datetime.datetime | None = None,
              due_only: bool = True, only: str | None = None) -> list[Outcome]:
    """Sync every kept repository that is due (all with due_only=False,
    except one whose rate limit has not ended; only: just that one), each
    claimed first so that of several servers on one database only one asks
    GitHub for it. A refused token or a rate limit ends the pass: the rest
    are marked without being asked."""
    now = now or storage.utc_now()
    interval = datetime.timedelta(hours=config.github_sync_hours)
    stop: GitHubError | None = None
    try:
        token = read_token(config)
    except ConfigError:
        token = None
    if token is None:
        stop = GitHubError(NO_TOKEN)
    client = Client(config.github_api, token or "", config.github_timeout)
    outcomes = []
    for state in store.github.repos():
        if only is not None and state.repo != only:
            continue
        if not due(state, now, interval):
            if due_only:
                continue
            if state.status == RATE_LIMITED:
                outcomes.append(Outcome(state.repo, RATE_LIMITED, retry_at=state.next_sync_at))
                continue
        # Claimed only as it was read: a server that synced it meanwhile
        # changed it, and this one leaves it.
        if not store.github.claim(state.repo, now, LEASE, seen=state if due_only else None):
            continue  # another server is syncing it
        if stop is not None:
            outcomes.append(fail(store, state, stop, now, interval))
            continue
        try:
            outcome = sync_one(store, client, state, now, interval)
        except storage.StorageError:
            raise
        except Exception:  # a bug must not leave the repository claimed
            log.exception("github %s: sync failed", state.repo)
            outcome = fail(store, state, GitHubError(INTERNAL), now, interval)
        outcomes.append(outcome)
        if outcome.status in STOPS_PASS:
            stop = GitHubError(outcome.status, _parsed(outcome.retry_at))
    return outcomes


def _parsed(stamp: str | None) -> datetime.datetime | None:
    return None if stamp is None else _moment(stamp)


def _moment(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


class Syncer:
    """The serving process's sync: a thread that wakes every `tick` seconds
    and syncs the repositories that are due. GitHub's answers are awaited
    here, never on the event loop; what a sync writes is one short task on
    the store's writer. A token GitHub refused is not used again until it
    changes (the setting or its file)."""

    def __init__(self, store: storage.Store, config: Config, tick: float | None = None):
        self.store, self.config = store, config
        hours = config.github_sync_hours
        self.tick = tick if tick is not None else min(60.0, max(0.5, hours * 3600 / 20))
        self._stop = threading.Event()
        self._refused: str | None = None
        self._thread = threading.Thread(target=self._run, name="tally-github", daemon=True)

    def start(self) -> "Syncer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                token = read_token(self.config)
            except ConfigError:
                token = None  # sync_pass marks the repositories "no token"
            if token is not None and token == self._refused:
                continue
            try:
                outcomes = sync_pass(self.store, self.config)
            except storage.StorageError:
                continue  # the badges' outage log reports the database
            except Exception:  # a bug must not end the syncing for good
                log.exception("github sync failed")
                continue
            if any(o.status == TOKEN_REFUSED for o in outcomes):
                self._refused = token
