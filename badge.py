"""Rendering of badges: pure functions from a Look and numbers to SVG text.

The only module importing the renderer (badgepy, the maintained fork of
pybadges). It never passes request values to the renderer's link, image or
embed_* arguments; a logo reaches it only as a data: URI that params.py has
decoded and re-encoded.

"flat" is badgepy's own output, byte-identical to a plain badge() call for
ASCII text; "flat-square" is badgepy's too. plastic, for-the-badge and social
are shields.io's geometry, described below as small pieces of code that
share one text measurer and one XML escape. "pixel" is a 1x1 transparent SVG.

Speed: digits have equal advance widths (and equal kerning) in the measured
font, so a badge's SVG depends on the shown number only through its shape
(every digit replaced by 0). The SVG is rendered once per shape into
fragments and the digits are put between them (see _fragments).
"""

from __future__ import annotations

import array
import bisect
import colorsys
import dataclasses
import decimal
import gzip
import json
import functools
import html
import re
import unicodedata
from pathlib import Path

import badgepy
import webcolors
from badgepy import precalculated_text_measurer

DEFAULT_LABEL = "visitors"
DEFAULT_LABEL_COLOR = "#595959"
DEFAULT_COLOR = "#1283c3"
ERROR_COLOR = "#dd4343"  # shields' red (badge-maker 6)
# The template cache is bounded in bytes through its entry counts: a look
# without a logo renders to at most a few KB (labels are at most 64
# characters), one with a logo to at most about 12 KB more (8 KB of logo,
# base64). So the logo looks get a cache of their own, much smaller: 4096
# logos of 6 KB each once took the server from 46 MB to 127 MB.
TEMPLATE_CACHE_SIZE = 4096
LOGO_TEMPLATE_CACHE_SIZE = 64

# shields.io's named colours and their aliases as badge-maker 6 draws them
# (badge-maker/lib/color.js: its higher-contrast palette). The old shades
# (#4c1, #97ca00, #dfb317, #a4a61d, #fe7d37, #e05d44, #9f9f9f) stay
# available to anyone who writes them as hex.
_NAMED = {
    "brightgreen": "#4b0", "green": "#67ac09", "yellow": "#d8b800", "yellowgreen": "#95991a",
    "orange": "#ea7233", "red": "#dd4343", "blue": "#007ec6", "grey": "#555",
    "lightgrey": "#939393",
}
_ALIASES = {"gray": "grey", "lightgray": "lightgrey", "critical": "red", "important": "orange",
            "success": "brightgreen", "informational": "blue", "inactive": "lightgrey"}
SHIELDS_COLORS = _NAMED | {alias: _NAMED[name] for alias, name in _ALIASES.items()}

_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# ASCII digits and spaces only: Python's \d and \s also match other
# scripts' digits (rgb(٣٣,0,0)), which no SVG reader understands.
_NUM = r"[ \t]*[+]?(?:[0-9]{1,3}(?:\.[0-9]+)?|\.[0-9]+)"
_RGB = re.compile(rf"rgba?\(({_NUM}%?),({_NUM}%?),({_NUM}%?)(?:,({_NUM}%?))?[ \t]*\)")
_HSL = re.compile(rf"hsla?\(({_NUM})(?:deg)?,({_NUM})%,({_NUM})%(?:,({_NUM}%?))?[ \t]*\)")


@dataclasses.dataclass(frozen=True)
class Look:
    """Everything about a badge but its number. Values are already valid."""

    label: str = DEFAULT_LABEL
    label_color: str = DEFAULT_LABEL_COLOR
    color: str = DEFAULT_COLOR
    style: str = "flat"
    format: str = "plain"
    show: str = "total"
    base: int = 0
    logo: str | None = None
    logo_color: str | None = None  # accepted for shields URLs; see docs/parameters.md
    # light: the drawing above; dark: the dark one; auto: one SVG with both,
    # switched by the reader's colour scheme (see both).
    theme: str = "light"
    label_color_dark: str | None = None  # None: label_color
    color_dark: str | None = None        # None: color


# Colours ###################################################################


def normalize_color(value: str) -> str | None:
    """A colour as the SVG will carry it, or None when it is not one.

    >>> normalize_color("1283c3"), normalize_color("brightgreen")
    ('#1283c3', '#4b0')
    >>> normalize_color("rgb(0, 128, 255)"), normalize_color("url(#x)")
    ('rgb(0,128,255)', None)
    """
    text = value.strip().lower()
    if _HEX.fullmatch(text):
        return "#" + text.lstrip("#")
    if text in SHIELDS_COLORS:
        return SHIELDS_COLORS[text]
    for pattern in (_RGB, _HSL):
        match = pattern.fullmatch(text)
        if match and _in_range(pattern, match.groups()):
            return re.sub(r"[ \t]+", "", text)
    try:
        return webcolors.name_to_hex(text)
    except ValueError:
        return None


def _in_range(pattern: re.Pattern, groups: tuple) -> bool:
    limits = (255, 255, 255) if pattern is _RGB else (360, 100, 100)
    for value, limit in zip(groups[:3], limits):
        number = float(value.strip().rstrip("%").lstrip("+"))
        if number > (100 if value.endswith("%") else limit):
            return False
    if groups[3] is not None:
        alpha = groups[3].strip()
        return float(alpha.rstrip("%").lstrip("+")) <= (100 if alpha.endswith("%") else 1)
    return True


def _rgb(color: str) -> tuple[float, float, float]:
    """0..1 channels of a normalized colour (for the text colour choice)."""
    if color.startswith("#"):
        digits = color[1:]
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return tuple(int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore
    numbers = [float(n.rstrip("%")) for n in re.findall(r"[\d.]+%?", color)[:3]]
    if color.startswith("hsl"):
        return colorsys.hls_to_rgb(numbers[0] / 360, numbers[2] / 100, numbers[1] / 100)
    raw = re.findall(r"[\d.]+%?", color)[:3]
    return tuple(float(n[:-1]) / 100 if n.endswith("%") else float(n) / 255
                 for n in raw)  # type: ignore


def brightness(color: str) -> float:
    """shields.io's brightness of a colour, rounded as it rounds it
    (badge-maker's color.js: 0-255 channels, then toFixed(2), which rounds
    the exact binary value half up).

    >>> brightness("#fff"), brightness("#007ec6"), brightness("#d8b800")
    (1.0, 0.38, 0.68)
    """
    r, g, b = (round(channel * 255) for channel in _rgb(color))
    exact = decimal.Decimal((r * 299 + g * 587 + b * 114) / 255000)
    return float(exact.quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_UP))


def _text_colors(background: str) -> tuple[str, str]:
    """shields.io's choice: dark text on light backgrounds. (text, shadow)"""
    return ("#fff", "#010101") if brightness(background) <= 0.69 else ("#333", "#ccc")


# Numbers ###################################################################

_METRIC_PREFIXES = "kMGTPEZY"


def format_number(n: int, style: str = "plain") -> str:
    """
    >>> [format_number(12345, s) for s in ("plain", "comma", "short")]
    ['12345', '12,345', '12k']
    >>> format_number(1250, "short"), format_number(999_999, "short")
    ('1.3k', '1M')
    """
    if style == "comma":
        return f"{n:,}"
    if style == "short":
        return _metric(n)
    if style == "abbreviated":
        return _abbreviated(n)
    return str(n)


def _abbreviated(n: int) -> str:
    """komarev's profile counter: one decimal and K, M, B or T from 1,000.

    >>> [_abbreviated(n) for n in (999, 1000, 12345, 1_250_000, 3 * 10**12)]
    ['999', '1.0K', '12.3K', '1.3M', '3.0T']
    """
    for power, suffix in ((4, "T"), (3, "B"), (2, "M"), (1, "K")):
        unit = 1000 ** power
        if n >= unit:
            tenths = (n * 10 + unit // 2) // unit  # halves up, in integers
            return f"{tenths // 10}.{tenths % 10}{suffix}"
    return str(n)


def _metric(n: int) -> str:
    # shields.io's metric(): one decimal below 10 of a unit unless it is .0,
    # halves rounded up; integer arithmetic so no float rounding creeps in.
    for power in range(len(_METRIC_PREFIXES), 0, -1):
        limit = 1000 ** power
        if n >= limit:
            prefix = _METRIC_PREFIXES[power - 1]
            if n < 10 * limit:
                tenths = (n * 10 + limit // 2) // limit
                if tenths % 10 and tenths < 100:
                    return f"{tenths // 10}.{tenths % 10}{prefix}"
            rounded = (n * 2 + limit) // (2 * limit)
            if rounded < 1000:
                return f"{rounded}{prefix}"
            return f"1{_METRIC_PREFIXES[power]}" if power < len(_METRIC_PREFIXES) else f"{rounded}{prefix}"
    return str(n)


def message(look: Look, total: int, today: int) -> str:
    """The right-hand text: total (plus base), today's views, or both.

    >>> message(Look(show="both", format="comma", base=1000), 2456, 12)
    '12 / 3,456'
    """
    shown_total = format_number(total + look.base, look.format)
    if look.show == "today":
        return format_number(today, look.format)
    if look.show == "both":
        return f"{format_number(today, look.format)} / {shown_total}"
    return shown_total


# Measuring #################################################################


class _Measurer:
    """badgepy's DejaVu Sans widths, plus sensible widths for other scripts.

    The precalculated table knows Latin, Greek and Cyrillic; any other
    character would get the mean width (about 0.7 em), which makes CJK and
    emoji overflow. Wide characters (East Asian Wide/Fullwidth, most emoji)
    get one em; combining marks and zero-width format characters get none.
    ASCII text is measured exactly as badgepy does, so flat badges stay
    byte-identical to badge().
    """

    EM = 110.0

    def __init__(self) -> None:
        self._base = precalculated_text_measurer.PrecalculatedTextMeasurer.default()

    def text_width(self, text: str) -> float:
        if text.isascii():
            return self._base.text_width(text)
        narrow, wide = [], 0
        for char in text:
            if unicodedata.category(char) in ("Mn", "Me", "Cf"):
                continue
            if unicodedata.east_asian_width(char) in ("W", "F"):
                wide += 1
            else:
                narrow.append(char)
        return self._base.text_width("".join(narrow)) + wide * self.EM


MEASURER = _Measurer()


class WidthTable:
    """One of the width tables shields.io measures with (fonts/, made by
    scripts/width_tables.py from the npm package anafanafo), read as
    anafanafo reads it: ranges of code points with a width in px, controls
    0, any character the table lacks as wide as "m".

    >>> round(VERDANA_11.width("visitors"), 2)
    39.71
    """

    def __init__(self, name: str):
        ranges = json.loads(gzip.decompress((FONTS / f"{name}.json.gz").read_bytes()))
        # Three flat arrays, not 11,000 small lists: about 0.2 MB a table
        # instead of 2 MB (the server's memory goal is 60 MB).
        self._starts = array.array("l", (first for first, _, _ in ranges))
        self._ends = array.array("l", (last for _, last, _ in ranges))
        self._widths = array.array("d", (width for _, _, width in ranges))
        self._em = self.width("m")

    @functools.lru_cache(maxsize=4096)
    def _char(self, code: int) -> float | None:
        if code <= 31 or code == 127:
            return 0.0
        i = bisect.bisect_right(self._starts, code) - 1
        if i >= 0 and code <= self._ends[i]:
            return self._widths[i]
        return None

    def width(self, text: str) -> float:
        total = 0.0
        for char in text:
            w = self._char(ord(char))
            total += self._em if w is None else w
        return total


FONTS = Path(__file__).with_name("fonts")
VERDANA_11 = WidthTable("verdana-11px-normal")
VERDANA_10 = WidthTable("verdana-10px-normal")
VERDANA_10_BOLD = WidthTable("verdana-10px-bold")
HELVETICA_11_BOLD = WidthTable("helvetica-11px-bold")


def _preferred(table: WidthTable, text: str) -> int:
    """shields' preferredWidthOf: whole pixels, rounded up to odd."""
    return _odd(table.width(text))


def _utf16_length(text: str) -> int:
    # shields counts letter spacing by JavaScript's string length.
    return len(text.encode("utf-16-le")) // 2


def _num(x: float) -> str:
    """A number as JavaScript prints it (126.75, 280), never float noise."""
    return str(int(x)) if x == int(x) else repr(round(x, 6))


def _odd(width: float) -> int:
    # shields.io: round widths up to odd for pixel-grid alignment.
    n = int(width)
    return n + 1 if n % 2 == 0 else n


esc = functools.partial(html.escape, quote=True)

# A character that never reaches a badge (params.py refuses controls): it
# marks where the number goes in a cached template.
_SLOT = "\x00"


# Styles ####################################################################


# A text node: from a tag's end to the next tag (attributes escape ">").
_TEXT = re.compile(r">[^<]+<")


def _flat(look: Look, label: str, value: str) -> str:
    """badgepy's badge() with its <title>, made accessible like shields'
    badges (role and aria-label), and with shields' dark text on a light side."""
    svg = badgepy.badge(left_text=label, right_text=value, left_color=look.label_color,
                        right_color=look.color, logo=look.logo, measurer=MEASURER,
                        whole_title=f"{label}: {value}")
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{esc(label)}: {value}" ', 1)
    # badgepy writes through minidom, which stopped escaping '"' in text in
    # Python 3.13: escape it as every other style does, so a badge keeps its
    # bytes when the box's Python is upgraded.
    svg = _TEXT.sub(lambda text: text[0].replace('"', "&quot;"), svg)
    # badgepy draws four texts, each side's shadow then its text, in white:
    # a light side gets shields' #333 text and #ccc shadow instead.
    parts = svg.split("<text")
    for side, background in enumerate((look.label_color, look.color)):
        fill, shadow = _text_colors(background)
        if fill != "#fff":
            shadow_part, text_part = 1 + 2 * side, 2 + 2 * side
            parts[shadow_part] = parts[shadow_part].replace('fill="#010101"', f'fill="{shadow}"', 1)
            parts[text_part] = f' fill="{fill}"' + parts[text_part]
    return "<text".join(parts)


@dataclasses.dataclass(frozen=True)
class _Classic:
    """shields.io's two-rectangle styles, which differ only in these numbers."""

    height: int
    text_dy: int          # vertical offset of the text baseline
    radius: int           # 0: square corners, no gradient, no shadow (flat-square)
    stops: tuple[tuple[str, str, str], ...]  # gradient: offset, colour, opacity


_PLASTIC = _Classic(height=18, text_dy=-10, radius=4, stops=(
    ("0", "#fff", ".7"), (".1", "#aaa", ".1"), (".9", "#000", ".3"), ("1", "#000", ".5")))
_FLAT_SQUARE = _Classic(height=20, text_dy=0, radius=0, stops=())


def _classic(spec: _Classic, look: Look, label: str, value: str) -> str:
    logo_width = 14 + (3 if label else 0) if look.logo else 0
    label_width = _preferred(VERDANA_11, label) if label else 0
    value_width = _preferred(VERDANA_11, value)
    left = label_width + 10 + logo_width
    right = value_width + 10
    width = left + right
    h = spec.height
    square = spec.radius == 0

    def text(x_margin: float, text_width: int, content: str, background: str) -> str:
        fill, shadow = _text_colors(background)
        x = 10 * (x_margin + 0.5 * text_width + 5)
        common = f'x="{_num(x)}" transform="scale(.1)" textLength="{text_width * 10}"'
        main = f'<text {common} y="{140 + spec.text_dy}" fill="{fill}">{content}</text>'
        if square:  # shields' flat-square has no text shadow
            return main
        return (f'<text aria-hidden="true" {common} y="{150 + spec.text_dy}" fill="{shadow}" '
                f'fill-opacity=".3">{content}</text>' + main)

    stops = "".join(f'<stop offset="{o}" stop-color="{c}" stop-opacity="{a}"/>'
                    for o, c, a in spec.stops)
    logo = (f'<image x="5" y="{_num((h - 14) / 2)}" width="14" height="14" '
            f'xlink:href="{esc(look.logo)}"/>' if look.logo else "")
    rects = (f'<rect width="{left}" height="{h}" fill="{esc(look.label_color)}"/>'
             f'<rect x="{left}" width="{right}" height="{h}" fill="{esc(look.color)}"/>')
    if square:
        background = f'<g shape-rendering="crispEdges">{rects}</g>'
    else:
        background = (
            f'<linearGradient id="s" x2="0" y2="100%">{stops}</linearGradient>'
            f'<clipPath id="r"><rect width="{width}" height="{h}" rx="{spec.radius}" '
            f'fill="#fff"/></clipPath>'
            f'<g clip-path="url(#r)">{rects}<rect width="{width}" height="{h}" fill="url(#s)"/></g>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{h}" role="img" aria-label="{esc(label)}: {value}">'
        f'<title>{esc(label)}: {value}</title>{background}'
        f'<g text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        f'text-rendering="geometricPrecision" font-size="110">{logo}'
        + (text(logo_width + 1, label_width, esc(label), look.label_color) if label else "")
        + text(left - 1, value_width, value, look.color)
        + "</g></svg>")


def _for_the_badge(look: Look, label: str, value: str) -> str:
    # shields.io: 28px high, 10px Verdana in capitals with 1.25px letter
    # spacing, the value in bold Verdana (measured with its own table).
    label, value = label.upper(), value.upper()
    label_width = (int(VERDANA_10.width(label)) + 1.25 * _utf16_length(label)) if label else 0
    value_width = int(VERDANA_10_BOLD.width(value)) + 1.25 * _utf16_length(value)
    label_x = 9 + 14 + 6 if look.logo else 12
    left = label_x + label_width + 12 if label else (2 * 9 + 14 if look.logo else 0)
    right = 24 + value_width
    width = left + right
    label_fill, _ = _text_colors(look.label_color)
    value_fill, _ = _text_colors(look.color)
    logo = (f'<image x="9" y="7" width="14" height="14" xlink:href="{esc(look.logo)}"/>'
            if look.logo else "")
    label_text = (f'<text transform="scale(.1)" x="{_num(10 * (label_x + label_width / 2))}" y="175" '
                  f'textLength="{_num(10 * label_width)}" fill="{label_fill}">{esc(label)}</text>'
                  if label else "")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{_num(width)}" height="28" role="img" aria-label="{esc(label)}: {value}">'
        f'<title>{esc(label)}: {value}</title>'
        f'<g shape-rendering="crispEdges"><rect width="{_num(left)}" height="28" fill="{esc(look.label_color)}"/>'
        f'<rect x="{_num(left)}" width="{_num(right)}" height="28" fill="{esc(look.color)}"/></g>'
        f'<g text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        f'text-rendering="geometricPrecision" font-size="100">{logo}{label_text}'
        f'<text transform="scale(.1)" x="{_num(10 * (left + 12 + value_width / 2))}" y="175" '
        f'textLength="{_num(10 * value_width)}" fill="{value_fill}" font-weight="bold">{value}</text>'
        f'</g></svg>')


@dataclasses.dataclass(frozen=True)
class _Button:
    """The colours of the social style's button and bubble."""

    face: str
    bubble: str
    border: str
    text: str
    shadow: str


# shields.io's light button, and a dark one like GitHub's dark buttons
# (Primer's dark theme: #21262d face, #363b42 border, #c9d1d9 text).
_LIGHT_BUTTON = _Button(face="#fcfcfc", bubble="#fafafa", border="#d5d5d5", text="#333",
                        shadow="#fff")
_DARK_BUTTON = _Button(face="#21262d", bubble="#161b22", border="#363b42", text="#c9d1d9",
                       shadow="#010409")


def _social(look: Look, label: str, value: str) -> str:
    # shields.io: a light button with the capitalised label and a speech
    # bubble with the value, bold 11px Helvetica (measured with its table).
    b = _DARK_BUTTON if look.theme == "dark" else _LIGHT_BUTTON
    label = label[:1].upper() + label[1:]
    logo_width = 14 + (3 if label else 0) if look.logo else 0
    label_width = _preferred(HELVETICA_11_BOLD, label)
    value_width = _preferred(HELVETICA_11_BOLD, value)
    label_rect = label_width + logo_width + 10
    value_rect = value_width + 8
    width = label_rect + 1 + 6 + value_rect
    bubble_x = label_rect + 6.5
    logo = (f'<image x="5" y="3" width="14" height="14" xlink:href="{esc(look.logo)}"/>'
            if look.logo else "")
    label_x = 10 * (logo_width + label_width / 2 + 5)
    value_x = 10 * (label_rect + 6 + value_rect / 2)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{_num(width)}" height="20" role="img" aria-label="{esc(label)}: {value}">'
        f'<title>{esc(label)}: {value}</title>'
        f'<linearGradient id="a" x2="0" y2="100%"><stop offset="0" stop-color="{b.face}" '
        f'stop-opacity="0"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<g stroke="{b.border}"><rect stroke="none" fill="{b.face}" x="0.5" y="0.5" '
        f'width="{label_rect}" height="19" rx="2"/>'
        f'<rect x="{_num(bubble_x)}" y="0.5" width="{value_rect}" height="19" rx="2" fill="{b.bubble}"/>'
        f'<rect x="{label_rect + 6}" y="7.5" width="0.5" height="5" stroke="{b.bubble}"/>'
        f'<path d="M{_num(bubble_x)} 6.5 l-3 3v1 l3 3" stroke="{b.border}" fill="{b.bubble}"/></g>{logo}'
        # aria-hidden: the root's aria-label already says it all (as shields does).
        f'<g aria-hidden="true" fill="{b.text}" text-anchor="middle" '
        f'font-family="Helvetica Neue,Helvetica,Arial,sans-serif" '
        f'text-rendering="geometricPrecision" font-weight="700" font-size="110px">'
        f'<rect stroke="{b.border}" fill="url(#a)" x=".5" y=".5" width="{label_rect}" height="19" rx="2"/>'
        f'<text aria-hidden="true" x="{_num(label_x)}" y="150" fill="{b.shadow}" transform="scale(.1)" '
        f'textLength="{label_width * 10}">{esc(label)}</text>'
        f'<text x="{_num(label_x)}" y="140" transform="scale(.1)" textLength="{label_width * 10}">'
        f'{esc(label)}</text>'
        f'<text aria-hidden="true" x="{_num(value_x)}" y="150" fill="{b.shadow}" transform="scale(.1)" '
        f'textLength="{value_width * 10}">{value}</text>'
        f'<text x="{_num(value_x)}" y="140" transform="scale(.1)" textLength="{value_width * 10}">'
        f'{value}</text></g></svg>')


PIXEL_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'

# style name -> function(look, label, value) -> SVG
_STYLES = {
    "flat": _flat,
    "flat-square": lambda look, label, value: _classic(_FLAT_SQUARE, look, label, value),
    "plastic": lambda look, label, value: _classic(_PLASTIC, look, label, value),
    "for-the-badge": _for_the_badge,
    "social": _social,
    "pixel": lambda look, label, value: PIXEL_SVG,
}
STYLES = tuple(_STYLES)


# Rendering #################################################################


def render_fresh(look: Look, value: str) -> str:
    """Render without the template cache (the reference for the cache)."""
    if look.theme == "auto" and look.style != "pixel":
        return both(_draw(look, value), _draw(for_scheme(look, "dark"), value))
    return _draw(for_scheme(look, look.theme), value)


def _draw(look: Look, value: str) -> str:
    return _STYLES[look.style](look, look.label, value)


# Themes ####################################################################

THEMES = ("light", "dark", "auto")
# The one rule of an auto SVG: its light drawing shows unless the reader's
# colour scheme is dark. It never changes, so the SVG's Content-Security-
# Policy allows this style by its hash alone (answers.py).
THEME_STYLE = ("@media (prefers-color-scheme:dark){.tally-light{display:none}"
               ".tally-dark{display:inline}}")
_DARK_GROUP = '<g class="tally-dark" display="none">'
# The root element and its title; labels are escaped, so no ">" inside.
_ROOT = re.compile(r"<svg [^>]*>(?:<title>[^<]*</title>)?")
# An id and a reference to it; text is escaped, so '"url(#' is never text.
_IDS = re.compile(r'( id="|"url\(#)([A-Za-z]+)')


def for_scheme(look: Look, scheme: str) -> Look:
    """The look drawn for one colour scheme: the dark one takes the dark
    colours (the light ones where none are given) and, in the social style,
    the dark button."""
    if scheme != "dark":
        return look
    return dataclasses.replace(look, theme="dark",
                               label_color=look.label_color_dark or look.label_color,
                               color=look.color_dark or look.color)


def both(light: str, dark: str) -> str:
    """One SVG holding both drawings (of one size), switched by
    THEME_STYLE: one image, one fetch, one count. Without CSS the light
    drawing shows (the dark one's display="none"). The dark drawing's ids
    get a suffix, so its references stay its own."""
    head, dark_head = _ROOT.match(light), _ROOT.match(dark)
    assert head and dark_head and light.endswith("</svg>") and dark.endswith("</svg>")
    dark_body = _IDS.sub(r"\1\2-dark", dark[dark_head.end():-6])
    return (f"{head.group(0)}<style>{THEME_STYLE}</style>"
            f'<g class="tally-light">{light[head.end():-6]}</g>'
            f"{_DARK_GROUP}{dark_body}</g></svg>")


# How many text elements carry the value in each style (a shadow and the
# text, or the text alone). They come after the label's.
_VALUE_TEXTS = {"flat": 2, "flat-square": 1, "plastic": 2, "social": 2, "for-the-badge": 1}


def _fragments(look: Look, shape: str) -> tuple[str, ...]:
    """The badge for a value shape, split where the value's text goes.

    The shape is rendered, then the value's places are cut out of each
    drawing (an auto badge has two, see both).
    """
    svg = render_fresh(look, shape)
    if look.style == "pixel":
        return (svg,)
    shown = shape.upper() if look.style == "for-the-badge" else shape
    fragments = [""]
    for drawing in re.split(f"(?={re.escape(_DARK_GROUP)})", svg):
        first, *rest = _cut(drawing, shown, _VALUE_TEXTS[look.style])
        fragments[-1] += first
        fragments.extend(rest)
    return tuple(fragments)


def _cut(svg: str, shown: str, value_texts: int) -> list[str]:
    """One drawing split at the value's places: its last text elements (the
    label's come first, so a label that reads like the value is never taken
    for it) and the end of the title and aria-label ("label: value")."""
    parts = re.split(f'(>{re.escape(shown)}</text>|: {re.escape(shown)}(?=</title>|"))', svg)
    texts = [i for i in range(1, len(parts), 2) if parts[i].startswith(">")]
    places = set(texts[-value_texts:])
    places |= {i for i in range(1, len(parts), 2) if not parts[i].startswith(">")}
    fragments, current = [], ""
    for i, part in enumerate(parts):
        if i in places:
            at = part.index(shown)
            fragments.append(current + part[:at])
            current = part[at + len(shown):]
        else:
            current += part
    fragments.append(current)
    return fragments


_templates = functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)(_fragments)
_logo_templates = functools.lru_cache(maxsize=LOGO_TEMPLATE_CACHE_SIZE)(_fragments)


def render(look: Look, total: int, today: int) -> str:
    """The badge SVG for a page's counts."""
    value = message(look, total, today)
    cache = _logo_templates if look.logo else _templates
    fragments = cache(look, re.sub(r"[0-9]", "0", value))
    shown = value.upper() if look.style == "for-the-badge" else value
    return shown.join(fragments)


def render_error(label: str, problem: str, style: str = "flat") -> str:
    """An error badge: the label and a few words saying what is wrong, in
    the style the request asked for when that style itself was valid."""
    if style == "pixel":  # a pixel would hide the error: it is drawn flat
        style = "flat"
    return render_fresh(Look(label=label, label_color=DEFAULT_LABEL_COLOR, color=ERROR_COLOR,
                             style=style), esc(problem))


def plain_badge(label: str, value: str) -> str:
    """A plain badgepy.badge() call with Tally's colours (the benchmark's baseline)."""
    return badgepy.badge(left_text=label, right_text=value, left_color=DEFAULT_LABEL_COLOR,
                         right_color=DEFAULT_COLOR)
