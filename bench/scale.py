"""make bench-scale: Tally's costs as its data grows (issue 23), measured
side by side in one run. A benchmark, not a test: it prints figures and
ratios and asserts nothing.

For each store (SQLite; PostgreSQL with --postgres URL or TALLY_TEST_POSTGRES
set) and each size (1,000, 100,000 and 1,000,000 pages, 30 days of history
each), it builds the database with generate() below, then measures:

- the database's bytes per page and per page-day (SQLite: the file, and the
  table of days alone, from SQLite's dbstat; PostgreSQL: the relations);
- `server.py serve` with default settings, loaded by wrk (Lua picks the
  random pages): /badge on one hot page, on random existing pages, on new
  pages (with TALLY_MAX_PAGES set and without), /stats and /api/history on
  random existing pages with 4 connections (requests per second, p50 and
  p99), medians of 3 rounds, the server started again for each;
- `top` and `show` as the store answers them in-process (the query, median
  of 3) and as the command runs (Python's start included);
- `export` (JSON) and `import` of that file into an empty database: time and
  the process's peak resident memory; SQLite's `backup`: time.

Each figure is printed with its ratio to the 1,000-page one.

generate() writes, in one transaction of plain SQL, exactly the rows Tally's
own counting would leave (schema 5: pages with an integer key; daily keyed by
(page, day); each total the sum of its days' views, each page's visitors the
sum of its days'), far faster than counting 30 million views one by one.
tests/test_bench_scale.py checks that on a small database through the store.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent  # the checkout: bench/ is inside it
sys.path.insert(0, str(ROOT))

from bench import speed  # noqa: E402

SIZES = (1_000, 100_000, 1_000_000)
DAYS = 30
# Page ids of 22 characters, the length the first measure used.
PAGE_ID = "u%07d.my-repository"

# A random existing page on every request (wrk's Lua; every thread seeded
# differently).
WRK_RANDOM = """
threads = 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
init = function()
  math.randomseed(os.time() * 7 + id)
end
request = function()
  return wrk.format("GET", string.format("%s", math.random(0, %d)))
end
"""


# The generator ##############################################################

# Per page p and day j (0 = the oldest): views 1..99, a third of them
# visitors, a bot view on every third day. Each page was created on its
# first day; each day is a view day (view_days), as the writer records it.
VIEWS = "1 + (p.id * 7 + d.j * 13) % 99"
DAY_ROW = f"{VIEWS}, ({VIEWS}) / 3, CASE WHEN (p.id + d.j) % 3 = 0 THEN 1 ELSE 0 END"


def generate(db: str, pages: int, days: int = DAYS) -> None:
    """Tally's own rows for `pages` pages with `days` days each, the last
    of them today (UTC), into a new database that Tally has created."""
    import storage
    storage.open_store(db).close()  # Tally creates (and migrates) the schema
    epoch = datetime.date(1970, 1, 1)
    first_day = (datetime.datetime.now(datetime.timezone.utc).date() - epoch).days - days + 1
    n = {"last": pages - 1, "days": days, "first_day": first_day,
         "stamp": f"{epoch + datetime.timedelta(days=first_day)}T00:00:00Z"}
    if storage.is_postgres(db):
        import psycopg  # the benchmark's own generator, as speed.py's drop
        with psycopg.connect(db, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("INSERT INTO pages (id, page_id, total, created_at, last_seen) "
                             "SELECT i + 1, 'u' || lpad(i::text, 7, '0') || '.my-repository', "
                             "0, %(stamp)s, %(stamp)s FROM generate_series(0, %(last)s) i", n)
                # The identity goes on after the ids given here.
                conn.execute("SELECT setval(pg_get_serial_sequence('pages', 'id'), %(last)s + 1)",
                             n)
                conn.execute("INSERT INTO daily (page, day, views, visitors, bots) "
                             "SELECT p.id, date '1970-01-01' + %(first_day)s + d.j, "
                             f"{DAY_ROW.replace('%', '%%')} FROM pages p, "
                             "generate_series(0, %(days)s - 1) d(j) ORDER BY 1, 2", n)
                conn.execute("INSERT INTO view_days (day) SELECT date '1970-01-01' + "
                             "%(first_day)s + j FROM generate_series(0, %(days)s - 1) j", n)
                conn.execute("UPDATE pages SET total = s.views, visitors = s.visitors FROM "
                             "(SELECT page, sum(views) AS views, sum(visitors) AS visitors "
                             "FROM daily GROUP BY page) s WHERE s.page = pages.id")
            conn.execute("VACUUM ANALYZE pages")
            conn.execute("VACUUM ANALYZE daily")
        return
    import sqlite3  # the benchmark's own generator
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
                     "WHERE i < :last) INSERT INTO pages (id, page_id, total, created_at, "
                     "last_seen) SELECT i + 1, printf('u%07d.my-repository', i), 0, :stamp, "
                     ":stamp FROM n", n)
        conn.execute("WITH RECURSIVE d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d "
                     "WHERE j < :days - 1) INSERT INTO daily (page, day, views, visitors, bots) "
                     f"SELECT p.id, :first_day + d.j, {DAY_ROW} FROM pages p, d ORDER BY 1, 2", n)
        conn.execute("WITH RECURSIVE d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d "
                     "WHERE j < :days - 1) INSERT INTO view_days (day) SELECT :first_day + j FROM d",
                     n)
        conn.execute("UPDATE pages SET (total, visitors) = (SELECT sum(views), sum(visitors) "
                     "FROM daily WHERE page = pages.id)")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# Sizes on disk ##############################################################

def sizes(db: str) -> dict[str, int]:
    """Bytes of the whole database, of the table of days (with its
    primary key) and of the pages (with their id's index)."""
    import storage
    if storage.is_postgres(db):
        import psycopg
        with psycopg.connect(db, autocommit=True) as conn:
            whole, daily, pages = conn.execute(
                "SELECT pg_database_size(current_database()), pg_total_relation_size('daily'), "
                "pg_total_relation_size('pages')").fetchone()
        return {"whole": whole, "daily": daily, "pages": pages}
    import sqlite3
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        found = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    except sqlite3.OperationalError:  # an SQLite built without dbstat
        found = {}
    finally:
        conn.close()
    pages = found.get("pages", 0) + found.get("sqlite_autoindex_pages_1", 0)
    return {"whole": os.path.getsize(db), "daily": found.get("daily", 0), "pages": pages}


# Measurements ###############################################################

def run_measured(args: list[str]) -> tuple[float, float]:
    """A command's wall time (s) and its peak resident memory (MB)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    with tempfile.TemporaryFile() as errors:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), *args],
                                env=environment, stdout=subprocess.DEVNULL, stderr=errors)
        # wait4: this child's own peak, not the largest of all children's.
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        if status != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(args)} failed: {errors.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


def in_process(db: str, pages: int) -> dict[str, float]:
    """top and show as the store answers them (median of 3, seconds)."""
    import storage
    found: dict[str, list[float]] = {"top": [], "show": []}
    with storage.open_store(db, readonly=True) as store:
        for i in range(3):
            started = time.perf_counter()
            store.top(10)
            found["top"].append(time.perf_counter() - started)
            started = time.perf_counter()
            store.page(PAGE_ID % ((i * 7919) % pages))
            found["show"].append(time.perf_counter() - started)
    return {name: median(values) for name, values in found.items()}


def load_random(base: str, path: str, pages: int, seconds: float,
                connections: int = speed.CONNECTIONS) -> dict:
    """wrk asking path + a random existing page's id."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(WRK_RANDOM % (path + "u%07d.my-repository", pages - 1))
    script.close()
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s",
                              "--latency", "--timeout", "10s", "-s", script.name, base + "/"],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    return speed.parse_wrk(out)


def measure(db: str, pages: int, load, seconds: float, rounds: int,
            tmp: str) -> dict[str, float]:
    """Every figure of one database of `pages` pages."""
    import storage
    figures: dict[str, float] = {}
    started = time.monotonic()
    generate(db, pages)
    figures["generate s"] = time.monotonic() - started
    size = sizes(db)
    page_days = pages * DAYS
    figures["bytes/page-day (whole)"] = size["whole"] / page_days
    figures["bytes/page-day (daily)"] = size["daily"] / page_days
    figures["bytes/page (pages)"] = size["pages"] / pages
    figures.update({f"{k} s": v for k, v in in_process(db, pages).items()})
    figures["top command s"] = run_measured(["top", "--db", db])[0]
    figures["show command s"] = run_measured(["show", PAGE_ID % (pages // 2), "--db", db])[0]
    found: dict[str, list[dict]] = {}
    for round_ in range(rounds):  # medians of the rounds
        proc, base = speed.start_tally(db, None)
        try:
            runs = {
                "hot": load(base + "/badge?page_id=" + PAGE_ID % 0, seconds),
                "random": load_random(base, "/badge?page_id=", pages, seconds),
                "new": load(base + f"/badge?page_id=new-{pages}-{round_}-", seconds,
                            distinct_suffix=True),
                # The pages' own time, not a queue's: one connection per
                # serving thread (TALLY_THREADS' default, 4).
                "stats": load_random(base, "/stats?page_id=", pages, seconds, connections=4),
                "history": load_random(base, "/api/history?page_id=", pages, seconds,
                                       connections=4)}
        finally:
            speed.stop(proc)
        proc, base = speed.start_tally(db, None, env={"TALLY_MAX_PAGES": str(100 * pages)})
        try:
            runs["capped"] = load(base + f"/badge?page_id=capped-{pages}-{round_}-", seconds,
                                  distinct_suffix=True)
        finally:
            speed.stop(proc)
        for name, result in runs.items():
            found.setdefault(name, []).append(result)

    def middle(name: str, figure: str) -> float:
        return median(result[figure] for result in found[name])
    for name, label in [("hot", "hot page"), ("random", "random pages"), ("new", "new pages"),
                        ("capped", "new pages, TALLY_MAX_PAGES")]:
        figures[f"/badge {label} views/s"] = middle(name, "rps")
    figures["/badge random pages p99 ms"] = middle("random", "p99")
    figures["/stats p50 ms (4 connections)"] = middle("stats", "p50")
    figures["/stats p99 ms (4 connections)"] = middle("stats", "p99")
    figures["/api/history p99 ms (4 connections)"] = middle("history", "p99")
    figures["errors"] = sum(r["errors"] for results in found.values() for r in results)
    out = os.path.join(tmp, f"export-{pages}.json")
    figures["export s"], figures["export MB"] = run_measured(["export", "--out", out, "--db", db])
    target = import_target(db, tmp, pages)
    figures["import s"], figures["import MB"] = run_measured(["import", out, "--db", target])
    os.remove(out)
    if not storage.is_postgres(target):
        os.remove(target)
        backup = os.path.join(tmp, f"backup-{pages}.db")
        figures["backup s"] = run_measured(["backup", backup, "--db", db])[0]
        os.remove(backup)
    return figures


def import_target(db: str, tmp: str, pages: int) -> str:
    """An empty database of the same kind to import into."""
    import storage
    if not storage.is_postgres(db):
        return os.path.join(tmp, f"imported-{pages}.db")
    import psycopg
    import psycopg.conninfo
    name = "tally_bench_scale_import"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    return psycopg.conninfo.make_conninfo(db, dbname=name)


def empty_postgres(url: str) -> None:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS " + ", ".join(speed.POSTGRES_TABLES))


# Printing ###################################################################

def print_table(name: str, results: dict[int, dict[str, float]]) -> None:
    sizes_ = sorted(results)
    first = sizes_[0]
    print(f"\n== {name}: {DAYS} days of history per page; each figure, then its ratio to "
          f"{first:,} pages")
    header = f"{'':44}" + "".join(f"{f'{n:,} pages':>16}" for n in sizes_) + "".join(
        f"{f'ratio {n:,}':>16}" for n in sizes_[1:])
    print(header)
    for key in results[first]:
        values = [results[n].get(key) for n in sizes_]
        if all(v is None for v in values):
            continue
        cells = "".join(f"{v:>16,.4g}" if v is not None else f"{'-':>16}" for v in values)
        ratios = "".join(f"{(v / values[0]):>16.2f}" if v and values[0] else f"{'-':>16}"
                         for v in values[1:])
        print(f"{key:44}{cells}{ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(n) for n in SIZES),
                        help="numbers of pages, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="each load's length")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the loads (each a server started again); medians")
    parser.add_argument("--postgres", default=os.environ.get("TALLY_TEST_POSTGRES"),
                        help="an empty PostgreSQL database (its Tally tables are dropped)")
    parser.add_argument("--stores", default="sqlite,postgresql",
                        help="which of sqlite,postgresql to measure")
    args = parser.parse_args()
    sizes_ = [int(n) for n in args.sizes.split(",")]
    if not shutil.which("wrk"):
        # Random existing pages need wrk's Lua.
        raise SystemExit("make bench-scale needs wrk (apt-get install wrk)")
    load = speed.load_wrk
    print(f"Tally scale benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load by wrk, {speed.CONNECTIONS} connections, {args.seconds:g} s per load, medians of "
          f"{args.rounds} rounds")
    wanted = args.stores.lower().split(",")
    stores = {"SQLite": None} if "sqlite" in wanted else {}
    if args.postgres and "postgresql" in wanted:
        stores["PostgreSQL"] = args.postgres
    with tempfile.TemporaryDirectory(prefix="tally-scale-") as tmp:
        for name, url in stores.items():
            results: dict[int, dict[str, float]] = {}
            for pages in sizes_:
                if url:
                    empty_postgres(url)
                db = url or os.path.join(tmp, f"scale-{pages}.db")
                started = time.monotonic()
                results[pages] = measure(db, pages, load, args.seconds, args.rounds, tmp)
                print(f"  {name}, {pages:,} pages: measured in {time.monotonic() - started:.0f} s",
                      flush=True)
                if not url:
                    for leftover in Path(tmp).glob(f"scale-{pages}.db*"):
                        leftover.unlink()
            print_table(name, results)


if __name__ == "__main__":
    main()
