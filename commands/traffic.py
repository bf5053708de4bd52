"""github: GitHub's own traffic numbers of repositories kept past GitHub's
14 days (github.py fetches them): add, list, remove, sync, and a github:
page's show.
"""

from __future__ import annotations

import argparse
import datetime
from typing import TextIO

import github
import pages
import params
import storage
from commands.common import CommandError, confirm, open_readonly, open_store
from config import Config




def show_github(repo: str, config: Config, out: TextIO) -> int:
    with open_readonly(config) as store:
        traffic = store.github.traffic(repo)
        history = store.github.history(repo, 30)
        lost = store.github.lost(repo)
        state = next((r for r in store.github.repos() if r.repo == repo), None)
    if traffic is None:
        raise CommandError(f"github:{repo} is not kept (github add {repo} starts keeping it)")
    print(f"github:{repo}\nviews    {traffic.views:,}\nvisitors {traffic.visitors:,}\n"
          f"clones   {traffic.clones:,}\ntoday    {traffic.views_today:,}\n"
          f"since    {traffic.first_day or '-'}\nsynced   {traffic.synced_at or 'never'}\n"
          f"status   {_status(state) if state else 'not synced any more'}\n"
          f"lost     {lost} days\nlast 30 days: views, visitors, clones", file=out)
    for day, kind, numbers in history:
        shown = (f"{numbers.views:>8,} {numbers.visitors:>8,} {numbers.clones:>8,}" if numbers
                 else f"{kind:>8}")
        print(f"  {day}  {shown}", file=out)
    return 0

# What a refusal at `github add` means for the owner.
_GITHUB_HINTS = {
    github.TOKEN_REFUSED: "GitHub refused the token (TALLY_GITHUB_TOKEN or its file): "
                          "expired, revoked or mistyped",
    github.NO_ACCESS: "the token may not read its traffic: a fine-grained token needs the "
                      "repository's \"Administration\" permission (read), a classic one the "
                      "repo scope, and its owner push access",
    github.NOT_FOUND: "no such repository, or the token cannot see it",
}


def _github_client(config: Config) -> github.Client:
    token = github.read_token(config)
    if token is None:
        raise CommandError("github needs a token: set TALLY_GITHUB_TOKEN or "
                           "TALLY_GITHUB_TOKEN_FILE (docs/github.md says which)")
    return github.Client(config.github_api, token, config.github_timeout)


def _interval(config: Config) -> datetime.timedelta:
    return datetime.timedelta(hours=config.github_sync_hours)


def _kept_page(text: str) -> str:
    """A --page: a Tally page of its own (not a github: or old service's id)."""
    page = pages.name(text, field="--page")
    if page.kind != pages.COUNTER:
        raise CommandError("--page must be a page Tally counts (such as alice.my-repo)")
    return page.page_id


def cmd_github_add(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    repo = params.github_repo(args.repo, "OWNER/REPO")
    page_id = _kept_page(args.page) if args.page is not None else None
    client = _github_client(config)
    now = storage.utc_now()
    problem = None
    try:
        answer = client.traffic(repo)
    except github.GitHubError as e:
        if e.status in _GITHUB_HINTS:
            raise CommandError(f"{repo}: {e.status}: {_GITHUB_HINTS[e.status]}; "
                               f"not added") from None
        problem = e  # GitHub's trouble, not the owner's: kept, tried again
    # The first repository may come before the first view: the database is
    # created then, as `serve` would.
    with storage.open_store(config.db, sync=config.sync,
                            busy_timeout_s=config.busy_timeout) as store:
        try:
            store.github.add(repo, page_id, now)
        except storage.AlreadyExists:
            raise CommandError(f"{repo} is kept already (github list shows it)") from None
        if problem is not None:
            state = next(r for r in store.github.repos() if r.repo == repo)
            outcome = github.fail(store, state, problem, now, _interval(config))
            print(f"keeping {repo}; its first sync failed ({problem.status}): the server "
                  f"tries again from {outcome.retry_at}", file=out)
            return 0
        store.github.save(repo, answer.listed, answer.unlisted, answer.popular,
                          answer.today.isoformat(), now, now + _interval(config))
    days = [*answer.listed, *answer.unlisted]
    print(f"keeping {repo}: {len(days)} days from {min(days)} synced; the server syncs it "
          f"every {config.github_sync_hours:g} hours. Badge: page_id=github:{repo}", file=out)
    return 0


def _status(state: storage.Repo) -> str:
    if state.status == github.RATE_LIMITED:
        return f"rate limited until {state.next_sync_at}"
    return state.status


def cmd_github_list(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    with open_readonly(config) as store:
        repos = store.github.repos()
    if not repos:
        print("no repositories kept (github add OWNER/REPO starts one)", file=out)
        return 0
    rows = [("REPOSITORY", "STATUS", "LAST SYNC", "DAYS", "FIRST DAY", "LOST", "PAGE")]
    rows += [(r.repo, _status(r), r.synced_at or "never", str(r.days), r.first_day or "-",
              str(r.lost), r.page_id or "-") for r in repos]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
    return 0


def remove_github(store: storage.Store, repo: str, delete: bool, yes: bool, out: TextIO) -> int:
    traffic = store.github.traffic(repo)
    if traffic is None:
        raise CommandError(f"{repo} is not kept")
    what = (f"delete {repo}'s kept numbers ({traffic.views:,} views, from "
            f"{traffic.first_day or 'no day'})" if delete else f"stop keeping {repo}")
    if not confirm(f"{what}?", yes):
        print("nothing changed", file=out)
        return 1
    try:
        store.github.remove(repo, delete)
    except storage.NotFound:
        raise CommandError(f"{repo} is no longer kept; its numbers stay (--delete deletes "
                           f"them)") from None
    print(f"{'deleted' if delete else 'stopped keeping'} {repo}"
          + ("" if delete else "; its numbers stay (badges show them)"), file=out)
    return 0


def cmd_github_remove(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    repo = params.github_repo(args.repo, "OWNER/REPO")
    with open_store(config) as store:
        return remove_github(store, repo, args.delete, args.yes, out)


def cmd_github_sync(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    only = params.github_repo(args.repo, "OWNER/REPO") if args.repo else None
    _github_client(config)  # a token is needed
    with open_store(config) as store:
        kept = {r.repo for r in store.github.repos()}
        if only is not None and only not in kept:
            raise CommandError(f"{only} is not kept (github add {only} starts keeping it)")
        outcomes = github.sync_pass(store, config, due_only=False, only=only)
    if not kept:
        print("no repositories kept (github add OWNER/REPO starts one)", file=out)
    for o in outcomes:
        released = f", {o.released:,} held views released" if o.released else ""
        detail = (f"{o.days} days synced{released}" if o.status == github.OK else
                  f"asked again from {o.retry_at}" if o.retry_at and o.status not in github.SETTLED
                  else _GITHUB_HINTS.get(o.status, ""))
        print(f"{o.repo}: {o.status}" + (f" ({detail})" if detail else ""), file=out)
    if len(outcomes) < len(kept if only is None else [only]):
        print("(a repository another server is syncing right now was left to it)", file=out)
    return 0 if all(o.status == github.OK for o in outcomes) else 1


GITHUB_ACTIONS = {"add": cmd_github_add, "list": cmd_github_list, "remove": cmd_github_remove,
                  "sync": cmd_github_sync}


def cmd_github(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    return GITHUB_ACTIONS[args.action](args, config, out)


