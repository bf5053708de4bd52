"""What a page id names, resolved once where a request or a command names a
page (issue 29), and its numbers, whatever it is:

- a counter Tally counts (alice.my-repo), under TALLY_ALLOW;
- an old service's counter (ghpvc:alice, hits:github.com/a/b): counted by
  that service's URL alone (flavours.py), under TALLY_ALLOW too;
- GitHub's kept traffic of a repository (github:owner/name, lowercased as
  GitHub compares names): read, never counted, its numbers GitHub's own
  (github.py keeps them); TALLY_ALLOW does not apply, since nobody can
  create one from outside.

Nothing else tells the kinds apart from the id's text.

>>> name("github:Alice/Repo")
Named(page_id='github:alice/repo', kind='github', repo='alice/repo')
>>> name("ghpvc:alice").kind, name("alice.repo").kind
('service', 'counter')
"""

from __future__ import annotations

import dataclasses
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
