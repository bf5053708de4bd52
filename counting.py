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

import functools
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
