-- Mailstead schema, version 9 (PostgreSQL): state that must hold across nodes (issue 10).

-- Named leases with an owner and an expiry: the POP3 maildrop lock ([IN-USE], RFC 2449
-- section 8.1.1) of each account. A node that dies holds its leases only until they expire.
CREATE TABLE leases (
    name  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL
);

-- Failed logins by client network and by account, for brute-force delays and blocks
-- (accounts/throttle.py); pruned past the failure window.
CREATE TABLE auth_failures (
    kind TEXT NOT NULL,   -- "network" | "account"
    key  TEXT NOT NULL,
    at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX auth_failures_key ON auth_failures (kind, key, at);
CREATE INDEX auth_failures_at ON auth_failures (at);
