-- Mailstead schema, version 11 (PostgreSQL): the web pages' sessions (web/sessions.py), in the
-- store so that every node behind a load balancer knows every browser's session.

-- ``key`` is the SHA-256 of the cookie value (the value itself is never stored); ``data`` is the
-- session's JSON (CSRF token, address, password stamp, pending 2FA sign-in, the encrypted 2FA
-- enrolment, flash message). account_id is NULL until the person has fully signed in.
CREATE TABLE web_sessions (
    key        TEXT PRIMARY KEY,
    account_id BIGINT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    data       TEXT NOT NULL,
    created    DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL
);
CREATE INDEX web_sessions_account ON web_sessions (account_id);
CREATE INDEX web_sessions_last_seen ON web_sessions (last_seen);
