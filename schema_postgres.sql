-- Tally's PostgreSQL schema: the same tables and columns as schema.sql, so
-- an export from one store imports into the other with nothing lost. Each
-- migration below runs once, in order, inside one transaction under an
-- advisory lock (several servers may start at once), and records its number
-- in tally_schema (postgres_store.py does this). Migrations only ever add.

-- migration 1
-- The schema version, one row (PostgreSQL has no PRAGMA user_version).
CREATE TABLE tally_schema (
    version INTEGER NOT NULL
);
INSERT INTO tally_schema (version) VALUES (0);

-- One row per counter. total is what the badge shows; created_at and
-- last_seen are UTC ISO-8601 timestamps (seconds), as text like SQLite's.
CREATE TABLE pages (
    page_id    TEXT PRIMARY KEY,
    total      BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    created_at TEXT NOT NULL,
    last_seen  TEXT NOT NULL
);

-- Views per page per UTC day (day is YYYY-MM-DD, computed by Tally, not by
-- the server's time zone), written in the same transaction as the total.
CREATE TABLE daily (
    page_id TEXT NOT NULL,
    day     TEXT NOT NULL,
    views   BIGINT NOT NULL CHECK (views >= 0),
    PRIMARY KEY (page_id, day)
);

-- migration 2
-- Imports, by the SHA-256 of the file read and the mode: how many of its
-- pages are written, recorded in the transaction of each chunk. An import
-- interrupted (Ctrl-C, kill, disk full) and run again goes on after the
-- chunks already written; a finished `add` is not added twice.
CREATE TABLE imports (
    sha256   TEXT NOT NULL,
    mode     TEXT NOT NULL,
    written  BIGINT NOT NULL,
    pages    BIGINT NOT NULL,
    finished TEXT,
    PRIMARY KEY (sha256, mode)
);

-- migration 3
-- GitHub's own traffic numbers, kept past GitHub's 14 days: the same tables
-- as schema.sql's migration 3 (which says what each column means).
CREATE TABLE github_repos (
    repo          TEXT PRIMARY KEY,
    page_id       TEXT,
    added_at      TEXT NOT NULL,
    synced_at     TEXT,
    status        TEXT NOT NULL,
    status_since  TEXT NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    next_sync_at  TEXT NOT NULL,
    claimed_until TEXT
);

CREATE TABLE github_days (
    repo     TEXT NOT NULL,
    day      TEXT NOT NULL,
    views    BIGINT NOT NULL CHECK (views >= 0),
    visitors BIGINT NOT NULL CHECK (visitors >= 0),
    clones   BIGINT NOT NULL CHECK (clones >= 0),
    cloners  BIGINT NOT NULL CHECK (cloners >= 0),
    PRIMARY KEY (repo, day)
);

CREATE TABLE github_popular (
    repo     TEXT NOT NULL,
    day      TEXT NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    title    TEXT NOT NULL,
    views    BIGINT NOT NULL CHECK (views >= 0),
    visitors BIGINT NOT NULL CHECK (visitors >= 0),
    PRIMARY KEY (repo, day, kind, name)
);

-- migration 4
-- Visitors: the same columns and tables as schema.sql's migration 4 (which
-- says what they hold). Shared by every server on this database, so a
-- visitor is one visitor whichever server answers.
ALTER TABLE pages ADD COLUMN visitors BIGINT NOT NULL DEFAULT 0 CHECK (visitors >= 0);
ALTER TABLE daily ADD COLUMN visitors BIGINT NOT NULL DEFAULT 0 CHECK (visitors >= 0);
ALTER TABLE daily ADD COLUMN bots BIGINT NOT NULL DEFAULT 0 CHECK (bots >= 0);
CREATE TABLE visitor_salts (
    day  TEXT PRIMARY KEY,
    salt BYTEA NOT NULL
);
CREATE TABLE visitor_hashes (
    day  TEXT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (day, hash)
);
