"""A page's counts: set, rename, delete, top, show and release (a github: page's
numbers are GitHub's own: shown, and deleted with github remove --delete,
never set or renamed).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import pages
import params
import storage
from commands.common import CommandError, open_readonly, open_store
from commands.traffic import remove_github, show_github
from config import Config


def _counted(text: str, field: str = "page_id") -> str:
    """The id of a page whose counts an owner's command may change: not a
    github: page, whose numbers are GitHub's own."""
    page = pages.name(text, field=field)
    if not page.countable:
        raise CommandError("a github: page holds GitHub's own numbers, named by its "
                           "repository: nothing changed (github remove stops keeping one)")
    return page.page_id


def cmd_set(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    page_id = _counted(args.page_id)
    total = params.parse_count(args.total, "total")
    with open_store(config) as store:
        store.set_total(page_id, total)
    print(f"{page_id}: total set to {total}", file=out)
    return 0


def cmd_rename(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    old, new = _counted(args.old, "OLD"), _counted(args.new, "NEW")
    if old == new:
        raise CommandError("OLD and NEW are the same")
    with open_store(config) as store:
        try:
            store.rename(old, new, merge=args.merge)
        except storage.NotFound:
            raise CommandError(f"no page {old!r}") from None
        except storage.AlreadyExists:
            raise CommandError(f"{new!r} exists; --merge adds {old!r} into it") from None
        except storage.TotalLimitReached:
            raise CommandError(f"merging {old!r} into {new!r} would take a total past "
                               f"{storage.TOTAL_MAX}; nothing changed") from None
        total = store.counts(new).total
    print(f"renamed {old} to {new} (total {total})", file=out)
    return 0


def cmd_delete(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    named = pages.name(args.page_id)
    page_id = named.page_id
    if named.repo is not None:  # the same as github remove --delete
        with open_store(config) as store:
            return remove_github(store, named.repo, True, args.yes, out)
    with open_store(config) as store:
        page = store.page(page_id)
        if page is None:
            raise CommandError(f"no page {page_id!r}")
        if not args.yes:
            if not sys.stdin.isatty():
                raise CommandError("not a terminal: pass --yes to delete")
            answer = input(f"delete {page_id} (total {page.total}, {len(page.days)} days)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted", file=out)
                return 1
        store.delete(page_id)
    print(f"deleted {page_id} (total was {page.total})", file=out)
    return 0


def cmd_top(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    if not 1 <= args.limit <= 100_000:
        raise CommandError("--limit must be 1..100000")
    with open_readonly(config) as store:
        # The pages Tally counts and the github: pages (views kept), in one list.
        rows = store.top(args.limit) + [(pages.github(repo).page_id, views)
                                        for repo, views in store.github.top(args.limit)]
    rows = sorted(rows, key=lambda row: (-row[1], row[0]))[:args.limit]
    width = max([len(p) for p, _ in rows] + [7])
    for page_id, total in rows:
        print(f"{page_id:<{width}}  {total:>12,}", file=out)
    return 0


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    named = pages.name(args.page_id)
    page_id = named.page_id
    if named.repo is not None:
        return show_github(named.repo, config, out)
    with open_readonly(config) as store:
        counts = store.counts(page_id)
        history = store.days(page_id, 30)
        page = store.page(page_id)
    if page is None:
        raise CommandError(f"no page {page_id!r}")
    print(f"{page_id}\ntotal   {counts.total:,}\ntoday   {counts.today:,}\n"
          f"visitors {counts.visitors:,} (today {counts.visitors_today:,})\n"
          f"held    {counts.held:,} (today {counts.held_today:,})\n"
          f"created {page.created_at}\nlast    {page.last_seen}\n"
          f"last 30 days: views, visitors, bot views, held views", file=out)
    for d in history:
        print(f"  {d.day}  {d.views:>8,} {d.visitors:>8,} {d.bots:>8,} {d.held:>8,}", file=out)
    older = sorted(day for day in page.held_days if day < history[0].day)
    if older:
        print(f"held before these 30 days: {sum(page.held_days[d] for d in older):,} views "
              f"on {len(older)} days, from {older[0]}", file=out)
    return 0


def cmd_release(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    page_id = _counted(args.page_id)
    day = None if args.day is None else params.parse_day(args.day, "--day")
    with open_store(config) as store:
        try:
            moved = store.release(page_id, day)
        except storage.NotFound:
            raise CommandError(f"no page {page_id!r}") from None
        except storage.TotalLimitReached as e:
            raise CommandError(f"{e}; nothing changed") from None
        total = store.counts(page_id).total
    if not moved:
        print(f"{page_id}: no held views{f' on {day}' if day else ''}; nothing changed", file=out)
        return 0
    for d, n in moved:
        print(f"  {d}  {n:>8,}", file=out)
    print(f"{page_id}: released {sum(n for _, n in moved):,} held views on {len(moved)} "
          f"day{'s' if len(moved) != 1 else ''} (total now {total:,})", file=out)
    return 0


