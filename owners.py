"""Self-service for page owners on a shared instance (TALLY_SELF_SERVICE=1;
docs/owners.md): who may do what to a page, decided here once.

- A new counter, with a key: POST /api/pages makes a page that has no
  views and no owner, and answers its key once.
- A claim proved by a README: POST /api/claims gives a token; once the
  repository's README holds `<!-- tally-claim: TOKEN -->` and a badge of
  the page on this server, POST /api/claims/verify answers a key (one
  made earlier by anyone else stops working).
- What the key's holder does: set, reset, delete, rotate, release, export,
  and see what was done (every action is recorded, never the key).

A key is 256 random bits, kept only as its SHA-256 and compared in
constant time; it travels only in an Authorization header or a form's
body, never in a URL, a log line or an error. Wrong keys, new counters
and claims are rate-limited in the database (store.owners.tries), so
every server on one PostgreSQL database counts the same tries.

No web framework here: server.py hands over the request's pieces and
sends what comes back. The README is read through github.py's client.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import html
import json
import re
import secrets
from typing import Callable

import flavours
import github
import markup
import pages
import params
import storage
from config import Config, ConfigError
from params import ParamError

# Rate limits: a few wrong keys a minute per page and per client, then
# 429 until the minute ends; new counters and claims per client an hour.
WRONG_KEYS_PER_MINUTE = 5
NEW_PAGES_PER_HOUR = 10
CLAIMS_PER_HOUR = 10
CLAIM_LIFETIME = datetime.timedelta(hours=24)
BODY_MAX = 4096
KEY_PREFIX, TOKEN_PREFIX = "tally_", "tallyclaim_"
_TOKEN = re.compile(r"tallyclaim_[A-Za-z0-9_-]{22}")
OFF = "self-service is off (TALLY_SELF_SERVICE=1 turns it on)"
# The owner's actions: JSON API path -> (action, what it needs).
ACTIONS = {"/api/pages/set": "set", "/api/pages/reset": "reset",
           "/api/pages/delete": "delete", "/api/pages/rotate": "rotate",
           "/api/pages/release": "release"}
READS = {"/api/pages/export": "export", "/api/pages/actions": "actions"}


class Refused(Exception):
    """A request refused: its status and a short message (never a value
    received, never a key)."""

    def __init__(self, status: int, problem: str, retry_after: int | None = None):
        super().__init__(problem)
        self.status, self.problem, self.retry_after = status, problem, retry_after


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hashed(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def bearer(authorization: str) -> str:
    """The key of an `Authorization: Bearer KEY` header."""
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Refused(401, "missing key (Authorization: Bearer KEY)")
    return key.strip()


def export_document(page: storage.Page | None, page_id: str, now: datetime.datetime) -> dict:
    """The page as `export` writes it (an import reads it back)."""
    return {"tally_export": 1, "exported_at": storage.stamp(now),
            "pages": [pages.export_record(page)] if page else []}


def badges_in(text: str, base: str) -> set[str]:
    """The page ids of the badges on this server (base: its scheme and
    host) that a README shows: Tally's /badge and the old services' URLs
    on this host (migrate's reader), outside code."""
    host = re.escape(base.split("://", 1)[-1])
    found = set()
    code = markup.code_spans(text, "markdown")
    for match in re.finditer(rf"https?://{host}(/[^\s\"'<>)\]`]*)", text, re.IGNORECASE):
        if markup.inside(code, match.start(), match.end()):
            continue
        try:
            found.add(flavours.page_id_of(html.unescape(match.group(1))))
        except ParamError:
            continue
    return found


@dataclasses.dataclass
class Request:
    """What self-service reads of a request."""
    path: str
    method: str
    content_type: str
    authorization: str
    body: bytes
    client: str
    base: str   # this server's scheme and host, as the reader used it
    query: str = ""


class SelfService:
    """The answers of /api/pages..., /api/claims... and /manage's work."""

    def __init__(self, config: Config, store: storage.Store, allow: re.Pattern | None) -> None:
        self.config, self.store, self.owners, self.allow = config, store, store.owners, allow

    # The JSON API -----------------------------------------------------------

    def answer(self, request: Request, now: datetime.datetime | None = None
               ) -> tuple[int, dict]:
        """(status, JSON payload) of a self-service request. Raises what
        the store raises (StorageError: the routes' failure answers it)."""
        now = now or storage.utc_now()
        try:
            if not self.config.self_service:
                raise Refused(404, OFF)
            # (routes.py gives each path its one method: GET for the reads.)
            if request.path in READS:
                values = params.parse_query_string(request.query, frozenset({"page_id"}))
                return 200, self.read(READS[request.path], request, values.get("page_id"), now)
            body = self.body(request)
            if request.path == "/api/pages":
                return 201, self.create(body.get("page_id"), request.client, now)
            if request.path == "/api/claims":
                return 201, self.claim(body.get("page_id"), body.get("repo"), request.client, now)
            if request.path == "/api/claims/verify":
                return 201, self.verify(body, request, now)
            return 200, self.act(ACTIONS[request.path], body, request, now)
        except Refused as e:
            return e.status, {"error": e.problem, **({"retry_after": e.retry_after}
                                                     if e.retry_after else {})}
        except ParamError as e:
            return 400, {"error": str(e)}

    def body(self, request: Request) -> dict:
        """A JSON object (Content-Type: application/json, as no form of
        another site can send without asking first)."""
        if request.content_type.split(";")[0].strip().lower() != "application/json":
            raise Refused(415, "Content-Type must be application/json")
        if len(request.body) > BODY_MAX:
            raise Refused(413, "request body too large")
        try:
            value = json.loads(request.body)
        except (ValueError, RecursionError):
            raise Refused(400, "body is not JSON") from None
        if not isinstance(value, dict):
            raise Refused(400, "body must be a JSON object")
        return value

    def page(self, text: object) -> str:
        """A page id an owner may hold: a valid, allowed page Tally counts."""
        named = pages.name(text, self.allow)  # type: ignore[arg-type]  (a JSON value)
        if not named.countable:
            raise Refused(400, "a github: page has no owner (GitHub's numbers are GitHub's)")
        return named.page_id

    def limited(self, kind: str, subject: str, slot: str, limit: int,
                now: datetime.datetime, client: bool) -> None:
        """One more try of a rate-limited kind; 429 past the limit."""
        if self.owners.tries(kind, subject, slot, now, client=client) > limit:
            raise Refused(429, "too many tries; wait and try again", _seconds_left(slot, now))

    # New counters and claims --------------------------------------------------

    def create(self, page_id: object, client: str, now: datetime.datetime) -> dict:
        checked = self.page(page_id)
        self.limited("new", client, _hour(now), NEW_PAGES_PER_HOUR, now, client=True)
        key = new_key()
        try:
            self.owners.create(checked, hashed(key), now, self.config.max_pages)
        except storage.AlreadyExists:
            raise Refused(409, "page_id has views or an owner already") from None
        except storage.PageLimitReached:
            raise Refused(409, "page limit reached") from None
        return {"page_id": checked, "owner_key": key}

    def claim(self, page_id: object, repo: object, client: str, now: datetime.datetime) -> dict:
        checked = self.page(page_id)
        name = params.github_repo(repo if isinstance(repo, str) else None, "repo")
        self.limited("claim", client, _hour(now), CLAIMS_PER_HOUR, now, client=True)
        token = TOKEN_PREFIX + secrets.token_urlsafe(16)
        expires = storage.stamp(now + CLAIM_LIFETIME)
        self.owners.add_claim(hashed(token), checked, name, expires)
        return {"page_id": checked, "repo": name, "claim_token": token, "expires_at": expires,
                "readme_line": f"<!-- tally-claim: {token} -->"}

    def verify(self, body: dict, request: Request, now: datetime.datetime) -> dict:
        checked = self.page(body.get("page_id"))
        repo = body.get("repo")
        name = params.github_repo(repo if isinstance(repo, str) else None, "repo")
        token = body.get("claim_token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ParamError("invalid claim_token")
        self.limited("claim", request.client, _hour(now), CLAIMS_PER_HOUR, now, client=True)
        found = self.owners.claim(hashed(token))
        if found is None or found[:2] != (checked, name):
            raise Refused(403, "no such claim for this page and repository")
        if found[2] < storage.stamp(now):
            raise Refused(403, "the claim expired; ask for a new one")
        readme = self.readme(name)
        if f"<!-- tally-claim: {token} -->" not in readme:
            raise Refused(403, "the README does not hold the claim's line")
        if checked not in badges_in(readme, request.base):
            raise Refused(403, "the README shows no badge of this page on this server")
        key = new_key()
        self.owners.claimed(checked, hashed(key), name, hashed(token), now)
        return {"page_id": checked, "owner_key": key}

    def readme(self, repo: str) -> str:
        """The README through GitHub's REST API (TALLY_GITHUB_API; the
        operator's token if set), within github.py's deadline and size."""
        try:
            token = github.read_token(self.config)
        except ConfigError:
            token = None  # a broken token file: public repositories still work
        try:
            return github.Client(self.config.github_api, token,
                                 self.config.github_timeout).readme(repo)
        except github.GitHubError as e:
            raise Refused(403, f"GitHub cannot serve the README ({e.status})") from None

    # What an owner does --------------------------------------------------------

    def owner(self, page_id: str, authorization: str, client: str,
              now: datetime.datetime) -> str:
        """The key's hash when it is the page's; else 401, 403 (a wrong
        key, or a page without an owner: the same answer), or 429 once
        the page or the client had WRONG_KEYS_PER_MINUTE wrong keys this
        minute (the owner too waits out that minute)."""
        key = bearer(authorization)
        minute = _minute(now)
        for subject, client_side in ((page_id, False), (client, True)):
            if self.owners.tries("key", subject, minute, now, client_side,
                                 add=False) >= WRONG_KEYS_PER_MINUTE:
                raise Refused(429, "too many wrong keys; wait a minute",
                              _seconds_left(minute, now))
        stored, given = self.owners.key_hash(page_id), hashed(key)
        if stored is None or not hmac.compare_digest(stored, given):
            self.owners.tries("key", page_id, minute, now)
            self.owners.tries("key", client, minute, now, client=True)
            raise Refused(403, "wrong key for this page")
        return given

    def act(self, action: str, body: dict, request: Request, now: datetime.datetime) -> dict:
        page_id = self.page(body.get("page_id"))
        key_hash = self.owner(page_id, request.authorization, request.client, now)
        done = {"page_id": page_id, "action": action}

        def recorded(detail: Callable[[object], str],
                     before: str | None = None) -> Callable[[object, object], None]:
            return self.owners.recorded(page_id, key_hash, action, detail, before, now)
        try:
            if action in ("set", "reset"):
                total = 0 if action == "reset" else body.get("total")
                if isinstance(total, bool) or not isinstance(total, int) or total < 0:
                    raise ParamError("invalid total")
                params.check_count(total, "total")
                self.store.set_total(page_id, total, now, then=recorded(
                    lambda _: f"total set to {total:,}", self.before(page_id, now)))
                return {**done, "total": total}
            if action == "delete":
                try:
                    self.store.delete(page_id, then=recorded(
                        lambda _: "counts deleted; the key still holds the page",
                        self.before(page_id, now)))
                except storage.NotFound:
                    raise Refused(404, "page_id has no counts to delete") from None
                return done
            if action == "rotate":
                key = new_key()
                if not self.owners.rotate(page_id, key_hash, hashed(key), now):
                    raise storage.KeyChanged(page_id)
                return {**done, "owner_key": key}
            try:  # "release": the guard's held views
                released = self.store.release(page_id, then=recorded(
                    lambda moved: f"{sum(n for _, n in moved):,} held views counted"))  # type: ignore
            except storage.NotFound:
                raise Refused(404, "page_id has no counts to release") from None
            return {**done, "released": [{"day": d, "views": n} for d, n in released]}
        except storage.KeyChanged:
            raise Refused(409, "the key changed meanwhile; nothing was done") from None

    def read(self, what: str, request: Request, page_id: str | None,
             now: datetime.datetime) -> dict:
        checked = self.page(page_id)
        self.owner(checked, request.authorization, request.client, now)
        if what == "export":
            return export_document(self.store.page(checked), checked, now)
        return {"page_id": checked,
                "actions": [dataclasses.asdict(a) for a in self.owners.actions(checked)]}

    # /manage: the same, from a form --------------------------------------------

    def manage(self, request: Request, now: datetime.datetime | None = None
               ) -> tuple[int, dict]:
        """(status, what views/manage.tpl shows) for /manage: GET shows the
        form; POST (a form: the key in its body, never in the URL) does
        one of the owner's actions, as the JSON API does."""
        now = now or storage.utc_now()
        shown: dict = {"enabled": self.config.self_service, "page_id": "", "error": None,
                       "done": None, "new_key": None, "actions": [], "export": None}
        if not self.config.self_service:
            return 404, {**shown, "error": OFF}
        try:
            if request.method != "POST":
                values = params.parse_query_string(request.query, frozenset({"page_id"}))
                shown["page_id"] = values.get("page_id", "")
                return 200, shown
            if request.content_type.split(";")[0].strip().lower() != \
                    "application/x-www-form-urlencoded":
                raise Refused(415, "Content-Type must be a form's")
            if len(request.body) > BODY_MAX:
                raise Refused(413, "request body too large")
            form = params.parse_query_string(request.body.decode("latin-1"),
                                             frozenset({"page_id", "key", "action", "total"}))
            shown["page_id"] = form.get("page_id", "")
            keyed = dataclasses.replace(request, authorization="Bearer " + form.get("key", ""))
            action = form.get("action", "")
            if action in READS.values():
                found = self.read(action, keyed, form.get("page_id"), now)
                if action == "export":
                    shown["export"] = json.dumps(found, indent=1, ensure_ascii=False)
                shown["done"] = f"{action}: done"
            elif action in ACTIONS.values():
                body = {"page_id": form.get("page_id"),
                        "total": params.parse_count(form.get("total", "") or "x", "total")
                        if action == "set" else 0}
                done = self.act(action, body, keyed, now)
                shown["new_key"] = done.get("owner_key")
                shown["done"] = _said(done)
            else:
                raise ParamError("invalid action")
            shown["actions"] = self.owners.actions(self.page(form.get("page_id")))
            return 200, shown
        except Refused as e:
            return e.status, {**shown, "error": e.problem}
        except ParamError as e:
            return 400, {**shown, "error": str(e)}

    def before(self, page_id: str, now: datetime.datetime) -> str | None:
        """The page before an action, as `export` writes it (undo's)."""
        page = self.store.page(page_id)
        return json.dumps(export_document(page, page_id, now)) if page else None


def _said(done: dict) -> str:
    """What /manage says an action did."""
    action = done["action"]
    if action in ("set", "reset"):
        return f"The total is now {done['total']:,}."
    if action == "release":
        return f"{sum(d['views'] for d in done['released']):,} held views counted."
    if action == "rotate":
        return "A new key: the old one stopped working. Keep this one; it is not shown again."
    return "The page's counts are deleted; your key still holds the page."


def _minute(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M")


def _hour(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H")


def _seconds_left(slot: str, now: datetime.datetime) -> int:
    """Seconds to the end of a minute's slot (YYYY-MM-DDTHH:MM) or an hour's."""
    if len(slot) > len("YYYY-MM-DDTHH"):
        return 60 - now.second
    return 3600 - now.minute * 60 - now.second
