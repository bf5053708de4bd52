"""migrate: the badge URLs of the services people leave (hits.seeyoufarm,
komarev, visitor-badge, ...), found in Markdown, HTML or reStructuredText
files by markup.py's reader and rewritten to this Tally (flavours.py knows
each service's URLs), with a CSV of their counts to fill in and import.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import ipaddress
import os
import re
from typing import TextIO

import flavours
import markup
from commands.common import CommandError, output_path, remove_files
from config import Config
from params import ParamError


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
                remove_files(leftover)

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
            remove_files(self.tmp)


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
        output_path(args.counts, config)
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


