"""What a page id names, resolved once where a request or a command names a
page (issue 29), and what is read of it, whatever it is (its numbers, its
days for /api/history and /stats):

- a counter Tally counts (alice.my-repo), under TALLY_ALLOW;
- an old service's counter (ghpvc:alice, hits:github.com/a/b): counted by
  that service's URL alone (flavours.py), under TALLY_ALLOW too;
- GitHub's kept traffic of a repository (github:owner/name, lowercased as
  GitHub compares names): read, never counted, its numbers GitHub's own
  (github.py keeps them); TALLY_ALLOW does not apply, since nobody can
  create one from outside.

Nothing else tells the kinds apart from the id's text. Reads the store
through storage.py; never renders (server.py draws what it reads here).

>>> name("github:Alice/Repo")
Named(page_id='github:alice/repo', kind='github', repo='alice/repo')
>>> name("ghpvc:alice").kind, name("alice.repo").kind
('service', 'counter')
"""

from __future__ import annotations

import dataclasses
import datetime
import re

import params
import storage
from params import ParamError

COUNTER, SERVICE, GITHUB = "counter", "service", "github"


@dataclasses.dataclass(frozen=True)
class Named:
    page_id: str             # as stored and shown
    kind: str                # COUNTER, SERVICE or GITHUB
    repo: str | None = None  # a github: page's repository
    # Whether a view can add to it (GitHub's numbers are GitHub's): a field,
    # not a property, since every view asks.
    countable: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "countable", self.kind != GITHUB)


def name(text: str | None, allow: re.Pattern[str] | None = None,
         field: str = "page_id") -> Named:
    """What a page id names; ParamError when it is not a valid one, or not
    allowed (allow: TALLY_ALLOW, a pattern the whole id must match)."""
    page_id = params.validate_page_id(text, field)
    repo = params.github_page(page_id)
    if repo is not None:
        return github(repo)
    if allow is not None and not allow.fullmatch(page_id):
        raise ParamError("page_id not allowed")
    return Named(page_id, SERVICE if params.is_service_id(page_id) else COUNTER)


def github(repo: str) -> Named:
    """The github: page of a repository already in GitHub's lowercase form."""
    return Named(params.GITHUB_PREFIX + repo, GITHUB, repo)


@dataclasses.dataclass(frozen=True)
class Numbers:
    """A page's numbers, whatever kind it is (clones: GitHub's only)."""
    counts: storage.Counts
    clones: int | None = None
    clones_today: int | None = None
    traffic: storage.Traffic | None = None  # a github: page's, as kept


def numbers(store: storage.Store, page: Named) -> Numbers:
    """Its total, today's, visitors (and a github: page's clones); a github:
    page that is not kept is a ParamError ("repository not kept")."""
    if page.repo is None:
        return Numbers(store.counts(page.page_id))
    traffic = store.github.traffic(page.repo)
    if traffic is None:
        raise ParamError("repository not kept")
    return Numbers(storage.Counts(traffic.views, traffic.views_today, traffic.visitors,
                                  traffic.visitors_today),
                   traffic.clones, traffic.clones_today, traffic)


def github_count(store: storage.Store, page: Named) -> dict[str, object]:
    """/api/count's answer for a github: page."""
    traffic = numbers(store, page).traffic
    assert traffic is not None
    return {"page_id": page.page_id, "total": traffic.views, "today": traffic.views_today,
            "visitors": traffic.visitors, "visitors_today": traffic.visitors_today,
            "clones": traffic.clones, "first_day": traffic.first_day,
            "synced_at": traffic.synced_at}


_NO_DAY = {"views": None, "visitors": None, "bots": None, "held": None}
_NO_GITHUB_DAY = {"views": None, "visitors": None, "clones": None, "cloners": None}


def history(store: storage.Store, page: Named, days: int) -> dict[str, object]:
    """/api/history's answer: the page's numbers and its last `days` days.
    A day before the first kept one (TALLY_KEEP_DAYS) has no numbers (null),
    never zeros. A github: page's days are GitHub's, each "kept", "lost" (it
    left GitHub's 14 days before a sync saw it) or "not kept" (before
    keeping began, or not synced yet)."""
    if page.repo is not None:
        answer = github_count(store, page)
        answer["lost_days"] = store.github.lost(page.repo)
        answer["days"] = [{"day": day, "state": state,
                           **(dataclasses.asdict(numbers) if numbers else _NO_GITHUB_DAY)}
                          for day, state, numbers in store.github.history(page.repo, days)]
        return answer
    counts, kept_from = store.counts(page.page_id), store.kept_from()
    return {"page_id": page.page_id, "total": counts.total, "today": counts.today,
            "visitors": counts.visitors, "visitors_today": counts.visitors_today,
            "held": counts.held, "held_today": counts.held_today, "kept_from": kept_from,
            "days": [dataclasses.asdict(d) if kept_from is None or d.day >= kept_from
                     else {"day": d.day, **_NO_DAY} for d in store.days(page.page_id, days)]}


def stats(store: storage.Store, page: Named, days: int) -> dict[str, object]:
    """What /stats shows of a counter: its counts, its days, its best day,
    the first kept day and how many are kept."""
    return {"page_id": page.page_id, "counts": store.counts(page.page_id),
            "history": store.days(page.page_id, days), "best": store.best_day(page.page_id),
            "kept_from": store.kept_from(), "keep_days": store.keep_days}


def github_stats(store: storage.Store, page: Named, days: int) -> dict[str, object]:
    """What /stats shows of a github: page: GitHub's numbers per day, the
    lost days, the latest top referrers and paths, and the Tally page linked
    to the repository (github add --page) beside them; ParamError when the
    repository is not kept."""
    repo = page.repo
    assert repo is not None
    traffic = github_count(store, page)
    state = next((r for r in store.github.repos() if r.repo == repo), None)
    linked = state.page_id if state is not None else None
    popular_day, popular = store.github.popular(repo)
    return {"page_id": page.page_id, "repo": repo, "traffic": traffic, "state": state,
            "history": store.github.history(repo, days), "lost": store.github.lost(repo),
            "linked": linked, "camo": dict(store.history(linked, days)) if linked else {},
            "popular_day": popular_day, "popular": popular}


@dataclasses.dataclass(frozen=True)
class ChartDays:
    """What a chart draws of a page: (day, number or None) oldest first,
    the days not kept, the sum of the numbers, and why it is empty (None
    when it is not)."""
    days: list[tuple[str, int | None]]
    not_kept: frozenset[str]
    total: int
    empty: str | None


def chart_days(store: storage.Store, page: Named, days: int, visitors: bool = False,
               now: datetime.datetime | None = None) -> ChartDays:
    """A page's views (or visitors: each day's unique visitors) per day
    for /chart and Hits' daily chart. A counter's day before the first
    kept one is not kept, never a zero; a github: page's days are GitHub's
    (a lost day has no number). An unknown page is empty, saying so."""
    if page.repo is not None:
        if store.github.traffic(page.repo, now) is None:
            return _empty_chart(days, "repository not kept", now)
        shown = [(day, state, (n.visitors if visitors else n.views) if n else None)
                 for day, state, n in store.github.history(page.repo, days, now)]
        return ChartDays([(day, number) for day, _, number in shown],
                         frozenset(day for day, state, _ in shown if state == "not kept"),
                         sum(number or 0 for _, _, number in shown), None)
    counts, kept_from = store.counts(page.page_id, now), store.kept_from(now)
    if counts.total == 0 and counts.held == 0:
        return _empty_chart(days, "no views of this page yet", now)
    rows = [(d.day, d.visitors if visitors else d.views)
            for d in store.days(page.page_id, days, now)]
    not_kept = frozenset(day for day, _ in rows if kept_from is not None and day < kept_from)
    return ChartDays([(day, None if day in not_kept else n) for day, n in rows], not_kept,
                     sum(n for day, n in rows if day not in not_kept), None)


def _empty_chart(days: int, why: str, now: datetime.datetime | None) -> ChartDays:
    return ChartDays([(day, 0) for day in storage.last_days(days, now)], frozenset(), 0, why)


def export_record(page: storage.Page) -> dict[str, object]:
    """A page as `export` writes it in JSON (and an owner's export)."""
    return {"page_id": page.page_id, "total": page.total, "created_at": page.created_at,
            "last_seen": page.last_seen, "days": page.days, "visitors": page.visitors,
            "visitor_days": page.visitor_days, "bot_days": page.bot_days,
            "held": page.held, "held_days": page.held_days}
