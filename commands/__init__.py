"""The owner's commands: backup, restore, export, import, set, rename,
delete, top, show, release, migrate, github (add, list, remove, sync: GitHub's
traffic numbers, github.py) and owners (list, show, remove, undo: the page
owners of self-service, owners.py). server.py's main() parses the command line and
calls run().

No SQL here (the stores) and no HTTP (server.py): the store behind TALLY_DB
is opened through storage.open_store, whichever backend it is, and a
SQLite file's operations (backup, restore) are storage.py's. Every value
from the command line or a file is validated with the same rules as the HTTP
side (params.py) before anything is written; on error a command prints one
line, exits non-zero and has changed nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TextIO

from commands import counts, files, migrate, moving, owners, traffic
from commands.common import CommandError
from config import Config

__all__ = ["CommandError", "add_commands", "run"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help)
        parser.add_argument("--db", help="SQLite file (TALLY_DB, default data/counts.db)")
        return parser

    p = command("backup", "copy the database, consistently, while the server runs")
    p.add_argument("dest", help="file to write, or a folder for counts-<UTC time>.db")
    p.add_argument("--keep", type=int, help="with a folder: keep only the newest N backups")
    p = command("restore", "replace the database with a checked backup")
    p.add_argument("src", help="backup file to restore")
    p.add_argument("--force", action="store_true", help="restore even while a server runs")
    p = command("export", "write every counter with its per-day history")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--out", help="file to write (default: standard output)")
    p = command("import", "read counters from an export or a page_id,count CSV")
    p.add_argument("file", help="file to read (- for standard input)")
    p.add_argument("--mode", choices=("set", "add"), default="set",
                   help="set: replace totals (default); add: add to them")
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p.add_argument("--again", action="store_true",
                   help="add a file that was already imported with --mode add once more")
    p = command("set", "set a page's total")
    p.add_argument("page_id")
    p.add_argument("total")
    p = command("rename", "rename a page, keeping its total and history")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--merge", action="store_true", help="add into an existing NEW")
    p = command("delete", "delete a page and its history")
    p.add_argument("page_id")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p = command("top", "the pages with the highest totals")
    p.add_argument("--limit", type=int, default=20)
    p = command("show", "a page's total, today and last 30 days")
    p.add_argument("page_id")
    p = command("release", "count a page's held views (the inflation guard's, docs/guard.md)")
    p.add_argument("page_id")
    p.add_argument("--day", metavar="YYYY-MM-DD", help="only that UTC day's (default: every day's)")
    p = command("migrate", "rewrite other counters' badge URLs in files to point at this Tally")
    p.add_argument("files", nargs="+", metavar="FILE", help="Markdown, HTML or reStructuredText")
    p.add_argument("--host", required=True,
                   help="this Tally's address: counter.example.org, or with a scheme and path")
    p.add_argument("--write", action="store_true", help="change the files (default: only show)")
    p.add_argument("--counts", metavar="CSV", help="write page_id,count lines to fill in and import")
    p.add_argument("--include-code", action="store_true",
                   help="also rewrite URLs in code blocks and inline code (left alone by default)")
    p = commands.add_parser("github", help="keep GitHub's own traffic numbers of repositories",
                            description="keep GitHub's own traffic numbers (views, unique "
                            "visitors, clones) of repositories past GitHub's 14 days")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help)
        parser.add_argument("--db", help="SQLite file (TALLY_DB, default data/counts.db)")
        return parser
    a = action("add", "check access to a repository's traffic and start keeping it")
    a.add_argument("repo", metavar="OWNER/REPO")
    a.add_argument("--page", metavar="PAGE_ID",
                   help="the Tally page that counts the same README, shown beside it in /stats")
    action("list", "each kept repository: status, last sync, days kept, days lost")
    a = action("remove", "stop keeping a repository (its numbers stay unless --delete)")
    a.add_argument("repo", metavar="OWNER/REPO")
    a.add_argument("--yes", action="store_true", help="do not ask")
    a.add_argument("--delete", action="store_true", help="delete its kept numbers too")
    a = action("sync", "sync every kept repository (or one) now")
    a.add_argument("repo", metavar="OWNER/REPO", nargs="?")
    p = commands.add_parser("owners", help="self-service's page owners: list, show, remove, undo",
                            description="the page owners of TALLY_SELF_SERVICE=1 (docs/owners.md): "
                            "who holds which page, what they did, and undoing it")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    action("list", "every page with an owner: how it was taken, since when, its actions")
    a = action("show", "one page's owner and every action on it")
    a.add_argument("page_id")
    a = action("remove", "take a page back from its owner: the key stops working")
    a.add_argument("page_id")
    a = action("undo", "undo an owner's set, reset or delete (its number: owners show)")
    a.add_argument("action_id", type=int)


def run(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    handler: Callable[[argparse.Namespace, Config, TextIO], int] = COMMANDS[args.command]
    return handler(args, config, out or sys.stdout)  # sys.stdout as it is now, not at import


COMMANDS = {
    "backup": files.cmd_backup, "restore": files.cmd_restore, "export": moving.cmd_export,
    "import": moving.cmd_import, "set": counts.cmd_set, "rename": counts.cmd_rename,
    "delete": counts.cmd_delete, "top": counts.cmd_top, "show": counts.cmd_show,
    "release": counts.cmd_release,
    "migrate": migrate.cmd_migrate, "github": traffic.cmd_github, "owners": owners.cmd_owners,
}
