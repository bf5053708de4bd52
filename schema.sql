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
