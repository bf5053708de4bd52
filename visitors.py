"""Who a view comes from, told by its User-Agent alone: an image proxy that
fetches for a person it hides (GitHub's Camo, Gmail's), a bot (a crawler,
link checker or preview fetcher), or a client Tally can see, which may be
a visitor of the page.

Bots are recognised with crawler-user-agents (monperrus's list: the one the
npm, Go and PyPI packages share, updated every few weeks, each pattern with
example User-Agents). That list names image proxies too (github-camo,
GoogleImageProxy, YahooMailProxy): used as it comes it would drop every
README view, so the image proxies below are checked first and are never
bots. The only module importing crawleruseragents; imports nothing of
Tally's.
"""

from __future__ import annotations

import functools
import re

import crawleruseragents

# Image proxies: they fetch the badge for a person whose address and
# browser they hide. Their views count as views, never as visitors.
IMAGE_PROXIES = {
    "GitHub (Camo)": r"^github-camo\b",
    "Gmail": r"GoogleImageProxy",
    "Yahoo Mail": r"YahooMailProxy",
    "a self-hosted Camo": r"^Camo Asset Proxy\b",
}
_IMAGE_PROXY = re.compile("|".join(f"(?:{p})" for p in IMAGE_PROXIES.values()))
# TALLY_CAMO_ONLY's test: GitHub's proxy alone, in any case.
CAMO = re.compile(IMAGE_PROXIES["GitHub (Camo)"], re.IGNORECASE)

PROXY, BOT, CLIENT = "image proxy", "bot", "client"

# No browser or image proxy sends a longer User-Agent (theirs are 100 to 300
# characters). A longer one is a bot's, decided without reading it: some of
# the list's patterns take time that grows with the square of the length
# (64 KB: 1.7 s on the event loop), and at this length the slowest case
# costs about 1 ms. It also bounds the cache below in bytes: CACHED
# entries of at most USER_AGENT_MAX characters, about 3 MB at most.
USER_AGENT_MAX = 512
CACHED = 4096


def classify(user_agent: str) -> str:
    """PROXY, BOT or CLIENT. No User-Agent at all is a client: the list
    names bots, and no rule says a person's browser must send one.

    >>> classify("github-camo (c006e452)"), classify("Googlebot/2.1 (+http://www.google.com/bot.html)")
    ('image proxy', 'bot')
    >>> classify("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    'client'
    >>> classify("Mozilla/5.0 " + "x" * USER_AGENT_MAX)
    'bot'
    """
    if len(user_agent) > USER_AGENT_MAX:
        return BOT
    return _classify(user_agent)


@functools.lru_cache(maxsize=CACHED)
def _classify(user_agent: str) -> str:
    """Cached: a page's readers send a handful of User-Agents over and
    over, and the list's ~1,500 patterns take about 0.1 ms per new one."""
    if _IMAGE_PROXY.search(user_agent):
        return PROXY
    if crawleruseragents.is_crawler(user_agent):
        return BOT
    return CLIENT
