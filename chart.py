"""Rendering of charts: pure functions from a page's days to SVG text.

One drawing of the bars (_marks) serves every chart: the one inside the
web pages (/stats, a github: page's stats), in the page's CSS colours, and
the one for a README or a blog (/chart, and Hits' daily chart at its old
URL) in a look's colours and theme, switched as a badge is (badge.both).
"""

from __future__ import annotations

from typing import Collection

import badge

CHART_WIDTH, CHART_HEIGHT = 600, 160
# The dark chart's text where no left_color_dark is given: the pages' own
# muted grey of their dark scheme (views/tally.css), readable on #0d1117.
CHART_DARK_TEXT = "#9198a1"


def _marks(history: list[tuple[str, int | None]], top: int, x0: float, y0: float,
           width: float, plot: float, bar_fill: str, not_kept: Collection[str],
           unit: str) -> str:
    """A chart's bars: one <rect> a day, its height by the day's number,
    titled with its day and number. A day without a number is never a bar
    of zero: one GitHub's traffic lost (None) is a filled mark titled "no
    data (lost)"; one in not_kept (before TALLY_KEEP_DAYS or before keeping
    began) a fainter outline titled "not kept"."""
    step = width / len(history)
    bar = max(step * 0.8, 1)
    marks = []
    for i, (day, views) in enumerate(history):
        x = f'x="{x0 + i * step + (step - bar) / 2:.2f}"'
        if day in not_kept:
            marks.append(f'<rect class="not-kept" {x} y="{y0}" width="{bar:.2f}" height="{plot}" '
                         f'fill="none" stroke="{bar_fill}" stroke-opacity="0.25" '
                         f'stroke-dasharray="2 2" data-day="{day}" data-views="not kept">'
                         f'<title>{day}: not kept</title></rect>')
        elif views is None:
            marks.append(f'<rect class="lost" {x} y="{y0}" width="{bar:.2f}" height="{plot}" '
                         f'fill="{bar_fill}" fill-opacity="0.12" data-day="{day}" '
                         f'data-views="none"><title>{day}: no data (lost)</title></rect>')
        else:
            h = plot * views / top
            marks.append(f'<rect class="bar" {x} y="{y0 + plot - h:.2f}" width="{bar:.2f}" '
                         f'height="{h:.2f}" fill="{bar_fill}" data-day="{day}" '
                         f'data-views="{views}"><title>{day}: {counted(views, unit) if unit else views}</title></rect>')
    return "".join(marks)


def counted(n: int, unit: str) -> str:
    """A number and its unit, singular for one.

    >>> counted(1, "views"), counted(1234, "visitors")
    ('1 view', '1,234 visitors')
    """
    return f"{n:,} {unit[:-1] if n == 1 else unit}"


def _top(history: list[tuple[str, int | None]]) -> int:
    return max((views for _, views in history if views is not None), default=0) or 1


def inline(history: list[tuple[str, int | None]], width: int = 720,
                  height: int = 200, not_kept: Collection[str] = ()) -> str:
    """The bar chart of views per day inside the web pages (/stats): the
    marks of standalone(), in currentColor and the page's CSS, so it follows
    the page's scheme."""
    if not history:
        return ""
    top, plot = _top(history), height - 30
    first, last = badge.esc(history[0][0]), badge.esc(history[-1][0])
    # aria-hidden: screen readers get the same numbers from the page's table.
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'aria-hidden="true">'
            f'<line class="axis" x1="0" y1="{plot + 10}" x2="{width}" y2="{plot + 10}"/>'
            + _marks(history, top, 0, 10, width, plot, "currentColor", not_kept, "")
            + f'<text x="0" y="{height - 4}">{first}</text>'
            f'<text x="{width}" y="{height - 4}" text-anchor="end">{last}</text>'
            f'<text x="0" y="9">{top}</text></svg>')


def standalone(look: badge.Look, history: list[tuple[str, int | None]], title: str, summary: str,
          unit: str = "views", empty: str | None = None, not_kept: Collection[str] = ()) -> str:
    """A chart for a README or a blog (/chart, Hits' daily chart): a bar a
    day in the look's value colour, its title, summary and axes in the
    label colour, in the look's theme (auto: both, as a badge). empty: a
    sentence drawn across an empty chart (an unknown page)."""
    if look.theme == "auto":
        return badge.both(_chart(look, history, title, summary, unit, empty, not_kept),
                     _chart(badge.for_scheme(look, "dark"), history, title, summary, unit, empty,
                            not_kept))
    return _chart(badge.for_scheme(look, look.theme), history, title, summary, unit, empty, not_kept)


def _chart(look: badge.Look, history: list[tuple[str, int | None]], title: str, summary: str,
           unit: str, empty: str | None, not_kept: Collection[str]) -> str:
    width, height = CHART_WIDTH, CHART_HEIGHT
    ink = look.label_color
    if look.theme == "dark" and look.label_color_dark is None:
        ink = CHART_DARK_TEXT
    top, y0, plot = _top(history), 24, height - 44
    label = f"{badge.esc(title)}: {badge.esc(summary)}"
    first, last = (badge.esc(history[0][0]), badge.esc(history[-1][0])) if history else ("", "")
    sentence = (f'<text x="{width / 2:g}" y="{y0 + plot / 2:g}" text-anchor="middle" '
                f'font-size="13">{badge.esc(empty)}</text>' if empty else "")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}">'
            f'<title>{label}</title>'
            f'<g font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11" fill="{ink}">'
            f'<text x="0" y="14" font-weight="bold">{badge.esc(title)}</text>'
            f'<text x="{width}" y="14" text-anchor="end">{badge.esc(summary)}</text>'
            f'<line x1="0" y1="{y0 + plot}" x2="{width}" y2="{y0 + plot}" stroke="{ink}" '
            f'stroke-opacity="0.35"/>'
            + (_marks(history, top, 0, y0, width, plot, badge.esc(look.color), not_kept, unit)
               if history else "")
            + f'<text x="0" y="{height - 4}">{first}</text>'
            f'<text x="{width}" y="{height - 4}" text-anchor="end">{last}</text>'
            + (sentence or f'<text x="4" y="{y0 + 11}" fill-opacity="0.8">{top}</text>')
            + "</g></svg>")
