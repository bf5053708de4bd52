"""export and import: every counter with its history (and GitHub's kept
numbers) to JSON or CSV, and back, streamed a page at a time; an import
goes on after an interruption and is not added twice.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import os
import re
import sys
import typing
from typing import Callable, Iterable, Iterator, TextIO

import github
import pages
import params
import storage
from commands.common import CommandError, open_readonly, output_path, remove_files
from config import Config
from params import ParamError

EXPORT_FIELDS = ["page_id", "total", "created_at", "last_seen", "day", "views"]
# Since visitors (schema 4): a page's visitors, and each day's visitors and
# bot views, after the fields above (an older export has only those).
VISITOR_FIELDS = ["visitors", "day_visitors", "day_bots"]
# Since the inflation guard (schema 8): a page's held views and each day's,
# after those (an older export has none: nothing held).
HELD_FIELDS = ["held", "day_held"]
# A CSV cell starting with one of these is a formula to a spreadsheet
# (OWASP, "CSV Injection"): export puts a ' before it, import takes it off.
# A page id that itself starts with ' gets one too, so the round trip is exact.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _csv_cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv_uncell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


# A JSON export's first line: the pages follow one per line, so that
# export and import hold one page at a time (ImportReader streams a file
# that begins with it; any other JSON is read whole).
JSON_HEAD = '{{"tally_export": 1, "exported_at": "{}", "pages": ['
_JSON_HEAD = re.compile(r'\{"tally_export": 1, "exported_at": "[0-9TZ:-]*", "pages": \[$')


def _write_export(exported: Iterable[storage.Page], form: str, target: TextIO,
                  kept: Callable[[], list[storage.KeptRepo]] = list) -> int:
    """Write the exported pages, one at a time, and kept() after them; how many pages."""
    written = 0
    if form == "json":
        target.write(JSON_HEAD.format(storage.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")))
        for p in exported:
            target.write(",\n" if written else "\n")
            json.dump(pages.export_record(p), target, ensure_ascii=False)
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
    writer.writerow(EXPORT_FIELDS + VISITOR_FIELDS + HELD_FIELDS)
    for p in exported:
        base = [_csv_cell(p.page_id), p.total, p.created_at, p.last_seen]
        days = sorted(set(p.days) | set(p.visitor_days) | set(p.bot_days) | set(p.held_days))
        for day in days or [""]:
            writer.writerow(base + ([day, p.days.get(day, 0)] if day else ["", ""])
                            + [p.visitors] + ([p.visitor_days.get(day, 0), p.bot_days.get(day, 0)]
                                              if day else ["", ""])
                            + [p.held, p.held_days.get(day, 0) if day else ""])
        written += 1
    return written


def cmd_export(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    if args.out:
        output_path(args.out, config)
    with open_readonly(config) as store:
        # Pages are read and written one at a time: memory stays flat
        # however many there are.
        kept: list[storage.KeptRepo] = []

        def github() -> list[storage.KeptRepo]:
            kept.extend(store.github.kept())
            return kept
        if args.format == "csv" and store.github.kept():
            print(f"tally: the GitHub traffic of {len(store.github.kept())} repositories is not "
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
            remove_files(tmp)
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
        if header in (EXPORT_FIELDS + VISITOR_FIELDS + HELD_FIELDS,
                      EXPORT_FIELDS + VISITOR_FIELDS):  # the latter: before the guard
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
        # One made before the guard has no held views.
        checked = {name: self._json_days(item.get(name, {}), where, name)
                   for name in ("days", "visitor_days", "bot_days", "held_days")}
        visitors = _json_count(item.get("visitors", 0), where, "visitors")
        held = _json_count(item.get("held", sum(checked["held_days"].values())), where, "held")
        return _checked_held(_checked_visitors(storage.Page(
            page_id, total, _stamp(item.get("created_at"), where, self.now),
            _stamp(item.get("last_seen"), where, self.now), checked["days"], visitors,
            checked["visitor_days"], checked["bot_days"], held, checked["held_days"]), where),
            where)

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
            held = _checked(params.parse_count, row[9], where) if fields > 9 else 0
            if page is None or page.page_id != page_id:
                if page is not None:
                    yield _checked_held(_checked_visitors(page, where), where)
                page = storage.Page(page_id, total, _stamp(row[2], where, self.now),
                                    _stamp(row[3], where, self.now), {}, visitors, held=held)
            elif (page.total, page.visitors, page.held) != (total, visitors, held):
                raise CommandError(f"{where}: total differs from the page's first line")
            if row[4] or row[5]:
                day = _day(row[4], where)
                if day in page.days:
                    raise CommandError(f"{where}: day appears twice")
                page.days[day] = _checked(params.parse_count, row[5], where)
                if fields > 6:
                    for column, numbers in ((7, page.visitor_days), (8, page.bot_days),
                                            (10, page.held_days)):
                        if column >= fields:
                            continue
                        number = _checked(params.parse_count, row[column], where)
                        if number:
                            numbers[day] = number
        if page is not None:
            yield _checked_held(_checked_visitors(page, "the last page"), "the last page")

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


def _checked_held(page: storage.Page, where: str) -> storage.Page:
    """A page's held views are its days' (server.py release counts them)."""
    if page.held != sum(page.held_days.values()):
        raise CommandError(f"{where}: {page.page_id}: held views differ from its days' held views")
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
    store = (open_readonly(config) if args.dry_run else
             storage.open_store(config.db, sync=config.sync, busy_timeout_s=config.busy_timeout))
    try:
        with store:
            report = store.import_pages(reader.pages(), args.mode, dry_run=args.dry_run,
                                        source=lambda: hashed.sha256.hexdigest(),
                                        again=args.again)
            if reader.github and not args.dry_run:
                # GitHub's numbers are GitHub's: they replace a kept day
                # whatever the mode, so importing twice changes nothing.
                store.github.import_kept(reader.github, storage.utc_now())
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


