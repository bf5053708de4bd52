"""The builder page's texts (/ on the server): the badge URL of a look,
with its defaults left out; the snippets a reader copies into a README;
the words for each show= value. Pure functions over params and badge's
Look; server.py renders them into views/index.tpl, and views/tally.js
builds the same texts in the browser.
"""

from __future__ import annotations

import html

import badge
import params

# The builder's words for each show= value (params.SHOWS).
SHOW_CHOICES = {"total": "total views", "today": "today's views",
                "both": "today's views / total views",
                "visitors": "unique visitors (each day's, summed)",
                "visitors_today": "today's unique visitors",
                "clones": "clones (github: pages only)"}
assert tuple(SHOW_CHOICES) == params.SHOWS


# Markdown's image text ends at "]"; a backslash escapes it (CommonMark).
_MARKDOWN_TEXT = str.maketrans({"\\": "\\\\", "[": "\\[", "]": "\\]"})


def snippets(label: str, badge_url: str) -> list[tuple[str, str, str]]:
    """The builder's copyable snippets: (key, title, text). tally.js builds
    the same texts in the browser, with the same escaping.

    >>> snippets('a"]', "https://x/badge?page_id=p")[1][2]
    '<img src="https://x/badge?page_id=p" alt="a&quot;]">'
    >>> snippets("[x]", "u")[0][2]
    '![\\\\[x\\\\]](u)'
    """
    return [
        ("markdown", "Markdown", f"![{label.translate(_MARKDOWN_TEXT)}]({badge_url})"),
        # The URL is urlencoded: it holds no quote or angle bracket.
        ("html", "HTML", f'<img src="{badge_url}" alt="{html.escape(label)}">'),
        ("rst", "reStructuredText", f".. image:: {badge_url}\n   :alt: {label}"),
    ]


def badge_params(page_id: str, look: badge.Look) -> dict[str, str]:
    """The query of a badge URL for a look, defaults left out."""
    defaults = badge.Look()
    query = {"page_id": page_id}
    names = {"label": "left_text", "label_color": "left_color", "color": "right_color",
             "style": "style", "format": "format", "show": "show", "base": "base"}
    for field, name in names.items():
        value = getattr(look, field)
        if value != getattr(defaults, field):
            query[name] = str(value)
    return query
