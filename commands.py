"""The owner's commands: backup, restore, export, import, set, rename,
delete, top, show. server.py's main() parses the command line and calls run().

No SQL here (storage.py), no HTTP (server.py). Every value from the command
line or a file is validated with the same rules as the HTTP side (params.py)
before anything is written; on error a command prints one line, exits
non-zero and has changed nothing.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import io
import json
import os
import sys
from typing import Callable, TextIO

import params
import storage
from config import Config
from params import ParamError

EXPORT_FIELDS = ["page_id", "total", "created_at", "last_seen", "day", "views"]


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


def run(args: argparse.Namespace, config: Config, out: TextIO = sys.stdout) -> int:
    handler: Callable[[argparse.Namespace, Config, TextIO], int] = COMMANDS[args.command]
    return handler(args, config, out)


def _existing_db(config: Config) -> str:
    if not os.path.isfile(config.db):
        raise CommandError(f"no database at {config.db}")
    return config.db


def _open(config: Config) -> storage.Store:
    return storage.Store(_existing_db(config), sync=config.sync,
                         busy_timeout_s=config.busy_timeout)


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


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked_copy(source: str, dest: str, progress: Callable[[int, int], None] | None
                  ) -> tuple[int, int, int]:
    """Copy source to dest atomically: a temporary name, checked, then renamed."""
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        storage.copy_database(source, tmp, progress)
        storage.set_standalone(tmp)
        try:
            checked = storage.inspect_file(tmp)
        except storage.UnusableDatabase as e:
            raise CommandError(f"{source}: its copy failed the check ({e})") from None
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest)
        return checked
    finally:
        for leftover in (tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"):
            if os.path.exists(leftover):
                os.remove(leftover)


def cmd_backup(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    source = _existing_db(config)
    dest = args.dest
    if os.path.isdir(dest):
        dest = os.path.join(dest, f"counts-{_utc_stamp()}.db")
    elif args.keep is not None:
        raise CommandError("--keep needs a folder as DEST")
    if args.keep is not None and args.keep < 1:
        raise CommandError("--keep must be at least 1")
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
    version, pages, total = storage.inspect_file(args.src)
    lock = None if args.force else storage.ServerLock(config.db)
    try:
        if os.path.exists(config.db):
            kept = f"{config.db}.before-restore-{_utc_stamp()}"
            _checked_copy(config.db, kept, None)
            print(f"kept the replaced database as {kept}", file=out)
        # Through SQLite's backup API into the database file itself: a WAL
        # beside it is replaced too, and with --force a live server's
        # connections see the restored counts at once.
        storage.copy_database(args.src, config.db, _progress_bar(sys.stderr))
        storage.inspect_file(config.db)
    finally:
        if lock is not None:
            lock.release()
    print(f"restored {config.db} from {args.src}: {pages} pages, total {total}", file=out)
    return 0


def cmd_export(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    with _open(config) as store:
        pages = list(store.pages())
    target = open(args.out, "w", encoding="utf-8", newline="") if args.out else out
    try:
        if args.format == "json":
            json.dump({"tally_export": 1,
                       "exported_at": storage.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "pages": [{"page_id": p.page_id, "total": p.total,
                                  "created_at": p.created_at, "last_seen": p.last_seen,
                                  "days": p.days} for p in pages]},
                      target, ensure_ascii=False, indent=1)
            target.write("\n")
        else:
            writer = csv.writer(target)
            writer.writerow(EXPORT_FIELDS)
            for p in pages:
                base = [p.page_id, p.total, p.created_at, p.last_seen]
                for day, views in (p.days.items() or [("", "")]):
                    writer.writerow(base + [day, views])
    finally:
        if args.out:
            target.close()
    if args.out:
        print(f"exported {len(pages)} pages to {args.out}", file=out)
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
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise CommandError(f"{where}: invalid timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _checked(fn: Callable, value: object, where: str) -> object:
    try:
        return fn(value)
    except ParamError as e:
        raise CommandError(f"{where}: {e}") from None


def parse_import(text: str) -> list[storage.Page]:
    """Read a Tally JSON or CSV export, or a plain page_id,count CSV.

    Everything is validated before anything is written; the first problem
    stops the import with its line or item number.
    """
    now = storage.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")
    if text.lstrip().startswith("{"):
        return _parse_json(text, now)
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0][: len(EXPORT_FIELDS)] == EXPORT_FIELDS:
        return _parse_export_csv(rows, now)
    return _parse_plain_csv(rows, now)


def _merge(pages: dict[str, storage.Page], page: storage.Page, where: str) -> None:
    if page.page_id in pages:
        raise CommandError(f"{where}: page_id appears twice")
    pages[page.page_id] = page


def _parse_json(text: str, now: str) -> list[storage.Page]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise CommandError(f"not valid JSON (line {e.lineno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("pages"), list):
        raise CommandError("JSON import needs {\"pages\": [...]} as written by export")
    pages: dict[str, storage.Page] = {}
    for number, item in enumerate(document["pages"], 1):
        where = f"page {number}"
        if not isinstance(item, dict):
            raise CommandError(f"{where}: not an object")
        page_id = _checked(params.validate_page_id, item.get("page_id"), where)
        total = item.get("total")
        if not isinstance(total, int) or isinstance(total, bool) or not 0 <= total < 2**63:
            raise CommandError(f"{where}: invalid total")
        days = item.get("days", {})
        if not isinstance(days, dict):
            raise CommandError(f"{where}: days must be an object")
        checked_days = {}
        for day, views in days.items():
            if not isinstance(views, int) or isinstance(views, bool) or not 0 <= views < 2**63:
                raise CommandError(f"{where}: invalid views")
            checked_days[_day(day, where)] = views
        _merge(pages, storage.Page(page_id, total, _stamp(item.get("created_at"), where, now),
                                   _stamp(item.get("last_seen"), where, now), checked_days),
               where)
    return list(pages.values())


def _parse_export_csv(rows: list[list[str]], now: str) -> list[storage.Page]:
    pages: dict[str, storage.Page] = {}
    for number, row in enumerate(rows[1:], 2):
        where = f"line {number}"
        if len(row) != len(EXPORT_FIELDS):
            raise CommandError(f"{where}: expected {len(EXPORT_FIELDS)} fields")
        page_id = _checked(params.validate_page_id, row[0], where)
        total = _checked(params.parse_count, row[1], where)
        page = pages.get(page_id)
        if page is None:
            page = pages[page_id] = storage.Page(page_id, total, _stamp(row[2], where, now),
                                                 _stamp(row[3], where, now), {})
        elif page.total != total:
            raise CommandError(f"{where}: total differs from the page's first line")
        if row[4] or row[5]:
            day = _day(row[4], where)
            if day in page.days:
                raise CommandError(f"{where}: day appears twice")
            page.days[day] = _checked(params.parse_count, row[5], where)
    return list(pages.values())


def _parse_plain_csv(rows: list[list[str]], now: str) -> list[storage.Page]:
    pages: dict[str, storage.Page] = {}
    for number, row in enumerate(rows, 1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        where = f"line {number}"
        if len(row) != 2:
            raise CommandError(f"{where}: expected page_id,count")
        if number == 1 and row[1].strip().lower() in ("count", "total", "views", "hits"):
            continue  # a header line
        page_id = _checked(params.validate_page_id, row[0], where)
        total = _checked(params.parse_count, row[1], where)
        _merge(pages, storage.Page(page_id, total, now, now, {}), where)
    return list(pages.values())


def cmd_import(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"cannot read {args.file}: {e}") from None
    pages = parse_import(text)
    with storage.Store(config.db, sync=config.sync, busy_timeout_s=config.busy_timeout) as store:
        report = store.import_pages(pages, args.mode, dry_run=args.dry_run)
    print(f"{'would import' if args.dry_run else 'imported'} {len(pages)} pages "
          f"({report['created']} new, {report['changed']} changed, {report['days']} days, "
          f"mode {args.mode})", file=out)
    return 0


def cmd_set(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    page_id = params.validate_page_id(args.page_id)
    total = params.parse_count(args.total, "total")
    with _open(config) as store:
        store.set_total(page_id, total)
    print(f"{page_id}: total set to {total}", file=out)
    return 0


def cmd_rename(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    old = params.validate_page_id(args.old, "OLD")
    new = params.validate_page_id(args.new, "NEW")
    if old == new:
        raise CommandError("OLD and NEW are the same")
    with _open(config) as store:
        try:
            store.rename(old, new, merge=args.merge)
        except storage.NotFound:
            raise CommandError(f"no page {old!r}") from None
        except storage.AlreadyExists:
            raise CommandError(f"{new!r} exists; --merge adds {old!r} into it") from None
        total = store.counts(new).total
    print(f"renamed {old} to {new} (total {total})", file=out)
    return 0


def cmd_delete(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    page_id = params.validate_page_id(args.page_id)
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
    with _open(config) as store:
        rows = store.top(args.limit)
    width = max([len(p) for p, _ in rows] + [7])
    for page_id, total in rows:
        print(f"{page_id:<{width}}  {total:>12,}", file=out)
    return 0


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    page_id = params.validate_page_id(args.page_id)
    with _open(config) as store:
        counts = store.counts(page_id)
        history = store.history(page_id, 30)
        page = store.page(page_id)
    if page is None:
        raise CommandError(f"no page {page_id!r}")
    print(f"{page_id}\ntotal   {counts.total:,}\ntoday   {counts.today:,}\n"
          f"created {page.created_at}\nlast    {page.last_seen}\nlast 30 days:", file=out)
    for day, views in history:
        print(f"  {day}  {views:>8,}", file=out)
    return 0


COMMANDS = {
    "backup": cmd_backup, "restore": cmd_restore, "export": cmd_export, "import": cmd_import,
    "set": cmd_set, "rename": cmd_rename, "delete": cmd_delete, "top": cmd_top, "show": cmd_show,
}
