"""chart.py: the bars of a page's days, in the pages and for a README."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st

import badge
import chart
import params
from badge import Look
from conftest import hostile_text

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [("2026-11-01", 2), ("2026-11-02", 0), ("2026-11-03", 4)]


def bars(svg: str) -> list[ET.Element]:
    return [r for r in ET.fromstring(svg).iter(SVG + "rect")]


def test_inline_chart_has_a_bar_per_day_scaled_to_the_highest():
    drawn = bars(chart.inline(DAYS))
    assert [b.get("data-views") for b in drawn] == ["2", "0", "4"]
    heights = [float(b.get("height")) for b in drawn]
    assert heights[1] == 0 and heights[0] == pytest.approx(heights[2] / 2)
    assert {b.get("fill") for b in drawn} == {"currentColor"}  # the page's CSS colours it


def test_standalone_chart_draws_one_titled_bar_a_day_in_the_looks_colours():
    svg = chart.standalone(Look(color="#ea7233", label_color="#222"), DAYS, "views per day",
                           "6 views in 3 days")
    drawn = bars(svg)
    assert [b.get("data-views") for b in drawn] == ["2", "0", "4"]
    assert [b.find(SVG + "title").text for b in drawn] == [
        "2026-11-01: 2 views", "2026-11-02: 0 views", "2026-11-03: 4 views"]
    heights = [float(b.get("height")) for b in drawn]
    assert heights[0] == pytest.approx(heights[2] / 2) and heights[1] == 0
    assert {b.get("fill") for b in drawn} == {"#ea7233"}
    root = ET.fromstring(svg)
    assert root.get("aria-label") == "views per day: 6 views in 3 days"
    assert root.find(SVG + "g").get("fill") == "#222"


def test_days_without_numbers_are_never_bars_of_zero():
    svg = chart.standalone(Look(), [("2026-11-01", None), ("2026-11-02", None), ("2026-11-03", 1)],
                           "t", "s", not_kept={"2026-11-01"})
    assert [b.get("class") for b in bars(svg)] == ["not-kept", "lost", "bar"]


def test_an_empty_chart_says_why():
    svg = chart.standalone(Look(), [("2026-11-01", 0)] * 7, "views per day", "0 views in 7 days",
                           empty="no views of this page yet")
    assert "no views of this page yet" in [t.text for t in ET.fromstring(svg).iter(SVG + "text")]


def test_dark_and_auto_charts():
    dark = chart.standalone(Look(theme="dark"), DAYS, "t", "s")
    assert ET.fromstring(dark).find(SVG + "g").get("fill") == chart.CHART_DARK_TEXT
    given_dark = chart.standalone(Look(theme="dark", label_color_dark="#eee", color_dark="#fff"),
                                  DAYS, "t", "s")
    assert ET.fromstring(given_dark).find(SVG + "g").get("fill") == "#eee"
    assert {b.get("fill") for b in bars(given_dark)} == {"#fff"}
    auto = chart.standalone(Look(theme="auto"), DAYS, "t", "s")
    assert ET.fromstring(auto).find(SVG + "style").text == badge.THEME_STYLE
    assert len(bars(auto)) == 2 * len(DAYS)  # one drawing shows at a time


@settings(max_examples=200, deadline=None)
@given(hostile_text(st, 30), st.sampled_from(badge.THEMES),
       st.lists(st.one_of(st.none(), st.integers(0, 10**12)), min_size=1, max_size=40))
def test_every_chart_is_well_formed_svg(title, theme, numbers):
    if params.has_refused_char(title):
        return
    days = [(f"2026-01-{i + 1:02d}" if i < 31 else f"2026-02-{i - 30:02d}", n)
            for i, n in enumerate(numbers)]
    root = ET.fromstring(chart.standalone(Look(theme=theme), days, title, "summary"))
    assert root.find(SVG + "title").text == f"{title}: summary"
