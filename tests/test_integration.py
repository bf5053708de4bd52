"""The real server (granian, a subprocess) on a loopback port."""

from __future__ import annotations

import base64
import collections
import datetime
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (BROWSER, GUARD_OFF, ROOT, START_LINE, fetch, free_port, missing, rss_kb, serving,
                      stop_server, wait_until)

TOTAL_RE = re.compile(rb">(\d+)</text></g>")


def badge_total(body: bytes) -> int:
    return int(TOTAL_RE.search(body).group(1))


def fetch_totals(live, page_ids: list[str], workers: int = 32) -> list[tuple[str, int]]:
    def one(page_id: str) -> tuple[str, int]:
        status, _, body = live.get("/badge?page_id=" + urllib.parse.quote(page_id))
        assert status == 200
        return page_id, badge_total(body)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, page_ids))


def test_2000_concurrent_views_of_one_page_get_counts_1_to_2000(live_server):
    live = live_server(GUARD_OFF)
    results = fetch_totals(live, ["hot"] * 2000)
    assert sorted(total for _, total in results) == list(range(1, 2001))
    status, _, body = live.get("/api/count?page_id=hot")
    assert json.loads(body) == {"page_id": "hot", "total": 2000, "today": 2000, "visitors": 1,
                                "visitors_today": 1, "held": 0,
                                "held_today": 0}  # one client: one visitor


def test_20_interleaved_pages_each_count_exactly(live_server):
    live = live_server(GUARD_OFF)
    pages = [f"page-{i % 20}" for i in range(2000)]
    results = fetch_totals(live, pages)
    for i in range(20):
        totals = sorted(t for p, t in results if p == f"page-{i}")
        assert totals == list(range(1, 101))


def test_kill_9_under_load_loses_no_answered_count(live_server, db_path):
    live = live_server(GUARD_OFF)
    highest: dict[str, int] = {}
    sent: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(page_id: str) -> None:
        while not stop.is_set():
            with lock:
                sent[page_id] = sent.get(page_id, 0) + 1
            try:
                status, _, body = live.get("/badge?page_id=" + page_id)
            except (OSError, http.client.HTTPException):
                return
            if status == 200:
                with lock:
                    highest[page_id] = max(highest.get(page_id, 0), badge_total(body))

    threads = [threading.Thread(target=client, args=(f"p{i % 4}",)) for i in range(16)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(highest.values()) >= 400)
    worker = live.worker_pid()
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait()
    # The worker dies with the serving process: no orphan keeps answering.
    wait_until(lambda: not os.path.exists(f"/proc/{worker}") or
               "zombie" in Path(f"/proc/{worker}/status").read_text())
    stop.set()
    for t in threads:
        t.join()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(conn.execute("SELECT page_id, total FROM pages"))
    conn.close()
    for page_id, answered in highest.items():
        assert answered <= stored[page_id] <= sent[page_id]
    restarted = live_server(GUARD_OFF)
    assert restarted.get("/badge?page_id=p0")[0] == 200


def test_counted_held_and_bot_views_add_up_to_the_answered_under_kill_9(live_server, db_path):
    # The guard on (the default): a loop of people's browsers and of curl on
    # one page. Every answered view is counted, held or a bot's, and stays
    # so across kill -9: each answer's kind is in the file at least as often
    # as it was answered, and nothing more than was sent.
    live = live_server()
    # The page exists before the loop: a bot's view creates no page (a
    # crawler following links), so the first ones would be written nowhere.
    assert live.get("/badge?page_id=looped")[1]["X-Tally-Counted"] == "yes"
    answered: collections.Counter = collections.Counter({"yes": 1})
    sent = [1]
    lock, stop = threading.Lock(), threading.Event()

    def client(user_agent: str) -> None:
        while not stop.is_set():
            with lock:
                sent[0] += 1
            try:
                status, headers, _ = live.get("/badge?page_id=looped", {"User-Agent": user_agent})
            except (OSError, http.client.HTTPException):
                return
            if status == 200:
                with lock:
                    answered[headers["X-Tally-Counted"]] += 1

    threads = [threading.Thread(target=client, args=(BROWSER if i % 4 else "curl/8.5.0",))
               for i in range(12)]
    for t in threads:
        t.start()
    wait_until(lambda: answered["no; held"] >= 300 and answered["no; bot"] >= 50)
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert set(answered) == {"yes", "no; held", "no; bot"}
    assert 60 <= answered["yes"] <= 62  # the burst of a new page, and the floor's refill
    conn = sqlite3.connect(db_path)
    total, held = conn.execute("SELECT total, held FROM pages WHERE page_id = 'looped'").fetchone()
    bots = conn.execute("SELECT sum(bots) FROM daily").fetchone()[0]
    conn.close()
    assert total >= answered["yes"] and held >= answered["no; held"] and bots >= answered["no; bot"]
    assert total + held + bots <= sent[0]


def test_sigterm_stops_the_server_cleanly(live_server):
    live = live_server()
    live.get("/badge?page_id=p")
    worker = live.worker_pid()
    live.proc.send_signal(signal.SIGTERM)
    assert live.proc.wait(timeout=10) == 0
    assert not os.path.exists(f"/proc/{worker}")


def test_a_dead_worker_ends_the_server_with_an_error_for_systemd_to_restart(live_server, db_path):
    live = live_server()
    assert live.get("/badge?page_id=p")[0] == 200
    os.kill(live.worker_pid(), signal.SIGKILL)
    assert live.proc.wait(timeout=30) != 0
    # The lock went with it: a new server starts on the same file.
    assert live_server().get("/api/count?page_id=p")[2].startswith(b'{"page_id": "p", "total": 1')


def test_the_connection_cap_is_lowered_to_the_open_files_limit(live_server):
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is not installed")
    live = live_server(env={"TALLY_QUIET": "0"}, prefix=["prlimit", "--nofile=300:300"])
    assert "TALLY_CONNECTION_LIMIT 10000 lowered to 236" in live.log.read_text()
    held = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(236)]
    waiting = socket.create_connection(("127.0.0.1", live.port))  # queued in the backlog
    try:
        waiting.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        waiting.settimeout(1.5)
        with pytest.raises(socket.timeout):
            waiting.recv(100)
        held.pop().close()
        waiting.settimeout(10)
        assert waiting.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        waiting.close()
        for s in held:
            s.close()


def test_200_idle_connections_do_not_stop_other_clients(live_server):
    live = live_server(env={"TALLY_THREADS": "4"})
    idle = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", live.port))
            idle.append(s)
        # Half of them start a request and never finish it.
        for s in idle[::2]:
            s.sendall(b"GET /badge?page_id=slow HTTP/1.1\r\nHost: x\r\n")
        results = fetch_totals(live, ["busy"] * 50, workers=8)
        assert sorted(t for _, t in results) == list(range(1, 51))
    finally:
        for s in idle:
            s.close()
    assert live.get("/api/count?page_id=slow")[2].startswith(b'{"page_id": "slow", "total": 0')


def test_2000_idle_and_trickling_connections_from_one_address_do_not_stop_badges(live_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2200:
        pytest.skip(f"this test opens 2,000 connections; the open-files limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200) if hard == resource.RLIM_INFINITY
                                                else max(soft, min(hard, 4096)), hard))
    live = live_server(env={"TALLY_IDLE_TIMEOUT": "3", **GUARD_OFF})
    idle = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(1000)]
    trickling = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(1000)]
    for s in trickling:
        s.sendall(b"GET /badge?page_id=slow HTTP/1.1\r\n")
    closed_by_server = set()
    stop = threading.Event()

    def trickle() -> None:
        # One more header byte on every connection every 0.2 s: a deadline
        # that each byte renewed would never end.
        while not stop.is_set():
            for n, s in enumerate(trickling):
                if n not in closed_by_server:
                    try:
                        s.send(b"X")
                    except OSError:
                        closed_by_server.add(n)
            stop.wait(0.2)
    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        results = fetch_totals(live, ["busy"] * 100, workers=8)
        assert sorted(t for _, t in results) == list(range(1, 101))
        # The header deadline closes the trickling connections (about 3 s)
        # although each keeps sending.
        wait_until(lambda: len(closed_by_server) == len(trickling), timeout=30)
        for s in idle:
            s.settimeout(30)
            assert s.recv(1) == b""  # closed by the server at the deadline too
    finally:
        stop.set()
        trickler.join()
        for s in idle + trickling:
            s.close()
    assert live.get("/api/count?page_id=slow")[2].startswith(b'{"page_id": "slow", "total": 0')


def test_access_log_has_one_escaped_line_per_request(live_server):
    live = live_server(env={"TALLY_QUIET": "0"})
    live.get("/badge?page_id=%3Cscript%3E%0Afake%20200%20line&left_text=%E2%80%AEx")
    line = wait_until(lambda: next((l for l in live.log.read_text().splitlines()
                                    if "GET /badge" in l), None))
    assert "<script>" not in line and "\u202e" not in line and line.isascii()
    assert "%3Cscript%3E%0Afake" in line and line.rstrip().endswith("ms counted=no;invalid_page_id")
    assert not any(l.startswith("fake") for l in live.log.read_text().splitlines())


def test_idle_connections_are_closed_after_the_idle_timeout(live_server):
    live = live_server(env={"TALLY_IDLE_TIMEOUT": "2"})
    s = socket.create_connection(("127.0.0.1", live.port))
    s.settimeout(30)
    try:
        assert s.recv(1) == b""  # the server closed it: recv returns at end of stream
    finally:
        s.close()


def test_connection_limit_holds_new_connections_until_one_closes(live_server):
    live = live_server(env={"TALLY_CONNECTION_LIMIT": "3"})
    idle = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(3)]
    waiting = socket.create_connection(("127.0.0.1", live.port))  # queued in the backlog
    try:
        waiting.sendall(b"GET /badge?page_id=queued HTTP/1.0\r\n\r\n")
        waiting.settimeout(1.5)
        with pytest.raises(socket.timeout):
            waiting.recv(100)
        idle.pop(0).close()
        waiting.settimeout(10)
        answer = b""
        while chunk := waiting.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") and b">1</text>" in answer
    finally:
        waiting.close()
        for s in idle:
            s.close()


def test_oversized_request_line_is_refused_and_counts_nothing(live_server):
    live = live_server()
    status, _, _ = live.get("/badge?page_id=p&pad=" + "x" * 9000)
    assert status == 431
    status, _, _ = live.get("/badge?page_id=p", headers={"X-Pad": "x" * 9000})
    assert status == 431
    assert live.get("/badge?page_id=p", headers={"X-Pad": "x" * 6000})[0] == 200
    assert live.get("/api/count?page_id=p")[2].startswith(b'{"page_id": "p", "total": 1')


def test_oversized_body_is_refused_and_counts_nothing(live_server):
    live = live_server()
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("POST", "/badge?page_id=p", body=b"x" * 70_000)
    assert conn.getresponse().status == 413
    assert live.get("/api/count?page_id=p")[2].startswith(b'{"page_id": "p", "total": 0')


def run_serve(db: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "server.py"), "serve", "--db", db,
                           "--port", "0", *extra], capture_output=True, text=True, timeout=30)


def test_port_in_use_stops_start_up_with_one_line(live_server, tmp_path):
    live = live_server()
    result = subprocess.run([sys.executable, str(ROOT / "server.py"), "serve", "--db",
                             str(tmp_path / "other.db"), "--port", str(live.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "cannot listen" in result.stderr


def test_second_server_on_the_same_file_is_refused(live_server, db_path):
    live_server()
    result = run_serve(db_path)
    assert result.returncode == 3 and "in use by a running Tally server" in result.stderr


def test_not_a_database_stops_start_up_with_one_line(tmp_path):
    db = tmp_path / "counts.db"
    db.write_bytes(b"not sqlite at all\n" * 100)
    before = db.read_bytes()
    result = run_serve(str(db))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not a database" in result.stderr
    assert db.read_bytes() == before


def test_newer_schema_stops_start_up(tmp_path):
    db = tmp_path / "counts.db"
    conn = sqlite3.connect(db)
    from stores import sqlite_file
    conn.execute(f"PRAGMA user_version = {sqlite_file.SCHEMA_VERSION + 1}")
    conn.close()
    before = db.read_bytes()
    result = run_serve(str(db))
    assert result.returncode == 2 and "newer" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert db.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_stops_start_up(tmp_path):
    db = tmp_path / "counts.db"
    sqlite3.connect(db).execute("CREATE TABLE x (y)").connection.close()
    db.chmod(stat.S_IRUSR)
    result = run_serve(str(db))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0


def test_read_only_folder_stops_start_up(tmp_path):
    # A folder in place of the file's parent: it cannot be created.
    blocker = tmp_path / "blocked"
    blocker.write_text("a file, not a folder")
    result = run_serve(str(blocker / "counts.db"))
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


# Hardening ##################################################################


def test_a_database_deleted_under_the_server_answers_503_and_is_logged_once(live_server, db_path):
    live = live_server()
    assert live.get("/badge?page_id=p")[0] == 200
    os.remove(db_path)
    for _ in range(5):
        status, headers, _ = live.get("/badge?page_id=p")
        assert status == 503 and headers["X-Tally-Error"] == "database unavailable"
    assert live.get("/healthz")[0] == 503
    wait_until(lambda: "database file removed or replaced" in live.log.read_text())
    assert live.log.read_text().count("database file removed or replaced") == 1


def test_a_folder_made_unreadable_under_the_server_answers_503(live_server, db_path):
    # unshare --user: root without its capabilities, so folder modes apply
    # to it as to any owner (root itself ignores them).
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        missing("unshare --user is not allowed here", "unshare --user is needed in CI")
    live = live_server(prefix=["unshare", "--user"])
    assert live.get("/badge?page_id=p")[0] == 200
    folder = os.path.dirname(db_path)
    os.chmod(folder, 0)
    try:
        assert live.get("/badge?page_id=p")[0] == 503
        assert live.get("/healthz")[0] == 503
    finally:
        os.chmod(folder, stat.S_IRWXU)
    assert json.loads(live.get("/api/count?page_id=p")[2])["total"] == 1


def test_an_undecodable_path_counts_nothing_on_the_real_server(live_server):
    live = live_server()
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("GET", "/b%FFadge?page_id=x")
    response = conn.getresponse()
    assert response.status == 400 and response.read() == b'{"error": "path is not UTF-8"}'
    conn.close()
    assert live.get("/api/count?page_id=x")[2].startswith(b'{"page_id": "x", "total": 0')


def test_a_trusted_proxys_forwarded_address_is_logged_only_when_it_is_an_address(live_server):
    live = live_server(env={"TALLY_QUIET": "0"})

    def logged_address(forwarded: bytes, mark: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
        conn.putrequest("GET", f"/healthz?from={mark}")
        conn.putheader("X-Forwarded-For", forwarded)
        conn.endheaders()
        conn.getresponse().read()
        conn.close()
        line = wait_until(lambda: next((l for l in live.log.read_bytes().splitlines()
                                        if f"from={mark}".encode() in l), None))
        assert line.isascii() and b"<script>" not in line
        return line.split()[2]
    assert logged_address("<script>\xc2\x85fake".encode("latin-1"), "garbage") == b"127.0.0.1"
    assert logged_address(b"<script>", "markup") == b"127.0.0.1"
    assert logged_address(b"198.51.100.1, 203.0.113.9", "chain") == b"203.0.113.9"


def test_distinct_logos_leave_the_worker_s_memory_bounded(live_server):
    # The worker's own memory (RssAnon). Its resident total also counts the
    # interpreter's code mapped from its files, 10 to 17 MB by Python build
    # (3.13's the most) and more when the page cache is warm: that total
    # passed 60 MB on 3.13 on a busy machine with the same own memory. Own
    # memory here: 38.5 to 41.7 MB after 4096 logos on Pythons 3.10 to 3.13,
    # 0.8 to 0.9 MB more than after 256 (the logo cache full); without its bound
    # each logo kept its rendered template (it grew from 46 to 127 MB).
    live = live_server()
    filler = "x" * 4200
    for i in range(4096):
        svg = f'<svg xmlns="http://www.w3.org/2000/svg" id="{i}"><desc>{filler}</desc></svg>'
        logo = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
        status, _, body = live.get("/badge?" + urllib.parse.urlencode(
            {"page_id": "logos", "query_only": "true", "logo": logo}))
        assert status == 200 and b"<image" in body
        if i + 1 == 256:  # the logo cache (64) is full
            full = rss_kb(live.worker_pid(), "RssAnon")
    after = rss_kb(live.worker_pid(), "RssAnon")
    assert after - full < 4 * 1024, (full, after)
    assert after < 45 * 1024, after


def test_old_counters_urls_count_through_the_real_server(live_server):
    live = live_server()
    for path in ("/github.com/alice/repo.svg?view=today-total", "/alice/repo.svg",
                 "/api/count/incr/badge.svg?url=github.com%2Falice%2Frepo",
                 "/api/visitors?path=https%3A%2F%2Fgithub.com%2Falice%2Frepo"):
        status, headers, body = live.get(path)
        assert status == 200 and "X-Tally-Error" not in headers and body.startswith(b"<svg")
    status, _, _ = live.get("/ghpvc/?username=alice", headers={"User-Agent": "github-camo (x)"})
    assert status == 200
    for page_id in ("hitssh:github.com/alice/repo", "dwyl:alice/repo", "hits:github.com/alice/repo",
                    "visitorbadge:https://github.com/alice/repo", "ghpvc:alice"):
        answer = json.loads(live.get("/api/count?page_id=" + urllib.parse.quote(page_id))[2])
        assert answer["total"] == 1, page_id


# Hardening, round three ####################################################


def raw_request(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """One request as bytes on its own connection; the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + int(
                re.search(rb"(?i)content-length: (\d+)", answer).group(1)):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def stopped_connections(port: int) -> int:
    """Connections of a local port in FIN-WAIT or TIME_WAIT (/proc/net/tcp's
    states 04, 05, 06): the kernel keeps them a minute after a close."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows
               if int(row[1].split(":")[1], 16) == port and row[3] in ("04", "05", "06"))


def test_a_restart_under_keep_alive_traffic_serves_while_the_old_connections_linger(
        live_server, tmp_path):
    # The stopped server's connections sit in TIME_WAIT / FIN-WAIT for a
    # minute: the port check must not take them for a program on the port
    # (nor wait for them to go: the new server answers while they are there).
    live = live_server()
    clients = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        s.sendall(b"GET /badge?page_id=restart HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(65536)
        clients.append(s)
    live.proc.terminate()
    assert live.proc.wait(timeout=10) == 0
    assert stopped_connections(live.port) > 0
    again = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "serve", "--db", live.db,
                              "--port", str(live.port), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def answers() -> bool:
            assert again.poll() is None, again.stderr.read().decode()
            try:
                return live.get("/api/count?page_id=restart")[0] == 200
            except OSError:
                return False
        wait_until(answers, timeout=60)
        assert stopped_connections(live.port) > 0
        assert json.loads(live.get("/api/count?page_id=restart")[2])["total"] == 20
    finally:
        for s in clients:
            s.close()
        again.terminate()
        again.wait(timeout=10)


def test_a_port_held_by_a_listening_program_is_still_refused(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        result = subprocess.run([sys.executable, str(ROOT / "server.py"), "serve", "--db",
                                 str(tmp_path / "c.db"), "--port", str(other.getsockname()[1])],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "cannot listen" in result.stderr and "Address already in use" in result.stderr


@pytest.mark.parametrize("fields, status", [(100, b"200"), (101, b"431")])
def test_a_request_may_carry_100_header_fields(live_server, fields, status):
    live = live_server()
    request = (b"GET /badge?page_id=many-headers HTTP/1.1\r\nHost: x\r\n"
               + b"".join(b"X-F%d: 1\r\n" % i for i in range(fields - 1)) + b"\r\n")
    assert raw_request(live.port, request).startswith(b"HTTP/1.1 " + status)
    expected = 1 if status == b"200" else 0
    assert json.loads(live.get("/api/count?page_id=many-headers")[2])["total"] == expected


def test_raw_utf8_in_a_query_is_the_same_page_as_percent_encoded(live_server):
    live = live_server()
    answer = raw_request(live.port, "GET /badge?page_id=aéb HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200") and b"X-Tally-Error" not in answer
    assert json.loads(live.get("/api/count?page_id=a%C3%A9b")[2])["total"] == 1
    # The routes bottle answers read it the same way.
    history = raw_request(live.port, "GET /api/history?page_id=aéb&days=1 HTTP/1.1\r\n"
                                     "Host: x\r\n\r\n".encode())
    assert b'"total": 1' in history
    # Bytes that are not UTF-8 are refused (granian's own 400, or Tally's
    # error badge), never read as Latin-1.
    bad = raw_request(live.port, b"GET /badge?page_id=a\xc3b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400") or b"x-tally-error: invalid page_id" in bad.lower()
    assert json.loads(live.get("/api/count?page_id=a%C3%83b")[2])["total"] == 0


@pytest.mark.parametrize("name", ["X_Forwarded_Host", "x_forwarded_host", "X-Forwarded_Host"])
def test_forwarded_headers_in_underscore_spelling_are_dropped(live_server, name):
    live = live_server(env={"TALLY_TRUSTED_PROXY": "127.0.0.1"})
    # From an address that is not the trusted proxy.
    page = raw_request(live.port, f"GET / HTTP/1.1\r\nHost: real.example\r\n{name}: evil.example"
                                  f"\r\n\r\n".encode(), source="127.0.0.2")
    assert b"evil.example" not in page and b"http://real.example/badge" in page
    # And not believed from the trusted proxy either: only the exact spelling is.
    page = raw_request(live.port, f"GET / HTTP/1.1\r\nHost: real.example\r\n{name}: evil.example"
                                  f"\r\n\r\n".encode())
    assert b"evil.example" not in page


def test_a_closed_stdout_ends_the_access_log_quietly_and_serving_goes_on(tmp_path):
    # `serve | head -1`: the reader takes the start line and goes away.
    server = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "serve", "--db",
                               str(tmp_path / "c.db"), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started = START_LINE.match(server.stdout.readline())
        assert started
        port = int(started.group(1))
        server.stdout.close()
        url = f"http://127.0.0.1:{port}"

        def get(path: str) -> bytes:
            return fetch(url + path)[2]
        wait_until(lambda: serving(url))
        for _ in range(20):
            get("/badge?page_id=piped")
        assert json.loads(get("/api/count?page_id=piped"))["total"] == 20
    finally:
        server.terminate()
        server.wait(timeout=10)
    errors = server.stderr.read().decode()
    assert "Traceback" not in errors and "Logging error" not in errors
    assert errors.count("\n") <= 1 and "access log stopped" in errors


def test_the_real_server_syncs_github_by_itself_and_no_badge_waits_on_github(
        live_server, fake_github, db_path):
    import datetime as dt
    from github_api import TOKEN, history
    today = fake_github.today
    fake_github.histories["alice/fast"] = history(today - dt.timedelta(days=13), 14)
    fake_github.histories["alice/slow"] = history(today - dt.timedelta(days=13), 14)
    env = {"TALLY_GITHUB_API": fake_github.url, "TALLY_GITHUB_TOKEN": TOKEN,
           "TALLY_GITHUB_TIMEOUT": "6", "TALLY_GITHUB_SYNC_HOURS": "0.001"}
    for repo in ("alice/fast", "alice/slow"):
        added = subprocess.run([sys.executable, str(ROOT / "server.py"), "github", "add", repo,
                                "--db", db_path], env={**os.environ, **env},
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
    fake_github.failures["alice/slow"] = "hang"
    fake_github.hang_s = 8
    # GitHub revises today's views upward; the server must pick it up alone.
    day = today.isoformat()
    views, visitors, clones, cloners = fake_github.histories["alice/fast"][day]
    fake_github.histories["alice/fast"][day] = (views + 100, visitors + 50, clones, cloners)
    server = live_server(env={**env, "TALLY_QUIET": "1"})

    def count(repo):
        return json.loads(server.get(f"/api/count?page_id=github:{repo}")[2])
    wait_until(lambda: count("alice/fast")["today"] == views + 100, timeout=30)
    # While the server's sync waits on GitHub for alice/slow, badges answer.
    wait_until(lambda: fake_github.hanging > 0, timeout=30)
    for n in range(20):
        status, _, body = server.get(f"/badge?page_id=page-{n}")
        assert status == 200 and b">1</text>" in body
        assert b">" in server.get("/badge?page_id=github:alice/slow&show=visitors")[2]
    assert fake_github.hanging > 0  # every badge was answered before GitHub answered
    assert count("alice/slow")["total"] == sum(range(1, 15))  # the last numbers stay
    wait_until(lambda: b"timed out" in open(server.log, "rb").read(), timeout=30)
    assert open(server.log, "rb").read().count(b"alice/slow: timed out") == 1
    assert TOKEN.encode() not in open(server.log, "rb").read()


def test_visitors_through_the_real_server_are_exact_and_survive_kill_9(live_server, db_path):
    """32 threads, 96 clients (address from the trusted proxy's header),
    each viewing many times; kill -9 mid-load: every answered view and
    visitor is in the file, and the visitors are exactly the distinct
    clients whose views were answered."""
    live = live_server(GUARD_OFF)
    answered_clients: set[int] = set()
    highest = {"answered": 0, "visitors": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        headers = {"X-Forwarded-For": f"198.51.100.{n % 96}", "User-Agent": BROWSER}
        while not stop.is_set():
            try:
                status, _, body = live.get("/api/count?page_id=x")  # keeps the pace human
                status, _, body = live.get("/badge?page_id=blog&show=visitors", headers=headers)
            except OSError:
                return
            if status == 200:
                with lock:
                    answered_clients.add(n % 96)
                    highest["answered"] += 1
                    highest["visitors"] = max(highest["visitors"], badge_total(body))
    threads = [threading.Thread(target=client, args=(n,)) for n in range(32 * 3)]
    for t in threads[:32]:
        t.start()
    wait_until(lambda: highest["visitors"] >= 20)
    for t in threads[32:]:
        t.start()
    wait_until(lambda: len(answered_clients) == 96, timeout=30)
    os.kill(live.worker_pid(), signal.SIGKILL)
    live.proc.kill()
    live.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    conn = sqlite3.connect(db_path)
    visitors, total = conn.execute("SELECT visitors, total FROM pages WHERE page_id = 'blog'").fetchone()
    conn.close()
    assert visitors == 96 >= highest["visitors"]
    assert total >= highest["answered"]


def test_the_access_log_can_leave_addresses_out(live_server):
    live = live_server(env={"TALLY_QUIET": "0", "TALLY_LOG_ADDRESSES": "0"})
    live.get("/badge?page_id=p", headers={"X-Forwarded-For": "198.51.100.77", "User-Agent": BROWSER})
    wait_until(lambda: b"/badge?page_id=p" in open(live.log, "rb").read())
    line = next(l for l in open(live.log, "rb").read().splitlines() if b"/badge?page_id=p" in l)
    assert b" - GET /badge?page_id=p 200 " in line and b"198.51.100" not in line
    assert b"127.0.0.1" not in line


def test_the_access_log_says_whether_a_view_counted_and_why_not(live_server):
    live = live_server(env={"TALLY_QUIET": "0"})
    live.get("/badge?page_id=p")  # as a person's browser speaks
    live.get("/badge?page_id=p", headers={"User-Agent": "curl/8.5.0"})
    live.get("/badge?page_id=p", method="HEAD")
    lines = wait_until(lambda: [l for l in live.log.read_text().splitlines()
                                if "/badge?page_id=p " in l][:3] or None
                       if live.log.read_text().count("/badge?page_id=p ") >= 3 else None)
    assert [l.rsplit(" ", 1)[-1] for l in lines] == ["counted=yes", "counted=no;bot",
                                                      "counted=no;HEAD"]


def test_the_real_server_counts_visitors_and_leaves_proxies_and_bots_out(live_server):
    live = live_server()
    for n in range(5):
        for _ in range(4):
            live.get("/badge?page_id=blog", headers={"X-Forwarded-For": f"198.51.100.{n}"})
    live.get("/badge?page_id=blog", headers={"User-Agent": "github-camo (c006e452)"})
    live.get("/badge?page_id=blog", headers={"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"})
    answer = json.loads(live.get("/api/count?page_id=blog")[2])
    assert (answer["total"], answer["visitors"]) == (21, 5)
    assert b">5</text>" in live.get("/badge?page_id=blog&show=visitors&query_only=true")[2]


def test_a_server_whose_clock_jumped_three_years_keeps_the_newest_days(live_server, db_path):
    # Issue 28, 8: the real server under libfaketime, its clock three years
    # ahead, with TALLY_KEEP_DAYS=30 over 60 days of history. Before
    # view_days, its first pass deleted all 300 day rows.
    from stores import sqlite
    import storage
    # The library itself, not the `faketime` wrapper: the wrapper does not
    # pass SIGTERM on to the server it started.
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not libraries:
        missing("faketime is not installed", "faketime is required in CI (.ci/run installs it)")
    today = storage.utc_now().date()
    back = [(today - datetime.timedelta(days=n)).isoformat() for n in range(60)]
    with sqlite.Store(db_path) as store:
        store.import_pages([storage.Page(f"page-{n}", 60, "2026-01-01T00:00:00Z",
                                         "2026-01-01T00:00:00Z", {day: 1 for day in back})
                            for n in range(5)], "set")
    live = live_server(env={"TALLY_KEEP_DAYS": "30", "LD_PRELOAD": str(libraries[0]),
                            "FAKETIME": "+3y"})
    # The writer's first pass ran before it wrote this view (at start-up).
    assert live.get("/badge?page_id=page-0")[0] == 200
    history = json.loads(live.get("/api/history?page_id=page-1&days=365")[2])
    jumped = history["days"][-1]["day"]
    assert jumped > back[0] and history["kept_from"] == back[28]
    stop_server(live)
    assert live.proc.returncode == 0
    with sqlite.Store(db_path, readonly=True) as store:
        for n in range(5):
            assert store.page(f"page-{n}").days == {
                **{day: 1 for day in back[:30]}, **({jumped: 1} if n == 0 else {})}


def test_keep_days_trims_history_while_the_real_server_counts(live_server, db_path):
    # 20,000 pages with 60 days each; TALLY_KEEP_DAYS=10 leaves 10 of them:
    # a million day rows deleted 2,000 at a time, between the views of 8
    # clients that begin counting as soon as the server answers.
    from stores import sqlite
    import storage
    pages, today = 20_000, storage.utc_now().date()
    days = [(today - datetime.timedelta(days=back)).isoformat() for back in range(60)]
    sqlite.Store(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                 "INSERT INTO pages (page_id, total, created_at, last_seen) "
                 "SELECT 'page-' || i, 180, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z' "
                 "FROM n", (pages - 1,))
    conn.execute("WITH RECURSIVE d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j < 59) "
                 "INSERT INTO daily (page, day, views) SELECT id, "
                 "CAST(julianday(?) - 2440587.5 AS INTEGER) - j, 3 FROM pages, d", (days[0],))
    conn.execute("COMMIT")
    conn.close()
    first = days[9]
    answered: list[tuple[str, int]] = []
    began: list[float] = []
    stop = threading.Event()
    port = free_port()

    def count(worker: int) -> None:
        n = 0
        while not stop.is_set():
            page_id = f"page-{(worker * 389 + n * 7) % pages}" if n % 10 else f"new-{worker}-{n}"
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", f"/badge?page_id={page_id}",
                                   headers={"User-Agent": BROWSER})
                response = connection.getresponse()
                body = response.read()
                connection.close()
            except OSError:
                time.sleep(0.005)  # not listening yet
                continue
            assert response.status == 200
            began.append(time.time())
            answered.append((page_id, badge_total(body)))
            n += 1
    threads = [threading.Thread(target=count, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    try:
        live = live_server(env={"TALLY_KEEP_DAYS": "10"}, port=port)
        wait_until(lambda: "day rows before" in live.log.read_text(), timeout=120)
        time.sleep(0.5)  # and views after the pass
    finally:
        stop.set()
        for t in threads:
            t.join()
    passes = re.findall(r"(\S+ \S+) INFO TALLY_KEEP_DAYS=10: deleted (\d+) day rows before (\S+)",
                        live.log.read_text())
    assert [(rows, day) for _, rows, day in passes] == [(str(pages * 50), first)]
    ended = datetime.datetime.strptime(passes[0][0], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    assert min(began) < ended  # views were answered while the pass ran
    views: dict[str, int] = {}
    for page_id, _ in answered:
        views[page_id] = views.get(page_id, 0) + 1
    assert len(answered) > 500 and len(views) > 100
    conn = sqlite3.connect(db_path)
    totals = dict(conn.execute("SELECT page_id, total FROM pages"))
    kept: dict[str, dict[str, int]] = {}
    for page_id, day, n in conn.execute(
            "SELECT p.page_id, date(d.day * 86400, 'unixepoch'), d.views FROM daily d "
            "JOIN pages p ON p.id = d.page"):
        kept.setdefault(page_id, {})[day] = n
    conn.close()
    for n in range(pages):  # totals untouched, every answered view in them
        page_id = f"page-{n}"
        assert totals[page_id] == 180 + views.get(page_id, 0)
        assert kept[page_id] == {day: 3 + (views.get(page_id, 0) if day == days[0] else 0)
                                 for day in days[:10]}
    for page_id, n in views.items():
        if page_id.startswith("new-"):
            assert totals[page_id] == n and kept[page_id] == {days[0]: n}


def test_a_sigterm_while_the_worker_starts_ends_serve_within_seconds(tmp_path):
    """SIGTERM the moment granian's worker process exists, before it has set
    its own handlers (it inherits the serving process's, which swallow it):
    serve ends anyway, in seconds, with the counts it had."""
    for attempt in range(3):
        db = str(tmp_path / f"counts-{attempt}.db")
        log = tmp_path / f"serve-{attempt}.log"
        proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "serve", "--db", db,
                                 "--port", "0", "--quiet"], stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT)
        children = f"/proc/{proc.pid}/task/{proc.pid}/children"
        wait_until(lambda: proc.poll() is not None or open(children).read().strip(),
                   interval=0.001)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)  # WORKER_KILL_S, and a margin for a busy machine
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("serve did not end after SIGTERM during the worker's start: "
                                 f"{log.read_text()}")
