"""The owner's commands: backup, restore, export, import, set, rename,
delete, top, show, migrate, and github (add, list, remove, sync: GitHub's
traffic numbers, github.py). server.py's main() parses the command line and
calls run().

No SQL here (the stores) and no HTTP (server.py): the store behind TALLY_DB
is opened through database.open_store, whichever backend it is, and a
SQLite file's operations (backup, restore) are database.py's. Every value
from the command line or a file is validated with the same rules as the HTTP
side (params.py) before anything is written; on error a command prints one
line, exits non-zero and has changed nothing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import glob
import hashlib
import io
import ipaddress
import itertools
import json
import os
import re
import sys
import typing
from typing import Callable, Iterable, Iterator, TextIO

import database
import flavours
import github
import markup
import pages
import params
import storage
from config import Config
from params import ParamError

EXPORT_FIELDS = ["page_id", "total", "created_at", "last_seen", "day", "views"]
# Since visitors (schema 4): a page's visitors, and each day's visitors and
# bot views, after the fields above (an older export has only those).
VISITOR_FIELDS = ["visitors", "day_visitors", "day_bots"]
# A CSV cell starting with one of these is a formula to a spreadsheet
# (OWASP, "CSV Injection"): export puts a ' before it, import takes it off.
# A page id that itself starts with ' gets one too, so the round trip is exact.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


class CommandError(Exception):
    """A command cannot do what was asked; the message is one line."""


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


def run(args: argparse.Namespace, config: Config, out: TextIO = sys.stdout) -> int:
    handler: Callable[[argparse.Namespace, Config, TextIO], int] = COMMANDS[args.command]
    return handler(args, config, out)


def _existing_db(config: Config) -> str:
    if not database.is_postgres(config.db) and not os.path.isfile(config.db):
        raise CommandError(f"no database at {config.db}")
    return config.db


def _open(config: Config) -> storage.Store:
    return database.open_store(_existing_db(config), sync=config.sync,
                              busy_timeout_s=config.busy_timeout)


def _open_readonly(config: Config) -> storage.Store:
    # Read-only (SQLite's mode=ro): reading a backup never changes its bytes.
    return database.open_store(_existing_db(config), busy_timeout_s=config.busy_timeout,
                              readonly=True)


def _output_path(path: str, config: Config) -> str:
    """A file a command may write: not the database, in a folder that exists."""
    if database.is_database_file(path, config.db):
        raise CommandError(f"{path}: that is the database {config.db} (or a file beside it); "
                           f"write somewhere else")
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a folder; name a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{path}: folder {folder} does not exist")
    return path


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _progress_bar(stream: TextIO) -> Callable[[int, int], None] | None:
    # A bar on a terminal; nothing when the output goes to a file or a pipe.
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = 30 * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {done}/{total} pages")
        if done >= total:
            stream.write("\n")
        stream.flush()
    return show


def _checked_copy(source: str, dest: str, progress: Callable[[int, int], None] | None
                  ) -> tuple[int, int, int]:
    try:
        return database.checked_copy(source, dest, progress)
    except storage.UnusableDatabase as e:
        raise CommandError(f"{source}: its copy failed the check ({e})") from None


def cmd_backup(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    database.require_file(config.db, "backup")
    source = _existing_db(config)
    dest = args.dest
    if dest.endswith(os.sep) and not os.path.isdir(dest):
        # "backups/" names a folder: made when missing (a fresh volume).
        try:
            os.makedirs(dest)
        except OSError as e:
            raise CommandError(f"{dest}: cannot create the folder: {e.strerror}") from None
    if os.path.isdir(dest):
        dest = os.path.join(dest, f"counts-{_utc_stamp()}.db")
    elif args.keep is not None:
        raise CommandError("--keep needs a folder as DEST")
    if args.keep is not None and args.keep < 1:
        raise CommandError("--keep must be at least 1")
    _output_path(dest, config)
    # The copy is checked, not the source first: one integrity pass, not two.
    version, pages, total = _checked_copy(source, dest, _progress_bar(sys.stderr))
    size = os.path.getsize(dest)
    print(f"backup {dest}: {pages} pages, total {total}, {size} bytes, "
          f"schema {version}, integrity ok", file=out)
    if args.keep is not None:
        # counts-<UTC time>.db names sort by time.
        old = sorted(glob.glob(os.path.join(args.dest, "counts-*.db")))[:-args.keep]
        for name in old:
            os.remove(name)
        if old:
            print(f"removed {len(old)} older backups", file=out)
    return 0


def cmd_restore(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    database.require_file(config.db, "restore")
    if database.is_database_file(args.src, config.db):
        raise CommandError(f"{args.src}: that is the database {config.db} itself; "
                           f"restore reads a backup file")
    version, pages, total = database.inspect(args.src)
    lock = None if args.force else database.server_lock(config.db, create=False)
    try:
        stamp = _utc_stamp()
        problem = None
        if os.path.exists(config.db):
            try:
                database.inspect(config.db)
            except storage.UnusableDatabase as e:
                problem = e
        if os.path.exists(config.db) and problem is None:
            kept = f"{config.db}.before-restore-{stamp}"
            database.replace_counts(config.db, args.src, kept, timeout_s=config.busy_timeout)
            print(f"kept the replaced counts as {kept}", file=out)
        else:
            if problem is not None:
                # The very case restore exists for: the file cannot be read.
                # It is moved aside unchecked, never deleted.
                aside = database.move_aside(config.db, f".damaged-{stamp}")
                print(f"moved the unreadable database aside as {aside} ({problem})", file=out)
            # The resolved path: a symlink to the database keeps pointing at it.
            _checked_copy(args.src, os.path.realpath(config.db), _progress_bar(sys.stderr))
    finally:
        if lock is not None:
            lock.release()
    print(f"restored {config.db} from {args.src}: {pages} pages, total {total}", file=out)
    return 0


def _remove(*names: str) -> None:
    for name in names:
        if os.path.exists(name):
            os.remove(name)


def _csv_cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv_uncell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


# A JSON export's first line: the pages follow one per line, so that
# export and import hold one page at a time (ImportReader streams a file
# that begins with it; any other JSON is read whole).
JSON_HEAD = '{{"tally_export": 1, "exported_at": "{}", "pages": ['
_JSON_HEAD = re.compile(r'\{"tally_export": 1, "exported_at": "[0-9TZ:-]*", "pages": \[$')


def _write_export(pages: Iterable[storage.Page], form: str, target: TextIO,
                  kept: Callable[[], list[storage.KeptRepo]] = list) -> int:
    """Write pages, one at a time, and kept() after them; how many pages."""
    written = 0
    if form == "json":
        target.write(JSON_HEAD.format(storage.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")))
        for p in pages:
            target.write(",\n" if written else "\n")
            json.dump({"page_id": p.page_id, "total": p.total, "created_at": p.created_at,
                       "last_seen": p.last_seen, "days": p.days, "visitors": p.visitors,
                       "visitor_days": p.visitor_days, "bot_days": p.bot_days},
                      target, ensure_ascii=False)
            written += 1
        target.write("\n]")
        # GitHub's numbers kept (never the token): they cannot be asked
        # for again once GitHub's 14 days have passed.
        github = [{"repo": k.repo, "page_id": k.page_id, "added_at": k.added_at or None,
                   "days": {day: dataclasses.asdict(numbers) for day, numbers in k.days.items()},
                   "popular": {day: [dataclasses.asdict(item) for item in items]
                               for day, items in k.popular.items()}} for k in kept()]
        if github:
            target.write(', "github": ')
            json.dump(github, target, ensure_ascii=False)
        target.write("}\n")
        return written
    writer = csv.writer(target)
    writer.writerow(EXPORT_FIELDS + VISITOR_FIELDS)
    for p in pages:
        base = [_csv_cell(p.page_id), p.total, p.created_at, p.last_seen]
        days = sorted(set(p.days) | set(p.visitor_days) | set(p.bot_days))
        for day in days or [""]:
            writer.writerow(base + ([day, p.days.get(day, 0)] if day else ["", ""])
                            + [p.visitors] + ([p.visitor_days.get(day, 0), p.bot_days.get(day, 0)]
                                              if day else ["", ""]))
        written += 1
    return written


def cmd_export(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    if args.out:
        _output_path(args.out, config)
    with _open_readonly(config) as store:
        # Pages are read and written one at a time: memory stays flat
        # however many there are.
        kept: list[storage.KeptRepo] = []

        def github() -> list[storage.KeptRepo]:
            kept.extend(store.github_kept())
            return kept
        if args.format == "csv" and store.github_kept():
            print(f"tally: the GitHub traffic of {len(store.github_kept())} repositories is not "
                  f"in a CSV export (its columns are Tally's own counts): --format json carries "
                  f"it", file=sys.stderr)
        if not args.out:
            _write_export(store.pages(), args.format, out, github)
            return 0
        # A temporary name beside the target, then a rename: a failed export
        # never leaves half a file under the name asked for.
        tmp = f"{args.out}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as target:
                written = _write_export(store.pages(), args.format, target, github)
                target.flush()
                os.fsync(target.fileno())
            os.replace(tmp, args.out)
        except OSError as e:
            raise CommandError(f"{args.out}: cannot write: {e.strerror or e}") from None
        finally:
            _remove(tmp)
    github_part = (f" and the GitHub traffic of {len(kept)} repositories" if kept else "")
    print(f"exported {written} pages{github_part} to {args.out}", file=out)
    return 0


def _day(value: str, where: str) -> str:
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise CommandError(f"{where}: invalid day") from None


def _stamp(value: str | None, where: str, default: str) -> str:
    if value in (None, ""):
        return default
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))  # type: ignore
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, AttributeError, OverflowError):
        # OverflowError: 0001-01-01T00:00:00+01:00 is before year 1 in UTC.
        raise CommandError(f"{where}: invalid timestamp") from None


def _checked(fn: Callable, value: object, where: str) -> object:
    try:
        return fn(value)
    except ParamError as e:
        raise CommandError(f"{where}: {e}") from None


def _json_count(value: object, where: str, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CommandError(f"{where}: invalid {name}")
    return _checked(lambda v: params.check_count(v, name), value, where)  # type: ignore


def _github_day(value: str, where: str) -> str:
    """A day of GitHub's traffic: one GitHub can have had (github.py)."""
    day = _day(value, where)
    if not github.FIRST_DAY.isoformat() <= day <= github.LAST_DAY.isoformat():
        raise CommandError(f"{where}: {day}: not a day of GitHub's traffic "
                           f"({github.FIRST_DAY} to {github.LAST_DAY})")
    return day


def _github_count(value: object, where: str, name: str) -> int:
    count = _json_count(value, where, name)
    if count > github.COUNT_MAX:
        raise CommandError(f"{where}: {name} {count} is more than GitHub's traffic can be "
                           f"(at most {github.COUNT_MAX} a day)")
    return count


class ImportReader:
    """Reads a Tally JSON or CSV export, or a plain page_id,count CSV, one
    page at a time (pages()), checking each value with params.py as it goes.

    `where` names the line or item being read, for an error that surfaces
    later, inside the store (a byte that is not UTF-8). A UTF-8 byte-order
    mark is skipped. CSV is read as a stream, and so is a JSON export of
    this Tally (JSON_HEAD, then one page per line); other JSON is read whole
    (the standard library has no streaming JSON reader).
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.where = "start"
        # A JSON export's GitHub traffic, read after its pages.
        self.github: list[storage.KeptRepo] = []
        self.now = storage.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def pages(self) -> Iterator[storage.Page]:
        first = self.stream.readline()
        while first and not first.strip():
            first = self.stream.readline()
        if _JSON_HEAD.match(first.strip()):
            return self._json_lines()
        if first.lstrip().startswith(("{", "[")):
            return self._json(first + self.stream.read())
        rows = csv.reader(itertools.chain([first], self.stream))
        try:
            header = next(rows, [])
        except csv.Error as e:
            raise CommandError(f"line 1: {e}") from None
        if header == EXPORT_FIELDS + VISITOR_FIELDS:
            return self._export_csv(rows, len(header))
        if header == EXPORT_FIELDS:  # an export made before visitors
            return self._export_csv(rows, len(header))
        return self._plain_csv(itertools.chain([header], rows))

    def _json(self, text: str) -> Iterator[storage.Page]:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as e:
            raise CommandError(f"not valid JSON (line {e.lineno})") from None
        except RecursionError:
            raise CommandError("not valid JSON (nested too deeply)") from None
        if not isinstance(document, dict) or not isinstance(document.get("pages"), list):
            raise CommandError("JSON import needs {\"pages\": [...]} as written by export")
        for number, item in enumerate(document["pages"], 1):
            yield self._json_page(item, number)
        self._json_github(document)

    def _json_lines(self) -> Iterator[storage.Page]:
        """A JSON export of this Tally, one page per line, read a line at a
        time; the line after the pages ends the document."""
        for line_number, line in enumerate(self.stream, 2):
            text = line.strip()
            if text.startswith("]"):  # '], "github": [...]}' or ']}'
                try:
                    rest = json.loads("{" + text[1:].lstrip(" ,"))
                except json.JSONDecodeError:
                    raise CommandError(f"not valid JSON (line {line_number})") from None
                self._json_github(rest)
                if self.stream.read().strip():
                    raise CommandError(f"not valid JSON (after line {line_number})")
                return
            try:
                item = json.loads(text.removesuffix(","))
            except (json.JSONDecodeError, RecursionError):
                raise CommandError(f"not valid JSON (line {line_number})") from None
            yield self._json_page(item, line_number - 1)
        raise CommandError("not valid JSON (the file ends inside its pages)")

    def _json_page(self, item: object, number: int) -> storage.Page:
        self.where = where = f"page {number}"
        if not isinstance(item, dict):
            raise CommandError(f"{where}: not an object")
        page_id = _checked(params.validate_page_id, item.get("page_id"), where)
        total = _json_count(item.get("total"), where, "total")
        # An export made before visitors has none: zero visitors.
        checked = {name: self._json_days(item.get(name, {}), where, name)
                   for name in ("days", "visitor_days", "bot_days")}
        visitors = _json_count(item.get("visitors", 0), where, "visitors")
        return _checked_visitors(storage.Page(
            page_id, total, _stamp(item.get("created_at"), where, self.now),
            _stamp(item.get("last_seen"), where, self.now), checked["days"], visitors,
            checked["visitor_days"], checked["bot_days"]), where)

    def _json_github(self, document: dict) -> None:
        kept = document.get("github", [])
        if not isinstance(kept, list):
            raise CommandError("github must be a list")
        self.github = [self._kept(item, f"github {number}") for number, item in enumerate(kept, 1)]

    @staticmethod
    def _json_days(days: object, where: str, name: str) -> dict[str, int]:
        if not isinstance(days, dict):
            raise CommandError(f"{where}: {name} must be an object")
        return {_day(day, where): _json_count(n, where, name) for day, n in days.items()}

    def _kept(self, item: object, where: str) -> storage.KeptRepo:
        """One repository's GitHub traffic from a JSON export."""
        self.where = where
        if not isinstance(item, dict):
            raise CommandError(f"{where}: not an object")
        repo = _checked(params.github_repo, item.get("repo"), where)
        page_id = item.get("page_id")
        if page_id is not None:
            page_id = _checked(params.validate_page_id, page_id, where)
        added = item.get("added_at")
        added_at = _stamp(added, where, self.now) if added else ""
        days, popular = item.get("days", {}), item.get("popular", {})
        if not isinstance(days, dict) or not isinstance(popular, dict):
            raise CommandError(f"{where}: days and popular must be objects")
        fields = [f.name for f in dataclasses.fields(storage.TrafficDay)]
        checked = {}
        for day, numbers in days.items():
            if not isinstance(numbers, dict):
                raise CommandError(f"{where}: {day}: not an object")
            checked[_github_day(day, where)] = storage.TrafficDay(
                *(_github_count(numbers.get(name), where, name) for name in fields))
        entries: dict[str, list[storage.Popular]] = {}
        for day, items in popular.items():
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise CommandError(f"{where}: popular {day}: not a list of objects")
            entries[_github_day(day, where)] = [self._popular(i, where) for i in items]
        return storage.KeptRepo(repo, page_id, added_at, checked, entries)

    @staticmethod
    def _popular(item: dict, where: str) -> storage.Popular:
        kind, name, title = item.get("kind"), item.get("name"), item.get("title")
        if kind not in ("referrer", "path") or not all(
                isinstance(t, str) and len(t) <= github.TEXT_MAX for t in (name, title)):
            raise CommandError(f"{where}: invalid popular entry")
        return storage.Popular(kind, name, title,
                               _github_count(item.get("views"), where, "views"),
                               _github_count(item.get("visitors"), where, "visitors"))

    def _rows(self, rows: Iterator[list[str]], first_line: int) -> Iterator[tuple[str, list[str]]]:
        number = first_line
        try:
            for row in rows:
                self.where = f"line {number}"
                yield self.where, row
                number += 1
        except csv.Error as e:
            raise CommandError(f"line {number}: {e}") from None

    def _export_csv(self, rows: Iterator[list[str]], fields: int) -> Iterator[storage.Page]:
        # An export lists a page's days on consecutive lines: one page is
        # held at a time. A page seen again later is a duplicate (the store
        # refuses it).
        page: storage.Page | None = None
        for where, row in self._rows(rows, 2):
            if len(row) != fields:
                raise CommandError(f"{where}: expected {fields} fields")
            page_id = _checked(params.validate_page_id, _csv_uncell(row[0]), where)
            total = _checked(params.parse_count, row[1], where)
            visitors = _checked(params.parse_count, row[6], where) if fields > 6 else 0
            if page is None or page.page_id != page_id:
                if page is not None:
                    yield _checked_visitors(page, where)
                page = storage.Page(page_id, total, _stamp(row[2], where, self.now),
                                    _stamp(row[3], where, self.now), {}, visitors)
            elif (page.total, page.visitors) != (total, visitors):
                raise CommandError(f"{where}: total differs from the page's first line")
            if row[4] or row[5]:
                day = _day(row[4], where)
                if day in page.days:
                    raise CommandError(f"{where}: day appears twice")
                page.days[day] = _checked(params.parse_count, row[5], where)
                if fields > 6:
                    for column, numbers in ((7, page.visitor_days), (8, page.bot_days)):
                        number = _checked(params.parse_count, row[column], where)
                        if number:
                            numbers[day] = number
        if page is not None:
            yield _checked_visitors(page, "the last page")

    def _plain_csv(self, rows: Iterator[list[str]]) -> Iterator[storage.Page]:
        for where, row in self._rows(rows, 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise CommandError(f"{where}: expected page_id,count")
            if where == "line 1" and row[1].strip().lower() in ("count", "total", "views", "hits"):
                continue  # a header line
            page_id = _checked(params.validate_page_id, row[0], where)
            total = _checked(params.parse_count, row[1], where)
            yield storage.Page(page_id, total, self.now, self.now, {})


def _checked_visitors(page: storage.Page, where: str) -> storage.Page:
    """Visitors never exceed views: on the page, and on each day."""
    if page.visitors > page.total or any(
            n > page.days.get(day, 0) for day, n in page.visitor_days.items()):
        raise CommandError(f"{where}: {page.page_id}: more visitors than views")
    return page


def parse_import(text: str) -> list[storage.Page]:
    """Every page of an import held in text (for tests and small files)."""
    return list(ImportReader(io.StringIO(text.removeprefix("\ufeff"))).pages())


class _Hashed(io.RawIOBase):
    """A binary stream that hashes what is read through it: the SHA-256
    that names an import once the file has been read (standard input too)."""

    def __init__(self, raw: typing.BinaryIO):
        self.raw, self.sha256 = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[:len(data)] = data
        self.sha256.update(data)
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _import_stream(name: str) -> tuple[TextIO, _Hashed]:
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the
    # first page id. newline="": the csv module reads line ends itself.
    try:
        raw = sys.stdin.buffer if name == "-" else open(name, "rb")
    except OSError as e:
        raise CommandError(f"cannot read {name}: {e.strerror or e}") from None
    hashed = _Hashed(raw)
    return io.TextIOWrapper(io.BufferedReader(hashed), encoding="utf-8-sig", newline=""), hashed


def cmd_import(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    stream, hashed = _import_stream(args.file)
    reader = ImportReader(stream)
    store = (_open_readonly(config) if args.dry_run else
             database.open_store(config.db, sync=config.sync, busy_timeout_s=config.busy_timeout))
    try:
        with store:
            report = store.import_pages(reader.pages(), args.mode, dry_run=args.dry_run,
                                        source=lambda: hashed.sha256.hexdigest(),
                                        again=args.again)
            if reader.github and not args.dry_run:
                # GitHub's numbers are GitHub's: they replace a kept day
                # whatever the mode, so importing twice changes nothing.
                store.github_import(reader.github, storage.utc_now())
    except storage.Duplicate as e:
        raise CommandError(f"{args.file}: page_id {str(e)!r} appears twice; "
                           f"nothing imported") from None
    except storage.TotalLimitReached as e:
        raise CommandError(f"{args.file}: {e}; nothing imported") from None
    except storage.AlreadyImported as e:
        raise CommandError(f"{args.file}: this file was already imported with --mode add "
                           f"(finished {e.finished}); nothing imported (--again adds it "
                           f"once more)") from None
    except UnicodeDecodeError:
        raise CommandError(f"{args.file}: {reader.where}: not UTF-8 text; nothing imported") from None
    except OSError as e:
        raise CommandError(f"cannot read {args.file}: {e.strerror or e}") from None
    except storage.ImportInterrupted as e:
        raise CommandError(f"{args.file}: the database failed after {e.written} of {e.total} "
                           f"pages were written ({e.error}); they are recorded: running the "
                           f"same command again writes the rest") from None
    except CommandError as e:
        raise CommandError(f"{args.file}: {e}; nothing imported") from None
    finally:
        stream.close()
    pages = report["created"] + report["changed"]
    resumed = (f"; {report['resumed']} of them were written by an earlier, interrupted run"
               if report["resumed"] else "")
    kept = (f", and the GitHub traffic of {len(reader.github)} repositories"
            if reader.github else "")
    print(f"{'would import' if args.dry_run else 'imported'} {pages} pages "
          f"({report['created']} new, {report['changed']} changed, {report['days']} days, "
          f"mode {args.mode}){kept}{resumed}", file=out)
    return 0


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
    with _open(config) as store:
        store.set_total(page_id, total)
    print(f"{page_id}: total set to {total}", file=out)
    return 0


def cmd_rename(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    old, new = _counted(args.old, "OLD"), _counted(args.new, "NEW")
    if old == new:
        raise CommandError("OLD and NEW are the same")
    with _open(config) as store:
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
        with _open(config) as store:
            return _remove_github(store, named.repo, True, args.yes, out)
    with _open(config) as store:
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
    with _open_readonly(config) as store:
        # The pages Tally counts and the github: pages (views kept), in one list.
        rows = store.top(args.limit) + [(pages.github(repo).page_id, views)
                                        for repo, views in store.github_top(args.limit)]
    rows = sorted(rows, key=lambda row: (-row[1], row[0]))[:args.limit]
    width = max([len(p) for p, _ in rows] + [7])
    for page_id, total in rows:
        print(f"{page_id:<{width}}  {total:>12,}", file=out)
    return 0


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    named = pages.name(args.page_id)
    page_id = named.page_id
    if named.repo is not None:
        return _show_github(named.repo, config, out)
    with _open_readonly(config) as store:
        counts = store.counts(page_id)
        history = store.days(page_id, 30)
        page = store.page(page_id)
    if page is None:
        raise CommandError(f"no page {page_id!r}")
    print(f"{page_id}\ntotal   {counts.total:,}\ntoday   {counts.today:,}\n"
          f"visitors {counts.visitors:,} (today {counts.visitors_today:,})\n"
          f"created {page.created_at}\nlast    {page.last_seen}\n"
          f"last 30 days: views, visitors, bot views", file=out)
    for d in history:
        print(f"  {d.day}  {d.views:>8,} {d.visitors:>8,} {d.bots:>8,}", file=out)
    return 0


# --host: a scheme, a host name or address, a port, a path prefix; nothing
# that could end a Markdown link or an HTML attribute, or start a query.
_HOST = re.compile(r"(?:(?P<scheme>(?i:https?))://)?"
                   r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])"
                   r"(?::(?P<port>[0-9]{1,5}))?"
                   r"(?P<path>(?:/[A-Za-z0-9._~-]+)*)/?")


def _tally_base(host: str) -> str:
    """https://HOST (a scheme, a port and a path prefix may be given), no trailing /.

    >>> _tally_base("counter.example.org"), _tally_base("http://box.lan:8080/tally/")
    ('https://counter.example.org', 'http://box.lan:8080/tally')
    """
    match = _HOST.fullmatch(host.strip())
    if match is None or (match["port"] and not 0 < int(match["port"]) < 65536):
        raise CommandError("--host takes a host name or address, with an optional http:// or "
                           "https://, :port and /path (letters, digits, . _ ~ -), nothing else")
    if match["host"].startswith("["):
        try:
            ipaddress.IPv6Address(match["host"][1:-1])
        except ValueError:
            raise CommandError("--host: not an IPv6 address in brackets") from None
    port = f":{match['port']}" if match["port"] else ""
    return f"{(match['scheme'] or 'https').lower()}://{match['host']}{port}{match['path']}"


# A counter URL right after one of these is part of another URL
# (https://web.archive.org/web/2022/https://hits.seeyoufarm.com/...,
# ?url=https://...): it is left alone.
_IN_ANOTHER_URL = frozenset("/=:?&%#@+.~_-") | frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _rewrite(text: str, base: str, where: str, kind: str, include_code: bool,
             found: list[tuple[str, str, str]]) -> str:
    """text with every known counter URL moved to base; what moved, and
    what was left alone and why, is added to found as (place, page id or
    "", new URL or note)."""
    lines = markup.Lines(text)  # line numbers in O(log n): linear overall
    code = [] if include_code else markup.code_spans(text, kind)

    def replace(match: "re.Match[str]") -> str:
        whole = match.group(0)
        # A sentence may end right after a URL: its full stop is not the URL's.
        url = whole.rstrip(".,;:!")
        place = f"{where}:{lines.number(match.start())}"
        if match.start() > 0 and text[match.start() - 1] in _IN_ANOTHER_URL:
            found.append((place, "", f"left as it is (part of another URL): {url}"))
            return whole
        if markup.inside(code, match.start(), match.start() + len(url)):
            found.append((place, "", f"left as it is (in code; --include-code rewrites it): {url}"))
            return whole
        try:
            page_id, path_and_query = flavours.moved(url)
        except ParamError as e:
            found.append((place, "", f"left as it is ({e}): {url}"))
            return whole
        new_url = base + path_and_query
        found.append((place, page_id, new_url))
        return new_url + whole[len(url):]
    return flavours.OLD_URL.sub(replace, text)


class _Target:
    """A file migrate writes: through a symlink to its target, under a
    hidden temporary name beside it, then renamed over it."""

    PREFIX = ".tally-migrate-"

    def __init__(self, name: str, text: str):
        self.name, self.text = name, text
        self.path = os.path.realpath(name)
        folder, base = os.path.split(self.path)
        self.tmp = os.path.join(folder, f".{base}{self.PREFIX}{os.getpid()}")
        self.created = False

    @classmethod
    def clean_leftovers(cls, path: str) -> None:
        """Remove the temporary files of a migrate that was killed (its
        process is gone), so none stays beside the person's file."""
        folder, base = os.path.split(os.path.realpath(path))
        for leftover in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}"
                                                                  f"{cls.PREFIX}*")):
            pid = leftover.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                _remove(leftover)

    def prepare(self) -> None:
        """Write the new text beside the file with its owner, group and mode;
        raises CommandError (and leaves nothing) when it cannot."""
        try:
            info = os.stat(self.path)
            if info.st_nlink > 1:
                raise CommandError(
                    f"{self.name}: has {info.st_nlink} hard links; a rewrite would leave the "
                    f"other names with the old URLs (rewrite a copy, then link it again)")
            if not os.access(self.path, os.W_OK):
                # Read-only (or immutable): the rename would replace it anyway,
                # so it is refused here, before any file is written.
                raise CommandError(f"{self.name}: is read-only; nothing was written")
            self._write_tmp()
            made = os.stat(self.tmp)
            if (made.st_uid, made.st_gid) != (info.st_uid, info.st_gid):
                try:
                    os.chown(self.tmp, info.st_uid, info.st_gid)
                except OSError:
                    raise CommandError(f"{self.name}: cannot keep its owner and group "
                                       f"({info.st_uid}:{info.st_gid}) as this user; "
                                       f"nothing was written") from None
            os.chmod(self.tmp, info.st_mode & 0o7777)
        except OSError as e:
            self.discard()
            raise CommandError(f"{self.name}: cannot write: {e.strerror or e}") from None
        except CommandError:
            self.discard()
            raise

    def _write_tmp(self) -> None:
        # "x": a name that exists (not ours) is never written over or removed.
        with open(self.tmp, "x", encoding="utf-8", newline="") as f:
            self.created = True
            f.write(self.text)
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.created:
            _remove(self.tmp)


class _NewFile(_Target):
    """A file migrate creates (--counts): the person's umask, not an old file's owner."""

    def prepare(self) -> None:
        try:
            self._write_tmp()
        except OSError as e:
            self.discard()
            raise CommandError(f"{self.name}: cannot write: {e.strerror or e}") from None


def cmd_migrate(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    base = _tally_base(args.host)
    if args.counts:
        _output_path(args.counts, config)
    targets: dict[str, _Target] = {}
    found: list[tuple[str, str, str]] = []
    for name in args.files:
        _Target.clean_leftovers(name)
        if os.path.realpath(name) in targets:
            continue  # a symlink and its target, or one file named twice
        try:
            with open(name, encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"cannot read {name}: {getattr(e, 'strerror', None) or e}") from None
        new_text = _rewrite(text, base, name, markup.kind_of(name), args.include_code, found)
        if new_text != text:
            targets[os.path.realpath(name)] = _Target(name, new_text)
    for where, page_id, new_url in found:
        print(f"{where}: {page_id} {new_url}" if page_id else f"{where}: {new_url}", file=out)
    moved = [page_id for _, page_id, _ in found if page_id]
    writes = list(targets.values()) if args.write else []
    if args.counts:
        _Target.clean_leftovers(args.counts)
        counts = io.StringIO(newline="")
        writer = csv.writer(counts)
        writer.writerow(["page_id", "count"])
        for page_id in dict.fromkeys(moved):
            writer.writerow([page_id, ""])
        counts_file = _Target(args.counts, counts.getvalue())
        if os.path.exists(args.counts):
            writes.append(counts_file)
        else:
            writes.append(_NewFile(args.counts, counts.getvalue()))
    # Every file is written beside its target first; only when all of them
    # could be is any renamed into place: a failed migrate changes nothing.
    prepared: list = []
    try:
        for target in writes:
            target.prepare()
            prepared.append(target)
    except BaseException:
        for target in prepared:
            target.discard()
        raise
    for target in prepared:
        target.commit()
    verb = "rewrote" if args.write else "would rewrite"
    print(f"{verb} {len(moved)} badge URLs in {len(targets)} file(s)"
          + ("" if args.write or not moved else " (--write changes the files)"), file=out)
    if args.counts:
        print(f"wrote {len(dict.fromkeys(moved))} page ids to {args.counts}: fill in the last "
              f"numbers the old badges showed, then `import {args.counts}`", file=out)
    return 0


# github: GitHub's traffic numbers #########################################


def _show_github(repo: str, config: Config, out: TextIO) -> int:
    with _open_readonly(config) as store:
        traffic = store.github_traffic(repo)
        history = store.github_history(repo, 30)
        lost = store.github_lost(repo)
        state = next((r for r in store.github_repos() if r.repo == repo), None)
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
    with database.open_store(config.db, sync=config.sync,
                             busy_timeout_s=config.busy_timeout) as store:
        try:
            store.github_add(repo, page_id, now)
        except storage.AlreadyExists:
            raise CommandError(f"{repo} is kept already (github list shows it)") from None
        if problem is not None:
            state = next(r for r in store.github_repos() if r.repo == repo)
            outcome = github.fail(store, state, problem, now, _interval(config))
            print(f"keeping {repo}; its first sync failed ({problem.status}): the server "
                  f"tries again from {outcome.retry_at}", file=out)
            return 0
        store.github_save(repo, answer.listed, answer.unlisted, answer.popular,
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
    with _open_readonly(config) as store:
        repos = store.github_repos()
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


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CommandError("not a terminal: pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _remove_github(store: storage.Store, repo: str, delete: bool, yes: bool, out: TextIO) -> int:
    traffic = store.github_traffic(repo)
    if traffic is None:
        raise CommandError(f"{repo} is not kept")
    what = (f"delete {repo}'s kept numbers ({traffic.views:,} views, from "
            f"{traffic.first_day or 'no day'})" if delete else f"stop keeping {repo}")
    if not _confirm(f"{what}?", yes):
        print("nothing changed", file=out)
        return 1
    try:
        store.github_remove(repo, delete)
    except storage.NotFound:
        raise CommandError(f"{repo} is no longer kept; its numbers stay (--delete deletes "
                           f"them)") from None
    print(f"{'deleted' if delete else 'stopped keeping'} {repo}"
          + ("" if delete else "; its numbers stay (badges show them)"), file=out)
    return 0


def cmd_github_remove(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    repo = params.github_repo(args.repo, "OWNER/REPO")
    with _open(config) as store:
        return _remove_github(store, repo, args.delete, args.yes, out)


def cmd_github_sync(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    only = params.github_repo(args.repo, "OWNER/REPO") if args.repo else None
    _github_client(config)  # a token is needed
    with _open(config) as store:
        kept = {r.repo for r in store.github_repos()}
        if only is not None and only not in kept:
            raise CommandError(f"{only} is not kept (github add {only} starts keeping it)")
        outcomes = github.sync_pass(store, config, due_only=False, only=only)
    if not kept:
        print("no repositories kept (github add OWNER/REPO starts one)", file=out)
    for o in outcomes:
        detail = (f"{o.days} days synced" if o.status == github.OK else
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


COMMANDS = {
    "backup": cmd_backup, "restore": cmd_restore, "export": cmd_export, "import": cmd_import,
    "set": cmd_set, "rename": cmd_rename, "delete": cmd_delete, "top": cmd_top, "show": cmd_show,
    "migrate": cmd_migrate, "github": cmd_github,
}
