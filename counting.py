"""Does this view count, and as what: the one place that decides (issue 29).

A request for a badge (or an old service's counter) is one of:

- not counted, for a reason the answer gives in X-Tally-Counted: asked with
  query_only (or an old URL that only reads), a HEAD, not GitHub's image
  proxy under TALLY_CAMO_ONLY (or komarev's URL, which counted only that),
  a known bot (unless TALLY_COUNT_BOTS);
- a bot's view: recorded among the day's bot views, and a view only with
  TALLY_COUNT_BOTS;
- an image proxy's view (GitHub's Camo, Gmail's): a view, never a visitor,
  since the proxy hides the reader;
- a person's view: a view, and with TALLY_VISITORS the page's visitor today
  if its (address, User-Agent) is new today;
- held: a view (of either kind above) that the inflation guard (Guard,
  below) does not believe: recorded among the page's held views, shown
  only once released.

The stores record what was decided here (storage.Store.record_view); they
decide nothing.

>>> config = Config()
>>> decide(config, counts=True, method="GET", user_agent="curl/8.5.0", client="192.0.2.1").header
'no; bot'
>>> decide(config, counts=True, method="HEAD", user_agent="Mozilla/5.0", client="").header
'no; HEAD'
"""

from __future__ import annotations

import collections
import datetime
import functools
import statistics
import typing

import visitors
from config import Config

# Whether a view counted, and if not why: the answer's header says so (and
# the access log): "yes", "yes; bot" (TALLY_COUNT_BOTS), "no; bot", "no;
# HEAD", "no; query_only", "no; camo-only", "no; read only", "no; held", or
# an error's.
HEADER = "X-Tally-Counted"
YES, NO = "yes", "no"


class Decision(typing.NamedTuple):
    """What the store records for one view, and what the answer says (a
    tuple: one is made for every view, and a tuple is the cheapest)."""
    header: str
    recorded: bool = False                   # written at all (a view, or a bot's view)
    bot: bool = False                        # among the day's bot views
    view: bool = False                       # added to the page's count
    visitor: tuple[str, str] | None = None   # (address, User-Agent) to know today
    held: bool = False                       # among the page's held views (the guard's)


@functools.lru_cache(maxsize=64)
def not_counted(why: str) -> Decision:
    """The decision for a view that does not count, and why (the few
    reasons repeat: each is made once)."""
    return Decision(f"{NO}; {why}")


_COUNTED = Decision(YES, recorded=True, view=True)
_BOT = {False: Decision(f"{NO}; bot", recorded=True, bot=True, view=False),
        True: Decision(f"{YES}; bot", recorded=True, bot=True, view=True)}


_HELD = {bot: Decision(f"{NO}; held", recorded=True, bot=bot, held=True) for bot in (False, True)}


def held(decision: Decision) -> Decision:
    """A view the guard holds, instead of counting it (a bot's view
    counted under TALLY_COUNT_BOTS stays among the day's bot views)."""
    return _HELD[decision.bot]


def decide(config: Config, counts: bool, method: str, user_agent: str, client: str,
           camo_only: bool = False, read_only: str = "query_only") -> Decision:
    """The decision for one badge or counter request. counts: whether the
    request asks to count (not query_only; an old URL's own word); camo_only:
    the request's own rule (komarev's), beside TALLY_CAMO_ONLY; read_only:
    the reason given when counts is False."""
    if not counts:
        return not_counted(read_only)
    if method != "GET":
        return not_counted("HEAD")  # a HEAD must not count (and a cache checking it neither)
    if (config.camo_only or camo_only) and not visitors.CAMO.match(user_agent):
        return not_counted("camo-only")
    kind = visitors.classify(user_agent)
    if kind == visitors.BOT:
        return _BOT[config.count_bots]
    if kind == visitors.CLIENT and config.visitors:
        return Decision(YES, True, False, True, (client, user_agent))
    return _COUNTED  # an image proxy's view, or visitors off


# The inflation guard (issue 30) ##########################################
# A view the guard does not believe is held: answered like any other (the
# badge shows the count without it), recorded among the page's held views
# for its day, never shown until released (docs/guard.md says why and how).

DAY_S = 86400.0
# The usual day is read from this many full days, among the days back to
# LOOK_BACK_DAYS: those without held views while there are HISTORY_DAYS of
# them, else every day the page has (the counted views of a day with held
# ones are at most its day's bound).
HISTORY_DAYS, LOOK_BACK_DAYS = 7, 28
# The day's bound: this many times the usual day (at least the floor).
DAY_FACTOR = 2.0

History = typing.Tuple[int, typing.Sequence[typing.Tuple[int, int]]]


class Bucket:
    """A token bucket: capacity tokens at most, rate tokens a second. Its
    tokens may go below zero (views other servers counted, taken after)."""

    __slots__ = ("capacity", "rate", "tokens", "at")

    def __init__(self, capacity: float, rate: float, tokens: float, at: float) -> None:
        self.capacity, self.rate, self.tokens, self.at = capacity, rate, tokens, at

    def level(self, now: float) -> float:
        return min(self.capacity, self.tokens + (now - self.at) * self.rate)

    def take(self, now: float, n: float = 1) -> None:
        self.tokens, self.at = min(self.capacity, self.level(now) - n), now


def usual_day(days: typing.Sequence[tuple[int, int]]) -> float | None:
    """A page's usual views a day from its full days' (views, held), newest
    first: the lower of the medians of the newest HISTORY_DAYS days and of
    the HISTORY_DAYS days before them, so that one week cannot raise it.
    Days with held views are left out while HISTORY_DAYS days without are
    left, so that a loop the guard held does not raise its own allowance
    for three weeks; with fewer (a new page, a page whose real readers are
    more than its allowance, a loop kept up for weeks), every day counts by
    its counted views, which its day's bound capped: the allowance can then
    double at most every two weeks. None without a day.

    >>> usual_day([(1000, 0)] * 7), usual_day([(2000, 5)] * 7 + [(1000, 0)] * 14)
    (1000, 1000)
    >>> usual_day([(2000, 0)] * 7 + [(1000, 0)] * 7), usual_day([]) is None
    (1000, True)
    >>> usual_day([(600, 900)] * 3)  # a new page whose readers are more than its floor
    600
    """
    window = days[:LOOK_BACK_DAYS]
    clean = [views for views, held in window if not held]
    chosen = clean if len(clean) >= HISTORY_DAYS else [views for views, _ in window]
    medians = [statistics.median(week) for week in
               (chosen[:HISTORY_DAYS], chosen[HISTORY_DAYS:2 * HISTORY_DAYS]) if week]
    return min(medians) if medians else None


def history(today: str, rows: typing.Iterable[tuple[str, int, int]]) -> History:
    """What the guard reads of a page, from its day rows (day, views, held)
    of the LOOK_BACK_DAYS days before today and today: (today's views, the
    full days' (views, held), newest first, from the page's first day on:
    a day without a row after it is a day without views; before it the
    page did not exist).

    >>> history("2026-12-07", [("2026-12-04", 900, 0), ("2026-12-07", 5, 0)])
    (5, [(0, 0), (0, 0), (900, 0)])
    """
    found = {d: (views, held) for d, views, held in rows}
    first = min(found, default=today)
    day = datetime.date.fromisoformat(today)
    days = []
    for back in range(1, LOOK_BACK_DAYS + 1):
        date = (day - datetime.timedelta(days=back)).isoformat()
        if date < first:
            break
        days.append(found.get(date, (0, 0)))
    return found.get(today, (0, 0))[0], days


class _Page:
    """A page's state in the guard: its two buckets, the UTC day they were
    set for, and what it saw of the page's counted views today (in the
    database, so every server's): `base` when read, `top` the highest
    since, `mine` this process's counted views since, `taken` what was
    taken from the buckets for other servers' views."""

    __slots__ = ("day", "minute", "whole_day", "base", "top", "mine", "taken")

    def __init__(self, day: int, minute: Bucket, whole_day: Bucket, today: int) -> None:
        self.day, self.minute, self.whole_day = day, minute, whole_day
        self.base = self.top = today
        self.mine = self.taken = 0


class Guard:
    """Whether a page's view is believed: two token buckets per page, both
    needing a token. The minute's: capacity `burst`, refilled at `factor`
    times the usual day's rate. The day's: capacity DAY_FACTOR times the
    usual day (both at least `floor` a day), refilled at that a day, and
    begun with what the page counted today already, so no restart, and no
    page pushed out of the bounded table by a flood of ids, gives a day's
    bound twice.

    A page's history (history() above) is read once a page and UTC day:
    needs() says when admits() must be given it. observed() is told each
    recorded view's counted views today, as the database answered them:
    what other servers on the same database counted meanwhile is taken from
    this one's buckets, so the allowance is the page's, not each server's.
    Only the `size` pages seen last are kept (a flood of new ids costs a
    bounded table)."""

    def __init__(self, burst: int = 60, factor: float = 10.0, floor: int = 600,
                 size: int = 8192) -> None:
        self.burst, self.factor, self.floor, self.size = burst, factor, floor, size
        self._pages: collections.OrderedDict[str, _Page] = collections.OrderedDict()

    def allowance(self, usual: float | None) -> tuple[float, float]:
        """(views a day at the minute's rate, the day's bound) for a usual day."""
        usual = usual or 0
        return (max(self.floor, self.factor * usual), max(self.floor, DAY_FACTOR * usual))

    def needs(self, page_id: str, now: float) -> bool:
        """Whether admits() needs the page's history (unknown, or a new day)."""
        entry = self._pages.get(page_id)
        return entry is None or entry.day != int(now // DAY_S)

    def admits(self, page_id: str, now: float, found: History | None = None) -> bool:
        """now: seconds of a clock whose day is now // DAY_S (UTC
        time.time()); found: the page's history when needs() said so."""
        day = int(now // DAY_S)
        entry = self._pages.get(page_id)
        if entry is None or entry.day != day:
            if found is None:
                raise ValueError("the page's history is needed (Guard.needs)")
            today, days = found
            rate, bound = self.allowance(usual_day(days))
            if entry is None:
                entry = _Page(day, Bucket(self.burst, rate / DAY_S, self.burst, now),
                              Bucket(bound, bound / DAY_S, max(0.0, bound - today), now), today)
                while len(self._pages) >= self.size:
                    self._pages.popitem(last=False)
            else:
                # A new day: the allowance read again, the buckets going on
                # (a day's bound is a rate, not a new budget at midnight).
                entry.minute.rate = rate / DAY_S
                whole_day = entry.whole_day
                whole_day.tokens = min(whole_day.level(now), bound)
                whole_day.capacity, whole_day.rate, whole_day.at = bound, bound / DAY_S, now
                entry.day, entry.base, entry.top, entry.mine, entry.taken = day, today, today, 0, 0
            self._pages[page_id] = entry
        self._pages.move_to_end(page_id)
        if entry.minute.level(now) < 1 or entry.whole_day.level(now) < 1:
            return False
        entry.minute.take(now)
        entry.whole_day.take(now)
        return True

    def observed(self, page_id: str, now: float, today: int, counted: bool) -> None:
        """A view of the page was recorded (counted, or held or a bot's);
        today: the page's counted views today that its answer carried."""
        entry = self._pages.get(page_id)
        if entry is None or entry.day != int(now // DAY_S):
            return
        entry.mine += counted
        entry.top = max(entry.top, today)
        # Counted by other servers since the page was read (never below 0;
        # a batch's answers come in its order, not the counts': an estimate
        # too high for a moment is given back once they arrive).
        others = max(0, entry.top - entry.base - entry.mine)
        if others != entry.taken:
            entry.minute.take(now, others - entry.taken)
            entry.whole_day.take(now, others - entry.taken)
            entry.taken = others
