-- Tally's schema. Each migration below runs once, in order, inside one
-- transaction, and sets PRAGMA user_version to its number (stores/sqlite_file.py
-- does this). Migrations add, except one that rewrites a table into a new
-- layout: stores.sqlite_file.REWRITES names it, and the counts it moves are summed
-- before and after inside its transaction; any difference rolls it back.

-- migration 1
-- One row per counter. total is what the badge shows; created_at and
-- last_seen are UTC ISO-8601 timestamps (seconds).
CREATE TABLE pages (
    page_id    TEXT PRIMARY KEY NOT NULL,
    total      INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    created_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) WITHOUT ROWID;

-- Views per page per UTC day (day is YYYY-MM-DD), written in the same
-- transaction as the total.
CREATE TABLE daily (
    page_id TEXT NOT NULL,
    day     TEXT NOT NULL,
    views   INTEGER NOT NULL CHECK (views >= 0),
    PRIMARY KEY (page_id, day)
) WITHOUT ROWID;

-- migration 2
-- The number of pages, kept by triggers in the same transaction that adds
-- or removes one, so TALLY_MAX_PAGES is checked in O(1) (a count(*) of a
-- large table inside the single writer's transaction let a flood of new ids
-- starve every other page's views).
CREATE TABLE page_count (
    only  INTEGER PRIMARY KEY CHECK (only = 1),
    pages INTEGER NOT NULL
);
INSERT INTO page_count (only, pages) SELECT 1, count(*) FROM pages;
CREATE TRIGGER page_added AFTER INSERT ON pages BEGIN
    UPDATE page_count SET pages = pages + 1;
END;
CREATE TRIGGER page_removed AFTER DELETE ON pages BEGIN
    UPDATE page_count SET pages = pages - 1;
END;

-- Imports, by the SHA-256 of the file read and the mode: how many of its
-- pages are written, recorded in the transaction of each chunk. An import
-- interrupted (Ctrl-C, kill, disk full) and run again goes on after the
-- chunks already written; a finished `add` is not added twice.
CREATE TABLE imports (
    sha256   TEXT NOT NULL,
    mode     TEXT NOT NULL,
    written  INTEGER NOT NULL,
    pages    INTEGER NOT NULL,
    finished TEXT,
    PRIMARY KEY (sha256, mode)
) WITHOUT ROWID;

-- migration 3
-- GitHub's own traffic numbers, kept past GitHub's 14 days (github.py).
-- repo is "owner/name" lowercased, as GitHub compares them; page_id links
-- the Tally page that counts the same README through GitHub's image proxy.
-- Times are UTC ISO-8601 text, as in pages. next_sync_at is when the
-- repository is asked again (a rate limit or a back-off moves it);
-- claimed_until lets one server at a time sync it. No token is stored.
CREATE TABLE github_repos (
    repo          TEXT PRIMARY KEY NOT NULL,
    page_id       TEXT,
    added_at      TEXT NOT NULL,
    synced_at     TEXT,
    status        TEXT NOT NULL,
    status_since  TEXT NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    next_sync_at  TEXT NOT NULL,
    claimed_until TEXT
) WITHOUT ROWID;

-- One row per repository and UTC day that a sync covered (GitHub's window:
-- the 14 days to the sync's day, zeros where GitHub listed nothing). A day
-- between a repository's first and last row without a row of its own fell
-- out of GitHub's window unseen: it is reported as lost, never as zero.
CREATE TABLE github_days (
    repo     TEXT NOT NULL,
    day      TEXT NOT NULL,
    views    INTEGER NOT NULL CHECK (views >= 0),
    visitors INTEGER NOT NULL CHECK (visitors >= 0),
    clones   INTEGER NOT NULL CHECK (clones >= 0),
    cloners  INTEGER NOT NULL CHECK (cloners >= 0),
    PRIMARY KEY (repo, day)
) WITHOUT ROWID;

-- The top referrers and paths of GitHub's window, as each sync day saw
-- them (kind: referrer or path), so their history stays too.
CREATE TABLE github_popular (
    repo     TEXT NOT NULL,
    day      TEXT NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    title    TEXT NOT NULL,
    views    INTEGER NOT NULL CHECK (views >= 0),
    visitors INTEGER NOT NULL CHECK (visitors >= 0),
    PRIMARY KEY (repo, day, kind, name)
) WITHOUT ROWID;

-- migration 4
-- Visitors (docs/privacy.md): per page, the sum of each day's unique
-- visitors, and per day the visitors and the bot views. A visitor is known
-- only for the day, by a keyed hash (BLAKE2b of page, address and
-- User-Agent, keyed with the day's random salt); addresses and User-Agents
-- are never written. Salts and hashes of a day that has ended are deleted
-- (with secure_delete, so their bytes are overwritten too).
ALTER TABLE pages ADD COLUMN visitors INTEGER NOT NULL DEFAULT 0 CHECK (visitors >= 0);
ALTER TABLE daily ADD COLUMN visitors INTEGER NOT NULL DEFAULT 0 CHECK (visitors >= 0);
ALTER TABLE daily ADD COLUMN bots INTEGER NOT NULL DEFAULT 0 CHECK (bots >= 0);
CREATE TABLE visitor_salts (
    day  TEXT PRIMARY KEY NOT NULL,
    salt BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE visitor_hashes (
    day  TEXT NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (day, hash)
) WITHOUT ROWID;

-- migration 5
-- The compact layout (issue 23): a page-day row held the page id's text
-- again (about 42 bytes a row with a 22-character id). Now a page has an
-- integer key, id, and daily is keyed by (page, day): day is the number of
-- days since 1970-01-01 (SQLite: CAST(julianday(text) - 2440587.5 AS
-- INTEGER); back with date(day * 86400, 'unixepoch')). Ids are given in
-- page_id order, so reading pages in order reads daily in order too.
CREATE TABLE pages_compact (
    id         INTEGER PRIMARY KEY,
    page_id    TEXT NOT NULL UNIQUE,
    total      INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    created_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    visitors   INTEGER NOT NULL DEFAULT 0 CHECK (visitors >= 0)
);
INSERT INTO pages_compact (page_id, total, created_at, last_seen, visitors)
    SELECT page_id, total, created_at, last_seen, visitors FROM pages ORDER BY page_id;
CREATE TABLE daily_compact (
    page     INTEGER NOT NULL,
    day      INTEGER NOT NULL,
    views    INTEGER NOT NULL CHECK (views >= 0),
    visitors INTEGER NOT NULL DEFAULT 0 CHECK (visitors >= 0),
    bots     INTEGER NOT NULL DEFAULT 0 CHECK (bots >= 0),
    PRIMARY KEY (page, day)
) WITHOUT ROWID;
INSERT INTO daily_compact (page, day, views, visitors, bots)
    SELECT p.id, CAST(julianday(d.day) - 2440587.5 AS INTEGER), d.views, d.visitors, d.bots
    FROM daily d JOIN pages_compact p ON p.page_id = d.page_id ORDER BY 1, 2;
DROP TRIGGER page_added;
DROP TRIGGER page_removed;
DROP TABLE daily;
DROP TABLE pages;
ALTER TABLE pages_compact RENAME TO pages;
ALTER TABLE daily_compact RENAME TO daily;
CREATE TRIGGER page_added AFTER INSERT ON pages BEGIN
    UPDATE page_count SET pages = pages + 1;
END;
CREATE TRIGGER page_removed AFTER DELETE ON pages BEGIN
    UPDATE page_count SET pages = pages - 1;
END;

-- migration 6
-- The day's visitor salt and hashes leave this file (issue 28): every copy
-- of it (backup, the copy kept before a restore, a Litestream replica)
-- held a whole day's salt and every hash made with it, from which the
-- addresses behind them could be recovered. They now live in a file of
-- their own beside it, <database>-visitors (stores/sqlite_file.py), which no
-- copy includes. The server carries today's rows over before this runs.
DROP TABLE visitor_salts;
DROP TABLE visitor_hashes;

-- migration 7
-- The UTC days on which views were written, one row each (issue 28), as
-- day numbers like daily's. TALLY_KEEP_DAYS keeps the day rows of the
-- newest N of them whatever the clock says (stores.values.first_kept_day): a
-- clock that jumps forward years deletes no history. The writer adds its
-- day in the first batch of the day, an import the days it writes. A row a
-- day, never deleted.
CREATE TABLE view_days (
    day INTEGER PRIMARY KEY
);
INSERT INTO view_days (day) SELECT DISTINCT day FROM daily ORDER BY day;

-- migration 8
-- Held views (issue 30): the views the inflation guard (counting.Guard)
-- did not believe, per page and per day, kept beside the counts and never
-- shown until released (server.py release; or a sync of the linked
-- repository whose GitHub views of that day explain them, docs/github.md).
-- pages.held is the sum of its days' held views. TALLY_KEEP_DAYS never
-- deletes a day row that holds any.
ALTER TABLE pages ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0);
ALTER TABLE daily ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0);

-- migration 9
-- Self-service for page owners (issue 32, docs/owners.md), used only with
-- TALLY_SELF_SERVICE=1. An owner is whoever holds a page's key: only the
-- key's SHA-256 is kept (the key is 256 random bits, so no slow hash is
-- needed), never the key. how: "key" (made with POST /api/pages) or
-- "claim owner/name" (proved by that repository's README).
CREATE TABLE owners (
    page_id  TEXT PRIMARY KEY NOT NULL,
    key_hash TEXT NOT NULL,
    how      TEXT NOT NULL,
    since    TEXT NOT NULL
) WITHOUT ROWID;
-- What owners did, for them and the operator (server.py owners show), and
-- what undo needs: before is the page as `export` writes it, before a
-- set, reset or delete. Never the key.
CREATE TABLE owner_actions (
    id      INTEGER PRIMARY KEY,
    page_id TEXT NOT NULL,
    at      TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    before  TEXT
);
CREATE INDEX owner_actions_page ON owner_actions (page_id, id);
-- Claims waiting for their README: the token's SHA-256 (the token itself
-- is public once it is in the README), for one page and repository, until
-- expires_at.
CREATE TABLE claims (
    token_hash TEXT PRIMARY KEY NOT NULL,
    page_id    TEXT NOT NULL,
    repo       TEXT NOT NULL,
    expires_at TEXT NOT NULL
) WITHOUT ROWID;
-- Tries counted for the rate limits, per kind ("key": wrong keys, "new":
-- new counters, "claim"), subject (a page id, or a client as a keyed hash
-- with the day's visitor salt, which leads back to no address once the day
-- ends) and slot (the minute or the hour they count in). Rows of a slot
-- that has passed are deleted at the next try.
CREATE TABLE attempts (
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    slot    TEXT NOT NULL,
    tries   INTEGER NOT NULL,
    PRIMARY KEY (kind, subject, slot)
) WITHOUT ROWID;
