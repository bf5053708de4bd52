"""Validation of what arrives from outside: query parameters and page ids.

Everything a request or a command line gives Tally passes through here once,
at the edge; inside, values are trusted. Pure functions: this module imports
neither bottle nor the database driver nor the renderer.

A problem is a ParamError whose message is the few words an error badge shows
("invalid left_color"). Messages are built from parameter names only, never
from the value received, so they are safe to put in a header or a log.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import re
import unicodedata
import urllib.parse

import badge
from config import flag_word
from storage import TOTAL_MAX  # a value of the stores; checked here at the edge

PAGE_ID_MAX = 256
# The page id prefixes of the old services' URLs (flavours.py: each
# flavour's name). An id "<prefix>:<key>" belongs to that service's URL
# alone: its key may be PAGE_ID_MAX long, and Tally's own /badge never
# counts into it.
SERVICE_PREFIXES = frozenset({"hits", "ghpvc", "hitssh", "dwyl", "visitorbadge"})
LABEL_MAX = 64
BASE_MAX = 10**12
LOGO_MAX_BYTES = 8192
HISTORY_DAYS_MAX = 365
CHART_DAYS_MIN = 7  # fewer bars than a week say nothing a badge does not
MAX_FIELDS = 200

STYLES = badge.STYLES  # the styles badge.py draws, in its order
THEMES = badge.THEMES  # light (the default), dark, auto
FORMATS = ("plain", "comma", "short", "abbreviated")
SHOWS = ("total", "today", "both", "visitors", "visitors_today", "clones")
# What only a github: page has (GitHub's own numbers).
GITHUB_SHOWS = ("clones",)


# Unicode categories refused in ids and labels: controls, lone surrogates
# (what invalid UTF-8 decodes to here), line/paragraph separators, and
# invisible format characters (zero-width space, BOM, bidi overrides).
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp", "Cf"}
# Format characters that emoji and scripts need: the zero-width joiner and
# non-joiner (family emoji, Persian) and the tag characters of flag emoji.
_ALLOWED_FORMAT = re.compile("[\u200c\u200d\U000e0020-\U000e007f]")


class ParamError(ValueError):
    """A request value is invalid; str() is a short, value-free message."""


@dataclasses.dataclass(frozen=True)
class BadgeQuery:
    page_id: str
    count: bool
    look: badge.Look
    # komarev's counter counted only views through GitHub's image proxy.
    camo_only: bool = False


# Each badge option: the canonical name first, then the aliases accepted for
# compatibility. Where a request gives several names of one option, the first
# in this list that is present wins (docs/parameters.md).
_ALIASES = {
    "page_id": ("page_id",),
    "label": ("left_text", "label", "title"),
    "label_color": ("left_color", "labelColor"),
    "color": ("right_color", "color"),
    "style": ("style",),
    "format": ("format",),
    "show": ("show",),
    "base": ("base",),
    "logo": ("logo",),
    "logo_color": ("logoColor",),
    "theme": ("theme",),
    "label_color_dark": ("left_color_dark",),
    "color_dark": ("right_color_dark",),
    "query_only": ("query_only",),
    "increment": ("increment",),
    "days": ("days",),
}
KNOWN_NAMES = frozenset(n for names in _ALIASES.values() for n in names)


def parse_query_string(query_string: str, known: frozenset[str] = KNOWN_NAMES) -> dict[str, str]:
    """Decode a raw query string into {name: value} for the known names
    (Tally's own, or an old service's).

    Invalid UTF-8 turns into lone surrogates, which validation refuses.
    Unknown names are ignored (cache busters such as ?t=123 are common);
    a known name given twice is refused.
    """
    try:
        pairs = urllib.parse.parse_qsl(query_string, keep_blank_values=True,
                                       encoding="utf-8", errors="surrogateescape",
                                       max_num_fields=MAX_FIELDS)
    except ValueError:  # more than MAX_FIELDS fields
        raise ParamError("too many parameters") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in known:
            continue
        if name in values:
            raise ParamError(f"duplicate {name}")
        values[name] = value
    return values


def _pick(values: dict[str, str], option: str) -> tuple[str, str] | None:
    for name in _ALIASES[option]:
        if name in values:
            return name, values[name]
    return None


def has_refused_char(text: str) -> bool:
    """True when text holds a character that XML 1.0 forbids or that hides.

    >>> has_refused_char("a\ufffe"), has_refused_char("\u200b"), has_refused_char("👨\u200d👩")
    (True, True, False)
    """
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES and not _ALLOWED_FORMAT.match(char):
            return True
        code = ord(char)
        # Noncharacters: U+FDD0..U+FDEF and the last two code points of every
        # plane (U+FFFE and U+FFFF are not XML characters at all).
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return True
    return False


def validate_page_id(page_id: str | None, name: str = "page_id") -> str:
    """Return the page id unchanged, or raise ParamError.

    >>> validate_page_id("alice.my-repo")
    'alice.my-repo'
    """
    if page_id is None:
        raise ParamError(f"missing {name}")
    if not isinstance(page_id, str):  # from a JSON import
        raise ParamError(f"invalid {name}")
    if page_id == "" or page_id.isspace():
        raise ParamError(f"empty {name}")
    if len(page_id) > PAGE_ID_MAX and (
            len(page_id.partition(":")[2]) > PAGE_ID_MAX or not is_service_id(page_id)):
        raise ParamError(f"{name} too long")
    if has_refused_char(page_id):
        raise ParamError(f"invalid {name}")
    return page_id


def is_service_id(page_id: str) -> bool:
    """True for an old service's page id ("hits:github.com/a/b").

    >>> is_service_id("ghpvc:alice"), is_service_id("alice:repo")
    (True, False)
    """
    prefix, colon, _ = page_id.partition(":")
    return bool(colon) and prefix in SERVICE_PREFIXES


GITHUB_PREFIX = "github:"
# GitHub's rules: an owner is 1-39 letters, digits or inner hyphens; a
# repository name 1-100 letters, digits, ".", "-" or "_" (not "." or "..").
_GITHUB_REPO = re.compile(r"(?:https?://github\.com/)?([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/"
                          r"([A-Za-z0-9._-]{1,100}?)(?:\.git)?/?")


def github_repo(text: str | None, name: str = "repository") -> str:
    """A GitHub repository as "owner/name", lowercased as GitHub compares
    them (a URL of it is accepted too).

    >>> github_repo("Alice/My-Repo"), github_repo("https://github.com/alice/x.git")
    ('alice/my-repo', 'alice/x')
    """
    match = _GITHUB_REPO.fullmatch((text or "").strip())
    if match is None or match.group(2) in (".", ".."):
        raise ParamError(f"invalid {name}")
    return f"{match.group(1)}/{match.group(2)}".lower()


def github_page(page_id: str) -> str | None:
    """The repository of a github: page id, None for any other page id.

    >>> github_page("github:Alice/Repo"), github_page("alice.repo")
    ('alice/repo', None)
    """
    if not page_id.startswith(GITHUB_PREFIX):
        return None
    return github_repo(page_id[len(GITHUB_PREFIX):], "github: page_id")


def _text(name: str, value: str) -> str:
    if len(value) > LABEL_MAX:
        raise ParamError(f"{name} too long")
    if has_refused_char(value):
        raise ParamError(f"invalid {name}")
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ParamError(f"invalid {name}")
    return value


def _flag(name: str, value: str) -> bool:
    flag = flag_word(value)
    if flag is None:
        raise ParamError(f"invalid {name}")
    return flag


def _color(name: str, value: str) -> str:
    color = badge.normalize_color(value)
    if color is None:
        raise ParamError(f"invalid {name}")
    return color


def _dark_color(name: str, value: str) -> str | None:
    # Empty is "not given" (the builder's form sends its empty field): the
    # dark drawing then takes the light colour.
    return _color(name, value) if value.strip() else None


def _base(name: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,13}", value) or int(value) > BASE_MAX:
        raise ParamError(f"invalid {name}")
    return int(value)


_LOGO_PREFIX = re.compile(r"data:image/(svg\+xml|png);base64,(.*)", re.DOTALL)


def _logo(name: str, value: str) -> str:
    # Only an embedded image is accepted, never a URL: the server must not
    # fetch anything on a visitor's behalf. Decoded and re-encoded here, so
    # what reaches the SVG is built by us.
    match = _LOGO_PREFIX.fullmatch(value.replace(" ", "+"))
    if not match:
        raise ParamError(f"invalid {name}")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise ParamError(f"invalid {name}") from None
    if not data or len(data) > LOGO_MAX_BYTES:
        raise ParamError(f"{name} too large" if data else f"invalid {name}")
    return f"data:image/{match.group(1)};base64,{base64.b64encode(data).decode('ascii')}"


_LOOK_OPTIONS = ("label", "label_color", "color", "logo", "logo_color", "base",
                 "style", "format", "show", "theme", "label_color_dark", "color_dark")


def parse_look(values: dict[str, str]) -> badge.Look:
    """The badge options of a query (everything but page_id and counting)."""
    picked = {option: _pick(values, option) for option in _LOOK_OPTIONS}
    return look_from({option: p for option, p in picked.items() if p is not None})


def look_from(options: dict[str, tuple[str, str]]) -> badge.Look:
    """A look from {option: (name the request used, value)}; errors name
    the request's own parameter. flavours.py builds these for old URLs.

    >>> look_from({"label": ("title", "hits"), "color": ("count_bg", "79c83d")}).color
    '#79c83d'
    """
    parsers = {"label": _text, "label_color": _color, "color": _color, "logo": _logo,
               "logo_color": _color, "base": _base, "label_color_dark": _dark_color,
               "color_dark": _dark_color}
    checked = {}
    for option, (name, value) in options.items():
        if option in parsers:
            checked[option] = parsers[option](name, value)
            continue
        # The laobi.icu visitor-badge fork writes format=true for 1,234.
        if option == "format" and value.lower() in ("true", "false"):
            value = "comma" if value.lower() == "true" else "plain"
        allowed = {"style": STYLES, "format": FORMATS, "show": SHOWS, "theme": THEMES}[option]
        checked[option] = _choice(name, value, allowed)
    return badge.Look(**checked)


def parse_badge_query(values: dict[str, str]) -> BadgeQuery:
    """Validate a /badge query: page_id, whether to count, and the look."""
    page_id = validate_page_id(values.get("page_id"))
    look = parse_look(values)
    # Either spelling of "do not count" wins over the other saying "count".
    count = True
    if "query_only" in values and _flag("query_only", values["query_only"]):
        count = False
    if "increment" in values and not _flag("increment", values["increment"]):
        count = False
    return BadgeQuery(page_id, count, look)


@dataclasses.dataclass(frozen=True)
class ChartQuery:
    page_id: str
    days: int
    visitors: bool         # show=visitors: each day's unique visitors
    title: str | None      # left_text, if given
    look: badge.Look


CHART_SHOWS = ("views", "visitors")


def parse_chart_query(values: dict[str, str]) -> ChartQuery:
    """Validate a /chart query: page_id, days (CHART_DAYS_MIN..365, 30 if
    not given), show (views or visitors) and the badges' look options."""
    page_id = validate_page_id(values.get("page_id"))
    days = parse_days(values.get("days"), least=CHART_DAYS_MIN)
    show = _choice("show", values.get("show", "views"), CHART_SHOWS)
    look = parse_look({name: value for name, value in values.items() if name != "show"})
    title = _pick(values, "label")
    return ChartQuery(page_id, days, show == "visitors", title and look.label, look)


def label_for_error(values: dict[str, str]) -> str:
    """The label to show on an error badge: the request's, when it is valid."""
    picked = _pick(values, "label")
    if picked is not None:
        try:
            return _text(*picked)
        except ParamError:
            pass  # the error badge then says what is wrong with the label
    return badge.DEFAULT_LABEL


def style_for_error(values: dict[str, str]) -> str:
    """The style an error badge is drawn in: the request's, when it is valid."""
    picked = _pick(values, "style")
    return picked[1] if picked is not None and picked[1] in STYLES else "flat"


def parse_days(value: str | None, default: int = 30, least: int = 1) -> int:
    """A number of days, least..HISTORY_DAYS_MAX.

    >>> parse_days(None), parse_days("7", least=CHART_DAYS_MIN)
    (30, 7)
    """
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,3}", value) or not least <= int(value) <= HISTORY_DAYS_MAX:
        raise ParamError("invalid days")
    return int(value)


def parse_day(value: str, name: str = "day") -> str:
    """A UTC day written YYYY-MM-DD.

    >>> parse_day("2026-12-07")
    '2026-12-07'
    """
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ParamError(f"invalid {name}: {value!r} (YYYY-MM-DD)")


def parse_count(value: str, name: str = "count") -> int:
    """A count from a command line or an import file: 0..TOTAL_MAX, ASCII digits.

    >>> parse_count("42"), parse_count(" 7 ")
    (42, 7)
    """
    value = value.strip()
    if not re.fullmatch(r"[0-9]{1,19}", value):
        raise ParamError(f"invalid {name}")
    return check_count(int(value), name)


def check_count(value: int, name: str = "count") -> int:
    """A total or a day's views as an int within 0..TOTAL_MAX."""
    if value > TOTAL_MAX:
        raise ParamError(f"{name} above {TOTAL_MAX}")
    return value


def page_id_from_repo(repo: str) -> str | None:
    """Suggest a page id from a GitHub owner/repo (or its URL).

    >>> page_id_from_repo("https://github.com/alice/my-repo")
    'alice.my-repo'
    """
    match = re.match(r"(?:https?://github\.com/)?([\w.-]+)/([\w.-]+)", repo.strip())
    return f"{match.group(1)}.{match.group(2)}" if match else None
