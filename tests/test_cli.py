"""The command line: python server.py COMMAND, run as a real process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

import storage
from conftest import ROOT


def tally(*args: str, db: str | None = None, stdin: str | None = None, env: dict | None = None):
    command = [sys.executable, str(ROOT / "server.py"), *args]
    if db is not None:
        command += ["--db", db]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(env or {})
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60,
                          env=environment)


@pytest.fixture
def filled(db_path):
    with storage.Store(db_path) as s:
        for i in range(30):
            s.record_view(f"page-{i % 3}")
        s.record_view("only-once")
    return db_path


def totals(db: str) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT page_id, total FROM pages"))
    finally:
        conn.close()


def snapshot(db: str) -> tuple:
    conn = sqlite3.connect(db)
    try:
        return (conn.execute("SELECT * FROM pages ORDER BY page_id").fetchall(),
                conn.execute("SELECT * FROM daily ORDER BY page_id, day").fetchall())
    finally:
        conn.close()


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


def test_backup_with_a_bad_keep_writes_nothing(filled, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    result = tally("backup", str(folder), "--keep", "0", db=filled)
    assert result.returncode == 2 and "--keep must be at least 1" in result.stderr
    assert list(folder.iterdir()) == []


def test_backup_of_a_damaged_database_leaves_no_copy(db_path, tmp_path):
    with storage.Store(db_path) as s:
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
    live = live_server(db=filled)
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
    storage.Store(fresh).close()
    result = tally("import", out, db=fresh)
    assert result.returncode == 0, result.stderr
    assert "4 new" in result.stdout
    assert snapshot(fresh) == snapshot(filled)


def test_export_json_shape(filled):
    result = tally("export", db=filled)
    document = json.loads(result.stdout)
    page = next(p for p in document["pages"] if p["page_id"] == "only-once")
    assert page["total"] == 1 and list(page["days"].values()) == [1]
    assert set(page) == {"page_id", "total", "created_at", "last_seen", "days"}


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
    ("good,1\ngood,2\n", "line 2"),
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
    live = live_server(db=filled)
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
