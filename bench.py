"""make bench: Tally's speed and memory, measured side by side in one run.

A benchmark, not a test: it prints figures and ratios and asserts nothing.

1. Render time per badge: Tally's renderer (template cache) against a plain
   badge() call (the renderer's own API, via badge.plain_badge).
2. Requests per second and p50/p99 latency of GET /badge (every request a new
   count) against a trivial WSGI app returning a short text, both served by
   waitress with the same settings, loaded by the same generator (wrk where
   installed, else the Python generator below), with TALLY_SYNC full and
   normal.
3. The server's resident memory after 100,000 requests and after a second
   100,000 (with a distinct label on every request, so the template cache
   is at its bound).
4. With --postgres URL (or TALLY_TEST_POSTGRES set): the same GET /badge
   load on one Tally process on PostgreSQL and on two processes sharing the
   database (the load split between them), beside SQLite, in the same rounds.
5. The same trivial app and the same Tally app (SQLite, sync=full) served by
   granian (a Rust HTTP server, one worker, its defaults) instead of
   waitress, in the same rounds: the ceiling a faster server would give
   (issue 12 of the tracker). Tally itself still serves with waitress.
"""

from __future__ import annotations

import argparse
from statistics import median
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONNECTIONS = 32
THREADS = 2  # Tally's default (config.py)


# The trivial app ###########################################################


def trivial_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def serve_trivial(port: int, threads: int) -> None:
    import logging
    import waitress
    # The same waitress settings server.serve() uses, its queue warnings off too.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(trivial_app, host="127.0.0.1", port=port, threads=threads,
                   connection_limit=1000, channel_timeout=30, max_request_header_size=8192,
                   asyncore_use_poll=True, _quiet=True)


def tally_app():
    """granian's --factory target: Tally's own app over its own store, built
    in granian's worker process from the TALLY_* environment."""
    sys.path.insert(0, str(ROOT))
    import config
    import server
    import storage
    settings = config.from_env(os.environ)
    store = storage.open_store(settings.db, sync=settings.sync, max_pages=settings.max_pages,
                               busy_timeout_s=settings.busy_timeout)
    return server.create_app(settings, store)


# Processes ##################################################################


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_tally(db: str, sync: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_SYNC=sync, TALLY_THREADS=str(THREADS))
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "serve", "--db", db,
                             "--port", str(port), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_for(base + "/healthz", proc)
    return proc, base


def start_granian(target: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1",
                             "--host", "127.0.0.1", "--port", str(port), "--no-ws",
                             "--log-level", "warning", *(["--factory"] if target.endswith("tally_app") else []),
                             target], cwd=ROOT, env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_for(base + "/", proc) if "trivial" in target else wait_for(base + "/healthz", proc)
    return proc, base


def start_trivial(threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--trivial-server", str(port),
                             "--trivial-threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_for(base + "/", proc)
    return proc, base


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


# Load generators ############################################################

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "%s" .. counter)
end
"""


def load_wrk(url: str, seconds: float, distinct_suffix: bool = False,
             connections: int = CONNECTIONS) -> dict:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    script = None
    if distinct_suffix:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        path = url.split("//", 1)[1].split("/", 1)[1]
        script.write(WRK_SCRIPT % ("/" + path))
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    if script:
        os.unlink(script.name)

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": ms("50"), "p99": ms("99"), "requests": requests,
            "errors": int(errors.group(1)) if errors else 0}


def load_python(url: str, seconds: float, distinct_suffix: bool = False,
                connections: int = CONNECTIONS) -> dict:
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
            target = path + (str(next(counter)) if distinct_suffix else "")
            started = time.perf_counter()
            conn.request("GET", target)
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


def load_split(load, urls: list[str], seconds: float) -> dict:
    """The same total load (CONNECTIONS) split evenly over several servers at once."""
    results: list[dict] = []
    threads = [threading.Thread(target=lambda u=u: results.append(
        load(u, seconds, False, CONNECTIONS // len(urls)))) for u in urls]
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


def has_granian() -> bool:
    try:
        import granian  # noqa: F401  (only to know it is there)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trivial-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trivial-threads", type=int, default=THREADS, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=6, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=5, help="load runs per server")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("TALLY_TEST_POSTGRES"),
                        help="a PostgreSQL URL: also measure Tally on it, one and two processes")
    args = parser.parse_args()
    if args.trivial_server:
        serve_trivial(args.trivial_server, args.trivial_threads)
        return

    sys.path.insert(0, str(ROOT))
    load = load_wrk if shutil.which("wrk") else load_python
    print(f"Tally benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load by {'wrk' if load is load_wrk else 'the bundled Python generator'}, "
          f"{CONNECTIONS} connections, waitress threads={THREADS} (Tally's default) for Tally and "
          f"the trivial app alike; the trivial app with 8 threads is shown for reference")

    ours, plain = measure_render(20_000)
    print("\n== Render time per badge (flat, a new number each time)")
    print(f"  Tally render (template cache)  {ours * 1e3:8.4f} ms")
    print(f"  plain badge() call              {plain * 1e3:8.4f} ms")
    print(f"  ratio Tally / badge()          {ours / plain:8.4f}   (goal <= 0.1)")

    print(f"\n== Throughput and latency: {args.rounds} rounds of {args.seconds:g} s, servers "
          "taking turns, medians shown (this VM's figures vary from run to run)")
    print(f"  {'server':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-200':>9}")
    runs: dict[str, list[dict]] = {"trivial": [], "full": [], "normal": [], "trivial8": []}
    if has_granian():
        runs.update({"granian-trivial": [], "granian-full": []})
    if args.postgres:
        runs.update({"pg1": [], "pg2": []})
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in runs:
                if name == "granian-trivial":
                    procs, urls = zip(start_granian("bench:trivial_app"))
                    urls = [u + "/" for u in urls]
                elif name == "granian-full":
                    procs, urls = zip(start_granian("bench:tally_app", {
                        "TALLY_DB": os.path.join(tmp, "bench-granian.db"), "TALLY_QUIET": "1"}))
                    urls = [u + "/badge?page_id=bench" for u in urls]
                elif name.startswith("trivial"):
                    procs, urls = zip(start_trivial(8 if name == "trivial8" else THREADS))
                    urls = [u + "/" for u in urls]
                elif name.startswith("pg"):
                    procs, urls = zip(*[start_tally(args.postgres, "full")
                                        for _ in range(int(name[2:]))])
                    urls = [u + "/badge?page_id=bench" for u in urls]
                else:
                    procs, urls = zip(start_tally(os.path.join(tmp, f"bench-{name}.db"), name))
                    urls = [u + "/badge?page_id=bench" for u in urls]
                try:
                    load_split(load, urls, 1)  # warm-up
                    runs[name].append(load_split(load, urls, args.seconds))
                finally:
                    for proc in procs:
                        stop(proc)
        trivial_rps = median(r["rps"] for r in runs["trivial"])
        for name, label in (("trivial", f"trivial WSGI app, threads={THREADS}"),
                            ("full", "Tally GET /badge, sync=full"),
                            ("normal", "Tally GET /badge, sync=normal"),
                            ("trivial8", "trivial WSGI app, threads=8"),
                            ("pg1", "Tally on PostgreSQL, 1 process"),
                            ("pg2", "Tally on PostgreSQL, 2 processes"),
                            ("granian-trivial", "trivial WSGI app on granian"),
                            ("granian-full", "Tally app on granian, sync=full")):
            if name not in runs:
                continue
            rps = median(r["rps"] for r in runs[name])
            ratio = "" if name == "trivial" else f"   ratio {rps / trivial_rps:.2f}"
            if name in ("full", "normal"):
                ratio += " (goal >= 0.6)"
            if name.startswith("pg"):
                ratio += f", {rps / median(r['rps'] for r in runs['full']):.2f} of SQLite full"
            if name == "granian-full":
                limit = median(r["rps"] for r in runs["granian-trivial"])
                waitress = median(r["rps"] for r in runs["full"])
                ratio += (f"; {rps / limit:.3f} of the trivial app on granian (issue 12's goal >= 0.2), "
                          f"{rps / waitress:.2f}x Tally on waitress (goal >= 5)")
            print(f"  {label:<34}{rps:>10.0f}{median(r['p50'] for r in runs[name]):>10.2f}"
                  f"{median(r['p99'] for r in runs[name]):>10.2f}"
                  f"{sum(r['errors'] for r in runs[name]):>9}{ratio}")
        print("  each round (req/s): " + "; ".join(
            f"{name} " + " ".join(f"{r['rps']:.0f}" for r in runs[name]) for name in runs))

        print(f"\n== Memory: {args.memory_requests:,} requests, then {args.memory_requests:,} more"
              " (a distinct label on each, sync=full)")
        proc, url = start_tally(os.path.join(tmp, "bench-memory.db"), "full")
        try:
            target = url + "/badge?page_id=memory&left_text=l"
            first = load_until(load, target, args.memory_requests, True)
            rss1, peak1 = memory_mb(proc.pid)
            second = load_until(load, target, args.memory_requests, True)
            rss2, peak2 = memory_mb(proc.pid)
            counted = urllib.request.urlopen(url + "/api/count?page_id=memory").read().decode()
        finally:
            stop(proc)
        print(f"  after {first['requests']:>7,} requests: resident {rss1:6.1f} MB, peak {peak1:6.1f} MB")
        print(f"  after {first['requests'] + second['requests']:>7,} requests: resident {rss2:6.1f} MB, "
              f"peak {peak2:6.1f} MB  (growth {rss2 - rss1:+.1f} MB; goal <= 60 MB, no growth)")
        print(f"  server's count afterwards: {counted}; non-200 answers: "
              f"{first['errors'] + second['errors']}")


if __name__ == "__main__":
    main()
