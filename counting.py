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
  if its (address, User-Agent) is new today.

The stores record what was decided here (storage.Store.record_view); they
decide nothing. The inflation guard belongs here too, as one more outcome.

>>> config = Config()
>>> decide(config, counts=True, method="GET", user_agent="curl/8.5.0", client="192.0.2.1").header
'no; bot'
>>> decide(config, counts=True, method="HEAD", user_agent="Mozilla/5.0", client="").header
'no; HEAD'
"""

from __future__ import annotations

import collections
import functools
import statistics
import typing

import visitors
from config import Config

# Whether a view counted, and if not why: the answer's header says so (and
# the access log): "yes", "yes; bot" (TALLY_COUNT_BOTS), "no; bot", "no;
# HEAD", "no; query_only", "no; camo-only", "no; read only", or an error's.
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


@functools.lru_cache(maxsize=64)
def not_counted(why: str) -> Decision:
    """The decision for a view that does not count, and why (the few
    reasons repeat: each is made once)."""
    return Decision(f"{NO}; {why}")


_COUNTED = Decision(YES, recorded=True, view=True)
_BOT = {False: Decision(f"{NO}; bot", recorded=True, bot=True, view=False),
        True: Decision(f"{YES}; bot", recorded=True, bot=True, view=True)}


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


# The inflation guard (issue 30): the decision, before its wiring ##########
# A view the guard does not admit is to be held (recorded, not shown, and
# released when real). Its storage, its settings (TALLY_GUARD_*) and its
# call from decide() are issue 30's next steps; this is the rule itself,
# tested on the traces with an injected clock (tests/test_counting.py).

DAY_S = 86400.0
# The usual day is read from this many full days without held views, among
# the days back to LOOK_BACK_DAYS.
HISTORY_DAYS, LOOK_BACK_DAYS = 7, 28
# The day's bound: this many times the usual day (at least the floor).
DAY_FACTOR = 2.0


class Bucket:
    """A token bucket: capacity tokens at most, rate tokens a second."""

    __slots__ = ("capacity", "rate", "tokens", "at")

    def __init__(self, capacity: float, rate: float, tokens: float, at: float) -> None:
        self.capacity, self.rate, self.tokens, self.at = capacity, rate, tokens, at

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def usual_day(days: typing.Sequence[tuple[int, int]]) -> float | None:
    """A page's usual views a day from its full days' (views, held), newest
    first: the lower of the medians of the newest HISTORY_DAYS days without
    held views and of the HISTORY_DAYS such days before them, so that one
    week cannot raise it; a day with held views is left out, so that a loop
    the guard held never raises its own allowance. None without such a day.

    >>> usual_day([(1000, 0)] * 7), usual_day([(9000, 5)] * 7 + [(1000, 0)] * 14)
    (1000, 1000)
    >>> usual_day([(2000, 0)] * 7 + [(1000, 0)] * 7), usual_day([]) is None
    (1000, True)
    """
    clean = [views for views, held in days[:LOOK_BACK_DAYS] if not held]
    medians = [statistics.median(week) for week in
               (clean[:HISTORY_DAYS], clean[HISTORY_DAYS:2 * HISTORY_DAYS]) if week]
    return min(medians) if medians else None


class Guard:
    """Whether a page's view is believed: two token buckets per page, both
    needing a token. The minute's: capacity `burst`, refilled at `factor`
    times the usual day's rate. The day's: capacity DAY_FACTOR times the
    usual day (both at least `floor` a day), refilled at that a day, and
    begun with what the page counted today already, so no restart, and no
    page pushed out of the bounded table by a flood of ids, gives a day's
    bound twice. history(page_id) gives (today's views, the full days'
    (views, held) newest first); it is read once a page and UTC day."""

    def __init__(self, history: typing.Callable[[str], tuple[int, typing.Sequence[tuple[int, int]]]],
                 burst: int = 60, factor: float = 10.0, floor: int = 600, size: int = 4096) -> None:
        self.history, self.burst, self.factor, self.floor = history, burst, factor, floor
        self.size = size
        self._pages: collections.OrderedDict[str, tuple[int, Bucket, Bucket]] = \
            collections.OrderedDict()

    def allowance(self, usual: float | None) -> tuple[float, float]:
        """(views a day at the minute's rate, the day's bound) for a usual day."""
        usual = usual or 0
        return (max(self.floor, self.factor * usual), max(self.floor, DAY_FACTOR * usual))

    def admits(self, page_id: str, now: float) -> bool:
        """now: seconds of a clock whose day is now // DAY_S (UTC time.time())."""
        day = int(now // DAY_S)
        entry = self._pages.get(page_id)
        if entry is None:
            today, days = self.history(page_id)
            rate, bound = self.allowance(usual_day(days))
            entry = (day, Bucket(self.burst, rate / DAY_S, self.burst, now),
                     Bucket(bound, bound / DAY_S, max(0.0, bound - today), now))
            while len(self._pages) >= self.size:
                self._pages.popitem(last=False)
        elif entry[0] != day:
            # A new day: the allowance read again from the history, the
            # buckets going on (a day's bound is a rate, not a new budget
            # at midnight).
            _, days = self.history(page_id)
            rate, bound = self.allowance(usual_day(days))
            minute, whole_day = entry[1], entry[2]
            minute.rate = rate / DAY_S
            whole_day.capacity, whole_day.rate = bound, bound / DAY_S
            whole_day.tokens = min(whole_day.tokens, bound)
            entry = (day, minute, whole_day)
        self._pages[page_id] = entry
        self._pages.move_to_end(page_id)
        _, minute, whole_day = entry
        if whole_day.tokens + (now - whole_day.at) * whole_day.rate < 1:
            return False
        return minute.take(now) and whole_day.take(now)
