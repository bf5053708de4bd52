"""The web pages in a real headless Chromium (Debian's), driven by playwright,
against the real server. Screenshots go to test-output/ for a person to look at."""

from __future__ import annotations

import datetime
import json
import re
import urllib.parse
from html.parser import HTMLParser

import pytest

import storage
from stores import sqlite
from conftest import ROOT, SNIPPET_CASES, wait_until

OUTPUT = ROOT / "test-output"
@pytest.fixture
def server(live_server, db_path):
    # History for the stats page: three days with known counts.
    today = datetime.datetime.now(datetime.timezone.utc).date()
    days = {(today - datetime.timedelta(days=d)).isoformat(): views
            for d, views in ((0, 4), (1, 10), (3, 5))}
    with sqlite.Store(db_path) as s:
        s.import_pages([storage.Page("alice.stats", 19, "2026-01-01T00:00:00Z",
                                     "2026-01-01T00:00:00Z", days)], "set")
    return live_server()


def count(server, page_id: str) -> int:
    return json.loads(server.get("/api/count?page_id=" + urllib.parse.quote(page_id))[2])["total"]


def test_builder_follows_the_form_and_never_counts(browser, server):
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("GitHub repository (owner/repo)").fill("alice/my-repo")
    assert page.get_by_label("Page id").input_value() == "alice.my-repo"
    page.get_by_label("Label", exact=True).fill("readers")
    page.get_by_label("Value colour", exact=True).fill("orange")
    page.get_by_label("for-the-badge").check()
    page.get_by_label("Number format").select_option("comma")
    page.get_by_label("Show").select_option("both")
    page.get_by_label("Start value").fill("1000")

    preview = page.locator("#preview")
    src = preview.get_attribute("src")
    query = dict(urllib.parse.parse_qsl(src.split("?", 1)[1]))
    assert query == {"page_id": "alice.my-repo", "left_text": "readers", "right_color": "orange",
                     "style": "for-the-badge", "format": "comma", "show": "both", "base": "1000",
                     "query_only": "true"}
    # page.evaluate, not wait_for_function: the latter evals a string in the
    # page, which the page's own CSP (no 'unsafe-eval') rightly forbids.
    wait_until(lambda: page.evaluate("document.getElementById('preview').complete && "
                                     "document.getElementById('preview').naturalWidth > 0"))
    svg = server.get(src)[2].decode()
    width = float(re.search(r'width="([\d.]+)"', svg).group(1))
    assert page.evaluate("document.getElementById('preview').naturalHeight") == 28
    assert abs(page.evaluate("document.getElementById('preview').naturalWidth") - width) <= 1

    badge_url = server.url + "/badge?" + urllib.parse.urlencode(
        {k: v for k, v in query.items() if k != "query_only"})
    assert page.locator("#snippet-markdown").input_value() == f"![readers]({badge_url})"
    assert page.locator("#snippet-html").input_value() == f'<img src="{badge_url}" alt="readers">'
    assert page.locator("#snippet-rst").input_value() == f".. image:: {badge_url}\n   :alt: readers"

    page.locator("button.copy[data-target=snippet-markdown]").click()
    wait_until(lambda: page.evaluate("document.querySelector('button.copy').textContent") == "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"![readers]({badge_url})"

    assert count(server, "alice.my-repo") == 0
    assert count(server, "tally.sample") == 0
    context.close()


def test_builder_works_without_javascript(browser, server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("GitHub repository (owner/repo)").fill("bob/site")
    page.get_by_label("Page id").fill("")
    page.get_by_label("Label", exact=True).fill("hits")
    page.get_by_label("plastic").check()
    page.get_by_role("button", name="Update").click()
    page.wait_for_url(re.compile(r".*left_text=hits.*"))
    expected = server.url + "/badge?page_id=bob.site&left_text=hits&style=plastic"
    assert page.locator("#snippet-markdown").input_value() == f"![hits]({expected})"
    assert page.locator("#preview").get_attribute("src") == \
        "/badge?page_id=bob.site&left_text=hits&style=plastic&query_only=true"
    assert count(server, "bob.site") == 0
    context.close()


def test_builder_is_usable_with_the_keyboard(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/")
    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.name "
                                  "|| document.activeElement.textContent"))
    for target in ("repo", "page_id", "left_text", "left_color", "right_color", "style", "format",
                   "show", "base", "Update", "Copy"):
        assert target in reached, target
    page.close()


def test_stats_draws_a_bar_per_day_with_the_right_heights(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/stats?page_id=alice.stats&days=7")
    bars = page.locator("figure.chart rect.bar")
    assert bars.count() == 7
    views = [int(bars.nth(i).get_attribute("data-views")) for i in range(7)]
    assert views == [0, 0, 0, 5, 0, 10, 4]
    heights = [float(bars.nth(i).get_attribute("height")) for i in range(7)]
    assert heights[5] == max(heights) and heights[3] == pytest.approx(heights[5] / 2)
    assert heights[6] == pytest.approx(heights[5] * 0.4) and heights[0] == 0
    assert page.locator("#total").text_content() == "19"
    assert page.locator("#best").text_content().startswith("10 on ")
    assert page.locator("#history tbody tr").count() == 7
    page.close()


def test_unknown_page_shows_an_empty_chart_and_a_sentence(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/stats?page_id=nobody.here")
    assert "No views of this page yet" in page.locator(".empty").text_content()
    assert page.locator("figure.chart rect.bar").count() == 30
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_both_pages(browser, server, scheme):
    OUTPUT.mkdir(exist_ok=True)
    context = browser.new_context(color_scheme=scheme, viewport={"width": 900, "height": 1000})
    page = context.new_page()
    for name, path in (("builder", "/?page_id=alice.stats"), ("stats", "/stats?page_id=alice.stats")):
        page.goto(server.url + path)
        page.wait_for_load_state("networkidle")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(13, 17, 23)")
        target = OUTPUT / f"{name}-{scheme}.png"
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 5000
    context.close()


# Without a browser ##########################################################


class BalanceChecker(HTMLParser):
    VOID = {"meta", "link", "input", "img", "br", "hr", "source", "wbr", "area", "base", "col"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = [name for name, _ in attrs]
        if len(names) != len(set(names)):
            self.problems.append(f"duplicate attribute in <{tag}>")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


@pytest.mark.parametrize("path", ["/", "/?page_id=%3Cb%3E&left_text=%22x%22&style=nope",
                                  "/stats?page_id=alice.stats", "/stats?page_id=", "/stats?page_id=none"])
def test_pages_are_well_formed(client, path):
    path, _, query = path.partition("?")
    checker = BalanceChecker()
    checker.feed(client.get(path, query).text)
    checker.close()
    assert checker.problems == [] and checker.stack == []


@pytest.mark.parametrize("path", ["/", "/stats"])
def test_user_strings_are_escaped_in_pages(client, path):
    hostile = '<script>alert(1)</script>"\'&'
    text = client.get(path, urllib.parse.urlencode({"page_id": hostile, "left_text": hostile[:60]})).text
    assert "<script>alert" not in text and hostile not in text
    assert "&lt;script&gt;" in text


def test_invalid_stats_id_is_a_clear_html_error(client):
    r = client.get("/stats", "page_id=")
    assert r.status == 400 and "empty page_id" in r.text and "text/html" in r.headers["content-type"]


def test_whole_page_is_under_40_kb(client):
    size = sum(len(client.get(p).body) for p in ("/", "/static/tally.css", "/static/tally.js"))
    assert size < 40 * 1024, size


def test_page_loads_nothing_from_elsewhere(client):
    html = client.get("/").text + client.get("/static/tally.css").text + client.get("/static/tally.js").text
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "@import" not in html
    assert "default-src 'none'" in client.get("/").headers["content-security-policy"]


def _luminance(hex_color: str) -> float:
    channels = [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_text_contrast_meets_wcag_aa_in_both_themes():
    css = (ROOT / "views" / "tally.css").read_text()
    light, dark = re.findall(r":root \{([^}]*)\}", css)[:2]
    for block in (light, dark):
        colors = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6})", block))
        pairs = [(fg, bg) for fg in ("fg", "muted", "accent", "error") for bg in ("bg", "panel")]
        for fg, bg in pairs + [("on-accent", "accent")]:  # the last: button text
            assert contrast(colors[fg], colors[bg]) >= 4.5, (fg, bg, block)


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_snippets_escape_the_label_alike_with_and_without_javascript(browser, server, javascript):
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    for label, markdown_alt, html_alt in SNIPPET_CASES:
        page.goto(server.url + "/?" + urllib.parse.urlencode({"page_id": "p", "left_text": "x"}))
        if javascript:
            page.get_by_label("Label", exact=True).fill(label)
        else:
            page.goto(server.url + "/?" + urllib.parse.urlencode({"page_id": "p", "left_text": label}))
        markdown = page.locator("#snippet-markdown").input_value()
        snippet = page.locator("#snippet-html").input_value()
        assert markdown.startswith(f"![{markdown_alt}](") and markdown.endswith(")")
        assert snippet.startswith('<img src="') and snippet.endswith(f'" alt="{html_alt}">')
        url = snippet[len('<img src="'):-len(f'" alt="{html_alt}">')]
        assert dict(urllib.parse.parse_qsl(url.split("?", 1)[1]))["left_text"] == label
    context.close()


def test_the_stats_link_encodes_the_page_id(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.get_by_label("Page id").fill("c++ & #1")
    page.locator("#stats-link").click()
    page.wait_for_url(re.compile(r".*/stats\?.*"))
    assert page.locator(".page-id").text_content() == "c++ & #1"
    page.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_the_builder_turns_an_old_counter_url_into_tallys(browser, server, javascript):
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("Paste its badge URL").fill("https://komarev.com/ghpvc/?username=Alice&style=flat")
    page.get_by_role("button", name="Show its Tally URL").click()
    page.wait_for_url(re.compile(r".*old_url=.*"))
    assert page.locator("#moved-url").text_content() == server.url + "/ghpvc/?username=Alice&style=flat"
    assert page.locator("#moved-page-id").text_content() == "ghpvc:alice"
    assert count(server, "ghpvc:alice") == 0
    context.close()
