"""Tally's settings: one frozen dataclass, read from the environment in one
function (from_env) and overridden by command-line flags (with_overrides).

Every setting is listed in docs/settings.md; tests/test_config.py fails
when one is missing there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from typing import Mapping


class ConfigError(ValueError):
    """A setting has a value Tally cannot use; the message names it."""


@dataclasses.dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = "data/counts.db"
    # Threads for the routes bottle answers (the builder page, stats, the
    # JSON endpoints): /badge, /api/count and every old service's URL run on
    # the event loop and need none (docs/performance.md).
    threads: int = 4
    # "full": an answered count survives a power cut; "normal": the last
    # few counts may be lost on power loss (not on a crash), but it is faster.
    sync: str = "full"
    metrics: bool = False
    # A regular expression every page_id must match (None: any page_id).
    allow: str | None = None
    # Cap on distinct page_ids (None: no cap).
    max_pages: int | None = None
    # Views per day are kept for this many days, today included (None:
    # every day); totals and visitors are never touched.
    keep_days: int | None = None
    # Count only requests from GitHub's image proxy.
    camo_only: bool = False
    # Visitors (docs/privacy.md): count each page's unique visitors per day
    # (a salted hash, kept for the day); count known bots' views as views
    # too; write clients' addresses in the access log.
    visitors: bool = True
    count_bots: bool = False
    # The inflation guard (counting.Guard, docs/guard.md): a burst of
    # guard_burst views at once, then up to guard_factor times the page's
    # usual rate, and at least guard_floor views a day; the views beyond
    # are held, never lost.
    guard: bool = True
    guard_burst: int = 60
    guard_factor: float = 10.0
    guard_floor: int = 600
    log_addresses: bool = True
    quiet: bool = False
    # Self-service for page owners on a shared instance (owners.py,
    # docs/owners.md): keys for new counters, claims proved by a README,
    # /manage. Off: a personal instance changes nothing.
    self_service: bool = False
    # A reverse proxy whose X-Forwarded-* headers are believed.
    trusted_proxy: str | None = "127.0.0.1"
    # Limits of the HTTP server (docs/settings.md, "Limits"). Idle and slowly sending
    # connections hold a connection each until channel_timeout: a cap well
    # above what one attacker's idle connections use up in that time.
    connection_limit: int = 10000
    channel_timeout: int = 30
    max_header_bytes: int = 8192
    busy_timeout: float = 5.0
    # GitHub's traffic numbers (github.py): the API's base URL (a GitHub
    # Enterprise Server's is https://HOST/api/v3), the token or a file
    # holding it (read at each sync, so it can be replaced), how often the
    # server syncs, and how long one request to GitHub may take. The token
    # is kept out of repr(): a config printed or logged never shows it.
    github_api: str = "https://api.github.com"
    github_token: str | None = dataclasses.field(default=None, repr=False)
    github_token_file: str | None = None
    github_sync_hours: float = 6.0
    github_timeout: float = 15.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("TALLY_PORT must be 0..65535")
        if not 1 <= self.threads <= 256:
            raise ConfigError("TALLY_THREADS must be 1..256")
        if self.sync not in ("full", "normal"):
            raise ConfigError("TALLY_SYNC must be full or normal")
        if self.max_pages is not None and self.max_pages < 1:
            raise ConfigError("TALLY_MAX_PAGES must be a positive number")
        if self.keep_days is not None and self.keep_days < 1:
            raise ConfigError("TALLY_KEEP_DAYS must be a positive number of days")
        if not 1 <= self.guard_burst <= 1_000_000:
            raise ConfigError("TALLY_GUARD_BURST must be 1..1000000 views")
        if not 1 <= self.guard_factor <= 1000:
            raise ConfigError("TALLY_GUARD_FACTOR must be 1..1000")
        if not 1 <= self.guard_floor <= 1_000_000_000:
            raise ConfigError("TALLY_GUARD_FLOOR must be 1..1000000000 views a day")
        if self.allow is not None:
            try:
                re.compile(self.allow)
            except re.error as e:
                raise ConfigError(f"TALLY_ALLOW is not a regular expression: {e}") from None
        if not 1 <= self.connection_limit <= 100_000:
            raise ConfigError("TALLY_CONNECTION_LIMIT must be 1..100000")
        # granian's own bounds: a header deadline of at most 60 s, a read
        # buffer of at least 8 KB.
        if not 1 <= self.channel_timeout <= 60:
            raise ConfigError("TALLY_IDLE_TIMEOUT must be 1..60 seconds")
        if not 8192 <= self.max_header_bytes <= 1_048_576:
            raise ConfigError("TALLY_MAX_HEADER_BYTES must be 8192..1048576")
        if not 0 <= self.busy_timeout <= 600:
            raise ConfigError("TALLY_BUSY_TIMEOUT must be 0..600 seconds")
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", self.github_api):
            raise ConfigError("TALLY_GITHUB_API must be an http:// or https:// URL")
        if self.github_api.startswith("http://") and not _loopback(self.github_api):
            # The token goes in every request's Authorization header.
            raise ConfigError("TALLY_GITHUB_API: http:// would send the GitHub token in clear; "
                              "use https:// (plain http:// only to this machine's own "
                              "loopback address)")
        if self.github_token is not None and self.github_token_file is not None:
            raise ConfigError("set TALLY_GITHUB_TOKEN or TALLY_GITHUB_TOKEN_FILE, not both")
        if not 0 < self.github_sync_hours <= 168:
            raise ConfigError("TALLY_GITHUB_SYNC_HOURS must be more than 0 and at most 168")
        if not 1 <= self.github_timeout <= 120:
            raise ConfigError("TALLY_GITHUB_TIMEOUT must be 1..120 seconds")

    def with_overrides(self, **flags: object) -> "Config":
        """This config with the command-line flags that were given (not None)."""
        given = {k: v for k, v in flags.items() if v is not None}
        return dataclasses.replace(self, **given)


# Environment variable -> (field, parser)
ENVIRONMENT = {
    "TALLY_HOST": ("host", str),
    "TALLY_PORT": ("port", int),
    "TALLY_DB": ("db", str),
    "TALLY_THREADS": ("threads", int),
    "TALLY_SYNC": ("sync", str.lower),
    "TALLY_METRICS": ("metrics", "flag"),
    "TALLY_ALLOW": ("allow", str),
    "TALLY_MAX_PAGES": ("max_pages", int),
    "TALLY_KEEP_DAYS": ("keep_days", int),
    "TALLY_CAMO_ONLY": ("camo_only", "flag"),
    "TALLY_VISITORS": ("visitors", "flag"),
    "TALLY_COUNT_BOTS": ("count_bots", "flag"),
    "TALLY_GUARD": ("guard", "flag"),
    "TALLY_GUARD_BURST": ("guard_burst", int),
    "TALLY_GUARD_FACTOR": ("guard_factor", float),
    "TALLY_GUARD_FLOOR": ("guard_floor", int),
    "TALLY_LOG_ADDRESSES": ("log_addresses", "flag"),
    "TALLY_QUIET": ("quiet", "flag"),
    "TALLY_TRUSTED_PROXY": ("trusted_proxy", str),
    "TALLY_CONNECTION_LIMIT": ("connection_limit", int),
    "TALLY_IDLE_TIMEOUT": ("channel_timeout", int),
    "TALLY_MAX_HEADER_BYTES": ("max_header_bytes", int),
    "TALLY_BUSY_TIMEOUT": ("busy_timeout", float),
    "TALLY_SELF_SERVICE": ("self_service", "flag"),
    "TALLY_GITHUB_API": ("github_api", str),
    "TALLY_GITHUB_TOKEN": ("github_token", str),
    "TALLY_GITHUB_TOKEN_FILE": ("github_token_file", str),
    "TALLY_GITHUB_SYNC_HOURS": ("github_sync_hours", float),
    "TALLY_GITHUB_TIMEOUT": ("github_timeout", float),
}


def _loopback(url: str) -> bool:
    """True when a URL's host is this machine's loopback (127.0.0.0/8, ::1,
    localhost): the only place plain HTTP may carry a token."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The words for yes and no, in settings and in URLs alike (params.py and
# flavours.py read them through flag_word).
FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}


def flag_word(value: str) -> bool | None:
    """True or False for a word of FLAG_WORDS (any case), None for another."""
    return FLAG_WORDS.get(value.lower())


def _flag(name: str, value: str) -> bool:
    """A setting's flag: blank is no."""
    flag = flag_word(value.strip()) if value.strip() else False
    if flag is None:
        raise ConfigError(f"{name} must be 1 or 0")
    return flag


def from_env(environ: Mapping[str, str]) -> Config:
    """The configuration given by TALLY_* variables; the only place they are read."""
    values: dict[str, object] = {}
    for name, (field, parse) in ENVIRONMENT.items():
        raw = environ.get(name)
        if raw is None:
            continue
        if raw == "" and field in ("allow", "max_pages", "keep_days", "trusted_proxy",
                                   "github_token", "github_token_file"):
            values[field] = None
            continue
        if parse == "flag":
            values[field] = _flag(name, raw)
            continue
        try:
            values[field] = parse(raw)  # type: ignore[operator]
        except ValueError:
            raise ConfigError(f"{name} must be a number") from None
    return Config(**values)  # type: ignore[arg-type]
