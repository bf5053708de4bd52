-- Tally's schema. Each migration below runs once, in order, inside one
-- transaction, and sets PRAGMA user_version to its number (storage.py does
-- this). Migrations only ever add: no DROP, no data rewritten away.

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
