-- Mailstead schema, version 3: outbound delivery (issue 5).

-- DKIM keys (RFC 6376): every domain gets an RSA and an Ed25519 key (RFC 8463); rotation adds
-- newer keys and deactivates the older ones, which stay published until the admin removes them.
CREATE TABLE dkim_keys (
    id          INTEGER PRIMARY KEY,
    domain      TEXT NOT NULL,          -- lower-case, as in domains.name
    selector    TEXT NOT NULL,
    algorithm   TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key TEXT NOT NULL,          -- PEM (PKCS#8)
    public_key  TEXT NOT NULL,          -- base64, the p= tag of the DNS record
    created_at  REAL NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    UNIQUE (domain, selector)
);

-- A delay warning DSN (RFC 3464 Action: delayed) is sent at most once per recipient.
ALTER TABLE queue ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;
-- When the last attempt ended (the DSN's Last-Attempt-Date, RFC 3464 section 2.3.7).
ALTER TABLE queue ADD COLUMN last_attempt REAL;
-- The per-sender hourly limit counts an account's recent rows.
CREATE INDEX queue_sender ON queue (auth_account_id, created_at);
