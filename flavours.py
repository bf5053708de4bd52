"""Other hosted counters' badge URLs ("flavours"), served as they were.

A person moving from Hits, komarev's profile counter, hits.sh, dwyl's hits
or visitorbadge.io changes only the host of their badge URL. Each service is
one small table below: its paths, its parameter names and defaults, its key
rule, its number format. A request is turned into the same BadgeQuery the
native /badge uses, so counting, limits, caching and rendering are shared.

Each flavour stores its counters under page ids with its own prefix
("hits:github.com/alice/repo"), so keys of different services never collide
and the owner commands, /stats and /api/count work on them as on any page.

Pure functions of the path and query: no bottle, no database, no SVG here.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import re
import urllib.parse
from typing import Callable

import params
import routes
from config import flag_word
from params import BadgeQuery, ParamError


@dataclasses.dataclass(frozen=True)
class Flavour:
    name: str                                # also the page id prefix: "<name>:<key>"
    title: str                               # for the docs and the builder
    defaults: dict[str, str]                 # Tally option -> value, as the service drew it
    # Old parameter -> (Tally option, conversion); a conversion returns None
    # for "leave the default" (a simple-icons name Tally cannot draw).
    options: dict[str, tuple[str, Callable[[str], str | None]]]
    key_names: tuple[str, ...] = ()          # query parameters the key is read from
    extra: tuple[str, ...] = ()              # read by a small function of their own
    ignored: tuple[str, ...] = ()            # accepted, no effect (listed in docs/moving.md)
    camo_only: bool = False                  # counts only GitHub's image proxy

    @property
    def known(self) -> frozenset[str]:
        return frozenset((*self.options, *self.key_names, *self.extra, *self.ignored))


@dataclasses.dataclass(frozen=True)
class Route:
    """What a path asks of a flavour."""

    flavour: Flavour
    answer: str          # "badge", "chart", "shields-json", "urn-json", "status-json"
    counts: bool         # keep / preview / status never count
    key: str | None = None          # a key carried in the path (hits.sh, dwyl)
    show: str | None = None         # visitorbadge.io's three paths differ only in this


def _same(value: str) -> str:
    return value


def _flag(value: str) -> bool:
    """The old services' flags: anything but a yes is a no."""
    return flag_word(value.strip()) is True


def _data_logo(value: str) -> str | None:
    # hits.sh takes a simple-icons name or a data URI; only the latter can
    # be drawn here (no well-kept Python package ships simple-icons).
    return value if value.startswith("data:") else None


# Key rules ##################################################################

_GITHUB_USER = re.compile(r"[a-z\d](?:[a-z\d]|-(?=[a-z\d])){0,38}", re.IGNORECASE | re.ASCII)
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?![0-9])")


def hits_key(url: str | None) -> str:
    """Hits (seeyoufarm): host lowercased without port, plus the path.

    >>> hits_key("https://GitHub.com:443/alice/repo?tab=1#top")
    'github.com/alice/repo'
    >>> hits_key("github.com/alice/repo/")
    'github.com/alice/repo/'
    >>> hits_key("javascript:alert(1)")
    Traceback (most recent call last):
    params.ParamError: invalid url
    >>> hits_key("http://[x")
    Traceback (most recent call last):
    params.ParamError: invalid url
    """
    if not url:
        raise ParamError("missing url")
    text = url.strip()
    # A scheme is letters before a colon not followed by a port number:
    # "javascript:x" has one, "github.com:443/x" has none (Hits read a URL
    # without a scheme as http).
    if not _SCHEME.match(text):
        text = "http://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        hostname = parts.hostname
    except ValueError:  # "http://[x": urllib refuses a bracket it cannot read
        raise ParamError("invalid url") from None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        raise ParamError("invalid url")
    return hostname.lower() + parts.path


def komarev_key(username: str | None) -> str:
    """GitHub's username rules; komarev lowercased the name.

    >>> komarev_key("Alice-Smith")
    'alice-smith'
    """
    if not username or not username.strip():
        raise ParamError("missing username")
    if not _GITHUB_USER.fullmatch(username.strip()):
        raise ParamError("invalid username")
    return username.strip().lower()


def hitssh_key(urn: str) -> str:
    """hits.sh's normalisation: no scheme, fragment, backslashes, leading
    or trailing slashes; case kept; it must contain a dot.

    >>> hitssh_key("https://github.com/Alice/Repo/")
    'github.com/Alice/Repo'
    """
    text = urn.strip()
    if ":/" in text:
        text = text[text.index(":/") + 2:]
    text = text.split("#", 1)[0].replace("\\", "/").lstrip("/").rstrip("/?")
    if "." not in text:
        raise ParamError("invalid urn")
    if len(text) > 250:
        raise ParamError("urn too long")
    return text


def dwyl_key(path: str) -> str:
    """user/repo as written (case kept), each part as dwyl's hits accepted it.

    >>> dwyl_key("alice/my-repo")
    'alice/my-repo'
    """
    user, _, repo = path.partition("/")
    if not _GITHUB_USER.fullmatch(user) or not _REPO.fullmatch(repo):
        raise ParamError("invalid user or repository")
    return path


def visitorbadge_key(path: str | None, user: str | None, repo: str | None) -> str:
    """visitorbadge.io: `path` as given, or user + repo as the GitHub URL."""
    if path:
        return path
    if user and repo:
        return f"https://github.com/{dwyl_key(f'{user}/{repo}')}"
    raise ParamError("missing path")


# The services ###############################################################

# Tally's theme options (issue 31), taken by every old URL under Tally's own
# names: none of the old services had a parameter of these names.
THEMED = {"theme": ("theme", _same), "left_color_dark": ("label_color_dark", _same),
          "right_color_dark": ("color_dark", _same)}

HITS = Flavour(
    name="hits", title="Hits (hits.seeyoufarm.com)",
    defaults={"label": "hits", "label_color": "#555", "color": "#79c83d", "show": "both"},
    options={**THEMED, "title": ("label", _same), "title_bg": ("label_color", _same),
             "count_bg": ("color", _same),
             "edge_flat": ("style", lambda v: "flat-square" if _flag(v) else "flat")},
    key_names=("url",), ignored=("icon", "icon_color"))

# komarev's styles: each of Tally's but social, which komarev never drew.
KOMAREV_STYLES = tuple(style for style in params.STYLES if style != "social")

KOMAREV = Flavour(
    name="ghpvc", title="GitHub Profile Views Counter (komarev.com/ghpvc)",
    defaults={"label": "Profile views", "label_color": "#555", "color": "blue", "format": "comma"},
    options={**THEMED, "label": ("label", _same), "color": ("color", _same),
             # komarev drew an unknown style as flat instead of refusing it.
             "style": ("style", lambda v: v if v in KOMAREV_STYLES else "flat"),
             "base": ("base", _same),
             "abbreviated": ("format", lambda v: "abbreviated" if v not in ("", "0") else None)},
    key_names=("username",), camo_only=True)

HITSSH = Flavour(
    name="hitssh", title="hits.sh",
    defaults={"label": "hits", "label_color": "#555", "color": "#4c1", "format": "comma"},
    options={**THEMED, "label": ("label", _same), "labelColor": ("label_color", _same),
             "color": ("color", _same), "style": ("style", _same),
             "extraCount": ("base", _same), "logo": ("logo", _data_logo),
             "view": ("show", lambda v: "both" if v.lower() == "today-total" else "total")},
    ignored=("link", "logoWidth"))

DWYL = Flavour(
    name="dwyl", title="hits.dwyl.com",
    defaults={"label": "hits", "label_color": "#555", "color": "#4c1"},
    # dwyl's badge had two drawings: flat, and flat-square for anything else.
    # show=unique asked for unique visitors: Tally's visitors now.
    options={**THEMED, "style": ("style", lambda v: "flat" if v == "flat" else "flat-square"),
             "show": ("show", lambda v: "visitors" if v.lower() == "unique" else None)},
    extra=("color",))

VISITORBADGE = Flavour(
    name="visitorbadge", title="visitorbadge.io",
    defaults={"label": "visitors", "label_color": "#555555", "color": "#263759"},
    options={**THEMED, "label": ("label", _same), "labelColor": ("label_color", _same),
             "countColor": ("color", _same), "style": ("style", _same)},
    key_names=("path", "user", "repo"), extra=("labelStyle", "readonly"))

FLAVOURS = (HITS, KOMAREV, HITSSH, DWYL, VISITORBADGE)
# params.py names the prefixes (it validates ids without importing this).
assert {f.name for f in FLAVOURS} == params.SERVICE_PREFIXES

# Fixed paths; hits.sh and dwyl carry their key in the path (match_path).
_FIXED = {
    "/api/count/incr/badge.svg": Route(HITS, "badge", counts=True),
    "/api/count/keep/badge.svg": Route(HITS, "badge", counts=False),
    "/api/count/graph/dailyhits.svg": Route(HITS, "chart", counts=False),
    "/ghpvc": Route(KOMAREV, "badge", counts=True),
    "/ghpvc/": Route(KOMAREV, "badge", counts=True),
    "/api/visitors": Route(VISITORBADGE, "badge", counts=True, show="total"),
    "/api/daily": Route(VISITORBADGE, "badge", counts=True, show="today"),
    "/api/combined": Route(VISITORBADGE, "badge", counts=True, show="both"),
    "/api/status": Route(VISITORBADGE, "status-json", counts=False),
}
FIXED_PATHS = tuple(_FIXED)


def match_path(path: str) -> Route | None:
    """The flavour route of a path, or None.

    A first path segment with a dot is hits.sh (/github.com/alice/repo.svg);
    two segments without one are dwyl (/alice/repo.svg). Tally's own routes
    are matched before this is asked.

    >>> match_path("/github.com/alice/repo.svg").key, match_path("/alice/repo.json").answer
    ('github.com/alice/repo', 'shields-json')
    """
    if path in _FIXED:
        return _FIXED[path]
    if path.startswith("/api/urns/"):
        return Route(HITSSH, "urn-json", counts=False, key=path[len("/api/urns/"):])
    if path[1:].split("/", 1)[0] in routes.OWN_SEGMENTS:
        return None
    for suffix, counts in ((".svg", True), (".preview", False), (".json", True)):
        if not path.endswith(suffix) or len(path) <= len(suffix) + 1:
            continue
        inner = path[1:-len(suffix)]
        # One segment is hits.sh too: its key rule then refuses a name
        # without a dot with an error badge, as hits.sh did.
        if ("." in inner.split("/", 1)[0] or "/" not in inner) and suffix != ".json":
            return Route(HITSSH, "badge", counts=counts, key=inner)
        if inner.count("/") == 1 and suffix != ".preview":
            return Route(DWYL, "badge" if suffix == ".svg" else "shields-json", counts=True,
                         key=inner)
    return None


def badge_query(route: Route, query_string: str) -> BadgeQuery:
    """The BadgeQuery of an old URL: the service's defaults, its options
    as the request gives them, and its key under the flavour's prefix."""
    flavour = route.flavour
    values = params.parse_query_string(query_string, flavour.known)
    key = _key(route, values)
    options = {option: (option, value) for option, value in flavour.defaults.items()}
    for name, (option, convert) in flavour.options.items():
        if name in values:
            converted = convert(values[name])
            if converted is not None:
                options[option] = (name, converted)
    if route.show is not None:
        options["show"] = ("path", route.show)
    if flavour is VISITORBADGE:
        options["label"] = (options["label"][0],
                            _label_style(options["label"][1], values.get("labelStyle", "")))
    look = params.look_from(options)
    counts = route.counts and not _flag(values.get("readonly", ""))
    page_id = params.validate_page_id(f"{flavour.name}:{key}")
    return BadgeQuery(page_id, counts, look, camo_only=flavour.camo_only)


def _key(route: Route, values: dict[str, str]) -> str:
    flavour = route.flavour
    if flavour is HITS:
        return hits_key(values.get("url"))
    if flavour is KOMAREV:
        return komarev_key(values.get("username"))
    if flavour is HITSSH:
        return hitssh_key(route.key or "")
    if flavour is DWYL:
        return dwyl_key(route.key or "")
    return visitorbadge_key(values.get("path"), values.get("user"), values.get("repo"))


def _label_style(label: str, style: str) -> str:
    return {"upper": label.upper(), "lower": label.lower()}.get(style.lower(), label)


def label_for_error(route: Route, query_string: str) -> str:
    """The label an error badge of this flavour shows: the request's when valid."""
    flavour = route.flavour
    try:
        values = params.parse_query_string(query_string, flavour.known)
    except ParamError:
        values = {}
    for name, (option, _) in flavour.options.items():
        if option == "label" and name in values:
            try:
                return params.look_from({"label": (name, values[name])}).label
            except ParamError:
                break
    return flavour.defaults.get("label", "visitors")


# Answers other than a badge #################################################


def shields_json(query_string: str, message: str) -> dict:
    """dwyl's .json: shields.io's endpoint schema, as dwyl wrote it (its
    colour parameter, lightgrey by default, applies here only)."""
    values = params.parse_query_string(query_string, DWYL.known)
    color = params.look_from({"color": ("color", values.get("color", "lightgrey"))}).color
    return {"schemaVersion": 1, "label": "hits", "message": message, "color": color,
            "style": values.get("style", "flat")}


def urn_json(total: int, days: dict[str, int], today: str) -> dict:
    """hits.sh's /api/urns/<urn>: total, the last month and week, and every
    day grouped by year."""
    now = datetime.date.fromisoformat(today)
    month = (now - datetime.timedelta(days=30)).isoformat()
    week = (now - datetime.timedelta(days=7)).isoformat()
    years: dict[str, list[tuple[str, int]]] = {}
    for day, views in sorted(days.items()):
        years.setdefault(day[:4], []).append((day, views))
    return {"total": total,
            "monthly": sum(v for d, v in days.items() if d > month),
            "weekly": sum(v for d, v in days.items() if d > week),
            "items": [{"from": entries[0][0], "to": entries[-1][0],
                       "data": [{"day": d, "value": v} for d, v in entries]}
                      for _, entries in sorted(years.items())]}


# Old badge URLs in a person's files (migrate) ###############################

OLD_HOSTS = {
    "hits.seeyoufarm.com": "Hits", "komarev.com": "komarev", "hits.sh": "hits.sh",
    "hits.dwyl.com": "dwyl", "api.visitorbadge.io": "visitorbadge.io",
    "visitor-badge.glitch.me": "visitor-badge", "visitor-badge.laobi.icu": "visitor-badge (laobi.icu)",
}
# A URL in Markdown, HTML or reStructuredText ends at whitespace, a quote,
# an angle bracket, a closing parenthesis or bracket, or a backtick (inline
# code's end).
OLD_URL = re.compile(r"https?://(?:www\.)?(%s)(/[^\s\"'<>)\]`]*)" %
                     "|".join(re.escape(h) for h in OLD_HOSTS), re.IGNORECASE)


def page_id_of(path_and_query: str) -> str:
    """The Tally page id an old badge URL's path and query count under.

    >>> page_id_of("/ghpvc/?username=Alice")
    'ghpvc:alice'
    >>> page_id_of("/badge?page_id=alice.repo&left_color=red")
    'alice.repo'
    """
    path, _, query = path_and_query.split("#", 1)[0].partition("?")
    if path == "/badge":  # visitor-badge and laobi.icu: Tally's own /badge
        return params.parse_badge_query(params.parse_query_string(query)).page_id
    route = match_path(urllib.parse.unquote(path))
    if route is None or route.answer not in ("badge", "shields-json"):
        raise ParamError("not a counter badge URL")
    return badge_query(route, query).page_id


def moved(url: str) -> tuple[str, str]:
    """(page id, path and query) of an old counter's badge URL, or ParamError.

    The path and query are kept byte for byte: the Tally URL is the same URL
    on another host. `&amp;` (HTML) is read as `&` for the page id only.

    >>> moved("https://komarev.com/ghpvc/?username=alice&amp;style=flat")
    ('ghpvc:alice', '/ghpvc/?username=alice&amp;style=flat')
    """
    match = OLD_URL.fullmatch(url.strip())
    if not match:
        raise ParamError("not a known counter URL")
    path_and_query = match.group(2)
    return page_id_of(html.unescape(path_and_query)), path_and_query
