"""Failure tests: each asserts what was kept."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import storage
from stores import sqlite
from conftest import ROOT, START_LINE, fetch, serving, snapshot, tally, totals, wait_until


def integrity(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_backup_under_load_is_consistent_and_restores_exactly(live_server, db_path, tmp_path):
    live = live_server()
    with sqlite.Store(db_path) as s:  # some history first, so the copy takes several steps
        s.import_pages([storage.Page(f"seed-{i}", i, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                                     {"2026-01-01": i}) for i in range(3000)], "set")
    stop = threading.Event()
    sent = [0]

    def writer() -> None:
        while not stop.is_set():
            live.get(f"/badge?page_id=busy-{sent[0] % 7}")
            sent[0] += 1
    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: sent[0] > 50)
    copy = str(tmp_path / "copy.db")
    result = tally("backup", copy, db=db_path)
    after_backup = sent[0]
    stop.set()
    for t in threads:
        t.join()
    assert result.returncode == 0, result.stderr
    assert integrity(copy) == "ok"
    copied, live_totals = totals(copy), totals(db_path)
    assert all(total <= live_totals[page] for page, total in copied.items())
    assert sum(v for k, v in copied.items() if k.startswith("busy-")) <= after_backup
    expected = snapshot(copy)
    restored = str(tmp_path / "restored.db")
    assert tally("restore", copy, db=restored).returncode == 0
    assert snapshot(restored) == expected


def test_kill_9_during_backup_leaves_no_file_that_looks_good(db_path, tmp_path):
    with sqlite.Store(db_path) as s:
        s.import_pages([storage.Page(f"p-{i:06d}-" + "x" * 100, i, "2026-01-01T00:00:00Z",
                                     "2026-01-01T00:00:00Z", {}) for i in range(20000)], "set")
    expected = totals(db_path)
    rng = random.Random(7)
    outcomes = set()
    for attempt in range(8):
        dest = tmp_path / f"copy-{attempt}.db"
        proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "backup", str(dest),
                                 "--db", db_path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Killed once the copy is under way (its temporary file exists), at
        # a random moment after; the invariant must hold at any.
        wait_until(lambda: list(tmp_path.glob(f"copy-{attempt}.db.tmp-*")) or proc.poll() is not None,
                   interval=0.001)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if dest.exists():
            outcomes.add("complete")
            assert integrity(str(dest)) == "ok" and totals(str(dest)) == expected
        else:
            outcomes.add("killed mid-copy")
    assert integrity(db_path) == "ok" and totals(db_path) == expected
    assert "killed mid-copy" in outcomes  # else the test proved nothing about a kill


def test_full_disk_answers_503_keeps_counts_and_recovers(make_client, db_path):
    client, store = make_client()
    client.get("/badge", "page_id=kept")
    store.close()
    pages = os.path.getsize(db_path) // 4096
    small = sqlite.Store(db_path, max_page_count=pages + 2)
    import config
    import server
    from conftest import Client
    full = Client(server.create_app(config.Config(db=db_path), small))
    statuses = set()
    for i in range(3000):
        r = full.get("/badge", f"page_id=filler-{i:05d}-" + "x" * 200)
        statuses.add(r.status)
        if r.status == 503:
            assert r.headers["x-tally-error"] == "database unavailable"
            break
    assert 503 in statuses
    stored = small.page_count()
    assert full.get("/badge", "page_id=one-more-" + "y" * 200).status == 503
    assert small.page_count() == stored
    assert json.loads(full.get("/api/count", "page_id=kept").body)["total"] == 1
    assert full.get("/healthz").status == 200
    small.close()
    with sqlite.Store(db_path) as roomy:  # space is back
        assert Client(server.create_app(config.Config(db=db_path), roomy)).get(
            "/badge", "page_id=kept").status == 200
        assert roomy.counts("kept").total == 2


def run_in_small_fs(script: str, mnt, size: str = "400k") -> subprocess.CompletedProcess:
    """Run a shell script with $MNT a fresh tmpfs of the given size, in a
    private mount namespace (needs root; elsewhere the test is skipped)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a small file system needs root and unshare")
    mnt.mkdir()
    wrapped = f"set -e; MNT={mnt}; mount -t tmpfs -o size={size} tmpfs $MNT; {script}"
    return subprocess.run(["unshare", "-m", "sh", "-c", wrapped], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PY": sys.executable, "SRV": str(ROOT / "server.py")})


def test_real_full_file_system_answers_503_and_resumes_when_space_returns(tmp_path):
    flag, out, pid_file = tmp_path / "free-space", tmp_path / "serve.out", tmp_path / "serve.pid"
    script = f"""
dd if=/dev/zero of=$MNT/filler bs=1k count=60 2>/dev/null
$PY $SRV serve --db $MNT/counts.db --port 0 --quiet > {out} 2>&1 &
pid=$!
echo $pid > {pid_file}
while [ ! -e {flag} ]; do sleep 0.05; done
rm $MNT/filler
touch {flag}.done
wait $pid
"""
    runner = threading.Thread(target=lambda: setattr(
        runner, "result", run_in_small_fs(script, tmp_path / "mnt")))
    runner.start()
    def started() -> int | None:
        if not runner.is_alive():
            raise AssertionError(f"serve ended: {getattr(runner, 'result', None)}")
        found = out.exists() and START_LINE.search(out.read_bytes())
        return int(found.group(1)) if found else None
    port = wait_until(started, timeout=60)

    def get(path: str):
        return fetch(f"http://127.0.0.1:{port}{path}")
    try:
        wait_until(lambda: runner.is_alive() and serving(f"http://127.0.0.1:{port}"))
        get("/badge?page_id=kept")
        status = 200
        for i in range(5000):
            status, headers, _ = get(f"/badge?page_id=filler-{i:05d}-" + "z" * 200)
            if status == 503:
                break
        assert status == 503 and headers["X-Tally-Error"] == "database unavailable", (i, status)
        assert json.loads(get("/api/count?page_id=kept")[2])["total"] == 1
        # An existing page may still fit (SQLite reuses the write-ahead log's
        # space once checkpointed): either it counted, or it answered 503
        # and counted nothing.
        answered = get("/badge?page_id=kept")[0]
        assert answered in (200, 503)
        flag.touch()
        wait_until(lambda: (tmp_path / "free-space.done").exists())
        assert get("/badge?page_id=kept")[0] == 200
        assert json.loads(get("/api/count?page_id=kept")[2])["total"] == 2 + (answered == 200)
    finally:
        flag.touch()
        if pid_file.exists():  # the server this test started, and no other
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        runner.join()
    if getattr(runner, "result", None) is not None and runner.result.returncode != 0:
        assert "Traceback" not in runner.result.stderr


def start_up_made_read_only(tmp_path, make_read_only: str) -> subprocess.CompletedProcess:
    """Create a Tally database on a small file system, run make_read_only,
    then start the server on it; prints exit=N and "same" if the file is
    byte-identical afterwards."""
    return run_in_small_fs(mnt=tmp_path / "mnt", script=f"""
$PY -c "import sys; sys.path.insert(0, '$(dirname $SRV)'); from stores import sqlite; s = sqlite.Store('$MNT/counts.db'); s.set_total('p', 5); s.close()"
sum1=$(md5sum < $MNT/counts.db)
{make_read_only}
set +e
timeout 20 $PY $SRV serve --db $MNT/counts.db --port 0 --quiet
echo "exit=$?"
sum2=$(md5sum < $MNT/counts.db)
[ "$sum1" = "$sum2" ] && echo same
""")


@pytest.mark.parametrize("make_read_only", [
    "mount -o remount,ro $MNT",                                   # the whole folder
    # Only the file (a read-only bind mount of it: root ignores file modes,
    # so chmod would prove nothing); the folder stays writable.
    "mount --bind $MNT/counts.db $MNT/counts.db; mount -o remount,ro,bind $MNT/counts.db",
], ids=["folder", "file"])
def test_read_only_database_stops_start_up_with_one_line_and_keeps_the_file(tmp_path, make_read_only):
    result = start_up_made_read_only(tmp_path, make_read_only)
    assert "exit=2" in result.stdout and "same" in result.stdout, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "read-only" in result.stderr.lower() or "readonly" in result.stderr.lower()
