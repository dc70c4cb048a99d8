-- Account security (issue 6): two-factor secrets, recovery codes, app-specific passwords,
-- the login audit and IP blocks. No secret is stored in the clear: the TOTP secret is
-- AES-GCM encrypted and codes and app passwords are keyed HMAC-SHA256 digests, both under
-- DATA/security.key (accounts/keys.py), which is not in this database.

-- One row per account with two-factor authentication on (RFC 6238 TOTP).
CREATE TABLE totp (
    account_id   INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    secret       TEXT NOT NULL,     -- encrypted base32 secret (keys.py), never logged
    last_counter INTEGER NOT NULL DEFAULT -1, -- RFC 6238 section 5.2: no code used twice
    created_at   REAL NOT NULL
);

-- Ten one-time recovery codes per account, as keyed digests; a used code is deleted.
CREATE TABLE recovery_codes (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    digest     TEXT NOT NULL,
    PRIMARY KEY (account_id, digest)
);

CREATE TABLE app_passwords (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL,       -- lower-case name: "iPhone" and "iphone" are one
    digest     TEXT NOT NULL,       -- keyed HMAC-SHA256 of the password (keys.py)
    protocols  TEXT NOT NULL DEFAULT '', -- space-separated; '' means every protocol
    created_at REAL NOT NULL,
    last_used  REAL,
    last_ip    TEXT,
    UNIQUE (account_id, name_key)
);

-- Every login attempt, kept for [security] audit_retention (90 days by default).
CREATE TABLE login_audit (
    id           INTEGER PRIMARY KEY,
    at           REAL NOT NULL,
    account_id   INTEGER REFERENCES accounts (id) ON DELETE CASCADE, -- NULL: no such account
    username     TEXT NOT NULL,     -- as the client sent it (shortened)
    protocol     TEXT NOT NULL,
    client_ip    TEXT NOT NULL,
    mechanism    TEXT NOT NULL,
    success      INTEGER NOT NULL,
    reason       TEXT NOT NULL,     -- "ok", "bad_credentials", "blocked", ...
    app_password TEXT               -- the app password's name when one was used
);
CREATE INDEX login_audit_account ON login_audit (account_id, at);
CREATE INDEX login_audit_at ON login_audit (at);

-- Blocked client networks (an IPv4 address or an IPv6 /64); shared by every process so the
-- CLI can list and lift them while the server runs.
CREATE TABLE ip_blocks (
    network    TEXT PRIMARY KEY,
    until      REAL NOT NULL,
    failures   INTEGER NOT NULL,
    created_at REAL NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX ip_blocks_until ON ip_blocks (until);
