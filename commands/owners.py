"""owners: what self-service's page owners hold and did (owners.py at the
top, docs/owners.md), for the operator: list them, show one page's
actions, take a page back from its owner, undo an owner's set, reset or
delete (from the page as it was before, kept with the action).
"""

from __future__ import annotations

import argparse
from typing import TextIO

import pages
import storage
from commands.common import CommandError, open_readonly, open_store
from commands.moving import parse_import
from config import Config


def cmd_owners(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    if args.action == "list":
        with open_readonly(config) as store:
            found = store.owners.owners()
        for o in found:
            print(f"{o.page_id}  {o.how}  since {o.since}  {o.actions} actions"
                  f"{', last ' + o.last_action if o.last_action else ''}", file=out)
        if not found:
            print("no page has an owner (TALLY_SELF_SERVICE=1: docs/owners.md)", file=out)
        return 0
    if args.action == "show":
        page_id = pages.name(args.page_id).page_id
        with open_readonly(config) as store:
            key_hash, actions = store.owners.key_hash(page_id), store.owners.actions(page_id)
        if key_hash is None and not actions:
            raise CommandError(f"no owner and no actions for {page_id!r}")
        print(f"{page_id}: {'owned' if key_hash else 'no owner now'}", file=out)
        for a in actions:
            print(f"  #{a.id}  {a.at}  {a.action}: {a.detail}"
                  f"{'  (owners undo ' + str(a.id) + ')' if a.undoable else ''}", file=out)
        return 0
    if args.action == "remove":
        page_id = pages.name(args.page_id).page_id
        with open_store(config) as store:
            try:
                store.owners.remove(page_id, storage.utc_now())
            except storage.NotFound:
                raise CommandError(f"{page_id!r} has no owner") from None
        print(f"{page_id}: its owner's key no longer works; the counts stay", file=out)
        return 0
    return _undo(args.action_id, config, out)


def _undo(number: int, config: Config, out: TextIO) -> int:
    """The page as it was before an owner's set, reset or delete, back
    (import's "set": its total and its days), recorded as an action too."""
    with open_store(config) as store:
        found = store.owners.action(number)
        if found is None:
            raise CommandError(f"no action #{number}")
        action, before = found
        if before is None:
            raise CommandError(f"action #{number} ({action.action}) keeps nothing to undo")
        restored = parse_import(before)
        store.import_pages(restored, "set")
        store.owners.record(action.page_id, "undo", f"#{number} ({action.action}) undone by "
                            "the operator", None, storage.utc_now())
        total = store.counts(action.page_id).total
    print(f"{action.page_id}: #{number} ({action.action}) undone; total {total}", file=out)
    return 0
