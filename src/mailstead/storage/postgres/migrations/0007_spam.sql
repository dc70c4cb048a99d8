-- Mailstead schema, version 7 (PostgreSQL): greylisting and Bayes (issue 9).
CREATE TABLE greylist (
    triplet    TEXT PRIMARY KEY,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL,
    passed     SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX greylist_last_seen ON greylist (last_seen);
CREATE TABLE greylist_networks (
    network   TEXT PRIMARY KEY,
    last_seen DOUBLE PRECISION NOT NULL
);
CREATE TABLE bayes_tokens (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token      BIGINT NOT NULL,
    spam       INTEGER NOT NULL DEFAULT 0,
    ham        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, token)
);
CREATE TABLE bayes_learned (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message    TEXT NOT NULL,
    spam       SMALLINT NOT NULL,
    PRIMARY KEY (account_id, message)
);
