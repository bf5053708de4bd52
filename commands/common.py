"""What every owner's command shares: its one kind of error, the store
behind TALLY_DB (for writing, or read-only so that reading a backup never
changes its bytes), the files a command may write, a UTC time stamp for
file names, and asking before a change.
"""

from __future__ import annotations

import datetime
import os
import sys

import storage
from config import Config


class CommandError(Exception):
    """A command cannot do what was asked; the message is one line."""



def existing_db(config: Config) -> str:
    if not storage.is_postgres(config.db) and not os.path.isfile(config.db):
        raise CommandError(f"no database at {config.db}")
    return config.db


def open_store(config: Config) -> storage.Store:
    return storage.open_store(existing_db(config), sync=config.sync,
                             busy_timeout_s=config.busy_timeout)


def open_readonly(config: Config) -> storage.Store:
    # Read-only (SQLite's mode=ro): reading a backup never changes its bytes.
    return storage.open_store(existing_db(config), busy_timeout_s=config.busy_timeout,
                             readonly=True)


def output_path(path: str, config: Config) -> str:
    """A file a command may write: not the database, in a folder that exists."""
    if storage.is_database_file(path, config.db):
        raise CommandError(f"{path}: that is the database {config.db} (or a file beside it); "
                           f"write somewhere else")
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a folder; name a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{path}: folder {folder} does not exist")
    return path


def utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def remove_files(*names: str) -> None:
    for name in names:
        if os.path.exists(name):
            os.remove(name)


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CommandError("not a terminal: pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


