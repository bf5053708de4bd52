"""GitHub's traffic numbers kept in a store (github.py fetches them, the
store keeps them): one object each store composes as its `github`, the
same steps on both databases, run with the store's own statements
(stores/sql.py) on its reader and its writer. Every write is one task on
the store's writer, so a sync never holds a badge up for longer than one
short transaction. Imports stores.values and stores.writer alone.
"""

from __future__ import annotations

import datetime
from typing import Callable

from stores.values import (AlreadyExists, KeptRepo, NotFound, Popular, Repo, Traffic,
                           TrafficDay, day, last_days, stamp, utc_now)
from stores.writer import Task


class KeptTraffic:
    """store.github: the repositories kept, their days and top referrers."""

    def __init__(self, sql: dict[str, str], read: Callable[..., list[tuple]],
                 wait: Callable[[Task], object]) -> None:
        self.sql = sql
        self._read = read    # rows of one read statement
        self._wait = wait    # a task run on the writer, in one transaction

    def add(self, repo: str, page_id: str | None, now: datetime.datetime) -> None:
        """Start keeping a repository, due for a sync at once; AlreadyExists
        when it is kept."""
        when = stamp(now)

        def run(conn: object) -> None:
            added = conn.execute(self.sql["add"],  # type: ignore[attr-defined]
                                 (repo, page_id, when, when, when))
            if added.rowcount == 0:
                raise AlreadyExists(repo)
        self._wait(Task(run))

    def remove(self, repo: str, delete: bool) -> None:
        """Stop keeping a repository; with delete, its kept numbers go too.
        NotFound when there is nothing of it."""
        sql = self.sql

        def run(conn: object) -> None:
            removed = conn.execute(sql["remove"], (repo,)).rowcount  # type: ignore[attr-defined]
            if delete:
                removed += conn.execute(sql["delete_days"], (repo,)).rowcount  # type: ignore
                conn.execute(sql["delete_popular"], (repo,))  # type: ignore[attr-defined]
            if removed == 0:
                raise NotFound(repo)
        self._wait(Task(run))

    def repos(self) -> list[Repo]:
        """Every kept repository with its days kept, first and last day."""
        return [Repo(*row) for row in self._read(self.sql["repos"])]

    def claim(self, repo: str, now: datetime.datetime, lease: datetime.timedelta,
              seen: Repo | None = None) -> bool:
        """Take the repository's next sync for this process (for lease), if
        no other process holds it and (seen) it is still as it was read:
        of several servers on one database that found it due, the first
        syncs it and the others find it changed."""
        def run(conn: object) -> bool:
            claimed = conn.execute(self.sql["claim"], (  # type: ignore[attr-defined]
                stamp(now + lease), repo, stamp(now), seen is None,
                seen.next_sync_at if seen else "", seen.synced_at if seen else None))
            return claimed.rowcount == 1
        return bool(self._wait(Task(run)))

    def save(self, repo: str, listed: dict[str, TrafficDay], unlisted: list[str],
             popular: list[Popular], github_day: str, now: datetime.datetime,
             next_at: datetime.datetime) -> None:
        """One successful sync, in one transaction: each day GitHub listed
        replaces the kept one (a day synced twice is never added twice); a
        day of GitHub's window it left out is kept as 0 only where nothing
        is kept (an implied zero never replaces a number); the top
        referrers and paths of GitHub's day; the status ok."""
        sql, when = self.sql, stamp(now)

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

    def failed(self, repo: str, status: str, now: datetime.datetime,
               next_at: datetime.datetime, failures: int) -> str | None:
        """Record a failed sync's status; returns the status it had before
        (None: no longer kept), so a state is logged once, when it begins."""
        sql, when = self.sql, stamp(now)

        def run(conn: object) -> str | None:
            row = conn.execute(sql["status"], (repo,)).fetchone()  # type: ignore[attr-defined]
            conn.execute(sql["failed"], (  # type: ignore[attr-defined]
                status, when, status, failures, stamp(next_at), repo))
            return row[0] if row else None
        return self._wait(Task(run))  # type: ignore[return-value]

    def traffic(self, repo: str, now: datetime.datetime | None = None) -> Traffic | None:
        """The kept sums of a repository (None when nothing of it is kept)."""
        rows = self._read(self.sql["traffic"], (day(now or utc_now()), repo))
        kept, *numbers, first_day, synced_at, known = rows[0]
        if not kept and not known:
            return None
        return Traffic(*numbers, first_day, synced_at)  # type: ignore[arg-type]

    def days(self, repo: str, first: str, last: str) -> dict[str, TrafficDay]:
        """{day: numbers} of the kept days from first to last."""
        return {row[0]: TrafficDay(*row[1:]) for row in
                self._read(self.sql["days"], (repo, first, last))}

    def history(self, repo: str, days: int, now: datetime.datetime | None = None
                ) -> list[tuple[str, str, TrafficDay | None]]:
        """(day, state, numbers) for the last `days` UTC days, oldest first:
        "kept" with GitHub's numbers; "lost" between the first and the last
        kept day, where GitHub's window moved past a day before a sync saw
        it (no numbers: never a zero that looks real); else "not kept"
        (before keeping began, or not synced yet)."""
        window = last_days(days, now)
        kept = self.days(repo, window[0], window[-1])
        _, first, last = self._read(self.sql["span"], (repo,))[0]
        history = []
        for date in window:
            if date in kept:
                history.append((date, "kept", kept[date]))
            elif first is not None and first < date < last:
                history.append((date, "lost", None))
            else:
                history.append((date, "not kept", None))
        return history

    def lost(self, repo: str) -> int:
        """How many days between the first and the last kept day were lost."""
        kept, first, last = self._read(self.sql["span"], (repo,))[0]
        if first is None:
            return 0
        span = datetime.date.fromisoformat(last) - datetime.date.fromisoformat(first)
        return span.days + 1 - kept

    def popular(self, repo: str) -> tuple[str | None, list[Popular]]:
        """The top referrers and paths of the latest sync day, and that day."""
        rows = self._read(self.sql["popular"], (repo, repo))
        return (rows[0][0] if rows else None), [Popular(*row[1:]) for row in rows]

    def top(self, limit: int) -> list[tuple[str, int]]:
        """(repo, views kept) of the repositories with the most views."""
        return [tuple(row) for row in self._read(self.sql["top"], (limit,))]  # type: ignore

    def kept(self) -> list[KeptRepo]:
        """Every repository's kept traffic, for export (kept or removed)."""
        days: dict[str, dict[str, TrafficDay]] = {}
        for repo, date, *numbers in self._read(self.sql["all_days"]):
            days.setdefault(repo, {})[date] = TrafficDay(*numbers)
        popular: dict[str, dict[str, list[Popular]]] = {}
        for repo, date, *item in self._read(self.sql["all_popular"]):
            popular.setdefault(repo, {}).setdefault(date, []).append(Popular(*item))
        repos = {r.repo: r for r in self.repos()}
        names = sorted(set(repos) | set(days) | set(popular))
        return [KeptRepo(name, repos[name].page_id if name in repos else None,
                         repos[name].added_at if name in repos else "",
                         days.get(name, {}), popular.get(name, {})) for name in names]

    def import_kept(self, kept: list[KeptRepo], now: datetime.datetime) -> int:
        """Write exported traffic back, in one transaction: each day's
        numbers are GitHub's own, so they replace (never add to) a kept day.
        A repository that was being kept (added_at) is kept again, due for
        a sync; one removed with its numbers kept stays removed."""
        sql, when = self.sql, stamp(now)

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
