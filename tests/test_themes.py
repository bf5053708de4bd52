"""Looks that follow the reader (issue 31), in a real headless Chromium
(Debian's) against the real server: an auto badge and the builder's
<picture> snippet each fetch one image and count one view per load, under
either colour scheme, and draw differently in each; the SVG opened in a
tab follows the scheme under its own Content-Security-Policy; /chart draws
the days' views and counts nothing. The browser speaks as a person's
Chrome does (conftest.CHROME_AGENT), so its views count."""

from __future__ import annotations

import html
import re
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


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_the_builder_offers_the_theme_and_writes_a_picture_that_counts_once(browser, server,
                                                                           javascript):
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    page_id = f"theme.builder-{javascript}"
    page.goto(server.url + "/?" + urllib.parse.urlencode({"page_id": page_id}))
    page.get_by_label("social").check()
    page.get_by_label("Theme").select_option("auto")
    if not javascript:
        page.get_by_role("button", name="Update").click()
        page.wait_for_url(re.compile(r".*theme=auto.*"))
    base = f"{server.url}/badge?page_id={urllib.parse.quote(page_id)}&style=social"
    assert page.locator("#snippet-markdown").input_value() == f"![visitors]({base}&theme=auto)"
    # The previews: the light drawing on a light page, the dark one on a dark page.
    assert page.locator("#preview").get_attribute("src").endswith("style=social&query_only=true")
    assert page.locator("#preview-dark").get_attribute("src").endswith(
        "style=social&theme=dark&query_only=true")
    picture = page.locator("#snippet-picture").input_value()
    assert picture == ('<picture>\n  <source media="(prefers-color-scheme: dark)" '
                       f'srcset="{base}&theme=dark">\n  <img src="{base}" alt="visitors">\n'
                       '</picture>')
    assert "counts twice" in page.locator("#pair-warning").text_content()
    context.close()
    assert count(server, page_id) == 0  # the builder's previews never count

    shots = {}
    for n, scheme in enumerate(SCHEMES, 1):
        shown, shown_context, fetched = load(browser, scheme, picture, server.url)
        shots[scheme] = shot(shown)
        assert fetched == [f"{base}&theme=dark" if scheme == "dark" else base]
        assert count(server, page_id) == n
        shown_context.close()
    assert shots["light"] != shots["dark"]


def test_a_light_and_dark_pair_counts_every_view_twice(browser, server):
    """What the builder warns about: GitHub's #gh-*-mode-only pair."""
    url = f"{server.url}/badge?page_id=theme.pair"
    markup = (f'<img src="{url}&theme=light#gh-light-mode-only">'
              f'<img src="{url}&theme=dark#gh-dark-mode-only" style="display:none">')
    page, context, fetched = load(browser, "light", markup, server.url)
    wait_until(lambda: count(server, "theme.pair") == 2)
    assert len(fetched) == 2
    context.close()


def test_a_chart_in_a_page_draws_the_days_and_counts_nothing(browser, server):
    for _ in range(3):
        server.get("/badge?page_id=theme.chart")  # as a person's browser: see conftest
    assert count(server, "theme.chart") == 3
    url = f"{server.url}/chart?page_id=theme.chart&days=7&theme=auto"
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "/chart" in r.url else None)
    page.set_content(f'<img src="{html.escape(url)}">', wait_until="load")
    wait_until(lambda: page.evaluate("document.images[0].complete"))
    assert page.evaluate("document.images[0].naturalWidth") == 600 and fetched == [url]
    page.goto(url)  # opened in a tab: the dark drawing shows, its last bar is today's 3
    bars = page.locator("g.tally-dark rect.bar")
    assert bars.count() == 7 and bars.nth(6).get_attribute("data-views") == "3"
    assert page.evaluate("getComputedStyle(document.querySelector('g.tally-dark')).display") == "inline"
    assert count(server, "theme.chart") == 3
    context.close()
