"""The interface both stores implement (Store), and what they do the same
way through it: the reads written once in stores/sql.py, the history
window, the steps of an import. A store composes its writer
(stores.writer.Writer), its GitHub table (stores.traffic.KeptTraffic) and
its page owners (stores.owners.PageOwners); it inherits only this.

Imports stores.values, stores.writer, stores.traffic and stores.owners alone.
"""

from __future__ import annotations

import abc
import datetime
from typing import Callable, Iterable, Iterator

from stores.owners import PageOwners
from stores.traffic import KeptTraffic
from stores.values import (TOTAL_MAX, AlreadyImported, Counts, Day, ImportInterrupted,
                           NotFound, Page, StorageError, TotalLimitReached, first_kept_day,
                           last_days, page_from_rows, stamp, utc_now)
from stores.values import day as day_of
from stores.writer import Task, Writer

# More to write in an owner control's transaction (Store.set_total).
Then = Callable[[object, object], None] | None

# How many pages one import transaction writes: the server's writer waits
# for at most one such chunk (a few milliseconds), not for the whole file.
IMPORT_CHUNK = 2000


class Staging(abc.ABC):
    """An import's steps in one database's temporary tables, each run as a
    task on the writer's connection (Store.import_pages runs them)."""

    @abc.abstractmethod
    def stage(self, conn: object, pages: Iterable[Page]) -> None:
        """Copy every page into the staging tables; Duplicate for a page twice."""

    @abc.abstractmethod
    def report(self, conn: object, mode: str) -> dict[str, int]:
        """Created, changed and days; TotalLimitReached (before any write)
        for a sum past TOTAL_MAX in add mode."""

    @abc.abstractmethod
    def merge(self, conn: object, mode: str, first: int, chunk: int) -> None:
        """Write the staged pages numbered first .. first + chunk - 1."""

    @abc.abstractmethod
    def progress(self, conn: object, key: str, mode: str) -> tuple[int, int, str | None] | None:
        """How far an import of this file got: (written, pages, finished)."""

    @abc.abstractmethod
    def drop(self, conn: object) -> None: ...


class Store(abc.ABC):
    """What server.py and commands/ may ask of a store, whichever it is
    (storage.open_store chooses)."""

    readonly = False
    # Reads fast enough to run on an event loop's own thread (a local file,
    # WAL: a reader never waits for the writer). PostgreSQL's go to threads.
    inline_reads = False
    # TALLY_KEEP_DAYS (None: every day is kept)
    keep_days: int | None = None
    # Set by each store: its statements (stores.sql), its writer, its
    # GitHub table, its page owners and its import's steps.
    sql: dict[str, str]
    writer: Writer
    github: KeptTraffic
    owners: PageOwners
    staging: Staging

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """For the start-up line."""

    @abc.abstractmethod
    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one read statement, on a reader connection."""

    # Counting: the writer's ------------------------------------------------------

    def record_view(self, page_id: str, now: datetime.datetime | None = None,
                    visitor: tuple[str, str] | None = None, bot: bool = False,
                    counted: bool = True, held: bool = False) -> Counts:
        """Count one view; return the page's new counts. visitor: (address,
        User-Agent) of a client that may be a visitor of the page today;
        bot: a bot's view (counted among the day's bot views; as a view
        too only when counted); held: a view the inflation guard holds
        (recorded among the page's held views, not counted).

        Raises PageLimitReached for a new page past max_pages,
        TotalLimitReached at TOTAL_MAX, StorageError when the database fails
        (nothing was counted then).
        """
        return self.writer.record_view(page_id, now, visitor, bot, counted, held)

    async def record_view_async(self, page_id: str, visitor: tuple[str, str] | None = None,
                                bot: bool = False, counted: bool = True,
                                held: bool = False) -> Counts:
        """record_view for a caller on an asyncio loop: the same group
        commit, awaited instead of holding a thread until it is written."""
        return await self.writer.record_view_async(page_id, visitor, bot, counted, held)

    def forget_visitors(self, now: datetime.datetime | None = None) -> int:
        """Delete the salts and hashes of every day that ended (VISITOR_GRACE
        ago); how many days were forgotten."""
        return self.writer.forget_visitors(now)

    def trim_history(self, now: datetime.datetime | None = None) -> int:
        """With keep_days: a new pass now, deleting every day row before the
        first kept day, TRIM_ROWS at a time between the views as the writer
        does by itself; how many rows the pass deleted."""
        return self.writer.trim_history(now)

    def kept_from(self, now: datetime.datetime | None = None) -> str | None:
        """The first day whose views per day are kept; None when all are."""
        if not self.keep_days:
            return None
        newest_from = self._read(self.sql["newest_from"], (self.keep_days,))[0][0]
        return first_kept_day(self.keep_days, now or utc_now(), newest_from)

    # Reading ---------------------------------------------------------------------

    def counts(self, page_id: str, now: datetime.datetime | None = None) -> Counts:
        """The page's total and today's views, 0 and 0 for an unknown page."""
        rows = self._read(self.sql["counts"], (day_of(now or utc_now()), page_id))
        return Counts(*rows[0]) if rows else Counts(0, 0)

    def ping(self) -> None:
        """Raise StorageError unless the database answers and the writer runs."""
        self._read("SELECT count(*) FROM (SELECT 1 FROM pages LIMIT 1) AS one")
        if not self.writer.alive():
            raise StorageError("database writer has stopped")

    @abc.abstractmethod
    def page_count(self) -> int: ...

    def best_day(self, page_id: str) -> tuple[str, int] | None:
        rows = self._read(self.sql["best_day"], (page_id,))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def top(self, limit: int) -> list[tuple[str, int]]:
        return [tuple(row) for row in self._read(self.sql["top"], (limit,))]  # type: ignore

    def page(self, page_id: str) -> Page | None:
        rows = self._read(self.sql["page"], (page_id,))
        if not rows:
            return None
        return page_from_rows(rows[0], self._read(self.sql["page_days"], (page_id,)))

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
        stored = {d.day: d for d in self.stored_days(page_id, window[0], window[-1])}
        return [stored.get(date) or Day(date, 0) for date in window]

    def stored_days(self, page_id: str, first: str, last: str) -> list[Day]:
        """The page's day rows from first to last (YYYY-MM-DD), in no order:
        only the days that have one (counting.Guard tells a page's first
        day from a day without views)."""
        return [Day(*row) for row in self._read(self.sql["days_between"], (page_id, first, last))]

    # Owner controls: each one task on the writer ------------------------------
    # `then` is written in the same transaction, given the connection and
    # the result: a page owner's action and its record (store.owners.recorded)
    # are both written or neither.

    def set_total(self, page_id: str, total: int, now: datetime.datetime | None = None,
                  then: Then = None) -> None:
        when = stamp(now or utc_now())

        def run(conn: object) -> None:
            conn.execute(self.sql["set_total"], (page_id, total, when, when))  # type: ignore
            _and_then(then, conn, None)
        self.writer.wait(Task(run))

    @abc.abstractmethod
    def rename(self, old: str, new: str, merge: bool = False) -> None: ...

    def delete(self, page_id: str, then: Then = None) -> None:
        def run(conn: object) -> None:
            row = conn.execute(self.sql["key"], (page_id,)).fetchone()  # type: ignore
            if row is None:
                raise NotFound(page_id)
            conn.execute(self.sql["delete_days"], (row[0],))  # type: ignore[attr-defined]
            conn.execute(self.sql["delete_page"], (row[0],))  # type: ignore[attr-defined]
            _and_then(then, conn, None)
        self.writer.wait(Task(run))

    def release(self, page_id: str, day: str | None = None,
                then: Then = None) -> list[tuple[str, int]]:
        """Count the page's held views (counting.Guard), of one day or of
        every day, in one transaction; the (day, views) moved, oldest
        first. NotFound for an unknown page; TotalLimitReached (nothing
        moved) when the total would pass TOTAL_MAX."""
        def run(conn: object) -> list[tuple[str, int]]:
            row = conn.execute(self.sql["key_total"], (page_id,)).fetchone()  # type: ignore
            if row is None:
                raise NotFound(page_id)
            key, total = row
            held = [(d, n) for d, n in conn.execute(  # type: ignore[attr-defined]
                self.sql["held_days"], (key,)).fetchall() if day is None or d == day]
            return _and_then(then, conn, _released(conn, self.sql, key, total, held))
        return self.writer.wait(Task(run))  # type: ignore[return-value]

    def release_confirmed(self, repo: str) -> list[tuple[str, int]]:
        """Count the held views of the days that GitHub's own views of
        the repository explain (its linked page's counted + held views at
        most GitHub's views that day: docs/github.md); the (day, views)
        moved. A sync runs this once it has saved GitHub's days."""
        def run(conn: object) -> list[tuple[str, int]]:
            rows = conn.execute(self.sql["confirmed"], (repo,)).fetchall()  # type: ignore
            if not rows:
                return []
            return _released(conn, self.sql, rows[0][2], rows[0][3], [r[:2] for r in rows])
        return self.writer.wait(Task(run))  # type: ignore[return-value]

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
        steps, wait = self.staging, self.writer.wait
        wait(Task(lambda conn: steps.stage(conn, pages), write=False))
        try:
            report = wait(Task(lambda conn: steps.report(conn, mode), write=False))
            staged = report["created"] + report["changed"]  # type: ignore[index]
            key = source() if source is not None else None
            written = 0
            if key is not None:
                done = wait(Task(lambda conn: steps.progress(conn, key, mode), write=False))
                if done is not None:
                    done_written, done_pages, finished = done  # type: ignore[misc]
                    if finished is not None and mode == "add" and not again:
                        raise AlreadyImported(finished)
                    if finished is None and done_pages == staged:
                        written = done_written
                report["resumed"] = written  # type: ignore[index]
            if dry_run:
                return report  # type: ignore[return-value]
            while written < staged:
                first, last = written, min(written + chunk, staged)

                def write(conn: object) -> None:
                    steps.merge(conn, mode, first, chunk)
                    if key is not None:
                        conn.execute(self.sql["record_import"], (  # type: ignore[attr-defined]
                            key, mode, last, staged, stamp(utc_now()) if last == staged else None))
                try:
                    wait(Task(write))
                except StorageError as e:
                    raise ImportInterrupted(written, staged, e) from None
                written = last
            return report  # type: ignore[return-value]
        finally:
            wait(Task(steps.drop, write=False))


def _and_then(then: Then, conn: object, result: object) -> object:
    if then is not None:
        then(conn, result)
    return result


def _released(conn: object, sql: dict[str, str], key: int, total: int,
              held: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Move the held views of these (day, views) into the page's counts, by
    the amounts read (a view another server holds meanwhile stays held)."""
    moved = sum(n for _, n in held)
    if total + moved > TOTAL_MAX:
        raise TotalLimitReached(f"releasing {moved} views would take the total past {TOTAL_MAX}")
    for d, n in held:
        conn.execute(sql["release_day"], (n, n, key, d))  # type: ignore[attr-defined]
    if moved:
        conn.execute(sql["release_page"], (moved, moved, key))  # type: ignore[attr-defined]
    return [(d, n) for d, n in held]
