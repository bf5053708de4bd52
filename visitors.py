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

PROXY, BOT, CLIENT = "image proxy", "bot", "client"


@functools.lru_cache(maxsize=4096)
def classify(user_agent: str) -> str:
    """PROXY, BOT or CLIENT. Cached: a page's readers send a handful of
    User-Agents over and over, and the list's ~1,500 patterns take about
    0.1 ms per new one. No User-Agent at all is a client: the list names
    bots, and no rule says a person's browser must send one.

    >>> classify("github-camo (c006e452)"), classify("Googlebot/2.1 (+http://www.google.com/bot.html)")
    ('image proxy', 'bot')
    >>> classify("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    'client'
    """
    if _IMAGE_PROXY.search(user_agent):
        return PROXY
    if crawleruseragents.is_crawler(user_agent):
        return BOT
    return CLIENT
