-- Mailstead schema, version 8 (PostgreSQL): Sieve scripts and the log of automatic sends.
CREATE TABLE sieve_scripts (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    content    TEXT NOT NULL,
    active     SMALLINT NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account_id, name)
);
CREATE UNIQUE INDEX sieve_scripts_one_active ON sieve_scripts (account_id) WHERE active = 1;
CREATE TABLE sieve_log (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL
);
CREATE INDEX sieve_log_lookup ON sieve_log (account_id, kind, key, at);
