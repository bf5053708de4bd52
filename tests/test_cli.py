"""The command line: python server.py COMMAND, called in process through server.main
(conftest.tally, with its own environment and streams); serve, and what needs a
process of its own (signals, a closed pipe, memory), run as real processes."""

from __future__ import annotations

import csv
import datetime
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

import conftest
import params
import storage
from stores import sqlite
from conftest import GUARD_OFF, ROOT, missing, snapshot, tally, totals, wait_until


@pytest.fixture
def filled(db_path):
    with sqlite.Store(db_path) as s:
        for i in range(30):
            s.record_view(f"page-{i % 3}")
        s.record_view("only-once")
    return db_path


@pytest.mark.parametrize("command", ["serve", "backup", "restore", "export", "import", "set",
                                     "rename", "delete", "top", "show"])
def test_every_command_has_help_with_db(command):
    result = tally(command, "--help")
    assert result.returncode == 0 and "--db" in result.stdout


def test_backup_writes_a_checked_copy_and_reports_it(filled, tmp_path):
    dest = str(tmp_path / "copy.db")
    result = tally("backup", dest, db=filled)
    assert result.returncode == 0
    assert "4 pages, total 31" in result.stdout and "integrity ok" in result.stdout
    assert totals(dest) == totals(filled)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    conn = sqlite3.connect(dest)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_backup_into_a_folder_keeps_the_newest(filled, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    for old in ("counts-20200101T000000Z.db", "counts-20200102T000000Z.db", "counts-20200103T000000Z.db"):
        (folder / old).write_bytes(b"old")
    result = tally("backup", str(folder), "--keep", "2", db=filled)
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(folder))
    assert len(names) == 2 and names[0] == "counts-20200103T000000Z.db"
    assert totals(str(folder / names[1])) == totals(filled)


def test_backup_into_a_missing_folder_named_with_a_slash_makes_it(filled, tmp_path):
    folder = tmp_path / "fresh-volume" / "backups"
    result = tally("backup", str(folder) + "/", db=filled)
    assert result.returncode == 0, result.stderr
    names = os.listdir(folder)
    assert len(names) == 1 and names[0].startswith("counts-")
    assert totals(str(folder / names[0])) == totals(filled)
    # Without the slash the name is a file, as before.
    assert tally("backup", str(tmp_path / "plain.db"), db=filled).returncode == 0
    assert (tmp_path / "plain.db").is_file()


def test_backup_with_a_bad_keep_writes_nothing(filled, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    result = tally("backup", str(folder), "--keep", "0", db=filled)
    assert result.returncode == 2 and "--keep must be at least 1" in result.stderr
    assert list(folder.iterdir()) == []


def test_backup_of_a_damaged_database_leaves_no_copy(db_path, tmp_path):
    with sqlite.Store(db_path) as s:
        s.import_pages([storage.Page(f"p{i}", i, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", {})
                        for i in range(3000)], "set")
    with open(db_path, "r+b") as f:  # scribble over the middle of the b-tree pages
        f.seek(8192)
        f.write(b"\xff" * 8192)
    result = tally("backup", str(tmp_path / "copy.db"), db=db_path)
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_backup_of_a_missing_database_fails_cleanly(tmp_path):
    result = tally("backup", str(tmp_path / "x.db"), db=str(tmp_path / "none.db"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert not os.path.exists(tmp_path / "x.db")


def test_restore_refuses_a_bad_file_and_changes_nothing(filled, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"junk" * 1000)
    before = snapshot(filled)
    result = tally("restore", str(bad), db=filled)
    assert result.returncode == 2 and "bad.db" in result.stderr
    assert snapshot(filled) == before
    assert not [p for p in os.listdir(os.path.dirname(filled)) if "before-restore" in p]


def test_restore_refuses_a_newer_schema(filled, tmp_path):
    newer = str(tmp_path / "newer.db")
    tally("backup", newer, db=filled)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = tally("restore", newer, db=filled)
    assert result.returncode == 2 and "newer" in result.stderr


def test_restore_replaces_counts_and_keeps_the_old_file(filled, tmp_path):
    copy = str(tmp_path / "copy.db")
    tally("backup", copy, db=filled)
    expected = snapshot(copy)
    assert tally("set", "page-0", "999", db=filled).returncode == 0
    result = tally("restore", copy, db=filled)
    assert result.returncode == 0, result.stderr
    assert snapshot(filled) == expected
    kept = [p for p in os.listdir(os.path.dirname(filled)) if ".before-restore-" in p]
    assert len(kept) == 1
    assert totals(os.path.join(os.path.dirname(filled), kept[0]))["page-0"] == 999


def test_restore_refuses_while_a_server_runs_unless_forced(filled, tmp_path, live_server):
    copy = str(tmp_path / "copy.db")
    tally("backup", copy, db=filled)
    live = live_server(env=GUARD_OFF, db=filled)
    live.get("/badge?page_id=page-0")
    result = tally("restore", copy, db=filled)
    assert result.returncode == 3 and "running" in result.stderr
    assert json.loads(live.get("/api/count?page_id=page-0")[2])["total"] == 11
    forced = tally("restore", copy, "--force", db=filled)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(live.get("/api/count?page_id=page-0")[2])["total"] == 10


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_then_import_reproduces_everything(filled, tmp_path, fmt):
    out = str(tmp_path / f"export.{fmt}")
    assert tally("export", "--format", fmt, "--out", out, db=filled).returncode == 0
    fresh = str(tmp_path / "fresh.db")
    sqlite.Store(fresh).close()
    result = tally("import", out, db=fresh)
    assert result.returncode == 0, result.stderr
    assert "4 new" in result.stdout
    assert snapshot(fresh) == snapshot(filled)


def test_export_json_shape(filled):
    result = tally("export", db=filled)
    document = json.loads(result.stdout)
    page = next(p for p in document["pages"] if p["page_id"] == "only-once")
    assert page["total"] == 1 and list(page["days"].values()) == [1]
    assert set(page) == {"page_id", "total", "created_at", "last_seen", "days", "visitors",
                         "visitor_days", "bot_days", "held", "held_days"}


def test_import_plain_csv_with_add_and_set(filled, tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("page_id,count\npage-0,100\nnew-page,7\n")
    assert tally("import", str(plain), "--mode", "add", db=filled).returncode == 0
    assert totals(filled)["page-0"] == 110 and totals(filled)["new-page"] == 7
    assert tally("import", str(plain), db=filled).returncode == 0
    assert totals(filled)["page-0"] == 100


def test_import_dry_run_reports_and_changes_nothing(filled, tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a,1\nb,2\n")
    before = snapshot(filled)
    result = tally("import", str(plain), "--dry-run", db=filled)
    assert result.returncode == 0 and "would import 2 pages (2 new" in result.stdout
    assert snapshot(filled) == before


@pytest.mark.parametrize("content, where", [
    ("good,1\nalso-good,2\nbad,-3\nlater,4\n", "line 3"),
    ("good,1\n,5\n", "line 2"),
    ("good,1\ngood,2\n", "page_id 'good' appears twice"),
    ("good,1\nx\x01y,5\n", "line 2"),
    ("good,1\ntoo,many,fields\n", "line 2"),
    ('{"pages": [{"page_id": "ok", "total": 1}, {"page_id": "bad", "total": "x"}]}', "page 2"),
    ('{"pages": [{"page_id": "ok", "total": 1, "days": {"2026-13-45": 1}}]}', "page 1"),
    ('{"pages": [', "not valid JSON"),
    ('{"pages": [{"page_id": 42, "total": 1}]}', "page 1: invalid page_id"),
])
def test_malformed_import_imports_nothing(filled, tmp_path, content, where):
    bad = tmp_path / "bad.txt"
    bad.write_text(content)
    before = snapshot(filled)
    result = tally("import", str(bad), db=filled)
    assert result.returncode == 2 and where in result.stderr
    assert result.stderr.count("\n") == 1
    assert snapshot(filled) == before


def test_set_rename_delete_top_show(filled):
    assert tally("set", "page-1", "5000", db=filled).returncode == 0
    top = tally("top", "--limit", "2", db=filled).stdout.splitlines()
    assert top[0].split()[0] == "page-1" and top[0].split()[1] == "5,000" and len(top) == 2
    assert tally("rename", "page-1", "renamed", db=filled).returncode == 0
    show = tally("show", "renamed", db=filled).stdout
    assert "total   5,000" in show and show.count("\n  20") == 30
    assert tally("delete", "renamed", "--yes", db=filled).returncode == 0
    assert "renamed" not in totals(filled) and "page-1" not in totals(filled)


def test_owner_commands_work_while_the_server_runs(filled, live_server):
    live = live_server(env=GUARD_OFF, db=filled)
    live.get("/badge?page_id=page-0")
    assert tally("set", "page-0", "500", db=filled).returncode == 0
    assert json.loads(live.get("/api/count?page_id=page-0")[2])["total"] == 500
    status, _, body = live.get("/badge?page_id=page-0")
    assert status == 200 and b">501</text>" in body
    assert tally("rename", "page-0", "moved", db=filled).returncode == 0
    assert json.loads(live.get("/api/count?page_id=moved")[2])["total"] == 501


def test_rename_refuses_to_overwrite_without_merge(filled):
    before = snapshot(filled)
    result = tally("rename", "page-0", "page-2", db=filled)
    assert result.returncode == 2 and "--merge" in result.stderr
    assert snapshot(filled) == before
    assert tally("rename", "page-0", "page-2", "--merge", db=filled).returncode == 0
    assert totals(filled)["page-2"] == 20


def test_delete_without_a_terminal_needs_yes(filled):
    result = tally("delete", "page-0", db=filled, stdin="y\n")
    assert result.returncode == 2 and "--yes" in result.stderr
    assert totals(filled)["page-0"] == 10


@pytest.mark.parametrize("args, message", [
    (["set", "", "5"], "empty page_id"),
    (["set", "p", "-5"], "invalid total"),
    (["set", "p", "1e9"], "invalid total"),
    (["set", "a" * 257, "1"], "page_id too long"),
    (["rename", "page-0", "x\ty"], "invalid NEW"),
    (["show", "nobody"], "no page 'nobody'"),
    (["delete", "nobody", "--yes"], "no page 'nobody'"),
    (["top", "--limit", "0"], "--limit must be"),
])
def test_bad_command_input_is_one_line_and_changes_nothing(filled, args, message):
    before = snapshot(filled)
    result = tally(*args, db=filled)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert snapshot(filled) == before


def test_commands_refuse_a_missing_database(tmp_path):
    result = tally("top", db=str(tmp_path / "missing.db"))
    assert result.returncode == 2 and "no database" in result.stderr
    assert not os.path.exists(tmp_path / "missing.db")


def test_bad_setting_stops_with_one_line(tmp_path):
    result = tally("serve", env={"TALLY_SYNC": "sometimes"})
    assert result.returncode == 2 and result.stderr.strip() == "tally: TALLY_SYNC must be full or normal"


# Hardening: commands that must never write over the database ###########


def database_bytes(db: str) -> dict[str, bytes]:
    """The database and its companions, byte for byte (absent ones left out)."""
    return {suffix: open(db + suffix, "rb").read() for suffix in ("", "-wal", "-shm")
            if os.path.exists(db + suffix)}


def other_names(db: str, tmp_path) -> dict[str, str]:
    """Other names of the database file: a symlink, a hard link, its WAL."""
    link = tmp_path / "link.db"
    link.symlink_to(db)
    hard = tmp_path / "hard.db"
    os.link(db, hard)
    return {"same path": db, "symlink": str(link), "hard link": str(hard), "wal": db + "-wal"}


@pytest.mark.parametrize("name", ["same path", "symlink", "hard link", "wal"])
@pytest.mark.parametrize("command", [["export", "--format", "csv", "--out"], ["backup"]])
def test_output_that_is_the_database_is_refused(filled, tmp_path, name, command):
    target = other_names(filled, tmp_path)[name]
    before = database_bytes(filled)
    result = tally(*command, target, db=filled)
    assert result.returncode == 2 and "that is the database" in result.stderr
    assert result.stderr.count("\n") == 1
    assert database_bytes(filled) == before


def test_export_writes_through_a_temporary_name(filled, tmp_path):
    out = tmp_path / "export.json"
    out.write_text("the previous export")
    assert tally("export", "--out", str(out), db=filled).returncode == 0
    assert json.loads(out.read_text())["tally_export"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "export.json"]


@pytest.mark.parametrize("name", ["same path", "symlink", "hard link"])
def test_restore_from_the_database_itself_is_refused_at_once(filled, tmp_path, name):
    source = other_names(filled, tmp_path)[name]
    before = database_bytes(filled)
    result = tally("restore", source, db=filled)  # used to hang in SQLite's retry loop
    assert result.returncode == 2 and "itself" in result.stderr
    assert database_bytes(filled) == before


def test_restore_replaces_a_damaged_database_and_keeps_it_aside(filled, tmp_path):
    copy = str(tmp_path / "copy.db")
    assert tally("backup", copy, db=filled).returncode == 0
    damaged = b"this is not a database any more" * 100
    for suffix in ("-wal", "-shm"):
        if os.path.exists(filled + suffix):
            os.remove(filled + suffix)
    with open(filled, "wb") as f:
        f.write(damaged)
    result = tally("restore", copy, db=filled)
    assert result.returncode == 0, result.stderr
    assert "moved the unreadable database aside" in result.stdout
    assert snapshot(filled) == snapshot(copy)
    aside = [p for p in os.listdir(os.path.dirname(filled))
             if ".damaged-" in p and not p.endswith("-visitors")]
    assert len(aside) == 1
    assert open(os.path.join(os.path.dirname(filled), aside[0]), "rb").read() == damaged


def test_restore_force_under_load_loses_no_answered_view(filled, tmp_path, live_server):
    # The backup holds "hot" at 100000: answers below that came before the
    # restore and must all be in the kept copy; answers above it came after.
    source = str(tmp_path / "source.db")
    with sqlite.Store(source) as s:
        s.set_total("hot", 100_000)
    live = live_server(env=GUARD_OFF, db=filled)
    answered: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, _, body = live.get("/badge?page_id=hot")
            if status == 200:
                answered.append(int(re.search(rb">(\d+)</text></g>", body).group(1)))
    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) > 200)
    result = tally("restore", source, "--force", db=filled)
    wait_until(lambda: any(n > 100_000 for n in answered) and len(answered) > 400)
    stop.set()
    for t in threads:
        t.join()
    assert result.returncode == 0, result.stderr
    kept = os.path.join(os.path.dirname(filled), next(
        p for p in os.listdir(os.path.dirname(filled)) if ".before-restore-" in p))
    before = sorted(n for n in answered if n <= 100_000)
    after = sorted(n for n in answered if n > 100_000)
    assert before == list(range(1, len(before) + 1))
    assert totals(kept)["hot"] == len(before)
    assert after == list(range(100_001, 100_001 + len(after)))
    assert totals(filled)["hot"] == 100_000 + len(after)


def test_a_symlink_to_a_served_database_finds_its_lock(filled, tmp_path, live_server):
    live_server(db=filled)
    link = tmp_path / "link.db"
    link.symlink_to(filled)
    copy = str(tmp_path / "copy.db")
    assert tally("backup", copy, db=filled).returncode == 0
    before = totals(filled)
    result = tally("restore", copy, db=str(link))
    assert result.returncode == 3 and "running" in result.stderr
    assert totals(filled) == before
    second = tally("serve", "--port", "0", db=str(link))
    assert second.returncode == 3 and "running" in second.stderr


@pytest.mark.parametrize("folder", ["same", "other"])
def test_a_hard_link_to_a_served_database_finds_its_lock(filled, tmp_path, live_server, folder):
    # Two servers on two names of one inode would each keep a -wal and lose
    # one server's counts at the next checkpoint.
    live = live_server(env=GUARD_OFF, db=filled)
    (tmp_path / "elsewhere").mkdir()
    link = os.path.join(os.path.dirname(filled) if folder == "same" else str(tmp_path / "elsewhere"),
                        "link.db")
    os.link(filled, link)
    second = tally("serve", "--port", "0", db=link)
    assert second.returncode == 3 and "running" in second.stderr
    copy = str(tmp_path / "copy.db")
    assert tally("backup", copy, db=filled).returncode == 0
    before = totals(filled)
    result = tally("restore", copy, db=link)
    assert result.returncode == 3 and "running" in result.stderr
    assert totals(filled) == before
    assert live.get("/badge?page_id=page-0")[0] == 200


def test_serve_locks_a_new_database_file_before_anyone_can_link_it(tmp_path, live_server):
    db = str(tmp_path / "new" / "counts.db")
    live_server(db=db)
    link = str(tmp_path / "link.db")
    os.link(db, link)
    second = tally("serve", "--port", "0", db=link)
    assert second.returncode == 3 and "running" in second.stderr


def test_restore_into_a_missing_database_creates_no_empty_file_first(filled, tmp_path):
    target = str(tmp_path / "fresh" / "counts.db")
    result = tally("restore", filled, db=target)
    assert result.returncode == 0, result.stderr
    assert "moved the unreadable" not in result.stdout
    assert totals(target) == totals(filled)


# Hardening: reading commands never change a file ##########################


@pytest.mark.parametrize("args", [["top"], ["show", "page-0"], ["export"],
                                  ["export", "--format", "csv"]])
def test_reading_commands_leave_a_backup_byte_identical(filled, tmp_path, args):
    copy = str(tmp_path / "copy.db")
    assert tally("backup", copy, db=filled).returncode == 0
    before = database_bytes(copy)
    result = tally(*args, db=copy)
    assert result.returncode == 0, result.stderr
    assert "page-0" in result.stdout
    assert database_bytes(copy) == before  # no -wal or -shm appeared either


def test_import_dry_run_creates_no_database(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a,1\n")
    missing = tmp_path / "missing.db"
    result = tally("import", str(plain), "--dry-run", db=str(missing))
    assert result.returncode == 2 and "no database" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["import", "PLAIN"]])
def test_another_programs_sqlite_file_is_refused(tmp_path, command):
    other = str(tmp_path / "other.db")
    sqlite3.connect(other).execute("CREATE TABLE notes (text)").connection.close()
    plain = tmp_path / "plain.csv"
    plain.write_text("a,1\n")
    before = database_bytes(other)
    result = tally(*[str(plain) if a == "PLAIN" else a for a in command], db=other)
    assert result.returncode == 2 and "not a Tally database" in result.stderr
    assert database_bytes(other) == before


# Hardening: one line, exit 2, never a traceback ###########################


@pytest.mark.parametrize("case", ["out in a missing folder", "out a folder", "created_at before year 1",
                                  "JSON nested deep", "JSON array", "backup into a missing folder"])
def test_problems_are_one_line_naming_the_file(filled, tmp_path, case):
    bad = tmp_path / "bad.json"
    args = {
        "out in a missing folder": ["export", "--out", "/nonexistent/d/x.json"],
        "out a folder": ["export", "--out", str(tmp_path)],
        "created_at before year 1": ["import", str(bad)],
        "JSON nested deep": ["import", str(bad)],
        "JSON array": ["import", str(bad)],
        "backup into a missing folder": ["backup", "/nonexistent/d/x.db"],
    }[case]
    bad.write_text({
        "created_at before year 1": json.dumps({"pages": [{"page_id": "p", "total": 1,
                                                           "created_at": "0001-01-01T00:00:00+01:00"}]}),
        "JSON nested deep": '{"pages": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "JSON array": json.dumps([{"page_id": "p", "total": 1}]),
    }.get(case, ""))
    before = snapshot(filled)
    result = tally(*args, db=filled)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    named = args[-1] if args[0] != "import" else str(bad)
    assert named in result.stderr
    assert snapshot(filled) == before


def test_a_closed_pipe_is_one_line(db_path):
    with sqlite.Store(db_path) as s:
        s.import_pages([storage.Page(f"page-{i:05d}", i, "2026-01-01T00:00:00Z",
                                     "2026-01-01T00:00:00Z", {}) for i in range(5000)], "set")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "top", "--limit", "5000",
                             "--db", db_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=environment)
    proc.stdout.readline()  # like `| head -1`: read a line, then leave
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 2
    assert stderr == "tally: output closed early (broken pipe)\n"


# Hardening: counts stay integers, CSV cells stay text ######################


def test_set_and_import_refuse_a_total_past_the_cap(filled, tmp_path):
    before = snapshot(filled)
    result = tally("set", "ovf", str(params.TOTAL_MAX + 1), db=filled)
    assert result.returncode == 2 and "above" in result.stderr
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pages": [{"page_id": "ovf", "total": 9223372036854775807}]}))
    result = tally("import", str(big), db=filled)
    assert result.returncode == 2 and "page 1: total above" in result.stderr
    add = tmp_path / "add.csv"
    add.write_text(f"page-0,{params.TOTAL_MAX}\n")
    result = tally("import", str(add), "--mode", "add", db=filled)
    assert result.returncode == 2 and "past" in result.stderr
    assert snapshot(filled) == before


def test_a_view_at_the_cap_is_an_error_badge_and_the_total_stays(filled, live_server):
    assert tally("set", "ovf", str(params.TOTAL_MAX), db=filled).returncode == 0
    live = live_server(env=GUARD_OFF, db=filled)
    status, headers, body = live.get("/badge?page_id=ovf")
    assert status == 200 and headers["X-Tally-Error"] == "count at its maximum"
    assert totals(filled)["ovf"] == params.TOTAL_MAX
    status, _, body = live.get("/badge?page_id=ovf&query_only=true&format=short")
    assert b">9P</text>" in body
    exported = tally("export", db=filled)
    assert f'"total": {params.TOTAL_MAX}' in exported.stdout


FORMULA_IDS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2", "@SUM(A1)", "'quoted", "plain"]


def test_csv_export_neutralises_formula_cells_and_imports_back_exactly(tmp_path, db_path):
    with sqlite.Store(db_path) as s:
        for i, page_id in enumerate(FORMULA_IDS, 1):
            s.set_total(page_id, i)
    out = tmp_path / "export.csv"
    assert tally("export", "--format", "csv", "--out", str(out), db=db_path).returncode == 0
    cells = [row[0] for row in csv.reader(open(out, newline=""))][1:]
    assert all(not c.startswith(("=", "+", "-", "@")) for c in cells)
    assert "'=HYPERLINK(\"http://x\",\"y\")" in cells and "''quoted" in cells and "plain" in cells
    fresh = str(tmp_path / "fresh.db")
    assert tally("import", str(out), db=fresh).returncode == 0
    assert snapshot(fresh) == snapshot(db_path)


def test_import_skips_a_byte_order_mark(filled, tmp_path):
    excel = tmp_path / "excel.csv"
    excel.write_bytes("\ufeffalice.repo,5\nbob.repo,6\n".encode("utf-8"))
    assert tally("import", str(excel), db=filled).returncode == 0
    assert "total   5" in tally("show", "alice.repo", db=filled).stdout


def test_a_large_import_streams_and_never_holds_badges_up(db_path, tmp_path, live_server):
    lines = 300_000
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write("page_id,count\n")
        for i in range(lines):
            f.write(f"imported-{i:07d},{i}\n")
    # A busy timeout of three seconds: a server kept waiting longer than that
    # by the import's write lock would answer 503. Each chunk's transaction
    # takes milliseconds, one for the whole file seconds; one second was too
    # little on this 2-core machine with the suite in three processes beside it.
    live = live_server(db=db_path, env={"TALLY_BUSY_TIMEOUT": "3"})
    statuses: list[int] = []
    stop = threading.Event()

    def views() -> None:
        while not stop.is_set():
            statuses.append(live.get("/badge?page_id=during-import")[0])
    watcher = threading.Thread(target=views)
    watcher.start()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    proc = subprocess.Popen([sys.executable, "-c", MEASURED_IMPORT, str(ROOT), str(big), db_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment)
    stdout, stderr = proc.communicate(timeout=300)
    stop.set()
    watcher.join()
    assert proc.returncode == 0, stderr
    report, peak_kb = stdout.splitlines()
    assert f"imported {lines} pages ({lines} new" in report
    assert int(peak_kb) < 100_000  # reading it whole took 564 MB for a million lines
    assert statuses and set(statuses) == {200}
    assert totals(db_path)[f"imported-{lines - 1:07d}"] == lines - 1


# Runs `import` in a child and prints its peak resident memory (KB): VmHWM,
# not getrusage's ru_maxrss, which Linux carries over from the forking
# parent (pytest, often larger than the import itself).
MEASURED_IMPORT = """
import sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["server.py", "import", sys.argv[2], "--db", sys.argv[3]]
import server
code = server.main()
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""


# migrate: old counters' badge URLs in a person's files ####################

OLD_URLS = {
    "https://hits.seeyoufarm.com/api/count/incr/badge.svg?url=https%3A%2F%2Fgithub.com%2Fa%2Fb"
    "&count_bg=%2379C83D&title_bg=%23555555&icon=&icon_color=%23E7E7E7&title=hits&edge_flat=false":
        "hits:github.com/a/b",
    "https://komarev.com/ghpvc/?username=Alice&color=green": "ghpvc:alice",
    "https://hits.sh/github.com/a/b.svg?view=today-total": "hitssh:github.com/a/b",
    "https://hits.dwyl.com/a/b.svg": "dwyl:a/b",
    "https://api.visitorbadge.io/api/visitors?path=https%3A%2F%2Fgithub.com%2Fa%2Fb&countColor=%23263759":
        "visitorbadge:https://github.com/a/b",
    "https://visitor-badge.glitch.me/badge?page_id=a.b": "a.b",
    "https://visitor-badge.laobi.icu/badge?page_id=a.c&left_color=red": "a.c",
}


def sample_files(tmp_path) -> dict:
    urls = list(OLD_URLS)
    html_urls = [u.replace("&", "&amp;") for u in urls]
    files = {
        "README.md": "# Project\n\nSee https://example.org/x and [docs](https://docs.example.org).\n\n"
                     + "".join(f"![badge {i}]({u})\n" for i, u in enumerate(urls))
                     + "Plain https://hits.sh/github.com/a/b.svg. End.\r\n",
        "index.html": "<p><a href=\"https://github.com/a/b\">repo</a>\n"
                      + "".join(f'<img src="{u}" alt="x">\n' for u in html_urls) + "</p>\n",
        "docs.rst": "Title\n=====\n\n" + "".join(f".. image:: {u}\n   :alt: b\n\n" for u in urls)
                    + "`link <https://example.org/y>`_\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode())
    return files


def test_migrate_shows_each_url_and_changes_nothing_without_write(tmp_path):
    files = sample_files(tmp_path)
    names = [str(tmp_path / n) for n in files]
    result = tally("migrate", *names, "--host", "counter.example.org")
    assert result.returncode == 0, result.stderr
    for page_id in OLD_URLS.values():
        assert result.stdout.count(f" {page_id} https://counter.example.org/") >= 3
    assert "README.md:5: hits:github.com/a/b https://counter.example.org/api/count/incr/" in result.stdout
    assert "would rewrite 22 badge URLs in 3 file(s)" in result.stdout
    assert {n: (tmp_path / n).read_bytes().decode() for n in files} == files


@pytest.mark.parametrize("host, base", [("counter.example.org", "https://counter.example.org"),
                                        ("http://box.lan:8080/tally/", "http://box.lan:8080/tally")])
def test_migrate_write_changes_exactly_the_counter_urls(tmp_path, host, base):
    files = sample_files(tmp_path)
    result = tally("migrate", *[str(tmp_path / n) for n in files], "--host", host, "--write")
    assert result.returncode == 0, result.stderr
    for name, before in files.items():
        expected = re.sub(r"https://(hits\.seeyoufarm\.com|komarev\.com|hits\.sh|hits\.dwyl\.com|"
                          r"api\.visitorbadge\.io|visitor-badge\.glitch\.me|visitor-badge\.laobi\.icu)/",
                          base + "/", before)
        assert (tmp_path / name).read_bytes().decode() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_migrate_counts_file_imports_once_filled_in(tmp_path, db_path):
    files = sample_files(tmp_path)
    counts = tmp_path / "counts.csv"
    result = tally("migrate", *[str(tmp_path / n) for n in files], "--host", "c.example.org",
                   "--counts", str(counts))
    assert result.returncode == 0, result.stderr
    lines = counts.read_text().splitlines()
    assert lines[0] == "page_id,count" and len(lines) == 1 + len(set(OLD_URLS.values()))
    filled = "\n".join([lines[0]] + [f"{line}{n}" for n, line in enumerate(lines[1:], 100)]) + "\n"
    counts.write_text(filled)
    sqlite.Store(db_path).close()
    assert tally("import", str(counts), db=db_path).returncode == 0
    assert "total   100" in tally("show", "hits:github.com/a/b", db=db_path).stdout
    assert totals(db_path)["ghpvc:alice"] == 101


def test_migrate_leaves_a_bad_old_url_alone_and_says_so(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("![x](https://komarev.com/ghpvc/?username=-bad-)\n")
    result = tally("migrate", str(page), "--host", "c.example.org", "--write")
    assert result.returncode == 0
    assert "left as it is (invalid username)" in result.stdout
    assert page.read_text() == "![x](https://komarev.com/ghpvc/?username=-bad-)\n"


# Hardening, round three ####################################################


def write_plain_csv(path, pages: int, count: int = 10) -> None:
    with open(path, "w") as f:
        for i in range(pages):
            f.write(f"bulk-{i:07d},{count}\n")


def imported_pages(db: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM pages WHERE page_id LIKE 'bulk-%'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        conn.close()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_add_import_run_again_ends_as_one_run_would(filled, tmp_path, how):
    pages = 200_000
    big = tmp_path / "big.csv"
    write_plain_csv(big, pages)
    before = totals(filled)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "import", str(big),
                             "--mode", "add", "--db", filled],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment)
    # Interrupted once its first chunks are written, before its last.
    wait_until(lambda: imported_pages(filled) > 0, timeout=120, interval=0.005)
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=120)
    written = imported_pages(filled)
    assert 0 < written < pages, "the import was not interrupted part-way"
    assert proc.returncode != 0
    if how == signal.SIGINT:
        assert stderr == "tally: interrupted\n"
    again = tally("import", str(big), "--mode", "add", db=filled)
    assert again.returncode == 0, again.stderr
    assert f"{written} of them were written by an earlier, interrupted run" in again.stdout
    after = totals(filled)
    assert {p: t for p, t in after.items() if not p.startswith("bulk-")} == before
    assert sum(1 for p in after if p.startswith("bulk-")) == pages
    assert set(t for p, t in after.items() if p.startswith("bulk-")) == {10}
    # And once more: that file is in, so adding it again is refused.
    third = tally("import", str(big), "--mode", "add", db=filled)
    assert third.returncode == 2 and "already imported" in third.stderr
    assert totals(filled) == after


def test_import_again_adds_a_finished_file_once_more(filled, tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("page-0,5\n")
    assert tally("import", str(plain), "--mode", "add", db=filled).returncode == 0
    refused = tally("import", str(plain), "--mode", "add", db=filled)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--again" in refused.stderr and totals(filled)["page-0"] == 15
    assert tally("import", str(plain), "--mode", "add", "--again", db=filled).returncode == 0
    assert totals(filled)["page-0"] == 20
    # From standard input the same content is the same import.
    piped = tally("import", "-", "--mode", "add", db=filled, stdin="page-0,5\n")
    assert piped.returncode == 2 and "already imported" in piped.stderr


def test_a_failed_add_no_longer_advises_set(filled, tmp_path):
    text = (ROOT / "commands" / "moving.py").read_text()
    assert "with --mode set finishes it" not in text


def test_rename_merge_past_the_total_cap_is_one_line_and_changes_nothing(filled):
    assert tally("set", "a", str(params.TOTAL_MAX), db=filled).returncode == 0
    before = snapshot(filled)
    result = tally("rename", "page-0", "a", "--merge", db=filled)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "past 9000000000000000" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(filled) == before


BAD_DATABASES = [
    ("postgres://tally:s3cretpw@[::1", ["s3cretpw"]),
    ("postgresql://u:s%ZZcret@localhost/db", ["s%ZZcret", "ZZcret"]),
    ("host=/tmp password='s3 cretword dbname=t", ["cretword"]),
    ("postgresql://u:pa@ss/word@[x/db", ["pa@ss", "ss/word"]),
    ("user=u password=hunter22 host=/nonexistent-tally port=1", ["hunter22"]),
]


@pytest.mark.parametrize("db, secrets", BAD_DATABASES)
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["top"], ["set", "p", "1"],
                                     ["import", "-"]])
def test_no_password_is_printed_for_a_bad_database(db, secrets, command):
    result = tally(*command, db=db, stdin="p,1\n")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for secret in secrets:
        assert secret not in result.stderr + result.stdout


HITS_URL = "https://hits.seeyoufarm.com/api/count/incr/badge.svg?url=https://github.com/a/b"
MOVED_URL = "https://c.example.org/api/count/incr/badge.svg?url=https://github.com/a/b"


def test_migrate_writes_through_a_symlink_and_keeps_owner_group_and_mode(tmp_path):
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "README.md"
    target.write_text(f"![hits]({HITS_URL})\n")
    os.chmod(target, 0o640)
    os.chown(target, 1234, 5678)
    link = tmp_path / "README.md"
    link.symlink_to("docs/README.md")
    result = tally("migrate", str(link), "--host", "c.example.org", "--write")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "docs/README.md"
    assert target.read_text() == f"![hits]({MOVED_URL})\n"
    info = os.stat(target)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["README.md"]


def test_migrate_refuses_a_hard_linked_file_and_writes_nothing(tmp_path):
    first, other = tmp_path / "a.md", tmp_path / "b.md"
    first.write_text(f"![hits]({HITS_URL})\n")
    other.write_text(f"![hits]({HITS_URL})\n")
    os.link(other, tmp_path / "other-name.md")
    result = tally("migrate", str(first), str(other), "--host", "c.example.org", "--write")
    assert result.returncode == 2 and "hard links" in result.stderr
    assert first.read_text() == other.read_text() == f"![hits]({HITS_URL})\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.md", "other-name.md"]


@pytest.mark.parametrize("text", [
    f"Archived: https://web.archive.org/web/2022/{HITS_URL}\n",
    f"![s](https://img.shields.io/endpoint?url={HITS_URL})\n",
    f"[![x]({HITS_URL.replace('https://', 'https://proxy.example/?u=https://')})](x)\n",
])
def test_migrate_leaves_a_url_inside_another_url_alone(tmp_path, text):
    page = tmp_path / "README.md"
    page.write_text(text)
    result = tally("migrate", str(page), "--host", "c.example.org", "--write")
    assert result.returncode == 0 and page.read_text() == text
    assert "part of another URL" in result.stdout


CODE_SAMPLES = {
    "README.md": (f"![hits]({HITS_URL})\n\n```markdown\n![hits]({HITS_URL})\n```\n\n"
                  f"    ![hits]({HITS_URL})\n\nUse `{HITS_URL}` like this.\n\n"
                  f"- a list\n\n    ![hits]({HITS_URL})\n"),
    "index.html": f'<img src="{HITS_URL}">\n<pre>\n<img src="{HITS_URL}">\n</pre>\n'
                  f'<p><code>{HITS_URL}</code></p>\n',
    "docs.rst": f".. image:: {HITS_URL}\n\nExample::\n\n    .. image:: {HITS_URL}\n\n"
                f".. code-block:: rst\n\n   .. image:: {HITS_URL}\n\nAfter.\n",
}
# What moves: the first badge of each file, and the list's paragraph.
MOVED_PER_FILE = {"README.md": 2, "index.html": 1, "docs.rst": 1}


@pytest.mark.parametrize("name", list(CODE_SAMPLES))
def test_migrate_leaves_code_alone_and_lists_it(tmp_path, name):
    page = tmp_path / name
    page.write_text(CODE_SAMPLES[name])
    result = tally("migrate", str(page), "--host", "c.example.org", "--write")
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.count(MOVED_URL) == MOVED_PER_FILE[name]
    assert text.count(HITS_URL) == CODE_SAMPLES[name].count(HITS_URL) - MOVED_PER_FILE[name]
    assert result.stdout.count("in code; --include-code rewrites it") == text.count(HITS_URL)
    everything = tally("migrate", str(page), "--host", "c.example.org", "--write",
                       "--include-code")
    assert everything.returncode == 0 and HITS_URL not in page.read_text()


def test_migrate_changes_nothing_when_one_target_cannot_be_written(tmp_path):
    first, second = tmp_path / "a.md", tmp_path / "locked" / "b.md"
    second.parent.mkdir()
    first.write_text(f"![hits]({HITS_URL})\n")
    second.write_text(f"![hits]({HITS_URL})\n")
    # The second target's temporary name is taken by a folder, so it cannot
    # be written (as root, a read-only mode would not stop it).
    result = subprocess.run(
        [sys.executable, "-c", f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import server
tmp = {str(second.parent)!r} + "/.b.md.tally-migrate-" + str(os.getpid())
os.mkdir(tmp)
sys.exit(server.main(["migrate", {str(first)!r}, {str(second)!r}, "--host", "c.example.org", "--write"]))
"""], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "b.md: cannot write" in result.stderr
    assert first.read_text() == second.read_text() == f"![hits]({HITS_URL})\n"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["a.md"]
    assert [p.name for p in second.parent.iterdir() if p.is_file()] == ["b.md"]


def test_migrate_changes_nothing_when_the_counts_file_cannot_be_written(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(f"![hits]({HITS_URL})\n")
    result = tally("migrate", str(page), "--host", "c.example.org", "--write",
                   "--counts", "/proc/x.csv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert page.read_text() == f"![hits]({HITS_URL})\n"


def test_migrate_removes_what_a_killed_migrate_left(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(f"![hits]({HITS_URL})\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    leftover = tmp_path / f".README.md.tally-migrate-{dead}"
    leftover.write_text("half a file")
    assert tally("migrate", str(page), "--host", "c.example.org", "--write").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


@pytest.mark.parametrize("host", ['a.org"onerror="alert(1)', "a.org)[x](javascript:alert(1)",
                                  "a.org><script>alert(1)</script>", "host.org?x=", "host.org#",
                                  "https://", "ftp://a.org", "a.org/pa th", "user@a.org",
                                  "a.org:99999", "[zz::1]", "a..org", "-a.org", ""])
def test_migrate_refuses_a_host_that_is_not_one(tmp_path, host):
    page = tmp_path / "README.md"
    page.write_text(f"![hits]({HITS_URL})\n")
    result = tally("migrate", str(page), f"--host={host}", "--write")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert page.read_text() == f"![hits]({HITS_URL})\n"


@pytest.mark.parametrize("host, base", [("192.0.2.7:8080", "https://192.0.2.7:8080"),
                                        ("HTTP://Box.lan", "http://Box.lan"),
                                        ("http://[::1]:8080/t", "http://[::1]:8080/t"),
                                        ("counter.example.org.", "https://counter.example.org.")])
def test_migrate_accepts_addresses_ports_and_paths(tmp_path, host, base):
    page = tmp_path / "README.md"
    page.write_text(f"![hits]({HITS_URL})\n")
    assert tally("migrate", str(page), "--host", host, "--write").returncode == 0
    assert page.read_text() == f"![hits]({base}/api/count/incr/badge.svg?url=https://github.com/a/b)\n"


def test_migrate_names_a_hits_url_urllib_cannot_read_and_goes_on(tmp_path):
    page = tmp_path / "README.md"
    bad = "https://hits.seeyoufarm.com/api/count/incr/badge.svg?url=http://%5Bx"
    page.write_text(f"![a]({bad})\n![b]({HITS_URL})\n")
    result = tally("migrate", str(page), "--host", "c.example.org", "--write")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert f"left as it is (invalid url): {bad}" in result.stdout
    assert page.read_text() == f"![a]({bad})\n![b]({MOVED_URL})\n"


def test_migrate_finds_line_numbers_in_linear_time():
    # The line of each URL came from counting newlines from the start for
    # every match (quadratic: 40,000 URLs took 36 s); it is a bisection now.
    from commands import migrate
    text = "".join(f"line {i} ![h]({HITS_URL})\n" for i in range(20_000))
    found: list = []
    migrate._rewrite(text, "https://c.example.org", "f", "markdown", True, found)
    assert found[-1][0] == "f:20000" and len(found) == 20_000
    source = (ROOT / "commands" / "migrate.py").read_text()
    assert 'text.count("\\n", 0' not in source


def test_migrate_refuses_a_read_only_file_and_writes_nothing(tmp_path):
    # As root file modes do not stop a write; unshare --user runs migrate as
    # root without its capabilities, to whom a 0444 file is read-only.
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        missing("unshare --user is not allowed here", "unshare --user is needed in CI")
    first, locked = tmp_path / "a.md", tmp_path / "b.md"
    first.write_text(f"![hits]({HITS_URL})\n")
    locked.write_text(f"![hits]({HITS_URL})\n")
    os.chmod(locked, 0o444)
    os.chmod(tmp_path, 0o777)  # the folder stays writable: only the file is read-only
    result = subprocess.run(["unshare", "--user", sys.executable, str(ROOT / "server.py"), "migrate",
                             str(first), str(locked), "--host", "c.example.org", "--write"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "b.md: is read-only" in result.stderr
    assert first.read_text() == locked.read_text() == f"![hits]({HITS_URL})\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.md"]


# github: add, list, remove, sync (against a local stand-in for GitHub's API) ##

def github_env(fake, **more) -> dict:
    from github_api import TOKEN
    return {"TALLY_GITHUB_API": fake.url, "TALLY_GITHUB_TOKEN": TOKEN,
            "TALLY_GITHUB_TIMEOUT": "2", **more}


@pytest.fixture
def served(fake_github):
    """alice/repo with 20 days of traffic on GitHub's side, ending today."""
    import datetime as dt
    from github_api import history
    fake_github.histories["alice/repo"] = history(fake_github.today - dt.timedelta(days=19), 20)
    return fake_github


def test_github_add_keeps_githubs_14_days_and_list_shows_them(served, db_path):
    added = tally("github", "add", "Alice/Repo", "--page", "alice.repo", db=db_path,
                  env=github_env(served))
    assert added.returncode == 0, added.stderr
    assert "keeping alice/repo: 14 days" in added.stdout
    listed = tally("github", "list", db=db_path)
    row = listed.stdout.splitlines()[1].split()
    assert row[0] == "alice/repo" and row[1] == "ok" and row[3] == "14" and row[5] == "0"
    assert row[6] == "alice.repo"
    shown = tally("show", "github:alice/repo", db=db_path).stdout
    assert "views    " + f"{sum(range(7, 21)):,}" in shown  # the last 14 of 1..20


@pytest.mark.parametrize("failure, status", [("401", "token refused"), ("403", "no push access"),
                                             ("404", "not found")])
def test_github_add_refuses_what_the_owner_must_fix_and_keeps_nothing(served, db_path,
                                                                      failure, status):
    if failure == "401":
        served.token = "another"
    else:
        served.failures["alice/repo"] = failure
    added = tally("github", "add", "alice/repo", db=db_path, env=github_env(served))
    assert added.returncode == 2 and added.stderr.count("\n") == 1
    assert f"alice/repo: {status}:" in added.stderr and "not added" in added.stderr
    assert not os.path.exists(db_path)  # not even a database was created


def test_github_add_keeps_a_repository_github_could_not_answer_for_now(served, db_path):
    served.failures["alice/repo"] = "500"
    added = tally("github", "add", "alice/repo", db=db_path, env=github_env(served))
    assert added.returncode == 0 and "first sync failed (GitHub error 500)" in added.stdout
    assert "GitHub error 500" in tally("github", "list", db=db_path).stdout
    del served.failures["alice/repo"]
    synced = tally("github", "sync", db=db_path, env=github_env(served))
    assert synced.returncode == 0 and "alice/repo: ok (14 days synced)" in synced.stdout


def test_github_needs_a_token_and_says_which_settings(db_path):
    added = tally("github", "add", "alice/repo", db=db_path)
    assert added.returncode == 2 and "TALLY_GITHUB_TOKEN" in added.stderr


def test_github_sync_reports_each_status_and_exits_1_on_a_failure(served, db_path):
    tally("github", "add", "alice/repo", db=db_path, env=github_env(served))
    served.failures["alice/repo"] = "rate"
    synced = tally("github", "sync", "alice/repo", db=db_path, env=github_env(served))
    assert synced.returncode == 1 and "alice/repo: rate limited (asked again from" in synced.stdout
    assert "rate limited until" in tally("github", "list", db=db_path).stdout
    assert tally("github", "sync", "bob/other", db=db_path,
                 env=github_env(served)).returncode == 2


def test_github_remove_keeps_the_numbers_unless_delete(served, db_path):
    tally("github", "add", "alice/repo", db=db_path, env=github_env(served))
    assert tally("github", "remove", "alice/repo", db=db_path).returncode == 2  # no terminal
    removed = tally("github", "remove", "alice/repo", "--yes", db=db_path)
    assert removed.returncode == 0 and "its numbers stay" in removed.stdout
    assert "views" in tally("show", "github:alice/repo", db=db_path).stdout
    deleted = tally("delete", "github:alice/repo", "--yes", db=db_path)
    assert deleted.returncode == 0 and "deleted alice/repo" in deleted.stdout
    assert tally("show", "github:alice/repo", db=db_path).returncode == 2


@pytest.mark.parametrize("command", [("set", "github:alice/repo", "5"),
                                     ("rename", "github:alice/repo", "alice.repo"),
                                     ("rename", "alice.repo", "github:alice/repo")])
def test_set_and_rename_refuse_github_pages(served, db_path, command):
    tally("github", "add", "alice/repo", db=db_path, env=github_env(served))
    tally("set", "alice.repo", "3", db=db_path)
    before = snapshot(db_path)
    result = tally(*command, db=db_path)
    assert result.returncode == 2 and "github: page" in result.stderr
    assert snapshot(db_path) == before


def test_top_lists_github_pages_among_the_others(served, db_path):
    tally("github", "add", "alice/repo", db=db_path, env=github_env(served))
    tally("set", "big", "100000", db=db_path)
    tally("set", "small", "1", db=db_path)
    names = [line.split()[0] for line in tally("top", db=db_path).stdout.splitlines()]
    assert names == ["big", "github:alice/repo", "small"]


def test_export_and_import_carry_the_kept_traffic_and_importing_twice_adds_nothing(
        served, db_path, tmp_path):
    tally("github", "add", "alice/repo", "--page", "alice.repo", db=db_path,
          env=github_env(served))
    exported = tally("export", "--out", str(tmp_path / "e.json"), db=db_path)
    assert "GitHub traffic of 1 repositories" in exported.stdout
    other = str(tmp_path / "other.db")
    for _ in range(2):
        imported = tally("import", str(tmp_path / "e.json"), "--mode", "add", "--again", db=other)
        assert imported.returncode == 0, imported.stderr
    assert tally("show", "github:alice/repo", db=other).stdout.splitlines()[1:4] == \
        tally("show", "github:alice/repo", db=db_path).stdout.splitlines()[1:4]
    assert tally("github", "list", db=other).stdout.split("\n")[1].split()[-1] == "alice.repo"
    csv_export = tally("export", "--format", "csv", db=db_path)
    assert "--format json carries it" in csv_export.stderr


def test_an_old_export_without_github_traffic_still_imports(db_path, tmp_path):
    old = tmp_path / "old.json"
    old.write_text('{"tally_export": 1, "pages": [{"page_id": "a", "total": 3, "days": {}}]}')
    assert tally("import", str(old), db=db_path).returncode == 0


def test_a_bad_github_section_imports_nothing(db_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"pages": [{"page_id": "a", "total": 3}], "github": [{"repo": "alice/r", '
                   '"days": {"2026-01-01": {"views": -1}}}]}')
    result = tally("import", str(bad), db=db_path)
    assert result.returncode == 2 and "github 1" in result.stderr and "nothing imported" in result.stderr
    assert not os.path.exists(db_path) or totals(db_path) == {}


def test_the_token_is_never_in_the_database_an_export_a_backup_or_any_output(served, db_path,
                                                                             tmp_path):
    from github_api import TOKEN
    env = github_env(served)
    outputs = [tally("github", "add", "alice/repo", db=db_path, env=env)]
    served.token = "another"  # every failure on the way prints its line
    outputs.append(tally("github", "sync", db=db_path, env=env))
    served.token = TOKEN
    served.failures["alice/repo"] = "malformed"
    outputs.append(tally("github", "sync", db=db_path, env=env))
    outputs.append(tally("github", "list", db=db_path, env=env))
    outputs.append(tally("export", "--out", str(tmp_path / "e.json"), db=db_path, env=env))
    outputs.append(tally("backup", str(tmp_path / "b.db"), db=db_path, env=env))
    for result in outputs:
        assert TOKEN not in result.stdout + result.stderr
    for path in [db_path, db_path + "-wal", tmp_path / "e.json", tmp_path / "b.db"]:
        if os.path.exists(path):
            assert TOKEN.encode() not in open(path, "rb").read()


# Visitors in export and import ###############################################

def counted_visitors(db: str) -> None:
    import datetime as dt
    from stores import sqlite
    day = dt.datetime(2026, 3, 14, 12, tzinfo=dt.timezone.utc)
    with sqlite.Store(db) as store:
        for n in range(3):
            store.record_view("blog", day, visitor=(f"198.51.100.{n}", "Firefox"))
            store.record_view("blog", day, visitor=(f"198.51.100.{n}", "Firefox"))
        store.record_view("blog", day, bot=True, counted=False)


@pytest.mark.parametrize("form", ["json", "csv"])
def test_export_then_import_keeps_visitors_and_bot_views(db_path, tmp_path, form):
    counted_visitors(db_path)
    exported = tmp_path / f"e.{form}"
    assert tally("export", "--format", form, "--out", str(exported), db=db_path).returncode == 0
    other = str(tmp_path / "other.db")
    assert tally("import", str(exported), db=other).returncode == 0
    shown = tally("show", "blog", db=other).stdout
    assert "visitors 3 (today 0)" in shown
    again = json.loads(tally("export", db=other).stdout)["pages"][0]
    assert (again["visitors"], again["visitor_days"], again["bot_days"]) == (
        3, {"2026-03-14": 3}, {"2026-03-14": 1})


def test_an_export_made_before_visitors_imports_with_zero_visitors(db_path, tmp_path):
    old_json = tmp_path / "old.json"
    old_json.write_text('{"tally_export": 1, "pages": [{"page_id": "a", "total": 3, '
                        '"days": {"2026-01-01": 3}}]}')
    old_csv = tmp_path / "old.csv"
    old_csv.write_text("page_id,total,created_at,last_seen,day,views\n"
                       "b,4,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,2026-01-01,4\n")
    for path in (old_json, old_csv):
        result = tally("import", str(path), db=db_path)
        assert result.returncode == 0, result.stderr
    pages = {p["page_id"]: p for p in json.loads(tally("export", db=db_path).stdout)["pages"]}
    assert (pages["a"]["total"], pages["a"]["visitors"]) == (3, 0)
    assert (pages["b"]["total"], pages["b"]["visitors"], pages["b"]["days"]) == (
        4, 0, {"2026-01-01": 4})


@pytest.mark.parametrize("page", ['"visitors": 4', '"visitor_days": {"2026-01-01": 4}'])
def test_an_import_with_more_visitors_than_views_is_refused(db_path, tmp_path, page):
    bad = tmp_path / "bad.json"
    bad.write_text('{"pages": [{"page_id": "a", "total": 3, "days": {"2026-01-01": 3}, '
                   + page + '}]}')
    result = tally("import", str(bad), db=db_path)
    assert result.returncode == 2 and "more visitors than views" in result.stderr
    assert not os.path.exists(db_path) or totals(db_path) == {}


def test_an_export_of_the_compact_layout_goes_through_the_older_tally_and_back(tmp_path):
    # Tally at 9227a7c (schema 4, before the compact layout), from this
    # repository's history, reads the export and writes its own; this Tally
    # reads that back unchanged.
    older = conftest.older_tally(tmp_path / "older")

    def older_tally(*args: str, db: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(older / "server.py"), *args, "--db", db],
                              capture_output=True, text=True, timeout=120,
                              env={k: v for k, v in os.environ.items()
                                   if not k.startswith("TALLY_")})
    compact, old, back = (str(tmp_path / name) for name in ("compact.db", "old.db", "back.db"))
    source = str(ROOT / "tests" / "fixtures" / "tally-v4-export.json")
    assert tally("import", source, db=compact).returncode == 0
    exports = [str(tmp_path / f"export-{n}.json") for n in range(3)]
    assert tally("export", "--out", exports[0], db=compact).returncode == 0
    for step in (older_tally("import", exports[0], db=old),
                 older_tally("export", "--out", exports[1], db=old),
                 tally("import", exports[1], db=back), tally("export", "--out", exports[2], db=back)):
        assert step.returncode == 0, step.stderr
    first, through_older, again = (json.load(open(name, encoding="utf-8")) for name in exports)
    # The older Tally knows no held views: nothing was held, and the round
    # trip gives none.
    assert conftest.without_held(first["pages"]) == through_older["pages"]
    assert first["pages"] == again["pages"]
    assert first["github"] == through_older["github"] == again["github"]
    assert open(exports[1]).read().startswith('{\n "tally_export"')  # the older layout's
    assert open(exports[2]).readline().startswith('{"tally_export": 1, "exported_at": "')


# Held views (the inflation guard's, issue 30): release, show, export, import ##

HELD_DAY1, HELD_DAY2 = (datetime.datetime(2026, 3, d, 12, tzinfo=datetime.timezone.utc)
                        for d in (14, 15))


def held_views(db: str) -> None:
    """blog: 2 views and 5 held on 2026-03-14, 1 and 3 held on 2026-03-15."""
    with sqlite.Store(db) as store:
        for when, views, held in ((HELD_DAY1, 2, 5), (HELD_DAY2, 1, 3)):
            for _ in range(views):
                store.record_view("blog", when)
            for _ in range(held):
                store.record_view("blog", when, held=True)


def test_release_one_day_then_every_day_prints_what_it_moved(db_path):
    held_views(db_path)
    shown = tally("show", "blog", db=db_path).stdout
    assert "held    8 (today 0)" in shown and "held before these 30 days: 8 views on 2 days" in shown
    one = tally("release", "blog", "--day", "2026-03-15", db=db_path)
    assert one.returncode == 0 and one.stdout == (
        "  2026-03-15         3\nblog: released 3 held views on 1 day (total now 6)\n")
    rest = tally("release", "blog", db=db_path)
    assert rest.stdout.endswith("blog: released 5 held views on 1 day (total now 11)\n")
    with sqlite.Store(db_path, readonly=True) as store:
        page = store.page("blog")
    assert (page.total, page.held, page.days) == (11, 0, {"2026-03-14": 7, "2026-03-15": 4})
    again = tally("release", "blog", db=db_path)
    assert again.returncode == 0 and "no held views; nothing changed" in again.stdout


@pytest.mark.parametrize("args, error", [
    (["release", "nobody"], "no page 'nobody'"),
    (["release", "blog", "--day", "2026-02-30"], "invalid --day: '2026-02-30' (YYYY-MM-DD)"),
    (["release", "blog", "--day", "yesterday"], "invalid --day: 'yesterday' (YYYY-MM-DD)"),
    (["release", "github:alice/repo"], "a github: page holds GitHub's own numbers"),
])
def test_release_refuses_bad_input_in_one_line_and_changes_nothing(db_path, args, error):
    held_views(db_path)
    before = snapshot(db_path)
    result = tally(*args, db=db_path)
    assert result.returncode != 0 and result.stderr.count("\n") == 1 and error in result.stderr
    assert snapshot(db_path) == before


@pytest.mark.parametrize("form", ["json", "csv"])
def test_export_then_import_keeps_held_views(db_path, tmp_path, form):
    held_views(db_path)
    exported = tmp_path / f"e.{form}"
    assert tally("export", "--format", form, "--out", str(exported), db=db_path).returncode == 0
    other = str(tmp_path / "other.db")
    assert tally("import", str(exported), db=other).returncode == 0
    again = json.loads(tally("export", db=other).stdout)["pages"][0]
    assert (again["total"], again["held"], again["held_days"]) == (
        3, 8, {"2026-03-14": 5, "2026-03-15": 3})


def test_an_export_made_before_the_guard_imports_with_nothing_held(db_path, tmp_path):
    old_csv = tmp_path / "old.csv"
    old_csv.write_text("page_id,total,created_at,last_seen,day,views,visitors,day_visitors,"
                       "day_bots\nb,4,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,2026-01-01,4,"
                       "1,1,0\n")
    assert tally("import", str(old_csv), db=db_path).returncode == 0
    page = json.loads(tally("export", db=db_path).stdout)["pages"][0]
    assert (page["total"], page["held"], page["held_days"]) == (4, 0, {})


def test_an_import_whose_held_views_differ_from_its_days_is_refused(db_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"pages": [{"page_id": "a", "total": 3, "held": 9, '
                   '"held_days": {"2026-01-01": 4}}]}')
    result = tally("import", str(bad), db=db_path)
    assert result.returncode == 2 and "held views differ from its days' held views" in result.stderr
    assert not os.path.exists(db_path) or totals(db_path) == {}
