"""The statements both stores run, written once: with sqlite3's `?` for a
parameter and a few words where the two dialects differ (how a day is
stored, byte order, the casts PostgreSQL needs), turned into each store's
statements by statements(). What only one database does (counting a view,
its migrations, staging an import, SQLite's files) stays in that store's
module.

Measured before writing it this way: 208 lines of the two stores' SQL were
the same once `?` read as `%s`; the words below are all that differed.
Imports nothing.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Dialect:
    param: str        # a parameter: "?" (sqlite3), "%s" (psycopg)
    day_number: str   # a day's text ({}) as the day column holds it
    day_text: str     # the day column ({}) as YYYY-MM-DD text
    collate: str      # byte order whatever the database's locale, as SQLite sorts
    bigint: str       # PostgreSQL sums bigints as numeric (psycopg: Decimal)
    boolean: str      # PostgreSQL cannot infer a bare parameter's type here
    text: str
    same: str         # equal, NULL equal to NULL
    least: str
    greatest: str


SQLITE = Dialect(param="?", day_number="CAST(julianday({}) - 2440587.5 AS INTEGER)",
                 day_text="date({} * 86400, 'unixepoch')", collate="", bigint="", boolean="",
                 text="", same="IS", least="min", greatest="max")
POSTGRES = Dialect(param="%s", day_number="{}::date", day_text="to_char({}, 'YYYY-MM-DD')",
                   collate=' COLLATE "C"', bigint="::bigint", boolean="::boolean",
                   text="::text", same="IS NOT DISTINCT FROM", least="LEAST", greatest="GREATEST")


def statements(d: Dialect) -> dict[str, str]:
    """Every shared statement by name, in dialect d."""
    day, day_text = d.day_number.format("?"), d.day_text.format("d.day")
    return _in(d, {
        # Reading a page -------------------------------------------------------
        "counts": "SELECT p.total, coalesce(d.views, 0), p.visitors, coalesce(d.visitors, 0), "
                  "p.held, coalesce(d.held, 0) "
                  f"FROM pages p LEFT JOIN daily d ON d.page = p.id AND d.day = {day} "
                  "WHERE p.page_id = ?",
        "days_between": f"SELECT {day_text}, d.views, d.visitors, d.bots, d.held FROM pages p "
                        f"JOIN daily d ON d.page = p.id WHERE p.page_id = ? AND d.day >= {day} "
                        f"AND d.day <= {day}",
        "best_day": f"SELECT {day_text}, d.views FROM pages p JOIN daily d ON d.page = p.id "
                    "WHERE p.page_id = ? ORDER BY d.views DESC, d.day DESC LIMIT 1",
        "top": f"SELECT page_id, total FROM pages ORDER BY total DESC, page_id{d.collate} LIMIT ?",
        "page": "SELECT page_id, total, created_at, last_seen, visitors, held FROM pages "
                "WHERE page_id = ?",
        "page_days": f"SELECT {day_text}, d.views, d.visitors, d.bots, d.held FROM pages p "
                     "JOIN daily d ON d.page = p.id WHERE p.page_id = ? ORDER BY d.day",
        "all_pages": "SELECT p.page_id, p.total, p.created_at, p.last_seen, p.visitors, p.held, "
                     f"{day_text}, d.views, d.visitors, d.bots, d.held FROM pages p "
                     f"LEFT JOIN daily d ON d.page = p.id ORDER BY p.page_id{d.collate}, d.day",
        # Owner controls -------------------------------------------------------
        # Visitors never exceed views: a total set lower lowers them too.
        "set_total": "INSERT INTO pages (page_id, total, created_at, last_seen) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (page_id) DO UPDATE SET "
                     f"total = excluded.total, visitors = {d.least}(pages.visitors, excluded.total)",
        "key": "SELECT id FROM pages WHERE page_id = ?",
        "key_total": "SELECT id, total FROM pages WHERE page_id = ?",
        "delete_days": "DELETE FROM daily WHERE page = ?",
        "delete_page": "DELETE FROM pages WHERE id = ?",
        # The sum of a merge must stay within TOTAL_MAX, as a view's would.
        "merge_over": "SELECT (SELECT sum(total) FROM pages WHERE id IN (?, ?)) > ? "
                      "OR EXISTS (SELECT 1 FROM daily WHERE page IN (?, ?) "
                      "GROUP BY day HAVING sum(views) > ?)",
        # ("WHERE true": SQLite's parser needs a WHERE before ON CONFLICT.)
        "merge_days": "INSERT INTO daily (page, day, views, visitors, bots, held) "
                      "SELECT ?, day, views, visitors, bots, held FROM daily WHERE page = ? "
                      "AND true ON CONFLICT (page, day) DO UPDATE SET "
                      "views = daily.views + excluded.views, "
                      "visitors = daily.visitors + excluded.visitors, "
                      "bots = daily.bots + excluded.bots, held = daily.held + excluded.held",
        # Held views (counting.Guard) released: counted, on their days and
        # in the page's total, by the amounts read (another server may hold
        # more meanwhile: those stay held).
        "held_days": f"SELECT {day_text}, d.held FROM daily d WHERE d.page = ? AND d.held > 0 "
                     "ORDER BY d.day",
        "release_day": "UPDATE daily SET views = views + ?, held = held - ? "
                       f"WHERE page = ? AND day = {day}",
        "release_page": "UPDATE pages SET total = total + ?, held = held - ? WHERE id = ?",
        # The days of a repository's linked page whose held views GitHub's
        # own views of the day explain: counted + held <= GitHub's views.
        "confirmed": f"SELECT {day_text}, d.held, p.id, p.total FROM github_repos r "
                     "JOIN pages p ON p.page_id = r.page_id JOIN daily d ON d.page = p.id "
                     f"JOIN github_days g ON g.repo = r.repo AND g.day = {day_text} "
                     "WHERE r.repo = ? AND d.held > 0 AND d.views + d.held <= g.views "
                     "ORDER BY d.day",
        "rename": "UPDATE pages SET page_id = ? WHERE page_id = ?",
        **_kept_days_and_import(d),
    })


def _kept_days_and_import(d: Dialect) -> dict[str, str]:
    day = d.day_number.format("?")
    return {
        # TALLY_KEEP_DAYS (stores.values.first_kept_day) -------------------------
        # The days on which views were written, one row each (the schema's
        # migration 7): the first of the n newest, and a day added.
        "newest_from": f"SELECT {d.day_text.format('min(day)')} FROM "
                       "(SELECT day FROM view_days ORDER BY day DESC LIMIT ?) AS newest",
        "mark_day": f"INSERT INTO view_days (day) VALUES ({day}) ON CONFLICT DO NOTHING",
        # The day rows before the first kept day, TRIM_ROWS at a time in key
        # order. A row value compared with the primary key's columns is a
        # range of it: each transaction reads on from where the last stopped.
        # A day row holding held views stays until they are released.
        "trim_last": f"SELECT page, day FROM daily WHERE (page, day) > (?, ?) AND day < {day} "
                     "ORDER BY page, day LIMIT 1 OFFSET ?",
        "trim_upto": "DELETE FROM daily WHERE (page, day) > (?, ?) AND (page, day) <= (?, ?) "
                     f"AND day < {day} AND held = 0",
        "trim_rest": f"DELETE FROM daily WHERE (page, day) > (?, ?) AND day < {day} "
                     "AND held = 0",
        # Import: {source} is a SELECT of the staged rows --------------------------
        "import_page_set": "INSERT INTO pages (page_id, total, created_at, last_seen, visitors) "
                           "{source} ON CONFLICT (page_id) DO UPDATE SET total = excluded.total, "
                           "visitors = excluded.visitors, "
                           f"created_at = {d.least}(pages.created_at, excluded.created_at), "
                           f"last_seen = {d.greatest}(pages.last_seen, excluded.last_seen)",
        "import_page_add": "INSERT INTO pages (page_id, total, created_at, last_seen, visitors) "
                           "{source} ON CONFLICT (page_id) DO UPDATE SET "
                           "total = pages.total + excluded.total, "
                           "visitors = pages.visitors + excluded.visitors, "
                           f"created_at = {d.least}(pages.created_at, excluded.created_at), "
                           f"last_seen = {d.greatest}(pages.last_seen, excluded.last_seen)",
        "import_day_set": "INSERT INTO daily (page, day, views, visitors, bots, held) {source} "
                          "ON CONFLICT (page, day) DO UPDATE SET views = excluded.views, "
                          "visitors = excluded.visitors, bots = excluded.bots, "
                          "held = excluded.held",
        "import_day_add": "INSERT INTO daily (page, day, views, visitors, bots, held) {source} "
                          "ON CONFLICT (page, day) DO UPDATE SET "
                          "views = daily.views + excluded.views, "
                          "visitors = daily.visitors + excluded.visitors, "
                          "bots = daily.bots + excluded.bots, held = daily.held + excluded.held",
        # A page's held views are its days' (set replaces some days only):
        # summed again once the chunk's days are written. {source}: page ids.
        "import_held": "UPDATE pages SET held = (SELECT coalesce(sum(d.held), 0) FROM daily d "
                       "WHERE d.page = pages.id) WHERE page_id IN ({source})",
        "import_progress": "SELECT written, pages, finished FROM imports "
                           "WHERE sha256 = ? AND mode = ?",
        "record_import": "INSERT INTO imports (sha256, mode, written, pages, finished) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256, mode) DO UPDATE SET "
                         "written = excluded.written, pages = excluded.pages, "
                         "finished = excluded.finished",
    }


def github_statements(d: Dialect) -> dict[str, str]:
    """GitHub's traffic numbers (stores.traffic.KeptTraffic runs these)."""
    today = "FILTER (WHERE d.day = t.today), 0)" + d.bigint
    repo_columns = ("r.repo, r.page_id, r.added_at, r.synced_at, r.status, r.status_since, "
                    "r.failures, r.next_sync_at")
    return _in(d, {
        "add": "INSERT INTO github_repos (repo, page_id, added_at, status, status_since, "
               "failures, next_sync_at) VALUES (?, ?, ?, 'new', ?, 0, ?) "
               "ON CONFLICT (repo) DO NOTHING",
        "remove": "DELETE FROM github_repos WHERE repo = ?",
        "delete_days": "DELETE FROM github_days WHERE repo = ?",
        "delete_popular": "DELETE FROM github_popular WHERE repo = ?",
        "repos": f"SELECT {repo_columns}, count(d.day), min(d.day), max(d.day) "
                 "FROM github_repos r LEFT JOIN github_days d ON d.repo = r.repo "
                 f"GROUP BY r.repo ORDER BY r.repo{d.collate}",
        # Taken when nobody holds it (or a holder's lease ran out), and (unless
        # forced) it is still as the claimer read it: one statement, so of
        # several servers asking at once one gets the row.
        "claim": "UPDATE github_repos SET claimed_until = ? WHERE repo = ? "
                 "AND (claimed_until IS NULL OR claimed_until < ?) "
                 f"AND (?{d.boolean} OR next_sync_at = ? AND synced_at {d.same} ?{d.text})",
        "save_day": "INSERT INTO github_days (repo, day, views, visitors, clones, cloners) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (repo, day) DO UPDATE SET "
                    "views = excluded.views, visitors = excluded.visitors, "
                    "clones = excluded.clones, cloners = excluded.cloners",
        # A day GitHub left out of its window: 0, unless a number is kept.
        "zero_day": "INSERT INTO github_days (repo, day, views, visitors, clones, cloners) "
                    "VALUES (?, ?, 0, 0, 0, 0) ON CONFLICT (repo, day) DO NOTHING",
        "clear_popular": "DELETE FROM github_popular WHERE repo = ? AND day = ?",
        "save_popular": "INSERT INTO github_popular (repo, day, kind, name, title, views, "
                        "visitors) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        "synced": "UPDATE github_repos SET synced_at = ?, status_since = CASE WHEN status = 'ok' "
                  "THEN status_since ELSE ? END, status = 'ok', failures = 0, next_sync_at = ?, "
                  "claimed_until = NULL WHERE repo = ?",
        "status": "SELECT status FROM github_repos WHERE repo = ?",
        "failed": "UPDATE github_repos SET status_since = CASE WHEN status = ? THEN status_since "
                  "ELSE ? END, status = ?, failures = ?, next_sync_at = ?, claimed_until = NULL "
                  "WHERE repo = ?",
        "traffic": f"SELECT count(d.day), coalesce(sum(d.views), 0){d.bigint}, "
                   f"coalesce(sum(d.visitors), 0){d.bigint}, "
                   f"coalesce(sum(d.clones), 0){d.bigint}, "
                   f"coalesce(sum(d.cloners), 0){d.bigint}, coalesce(sum(d.views) {today}, "
                   f"coalesce(sum(d.visitors) {today}, coalesce(sum(d.clones) {today}, "
                   "min(d.day), (SELECT synced_at FROM github_repos WHERE repo = t.repo), "
                   "EXISTS (SELECT 1 FROM github_repos WHERE repo = t.repo) "
                   f"FROM (SELECT ?{d.text} AS today, ?{d.text} AS repo) t "
                   "LEFT JOIN github_days d ON d.repo = t.repo GROUP BY t.today, t.repo",
        "span": "SELECT count(*), min(day), max(day) FROM github_days WHERE repo = ?",
        "days": "SELECT day, views, visitors, clones, cloners FROM github_days "
                "WHERE repo = ? AND day >= ? AND day <= ? ORDER BY day",
        "popular": "SELECT day, kind, name, title, views, visitors FROM github_popular "
                   "WHERE repo = ? AND day = (SELECT max(day) FROM github_popular WHERE repo = ?) "
                   f"ORDER BY kind DESC, views DESC, name{d.collate}",
        "top": f"SELECT repo, sum(views){d.bigint} FROM github_days GROUP BY repo "
               f"ORDER BY sum(views) DESC, repo{d.collate} LIMIT ?",
        "all_days": "SELECT repo, day, views, visitors, clones, cloners FROM github_days "
                    f"ORDER BY repo{d.collate}, day",
        "all_popular": "SELECT repo, day, kind, name, title, views, visitors FROM github_popular "
                       f"ORDER BY repo{d.collate}, day, kind DESC, views DESC, name{d.collate}",
        "import_repo": "INSERT INTO github_repos (repo, page_id, added_at, status, status_since, "
                       "failures, next_sync_at) VALUES (?, ?, ?, 'imported', ?, 0, ?) "
                       "ON CONFLICT (repo) DO UPDATE SET page_id = coalesce(excluded.page_id, "
                       "github_repos.page_id)",
    })


def owner_statements(d: Dialect) -> dict[str, str]:
    """Page owners' keys, claims, actions and rate limits (stores.owners.PageOwners)."""
    return _in(d, {
        "owner": "SELECT key_hash, how, since FROM owners WHERE page_id = ?",
        "owners": f"SELECT o.page_id, o.how, o.since, count(a.id), max(a.at) FROM owners o "
                  "LEFT JOIN owner_actions a ON a.page_id = o.page_id "
                  f"GROUP BY o.page_id, o.how, o.since ORDER BY o.page_id{d.collate}",
        "set_owner": "INSERT INTO owners (page_id, key_hash, how, since) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (page_id) DO UPDATE SET key_hash = excluded.key_hash, "
                     "how = excluded.how, since = excluded.since",
        "new_key": "UPDATE owners SET key_hash = ? WHERE page_id = ? AND key_hash = ?",
        "remove_owner": "DELETE FROM owners WHERE page_id = ?",
        # The key is still the page's, and stays so until the transaction
        # ends: PostgreSQL holds the row, SQLite's writer the whole file.
        "hold_key": "UPDATE owners SET key_hash = key_hash WHERE page_id = ? AND key_hash = ?",
        # A page a new counter may not take: one with views, or its days.
        "viewed": "SELECT p.total > 0 OR p.held > 0 OR EXISTS (SELECT 1 FROM daily d "
                  "WHERE d.page = p.id) FROM pages p WHERE p.page_id = ?",
        "new_page": "INSERT INTO pages (page_id, total, created_at, last_seen) "
                    "VALUES (?, 0, ?, ?) ON CONFLICT (page_id) DO NOTHING",
        "page_count": "SELECT pages FROM page_count" if d is SQLITE
                      else "SELECT count(*) FROM pages",
        "record": "INSERT INTO owner_actions (page_id, at, action, detail, before) "
                  "VALUES (?, ?, ?, ?, ?)",
        "actions": "SELECT id, page_id, at, action, detail, before IS NOT NULL "
                   "FROM owner_actions WHERE page_id = ? ORDER BY id",
        "action": "SELECT id, page_id, at, action, detail, before FROM owner_actions WHERE id = ?",
        "add_claim": "INSERT INTO claims (token_hash, page_id, repo, expires_at) VALUES (?, ?, ?, ?)",
        "claim": "SELECT page_id, repo, expires_at FROM claims WHERE token_hash = ?",
        "drop_claim": "DELETE FROM claims WHERE token_hash = ? OR expires_at < ?",
        "try": "INSERT INTO attempts (kind, subject, slot, tries) VALUES (?, ?, ?, 1) "
               "ON CONFLICT (kind, subject, slot) DO UPDATE SET tries = attempts.tries + 1",
        "tries": "SELECT tries FROM attempts WHERE kind = ? AND subject = ? AND slot = ?",
        "old_tries": "DELETE FROM attempts WHERE kind = ? AND slot < ?",
    })


def _in(d: Dialect, found: dict[str, str]) -> dict[str, str]:
    return {name: text.replace("?", d.param) for name, text in found.items()}
