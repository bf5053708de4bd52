"""visitors.py, and visitors as the stores count them: image proxies and
bots told apart by User-Agent; per page and UTC day a visitor is one
(address, User-Agent), known by a salted hash that is gone with its day.
The clock is injected: days pass without sleeping."""

from __future__ import annotations

import datetime
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import crawleruseragents
import pytest

import storage
from stores import sqlite, sqlite_file, values
import visitors
from conftest import BROWSER

# Today: the writer forgets, by the real clock, every day that has ended.
DAY = datetime.datetime.now(datetime.timezone.utc).replace(hour=12, minute=0, second=0,
                                                           microsecond=0)
NEXT_DAY = DAY + datetime.timedelta(days=1)
FIREFOX = BROWSER
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


# Who a view comes from ######################################################

@pytest.mark.parametrize("agent", [
    "github-camo (c006e452)",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Camo Asset Proxy 2.3.0"])
def test_image_proxies_come_first_though_the_bot_list_names_them(agent):
    assert visitors.classify(agent) == visitors.PROXY


def test_every_example_of_the_bot_list_is_a_bot_or_an_image_proxy():
    examples = [(entry["pattern"], agent) for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
                for agent in entry.get("instances", [])]
    assert len(examples) > 1000
    kinds = {agent: visitors.classify(agent) for _, agent in examples}
    assert all(kind in (visitors.BOT, visitors.PROXY) for kind in kinds.values())
    assert {a for a, k in kinds.items() if k == visitors.PROXY} <= {
        a for _, a in examples if "camo" in a.lower() or "ImageProxy" in a or "MailProxy" in a}


@pytest.mark.parametrize("agent", [FIREFOX, SAFARI, "",
                                   "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                                   "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0"])
def test_browsers_and_a_missing_user_agent_are_clients(agent):
    assert visitors.classify(agent) == visitors.CLIENT


@pytest.mark.parametrize("agent", ["Googlebot/2.1 (+http://www.google.com/bot.html)", "curl/8.5.0",
                                   "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                                   "facebookexternalhit/1.1", "python-requests/2.32.3",
                                   "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
                                   "Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"])
def test_crawlers_link_checkers_and_preview_fetchers_are_bots(agent):
    assert visitors.classify(agent) == visitors.BOT


@pytest.mark.parametrize("shape", [("Spider", "a", "spider.com"), ("Current", " ", "RSS Reader"),
                                   ("ContextualBot", "x", "outcomes.net"), (FIREFOX, " ", "")])
def test_a_user_agent_past_the_limit_is_a_bot_without_reading_the_list(shape, monkeypatch):
    """The list's patterns grow with the square of the length on these
    shapes (64 KB: 1.7 s); past USER_AGENT_MAX nothing is matched at all."""
    head, filler, tail = shape
    long_one = head + filler * (64 * 1024) + tail
    just_within = (head + filler * visitors.USER_AGENT_MAX)[:visitors.USER_AGENT_MAX - len(tail)] \
        + tail
    assert len(just_within) == visitors.USER_AGENT_MAX
    within = visitors.classify(just_within)
    monkeypatch.setattr(crawleruseragents, "is_crawler", lambda ua: pytest.fail("matched"))
    assert visitors.classify(long_one) == visitors.BOT
    assert visitors.classify(just_within) == within  # cached, not matched again


def test_the_user_agent_cache_is_bounded_in_bytes_not_only_in_entries():
    import tracemalloc
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(5000):  # distinct User-Agents of 7.9 KB each
        visitors.classify(f"Mozilla/5.0 ({n}) " + "x" * 7900)
    for n in range(5000):  # distinct ones within the limit
        visitors.classify(f"Mozilla/5.0 ({n}) " + "x" * (visitors.USER_AGENT_MAX - 20))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert visitors._classify.cache_info().currsize <= visitors.CACHED
    # 4,096 entries of at most 512 characters: about 3 MB (7.9 KB entries were 32 MB).
    assert grown < 4 * 1024 * 1024


# Counting visitors in the stores ###########################################

def test_five_clients_viewing_four_times_are_twenty_views_and_five_visitors(any_store):
    for client in range(5):
        for _ in range(4):
            counts = any_store.record_view("blog", DAY, visitor=(f"198.51.100.{client}", FIREFOX))
    assert (counts.total, counts.today, counts.visitors, counts.visitors_today) == (20, 20, 5, 5)
    assert any_store.days("blog", 1, DAY)[0] == storage.Day(storage.day(DAY), 20, 5, 0)


def test_each_view_is_answered_its_own_visitor_number(any_store):
    answers = [any_store.record_view("blog", DAY, visitor=(address, FIREFOX)).visitors
               for address in ["a", "a", "b", "a", "c", "b"]]
    assert answers == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("other", [("198.51.100.1", SAFARI), ("198.51.100.2", FIREFOX)])
def test_another_user_agent_or_address_is_another_visitor(any_store, other):
    any_store.record_view("blog", DAY, visitor=("198.51.100.1", FIREFOX))
    assert any_store.record_view("blog", DAY, visitor=other).visitors == 2


def test_the_same_client_on_another_page_is_that_pages_visitor(any_store):
    any_store.record_view("blog/a", DAY, visitor=("198.51.100.1", FIREFOX))
    assert any_store.record_view("blog/b", DAY, visitor=("198.51.100.1", FIREFOX)).visitors == 1


def test_the_same_client_the_next_day_is_a_new_visitor_and_the_old_salt_is_gone(any_store):
    any_store.record_view("blog", DAY, visitor=("198.51.100.1", FIREFOX))
    assert any_store.forget_visitors(DAY) == 0  # the day has not ended
    counts = any_store.record_view("blog", NEXT_DAY, visitor=("198.51.100.1", FIREFOX))
    assert (counts.visitors, counts.visitors_today) == (2, 1)
    assert any_store.forget_visitors(NEXT_DAY) == 1  # the day before is forgotten
    assert any_store.record_view("blog", NEXT_DAY,
                                 visitor=("198.51.100.1", FIREFOX)).visitors == 2


def test_a_view_just_after_midnight_still_finds_the_days_salt(any_store):
    any_store.record_view("blog", DAY, visitor=("198.51.100.1", FIREFOX))
    midnight = NEXT_DAY.replace(hour=0, minute=0, second=30)
    assert any_store.forget_visitors(midnight) == 0  # within VISITOR_GRACE
    assert any_store.forget_visitors(midnight + values.VISITOR_GRACE) == 1


def test_a_view_without_a_visitor_counts_only_as_a_view(any_store):
    counts = any_store.record_view("readme", DAY, visitor=None)
    assert (counts.total, counts.visitors) == (1, 0)


def test_a_bot_adds_a_bot_view_only_and_creates_no_page(any_store):
    assert any_store.record_view("new", DAY, bot=True, counted=False) == storage.Counts(0, 0)
    assert any_store.page("new") is None
    any_store.record_view("blog", DAY, visitor=("a", FIREFOX))
    counts = any_store.record_view("blog", DAY, bot=True, counted=False)
    assert (counts.total, counts.visitors) == (1, 1)
    any_store.record_view("blog", DAY, bot=True, counted=True)  # TALLY_COUNT_BOTS=1
    day = any_store.days("blog", 1, DAY)[0]
    assert (day.views, day.visitors, day.bots) == (2, 1, 2)


def test_visitors_are_exact_under_concurrency(any_store):
    """32 threads, 64 distinct clients each viewing 10 times: every view
    counted once, every client one visitor."""
    clients = [(f"203.0.113.{n}", FIREFOX if n % 2 else SAFARI) for n in range(64)]
    views = [clients[n % 64] for n in range(640)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda v: any_store.record_view("blog", DAY, visitor=v), views))
    counts = any_store.counts("blog", DAY)
    assert (counts.total, counts.visitors, counts.visitors_today) == (640, 64, 64)
    assert sorted(a.total for a in answers) == list(range(1, 641))


def test_set_lowers_visitors_with_the_total_and_merge_adds_them(any_store):
    for address in "abc":
        any_store.record_view("old", DAY, visitor=(address, FIREFOX))
        any_store.record_view("new", DAY, visitor=(address, FIREFOX))
    any_store.rename("old", "new", merge=True)
    assert (any_store.counts("new", DAY).visitors, any_store.page("new").visitor_days) == (
        6, {storage.day(DAY): 6})
    any_store.set_total("new", 4)
    assert any_store.counts("new", DAY).visitors == 4


def test_import_round_trips_visitors_and_bots(any_store):
    any_store.record_view("blog", DAY, visitor=("a", FIREFOX))
    any_store.record_view("blog", DAY, bot=True, counted=False)
    page = any_store.page("blog")
    any_store.delete("blog")
    any_store.import_pages([page], "set")
    again = any_store.page("blog")
    assert (again.visitors, again.visitor_days, again.bot_days) == (
        1, {storage.day(DAY): 1}, {storage.day(DAY): 1})


# Nothing about a visitor on disk ############################################

def test_no_address_or_user_agent_is_in_the_file_and_no_salt_after_the_day(tmp_path):
    db = str(tmp_path / "counts.db")
    addresses = [f"198.51.100.{n}" for n in range(1, 40)]
    agents = [f"Mozilla/5.0 (Privacy-Test-{n}; rv:1.0) Gecko/20100101 Firefox/{n}.0"
              for n in range(1, 40)]
    with sqlite.Store(db) as store:
        for address, agent in zip(addresses, agents):
            store.record_view("blog", DAY, visitor=(address, agent))
        day_file = sqlite_file.visitor_file(db)
        salt = bytes(sqlite3.connect(day_file).execute("SELECT salt FROM visitor_salts")
                     .fetchone()[0])
        hashes = [bytes(h) for (h,) in sqlite3.connect(day_file).execute(
            "SELECT hash FROM visitor_hashes")]
        assert len(hashes) == 39
        store.record_view("blog", NEXT_DAY, visitor=("203.0.113.9", FIREFOX))
        store.forget_visitors(NEXT_DAY)
    stored = b"".join(open(path, "rb").read() for path in sqlite_file.companions(db)
                      if os.path.exists(path))
    for text in addresses + agents:
        assert text.encode() not in stored
    assert salt not in stored
    assert not any(h in stored for h in hashes)


def test_memory_stays_flat_with_a_great_many_visitors_in_a_day(tmp_path):
    """200,000 distinct visitors in one day: the hashes live in the file,
    not in the server; the process grows by less than 40 MB."""
    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    with sqlite.Store(str(tmp_path / "counts.db"), sync="normal") as store:
        def count(start: int) -> None:
            for n in range(start, start + 2500):
                store.record_view("blog", DAY, visitor=(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}",
                                                        FIREFOX))
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(count, range(0, 40_000, 2500)))
        before = rss_mb()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(count, range(40_000, 200_000, 2500)))
        assert store.counts("blog", DAY).visitors == 200_000
        assert rss_mb() - before < 40


def test_two_servers_on_one_database_see_one_client_as_one_visitor(make_store):
    first, second = make_store(), make_store()
    first.record_view("blog", DAY, visitor=("198.51.100.1", FIREFOX))
    counts = second.record_view("blog", DAY, visitor=("198.51.100.1", FIREFOX))
    assert (counts.total, counts.visitors) == (2, 1)
    assert second.record_view("blog", DAY, visitor=("198.51.100.2", FIREFOX)).visitors == 2


# No copy holds a salt or a hash (issue 28) ##################################

def day_secrets(db: str) -> tuple[bytes, list[bytes]]:
    """Today's salt and hashes, from the visitor file beside db."""
    with sqlite3.connect(sqlite_file.visitor_file(db)) as conn:
        salt = bytes(conn.execute("SELECT salt FROM visitor_salts").fetchone()[0])
        return salt, [bytes(h) for (h,) in conn.execute("SELECT hash FROM visitor_hashes")]


def bytes_of(path: str) -> bytes:
    return b"".join(open(name, "rb").read() for name in sqlite_file.companions(path)[:4]
                    if os.path.exists(name))


def counted_visitors(db: str, n: int = 25) -> None:
    with sqlite.Store(db) as store:
        for i in range(n):
            store.record_view("blog", visitor=(f"198.51.100.{i}", FIREFOX))


def test_the_database_file_never_holds_the_days_salt_or_hashes(tmp_path):
    db = str(tmp_path / "counts.db")
    counted_visitors(db)
    salt, hashes = day_secrets(db)
    assert len(hashes) == 25
    held = bytes_of(db)
    assert salt not in held and not any(h in held for h in hashes)


def test_a_backup_holds_no_salt_or_hash(tmp_path):
    db, backup = str(tmp_path / "counts.db"), str(tmp_path / "backup.db")
    counted_visitors(db)
    salt, hashes = day_secrets(db)
    storage.checked_copy(db, backup)
    held = open(backup, "rb").read()
    assert salt not in held and not any(h in held for h in hashes)
    assert not os.path.exists(sqlite_file.visitor_file(backup))


def test_the_copy_kept_before_a_restore_holds_no_salt_and_restore_starts_visitors_afresh(
        tmp_path):
    db, backup, kept = (str(tmp_path / name) for name in ("counts.db", "b.db", "kept.db"))
    counted_visitors(db, 5)
    storage.checked_copy(db, backup)
    counted_visitors(db, 25)  # 20 more visitors today, then restored to the backup's 5
    salt, hashes = day_secrets(db)
    storage.replace_counts(db, backup, kept, timeout_s=5)
    held = open(kept, "rb").read()
    assert salt not in held and not any(h in held for h in hashes)
    with sqlite.Store(db) as store:
        assert store.counts("blog").visitors == 5
        # The visitors of the counts replaced are not known any more.
        assert store.record_view("blog", visitor=("198.51.100.1", FIREFOX)).visitors == 6


def test_an_older_file_with_a_salt_moves_it_out_and_its_copies_lose_it(tmp_path):
    """A file of schema 5 kept the salt and hashes inside: the server moves
    today's into the visitor file (today's visitors stay known) and the
    database's own bytes lose them; restoring a backup made then brings
    none back."""
    db = str(tmp_path / "counts.db")
    counted_visitors(db, 10)
    salt, hashes = day_secrets(db)
    old = str(tmp_path / "schema5.db")
    storage.checked_copy(db, old)
    # As schema 5 had it: the tables inside the database file, and none of
    # the later ones.
    with sqlite3.connect(old) as conn:
        conn.execute("DROP TABLE view_days")
        for table in ("owners", "owner_actions", "claims", "attempts"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE daily DROP COLUMN held")
        conn.execute("ALTER TABLE pages DROP COLUMN held")
        conn.execute("CREATE TABLE visitor_salts (day TEXT PRIMARY KEY NOT NULL, "
                     "salt BLOB NOT NULL) WITHOUT ROWID")
        conn.execute("CREATE TABLE visitor_hashes (day TEXT NOT NULL, hash BLOB NOT NULL, "
                     "PRIMARY KEY (day, hash)) WITHOUT ROWID")
        conn.execute("INSERT INTO visitor_salts VALUES (?, ?)", (storage.day(storage.utc_now()),
                                                                 salt))
        conn.executemany("INSERT INTO visitor_hashes VALUES (?, ?)",
                         [(storage.day(storage.utc_now()), h) for h in hashes])
        conn.execute("PRAGMA user_version = 5")
    conn.close()
    backup = str(tmp_path / "old-backup.db")
    storage.checked_copy(old, backup)
    assert salt in open(backup, "rb").read()
    with sqlite.Store(old) as store:
        assert store.record_view("blog", visitor=("198.51.100.1", FIREFOX)).visitors == 10
    held = bytes_of(old)
    assert salt not in held and not any(h in held for h in hashes)
    # Restoring the older backup (which has them) brings none back.
    storage.replace_counts(db, backup, str(tmp_path / "kept.db"), timeout_s=5)
    held = bytes_of(db)
    assert salt not in held and not any(h in held for h in hashes)
    with sqlite3.connect(sqlite_file.visitor_file(db)) as conn:
        assert conn.execute("SELECT count(*) FROM visitor_salts").fetchone()[0] == 0
