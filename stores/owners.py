"""Page owners kept in a store (owners.py at the top decides who may do
what; the store keeps it): one object each store composes as its
`owners`, the same steps on both databases, run with the store's own
statements (stores/sql.py) on its reader and its writer. Every write is
one task on the store's writer, so several servers on one PostgreSQL
database share the owners, the claims and the rate limits' tries.
Imports stores.values and stores.writer alone.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Callable

from stores.values import (AlreadyExists, KeyChanged, NotFound, PageLimitReached, day,
                           stamp, visitor_hash)
from stores.writer import Task


@dataclasses.dataclass(frozen=True)
class Owner:
    """A page's owner as the operator sees it (never the key)."""
    page_id: str
    how: str            # "key", or "claim owner/name"
    since: str
    actions: int
    last_action: str | None


@dataclasses.dataclass(frozen=True)
class Action:
    """One thing an owner (or the operator) did to a page."""
    id: int
    page_id: str
    at: str
    action: str
    detail: str
    undoable: bool      # its page before it is kept (set, reset, delete)


class PageOwners:
    """store.owners: keys (as hashes), claims, actions, rate limits' tries."""

    def __init__(self, sql: dict[str, str], read: Callable[..., list[tuple]],
                 wait: Callable[[Task], object],
                 salt: Callable[[object, str], bytes]) -> None:
        self.sql = sql
        self._read = read    # rows of one read statement
        self._wait = wait    # a task run on the writer, in one transaction
        self._salt = salt    # the day's visitor salt, on the writer's connection

    def key_hash(self, page_id: str) -> str | None:
        """The hash of the page's key, None when it has no owner."""
        rows = self._read(self.sql["owner"], (page_id,))
        return rows[0][0] if rows else None

    def owners(self) -> list[Owner]:
        return [Owner(*row) for row in self._read(self.sql["owners"])]

    def create(self, page_id: str, key_hash: str, now: datetime.datetime,
               max_pages: int | None) -> None:
        """A new counter with no views, owned by the key: AlreadyExists
        when the page has views or an owner (nothing changes),
        PageLimitReached when a new page would pass max_pages."""
        sql, when = self.sql, stamp(now)

        def run(conn: object) -> None:
            execute = conn.execute  # type: ignore[attr-defined]
            viewed = execute(sql["viewed"], (page_id,)).fetchone()
            if viewed and viewed[0] or execute(sql["owner"], (page_id,)).fetchone():
                raise AlreadyExists(page_id)
            if viewed is None and max_pages is not None and \
                    execute(sql["page_count"]).fetchone()[0] >= max_pages:
                raise PageLimitReached(page_id)
            execute(sql["new_page"], (page_id, when, when))
            execute(sql["set_owner"], (page_id, key_hash, "key", when))
            execute(sql["record"], (page_id, when, "created", "a new counter, with a key", None))
        self._wait(Task(run))

    def claimed(self, page_id: str, key_hash: str, repo: str, token_hash: str,
                now: datetime.datetime) -> None:
        """The owner proved by a repository's README: a key made earlier
        by anyone else stops working; the claim is used up."""
        sql, when = self.sql, stamp(now)

        def run(conn: object) -> None:
            execute = conn.execute  # type: ignore[attr-defined]
            execute(sql["set_owner"], (page_id, key_hash, f"claim {repo}", when))
            execute(sql["drop_claim"], (token_hash, when))
            execute(sql["record"], (page_id, when, "claimed",
                                    f"proved by the README of {repo}", None))
        self._wait(Task(run))

    def rotate(self, page_id: str, old_hash: str, new_hash: str, now: datetime.datetime) -> bool:
        """A new key for the owner of the old one (False when that is no
        longer the page's key, nothing changed)."""
        sql, when = self.sql, stamp(now)

        def run(conn: object) -> bool:
            execute = conn.execute  # type: ignore[attr-defined]
            if execute(sql["new_key"], (new_hash, page_id, old_hash)).rowcount != 1:
                return False
            execute(sql["record"], (page_id, when, "rotate", "a new key; the old one stopped", None))
            return True
        return self._wait(Task(run))  # type: ignore[return-value]

    def remove(self, page_id: str, now: datetime.datetime) -> None:
        """The operator takes the page back from its owner (NotFound when
        it has none); its counts stay."""
        sql, when = self.sql, stamp(now)

        def run(conn: object) -> None:
            execute = conn.execute  # type: ignore[attr-defined]
            if execute(sql["remove_owner"], (page_id,)).rowcount == 0:
                raise NotFound(page_id)
            execute(sql["record"], (page_id, when, "owner removed", "by the operator", None))
        self._wait(Task(run))

    def record(self, page_id: str, action: str, detail: str, before: str | None,
               now: datetime.datetime) -> None:
        self._wait(Task(lambda conn: conn.execute(  # type: ignore[attr-defined]
            self.sql["record"], (page_id, stamp(now), action, detail, before))))

    def recorded(self, page_id: str, key_hash: str, action: str,
                 detail: Callable[[object], str], before: str | None,
                 now: datetime.datetime) -> Callable[[object, object], None]:
        """The end of an owner's action, for the store's control to run in
        its own transaction (its `then`): the key that allowed the action
        is still the page's (else KeyChanged, and the action is rolled back
        with it), and the action is recorded, detail(its result) saying
        what was done. So no action is done without its record, and none
        by a key rotated away meanwhile."""
        sql, when = self.sql, stamp(now)

        def then(conn: object, result: object) -> None:
            execute = conn.execute  # type: ignore[attr-defined]
            if execute(sql["hold_key"], (page_id, key_hash)).rowcount != 1:
                raise KeyChanged(page_id)
            execute(sql["record"], (page_id, when, action, detail(result), before))
        return then

    def actions(self, page_id: str) -> list[Action]:
        return [Action(*row[:5], bool(row[5])) for row in self._read(self.sql["actions"],
                                                                      (page_id,))]

    def action(self, number: int) -> tuple[Action, str | None] | None:
        """One action and its page before it (None if it kept none)."""
        rows = self._read(self.sql["action"], (number,))
        if not rows:
            return None
        row = rows[0]
        return Action(*row[:5], row[5] is not None), row[5]

    def add_claim(self, token_hash: str, page_id: str, repo: str, expires_at: str) -> None:
        self._wait(Task(lambda conn: conn.execute(  # type: ignore[attr-defined]
            self.sql["add_claim"], (token_hash, page_id, repo, expires_at))))

    def claim(self, token_hash: str) -> tuple[str, str, str] | None:
        """(page id, repository, expires_at) of a claim, None if none."""
        rows = self._read(self.sql["claim"], (token_hash,))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def tries(self, kind: str, subject: str, slot: str, now: datetime.datetime,
              client: bool = False, add: bool = True) -> int:
        """A rate limit's tries of a subject in its slot, with this one
        (add) or without. A client's address is kept only as a keyed hash
        with the day's visitor salt. The slots that have passed go."""
        sql = self.sql

        def run(conn: object) -> int:
            execute = conn.execute  # type: ignore[attr-defined]
            key = (visitor_hash(self._salt(conn, day(now)), f"tally:{kind}", subject, "").hex()
                   if client else subject)
            if add:
                execute(sql["old_tries"], (kind, slot))
                execute(sql["try"], (kind, key, slot))
            row = execute(sql["tries"], (kind, key, slot)).fetchone()
            return int(row[0]) if row else 0
        return self._wait(Task(run))  # type: ignore[return-value]
