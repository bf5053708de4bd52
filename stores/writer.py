"""The group-commit writer both stores compose: one thread fed by a queue,
the views that queued up meanwhile written in one transaction, every caller
answered only after that COMMIT, and the writer's housekeeping (a day's
visitor salt forgotten, TALLY_KEEP_DAYS' old day rows trimmed) between the
commits.

What a store writes and how is its Backend's (stores/sqlite.py,
stores/postgres.py); this module holds what is the same for both: the
queue, the batches, the error fan-out, the signals a caller waits on.
Imports stores.values alone.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import queue
import threading
import time
from typing import Callable, Protocol

from stores.values import Counts, StorageError, StorageReadOnly, day, first_kept_day, utc_now

log = logging.getLogger("tally")

# How many queued views one group commit may take at most.
BATCH_LIMIT = 512
# The writer's housekeeping runs at most this often, busy or idle (seconds).
HOUSEKEEPING_S = 30.0
# TALLY_KEEP_DAYS: the day rows one transaction deletes at most; views
# queued meanwhile wait for one such transaction, then are written before
# the next (docs/settings.md).
TRIM_ROWS = 2000


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
    is not counted: views 0); held 1 records it as held by the inflation
    guard (views 0)."""

    __slots__ = ("page_id", "now", "visitor", "views", "bots", "held", "result", "error", "done")

    def __init__(self, page_id: str, now: datetime.datetime, done: Done | LoopDone | None = None,
                 visitor: tuple[str, str] | None = None, views: int = 1, bots: int = 0,
                 held: int = 0):
        self.page_id = page_id
        self.now = now
        self.visitor, self.views, self.bots, self.held = visitor, views, bots, held
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


class Backend(Protocol):
    """What a store gives its writer: how a batch and a task are written,
    each in one transaction (raising, after rolling back, when it fails),
    and how its database's errors read."""

    # The first of the n newest view days (n the one parameter; NULL when
    # there are none): TALLY_KEEP_DAYS' first kept day by the data.
    newest_from: str

    def write_views(self, batch: list[View], new_days: list[str]) -> None:
        """Count the batch in one transaction and add new_days to view_days,
        setting each view's result (or its own refusal: PageLimitReached,
        TotalLimitReached)."""

    def run_task(self, task: Task) -> object:
        """Run task.fn on the writer's connection in one transaction."""

    def classify(self, error: Exception) -> Exception:
        """A database library's error as a StorageError; any other unchanged."""

    def forget(self, conn: object, now: datetime.datetime) -> int:
        """Delete the salts and hashes of the days that ended VISITOR_GRACE
        before now; how many days."""

    def trim(self, conn: object, before: str, after: tuple | None,
             rows: int) -> tuple[tuple | None, int]:
        """Delete at most `rows` day rows before the day `before`, in (page,
        day) order from after the key `after` (None: the first); the last
        key deleted (None when none was left) and how many rows."""


class Writer:
    """The writer thread of one store, with group commit. A caller waits on
    a thread (record_view) or awaits on an event loop (record_view_async).
    A failed batch gives every one of its views the error, and every
    waiting caller is woken whatever happened (one not woken would wait
    forever). Not started (a read-only store): tasks that write only
    temporary tables run inline, nothing else may run."""

    def __init__(self, backend: Backend, keep_days: int | None = None) -> None:
        self.backend = backend
        self.keep_days = keep_days
        self._thread: threading.Thread | None = None

    # The thread --------------------------------------------------------------

    def start(self) -> None:
        self._housekept_at = 0.0
        self._trim_pass: str | None = None
        self._trim_after: tuple | None = None
        self._trim_left = False
        self._trim_deleted = 0
        self._marked_days: set[str] = set()
        self._queue: queue.SimpleQueue[View | Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="tally-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def _loop(self) -> None:
        pending: View | Task | None = None
        while True:
            if time.monotonic() - self._housekept_at >= HOUSEKEEPING_S:
                # At most every HOUSEKEEPING_S, busy or idle: the salt and
                # hashes of a day that ended are deleted, and a new pass of
                # TALLY_KEEP_DAYS begins when the first kept day moved.
                self._housekept_at = time.monotonic()
                self._run(Task(lambda conn: self.backend.forget(conn, utc_now())))
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

    def _commit(self, batch: list[View]) -> None:
        # The days of the batch this writer has not yet added to view_days:
        # the batch's transaction adds them (so once a day), and they count
        # as added only once it committed.
        new_days = sorted({day(view.now) for view in batch} - self._marked_days)
        try:
            self.backend.write_views(batch, new_days)
            self._marked_days.update(new_days)
            if len(self._marked_days) > 4:
                self._marked_days = set(sorted(self._marked_days)[-2:])
        except Exception as e:  # nothing of this batch is stored: every caller gets the error
            error = self.backend.classify(e)
            for view in batch:
                view.result, view.error = None, error
        finally:
            for view in batch:
                view.done.set()

    def _run(self, task: Task) -> None:
        try:
            task.result = self.backend.run_task(task)
        except Exception as e:  # a database error, or a refusal raised by the task itself
            task.error = self.backend.classify(e)
        finally:
            task.done.set()

    # Callers -----------------------------------------------------------------

    def _submit(self, job: View | Task) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise StorageError("database writer has stopped")
        self._queue.put(job)

    def wait(self, job: View | Task) -> object:
        """Run a view or a task on the writer; its result, or its error raised."""
        if self._thread is None:
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
                    counted: bool = True, held: bool = False) -> Counts:
        return self.wait(View(page_id, now or utc_now(), visitor=visitor,  # type: ignore
                              views=int(counted and not held), bots=int(bot), held=int(held)))

    async def record_view_async(self, page_id: str, visitor: tuple[str, str] | None = None,
                                bot: bool = False, counted: bool = True,
                                held: bool = False) -> Counts:
        view = View(page_id, utc_now(), LoopDone(asyncio.get_running_loop()), visitor=visitor,
                    views=int(counted and not held), bots=int(bot), held=int(held))
        self._submit(view)
        await view.done.future  # type: ignore[union-attr]
        if view.error is not None:
            raise view.error
        return view.result  # type: ignore[return-value]

    # Housekeeping ------------------------------------------------------------

    def forget_visitors(self, now: datetime.datetime | None = None) -> int:
        return self.wait(Task(lambda conn: self.backend.forget(conn, now or utc_now())))  # type: ignore

    def trim_history(self, now: datetime.datetime | None = None) -> int:
        # Whether the pass goes on, and what it deleted, are read inside each
        # task and handed back only once it committed: the writer's own steps
        # run between these tasks, and one of them may end the pass while its
        # transaction is still open (reading the state from this thread then
        # answered before that last step's rows were gone).
        def step(conn: object, restart: bool = False) -> tuple[bool, int]:
            if restart:
                self._trim_pass = None  # a new pass, even if one ended today
            self._trim_step(conn, now or utc_now())
            return self._trim_left, self._trim_deleted
        left, deleted = self.wait(Task(lambda conn: step(conn, restart=True)))  # type: ignore
        while left:
            left, deleted = self.wait(Task(step))  # type: ignore[misc]
        return deleted

    def _trim_once(self) -> None:
        task = Task(lambda conn: self._trim_step(conn, utc_now()))
        self._run(task)
        if task.error is not None:
            # The pass begins again at the next housekeeping.
            self._trim_pass, self._trim_left = None, False

    def _trim_step(self, conn: object, now: datetime.datetime) -> int:
        """One transaction of trimming: TRIM_ROWS day rows at most. A pass
        walks the day rows once for each first kept day (so once a day)."""
        if not self.keep_days:
            self._trim_left = False
            return 0
        newest_from = conn.execute(  # type: ignore[attr-defined]
            self.backend.newest_from, (self.keep_days,)).fetchone()[0]
        before = first_kept_day(self.keep_days, now, newest_from)
        if before != self._trim_pass:
            self._trim_pass, self._trim_after, self._trim_left = before, None, True
            self._trim_deleted, self._trim_began = 0, time.monotonic()
        if not self._trim_left:
            return 0
        last, deleted = self.backend.trim(conn, before, self._trim_after, TRIM_ROWS)
        self._trim_after, self._trim_deleted = last, self._trim_deleted + deleted
        self._trim_left = last is not None and deleted == TRIM_ROWS
        if not self._trim_left and self._trim_deleted:
            log.info("TALLY_KEEP_DAYS=%d: deleted %d day rows before %s in %.1f s",
                     self.keep_days, self._trim_deleted, before,
                     time.monotonic() - self._trim_began)
        return deleted
