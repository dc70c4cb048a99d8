-- Sieve (issue 9, RFC 5228 / RFC 5804): each account's scripts, at most one active, and the
-- log of automatic sends (vacation replies once per sender per period, RFC 5230 section 4.1;
-- redirects counted per day against the account's limit).
CREATE TABLE sieve_scripts (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (account_id, name)
);
CREATE UNIQUE INDEX sieve_scripts_one_active ON sieve_scripts(account_id) WHERE active = 1;

CREATE TABLE sieve_log (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX sieve_log_lookup ON sieve_log(account_id, kind, key, at);
