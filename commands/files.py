"""backup and restore: a checked copy of the database while the server
runs, and putting a checked backup in the database's place (the database
file's own operations are storage.py's).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Callable, TextIO

import storage
from commands.common import CommandError, existing_db, output_path, utc_stamp
from config import Config


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
        return storage.checked_copy(source, dest, progress)
    except storage.UnusableDatabase as e:
        raise CommandError(f"{source}: its copy failed the check ({e})") from None


def cmd_backup(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    storage.require_file(config.db, "backup")
    source = existing_db(config)
    dest = args.dest
    if dest.endswith(os.sep) and not os.path.isdir(dest):
        # "backups/" names a folder: made when missing (a fresh volume).
        try:
            os.makedirs(dest)
        except OSError as e:
            raise CommandError(f"{dest}: cannot create the folder: {e.strerror}") from None
    if os.path.isdir(dest):
        dest = os.path.join(dest, f"counts-{utc_stamp()}.db")
    elif args.keep is not None:
        raise CommandError("--keep needs a folder as DEST")
    if args.keep is not None and args.keep < 1:
        raise CommandError("--keep must be at least 1")
    output_path(dest, config)
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
    storage.require_file(config.db, "restore")
    if storage.is_database_file(args.src, config.db):
        raise CommandError(f"{args.src}: that is the database {config.db} itself; "
                           f"restore reads a backup file")
    version, pages, total = storage.inspect(args.src)
    lock = None if args.force else storage.server_lock(config.db, create=False)
    try:
        stamp = utc_stamp()
        problem = None
        if os.path.exists(config.db):
            try:
                storage.inspect(config.db)
            except storage.UnusableDatabase as e:
                problem = e
        if os.path.exists(config.db) and problem is None:
            kept = f"{config.db}.before-restore-{stamp}"
            storage.replace_counts(config.db, args.src, kept, timeout_s=config.busy_timeout)
            print(f"kept the replaced counts as {kept}", file=out)
        else:
            if problem is not None:
                # The very case restore exists for: the file cannot be read.
                # It is moved aside unchecked, never deleted.
                aside = storage.move_aside(config.db, f".damaged-{stamp}")
                print(f"moved the unreadable database aside as {aside} ({problem})", file=out)
            # The resolved path: a symlink to the database keeps pointing at it.
            _checked_copy(args.src, os.path.realpath(config.db), _progress_bar(sys.stderr))
    finally:
        if lock is not None:
            lock.release()
    print(f"restored {config.db} from {args.src}: {pages} pages, total {total}", file=out)
    return 0


