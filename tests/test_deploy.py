"""The deployment files: systemd units verified, nginx in front of the real server."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import shutil
import subprocess
import sys

import pytest

from conftest import BROWSER, ROOT, PortTaken, missing, on_a_free_port, wait_until

DEPLOY = ROOT / "deploy"
NO_CACHE = "max-age=0, no-cache, no-store, s-maxage=0, must-revalidate, proxy-revalidate"


def require(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.path.exists(p)), None)
    if path is None:
        missing(f"{program} is not installed", f"{program} is required in CI (.ci/run installs it)")
    return path


@pytest.mark.parametrize("unit", ["tally.service", "tally-backup.service", "tally-backup.timer"])
def test_systemd_units_verify(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # Verify copies whose paths point at this checkout and this Python, so
    # every ExecStart exists (CI's venvs are .venv-3.X, not .venv).
    for name in ("tally.service", "tally-backup.service", "tally-backup.timer"):
        text = (DEPLOY / name).read_text().replace("/opt/tally/.venv/bin/python", sys.executable)
        (tmp_path / name).write_text(text.replace("/opt/tally", str(ROOT)))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if unit.split(".")[0] in line and "Unknown" in line or "Failed" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_service_is_sandboxed_and_restarts():
    unit = (DEPLOY / "tally.service").read_text()
    for setting in ("DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=tally",
                    "Restart=on-failure", "NoNewPrivileges=yes", "ProtectHome=yes"):
        assert setting in unit
    backup = (DEPLOY / "tally-backup.service").read_text()
    assert "User=tally" in unit and "User=tally" in backup
    assert "backup /var/lib/tally/backups --keep" in backup


def test_caddyfile_proxies_to_tally():
    assert "reverse_proxy 127.0.0.1:8080" in (DEPLOY / "Caddyfile").read_text()


def test_caddy_reads_the_caddyfile_with_a_write_deadline_of_30_seconds():
    caddy = require("caddy")
    result = subprocess.run([caddy, "adapt", "--config", str(DEPLOY / "Caddyfile"),
                             "--adapter", "caddyfile"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    server = json.loads(result.stdout)["apps"]["http"]["servers"]["srv0"]
    assert 0 < server["write_timeout"] <= 30 * 10**9
    assert 0 < server["read_header_timeout"] <= 30 * 10**9


def test_nginx_config_bounds_a_stalled_answer_at_30_seconds():
    site = (DEPLOY / "nginx.conf").read_text()
    assert 0 < int(re.search(r"send_timeout (\d+)s;", site).group(1)) <= 30
    assert "proxy_buffering on;" in site


@pytest.fixture
def nginx_in_front(tmp_path, live_server, request):
    nginx = require("nginx")
    settings = getattr(request, "param", {})
    live = live_server(env={"TALLY_QUIET": "0", **settings.get("env", {})})
    site = (DEPLOY / "nginx.conf").read_text()
    # A short deadline, so the test of it is short (the shipped one is checked above).
    site = re.sub(r"send_timeout \d+s;", f"send_timeout {settings.get('send_timeout', 30)}s;", site)
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{live.port};")
    # sndbuf: a socket buffer of a few answers, not the megabytes loopback
    # grows to, so that a client that never reads stalls nginx soon.
    sndbuf = f" sndbuf={settings['sndbuf']}" if "sndbuf" in settings else ""
    site = re.sub(r"\s*listen \[::\]:80;", "", site)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    import urllib.request

    def start(port: int) -> subprocess.Popen:
        listen = re.sub(r"listen 80;", f"listen 127.0.0.1:{port}{sndbuf};", site)
        conf.write_text(f"""
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{listen}
}}
""")
        proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            if proc.poll() is not None:
                error = proc.stderr.read().decode()
                raise (PortTaken if "Address already in use" in error else AssertionError)(error)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                return True
            except OSError:
                return False
        wait_until(up)
        return proc
    port, proc = on_a_free_port(start)
    yield port, live
    proc.terminate()
    proc.wait(timeout=10)


def test_badges_through_nginx_count_and_keep_their_headers(nginx_in_front):
    import urllib.request
    port, live = nginx_in_front
    for expected in (1, 2, 3):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/badge?page_id=proxied",
                                         headers={"User-Agent": "github-camo (abc)"})
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
            assert r.status == 200
            assert r.headers["Cache-Control"] == NO_CACHE
            assert r.headers["Pragma"] == "no-cache"
            assert r.headers["Content-Type"] == "image/svg+xml; charset=utf-8"
            assert r.headers["Expires"] and r.headers["Content-Security-Policy"]
            assert "ETag" not in r.headers and "Last-Modified" not in r.headers
            assert f">{expected}</text></g></svg>".encode() in body
    status, _, body = live.get("/api/count?page_id=proxied")
    assert b'"total": 3' in body


def test_nginx_passes_the_client_address_and_public_host(nginx_in_front):
    import urllib.request
    port, live = nginx_in_front
    request = urllib.request.Request(f"http://127.0.0.1:{port}/",
                                     headers={"Host": "counter.example.org"})
    page = urllib.request.urlopen(request, timeout=10).read().decode()
    assert "http://counter.example.org/badge?page_id=owner.repo" in page
    # The access log names the client nginx saw (here 127.0.0.2), not nginx
    # (127.0.0.1); a client's own X-Forwarded-For is not believed.
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0))
    conn.request("GET", "/healthz?from=second", headers={"X-Forwarded-For": "203.0.113.9"})
    assert conn.getresponse().status == 200
    line = wait_until(lambda: next((l for l in live.log.read_text().splitlines() if "from=second" in l), None))
    assert " 127.0.0.2 GET /healthz" in line and "203.0.113.9" not in line


STALLED = {"env": {"TALLY_CONNECTION_LIMIT": "50"}, "send_timeout": 2, "sndbuf": "16k"}


@pytest.mark.parametrize("nginx_in_front", [STALLED], indirect=True)
def test_clients_that_never_read_are_closed_by_nginx_and_others_get_badges(nginx_in_front):
    # granian has no write deadline (docs/settings.md, Limits): behind the shipped
    # nginx, 50 clients that pipeline 10 large answers each (73 KB, far more
    # than their 1 KB receive buffers hold) and never read hold only
    # nginx's side, until its send_timeout; Tally (capped at 50 connections
    # here) keeps answering everyone else.
    port, live = nginx_in_front
    live.get("/badge?page_id=stalled-page")
    stalled = []
    pipelined = 10
    request = (b"GET /stats?page_id=stalled-page&days=365 HTTP/1.1\r\nHost: x\r\n\r\n"
               * pipelined)
    for _ in range(50):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        stalled.append(s)
    import urllib.request
    for n in range(2, 22):
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/badge?page_id=stalled-page",
                headers={"User-Agent": BROWSER}), timeout=30) as r:
            assert r.status == 200 and f">{n}</text></g></svg>".encode() in r.read()
    time.sleep(5)  # past the 2 s deadline

    def closed(s: socket.socket) -> bool:
        # Reading now: a connection nginx closed ends (EOF or reset) before
        # all its answers; one still open would deliver them all.
        s.settimeout(5)
        answers = 0
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return answers < pipelined
                answers += chunk.count(b"HTTP/1.1 200")
        except (ConnectionResetError, TimeoutError, socket.timeout):
            return answers < pipelined
    try:
        results = [closed(s) for s in stalled]
        assert all(results), results
    finally:
        for s in stalled:
            s.close()


@pytest.mark.parametrize("timestamp", ["x; touch {mark}", "$(touch {mark})", "`touch {mark}`",
                                       "2026-12-06T08:00:00Z; touch {mark}"])
def test_restore_replicas_timestamp_is_never_run_as_a_command(tmp_path, timestamp):
    mark = tmp_path / "ran"
    value = timestamp.format(mark=mark)
    env = {**os.environ, "LITESTREAM_REPLICA_URL": f"file://{tmp_path}/none",
           "TALLY_DB": str(tmp_path / "counts.db"), "LITESTREAM": "/bin/true"}
    # The recipe passes the variable's name, not its text, to the script ...
    shown = subprocess.run(["make", "-n", "--no-print-directory", "restore-replica",
                            f"TIMESTAMP={value}", f"VENV={sys.prefix}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    recipe = [line for line in shown.stdout.splitlines() if "restore-replica.sh" in line]
    assert recipe and all(line.endswith('restore-replica.sh "$TIMESTAMP"') for line in recipe)
    # ... and the script, given it as its argument, refuses what is not a timestamp.
    result = subprocess.run(["sh", str(ROOT / "scripts" / "restore-replica.sh"), value],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "TIMESTAMP must look like" in result.stderr
    assert not mark.exists()
