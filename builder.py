"""The builder page's texts (/ on the server): the badge URL of a look,
with its defaults left out; the snippets a reader copies into a README;
the words for each show= value. Pure functions over params and badge's
Look; server.py renders them into views/index.tpl, and views/tally.js
builds the same texts in the browser.
"""

from __future__ import annotations

import dataclasses
import html
import urllib.parse

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


# The words for each theme= value (badge.THEMES).
THEME_CHOICES = {"light": "light (the default)", "dark": "dark",
                 "auto": "auto: light or dark as the reader's scheme is (one image)"}
assert tuple(THEME_CHOICES) == params.THEMES


def snippets(label: str, badge_url: str, light_url: str, dark_url: str
             ) -> list[tuple[str, str, str]]:
    """The builder's copyable snippets: (key, title, text). tally.js builds
    the same texts in the browser, with the same escaping. The last is a
    <picture> of the light and the dark drawing (scheme_urls): a browser
    fetches one of its sources, so a view counts once.

    >>> snippets('a"]', "https://x/badge?page_id=p", "l", "d")[1][2]
    '<img src="https://x/badge?page_id=p" alt="a&quot;]">'
    >>> snippets("[x]", "u", "l", "d")[0][2]
    '![\\\\[x\\\\]](u)'
    """
    alt = html.escape(label)
    return [
        ("markdown", "Markdown", f"![{label.translate(_MARKDOWN_TEXT)}]({badge_url})"),
        # The URL is urlencoded: it holds no quote or angle bracket.
        ("html", "HTML", f'<img src="{badge_url}" alt="{alt}">'),
        ("rst", "reStructuredText", f".. image:: {badge_url}\n   :alt: {label}"),
        ("picture", "HTML, light and dark (<picture>: one image fetched, one view)",
         f'<picture>\n  <source media="(prefers-color-scheme: dark)" srcset="{dark_url}">\n'
         f'  <img src="{light_url}" alt="{alt}">\n</picture>'),
    ]


def in_scheme(look: badge.Look, scheme: str) -> badge.Look:
    """The look a reader in that colour scheme sees: an auto badge's light
    or dark drawing, any other badge as it is (the builder's previews)."""
    return dataclasses.replace(look, theme=scheme) if look.theme == "auto" else look


def scheme_urls(base: str, page_id: str, look: badge.Look) -> tuple[str, str]:
    """The badge URLs of the light and the dark drawing (the <picture>
    snippet's sources): one page id, so either counts the same page."""
    light, dark = (f"{base}/badge?" + urllib.parse.urlencode(
        badge_params(page_id, dataclasses.replace(look, theme=theme)))
        for theme in ("light", "dark"))
    return light, dark


def badge_params(page_id: str, look: badge.Look) -> dict[str, str]:
    """The query of a badge URL for a look, defaults left out."""
    defaults = badge.Look()
    query = {"page_id": page_id}
    names = {"label": "left_text", "label_color": "left_color", "color": "right_color",
             "style": "style", "format": "format", "show": "show", "base": "base",
             "theme": "theme", "label_color_dark": "left_color_dark",
             "color_dark": "right_color_dark"}
    for field, name in names.items():
        value = getattr(look, field)
        if value != getattr(defaults, field):
            query[name] = str(value)
    return query
