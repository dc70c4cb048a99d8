-- Mailstead schema, version 1. Plain SQL that PostgreSQL also accepts once INTEGER PRIMARY KEY
-- is spelled BIGINT GENERATED ALWAYS AS IDENTITY; the PostgreSQL backend carries its own copy.

-- Counters that must never go backwards (e.g. the last UIDVALIDITY handed out).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (name, value) VALUES ('last_uidvalidity', 0);

CREATE TABLE domains (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,   -- lower-case, Unicode (see interfaces.py)
    created_at REAL NOT NULL
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    domain_id     INTEGER NOT NULL REFERENCES domains (id),
    address       TEXT NOT NULL,        -- as created
    address_key   TEXT NOT NULL UNIQUE, -- interfaces.address_key(address)
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL
);
CREATE INDEX accounts_domain ON accounts (domain_id);

-- One row per (source, target); "@domain" sources are catch-alls.
CREATE TABLE aliases (
    id         INTEGER PRIMARY KEY,
    domain_id  INTEGER NOT NULL REFERENCES domains (id),
    source     TEXT NOT NULL,
    source_key TEXT NOT NULL,
    target     TEXT NOT NULL,
    target_key TEXT NOT NULL,
    UNIQUE (source_key, target_key)
);
CREATE INDEX aliases_domain ON aliases (domain_id);

CREATE TABLE mailboxes (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    special_use   TEXT,
    uidvalidity   INTEGER NOT NULL,     -- RFC 3501 section 2.3.1.1: never reused for a name
    uidnext       INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,  -- RFC 7162 section 3.1.1
    UNIQUE (account_id, name)
);

-- Bodies, content-addressed. Files live under DATA/blobs; this table lets a mark-and-sweep
-- garbage collector find blobs that no message and no queue row references any more.
CREATE TABLE blobs (
    hash       TEXT PRIMARY KEY,        -- SHA-256 hex
    size       INTEGER NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    mailbox_id    INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',  -- space-separated
    internal_date REAL NOT NULL,
    size          INTEGER NOT NULL,
    blob          TEXT NOT NULL REFERENCES blobs (hash),
    envelope      TEXT NOT NULL,
    bodystructure TEXT NOT NULL,
    UNIQUE (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_blob ON messages (blob);

-- The outbound queue: one row per recipient (DESIGN rule 7).
CREATE TABLE queue (
    id              INTEGER PRIMARY KEY,
    queue_id        TEXT NOT NULL,
    mail_from       TEXT NOT NULL,
    rcpt_to         TEXT NOT NULL,
    blob            TEXT NOT NULL REFERENCES blobs (hash),
    state           TEXT NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'active', 'deferred', 'delivered', 'bounced')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt    REAL NOT NULL,
    created_at      REAL NOT NULL,
    last_error      TEXT,
    auth_account_id INTEGER
);
-- The scheduler asks "which rows in state S are due", oldest first.
CREATE INDEX queue_due ON queue (state, next_attempt);
CREATE INDEX queue_message ON queue (queue_id);
CREATE INDEX queue_blob ON queue (blob);
