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
the web side. server.py starts a Syncer; commands.py runs the `github`
commands on these functions.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import json
import logging
import socket
import threading
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
MAX_ANSWER_BYTES = 1 << 20
TEXT_MAX = 1000
USER_AGENT = "Tally (self-hosted visitor counter; github traffic sync)"

# Statuses a repository can have (github list shows them).
OK, NEW = "ok", "new"
TOKEN_REFUSED, NO_TOKEN = "token refused", "no token"
NO_ACCESS, NOT_FOUND, RATE_LIMITED = "no push access", "not found", "rate limited"
TIMED_OUT, UNREACHABLE, BAD_ANSWER = "timed out", "unreachable", "bad answer"
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
            with open(config.github_token_file, encoding="utf-8") as f:
                token = f.read(4096).strip()
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


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follow a redirect (a renamed repository) only to the same scheme and
    host: the token must never travel anywhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise GitHubError(BAD_ANSWER)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Client:
    """GitHub's REST API (or a GitHub Enterprise Server's) with one token."""

    def __init__(self, api: str, token: str, timeout: float):
        self.api, self.timeout = api.rstrip("/"), timeout
        self._headers = {"Accept": "application/vnd.github+json",
                         "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT,
                         "Authorization": f"Bearer {token}"}
        self._opener = urllib.request.build_opener(_SameOrigin)

    def get(self, path: str) -> object:
        """The JSON of one GET, or GitHubError with the status it means."""
        request = urllib.request.Request(self.api + path, headers=self._headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                body = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as e:
            e.close()
            raise _refusal(e.code, e.headers) from None
        except (TimeoutError, socket.timeout):
            raise GitHubError(TIMED_OUT) from None
        except urllib.error.URLError as e:
            timed_out = isinstance(e.reason, (TimeoutError, socket.timeout))
            raise GitHubError(TIMED_OUT if timed_out else UNREACHABLE) from None
        except (OSError, ValueError):  # reset mid-answer, a broken status line
            raise GitHubError(UNREACHABLE) from None
        if len(body) > MAX_ANSWER_BYTES:
            raise GitHubError(BAD_ANSWER)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise GitHubError(BAD_ANSWER) from None

    def traffic(self, repo: str, now: datetime.datetime
                ) -> tuple[dict[str, TrafficDay], list[Popular]]:
        """GitHub's window of a repository: every day of it (zeros where
        GitHub lists nothing: it leaves out days without views), and the
        top referrers and paths."""
        base = f"/repos/{urllib.parse.quote(repo)}/traffic"
        views = _per_day(self.get(f"{base}/views?per=day"), "views")
        clones = _per_day(self.get(f"{base}/clones?per=day"), "clones")
        referrers = _popular(self.get(f"{base}/popular/referrers"), "referrer")
        paths = _popular(self.get(f"{base}/popular/paths"), "path")
        days = {day: (0, 0) for day in window(now)}
        return ({day: TrafficDay(*views.get(day, (0, 0)), *clones.get(day, (0, 0)))
                 for day in sorted(set(days) | set(views) | set(clones))},
                referrers + paths)


def window(now: datetime.datetime) -> list[str]:
    """The UTC days GitHub's traffic answers cover at this moment."""
    today = datetime.date.fromisoformat(storage.day(now))
    return [(today - datetime.timedelta(days=back)).isoformat()
            for back in range(WINDOW_DAYS - 1, -1, -1)]


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
    now = storage.utc_now()
    after = (headers.get("Retry-After") or "").strip()
    if after.isdigit():
        return now + datetime.timedelta(seconds=min(int(after), 86400))
    if after:
        try:
            return email.utils.parsedate_to_datetime(after).astimezone(datetime.timezone.utc)
        except (TypeError, ValueError):
            pass
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if headers.get("x-ratelimit-remaining", "").strip() == "0" and reset.isdigit():
        return datetime.datetime.fromtimestamp(min(int(reset), 2**33), datetime.timezone.utc)
    return None


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= storage.TOTAL_MAX:
        raise GitHubError(BAD_ANSWER)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise GitHubError(BAD_ANSWER)
    return value[:TEXT_MAX]


def _per_day(document: object, key: str) -> dict[str, tuple[int, int]]:
    """{day: (count, uniques)} of a views or clones answer."""
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise GitHubError(BAD_ANSWER)
    days = {}
    for item in document[key]:
        if not isinstance(item, dict):
            raise GitHubError(BAD_ANSWER)
        try:
            moment = datetime.datetime.fromisoformat(_text(item.get("timestamp"))
                                                     .replace("Z", "+00:00"))
        except ValueError:
            raise GitHubError(BAD_ANSWER) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        days[storage.day(moment)] = (_count(item.get("count")), _count(item.get("uniques")))
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


def sync_one(store: storage.Store, client: Client, state: storage.Repo,
             now: datetime.datetime, interval: datetime.timedelta) -> Outcome:
    """Sync one repository that this process has claimed: GitHub's days
    replace the kept ones, or the failure is recorded (and logged when it
    is a new state)."""
    try:
        days, popular = client.traffic(state.repo, now)
    except GitHubError as e:
        return fail(store, state, e, now, interval)
    store.github_save(state.repo, days, popular, now, now + interval)
    if state.status not in (OK, NEW):
        log.warning("github %s: syncing again (was: %s)", state.repo, state.status)
    return Outcome(state.repo, OK, len(days))


def fail(store: storage.Store, state: storage.Repo, error: GitHubError,
         now: datetime.datetime, interval: datetime.timedelta) -> Outcome:
    """Record a failed sync: when to ask again (GitHub's word for a rate
    limit, the interval for a refusal, a growing back-off for trouble on
    GitHub's side), and log the state once, when it begins."""
    failures = state.failures + 1
    if error.retry_at is not None:
        next_at = error.retry_at
    elif error.status == TOKEN_REFUSED:
        # Due at once: the Syncer does not ask again with the token that
        # was refused, and asks as soon as it changes.
        next_at = now
    elif error.status in SETTLED:
        next_at = now + interval
    else:
        next_at = now + min(interval, BACKOFF_FIRST * 2 ** min(failures - 1, 20))
    before = store.github_failed(state.repo, error.status, now, next_at, failures)
    if before is not None and before != error.status:
        until = f" until {storage.stamp(next_at)}" if error.status == RATE_LIMITED else ""
        log.warning("github %s: %s%s (logged once until it changes)", state.repo,
                    error.status, until)
    return Outcome(state.repo, error.status, retry_at=storage.stamp(next_at))


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
    for state in store.github_repos():
        if only is not None and state.repo != only:
            continue
        if state.next_sync_at > storage.stamp(now):
            if due_only:
                continue
            if state.status == RATE_LIMITED:
                outcomes.append(Outcome(state.repo, RATE_LIMITED, retry_at=state.next_sync_at))
                continue
        if not store.github_claim(state.repo, now, LEASE, due_only=due_only):
            continue  # another server is syncing it
        if stop is not None:
            outcomes.append(fail(store, state, stop, now, interval))
            continue
        outcome = sync_one(store, client, state, now, interval)
        outcomes.append(outcome)
        if outcome.status in STOPS_PASS:
            stop = GitHubError(outcome.status, _parsed(outcome.retry_at))
    return outcomes


def _parsed(stamp: str | None) -> datetime.datetime | None:
    if stamp is None:
        return None
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
