-- Spam filtering (issue 9): greylisting triplets, networks that passed greylisting, and the
-- per-account Bayesian token counts with the messages already learned.

-- One row per (client network, sender, recipient) triplet; passed = 1 once a retry came after
-- the delay. Old rows are pruned by last_seen.
CREATE TABLE greylist (
    triplet TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    passed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX greylist_last_seen ON greylist (last_seen);

-- Client networks that retried correctly once: later mail from them skips greylisting.
CREATE TABLE greylist_networks (
    network TEXT PRIMARY KEY,
    last_seen REAL NOT NULL
) WITHOUT ROWID;

-- Token counts per account; token is a 63-bit hash of the token text (filters/bayes.py).
CREATE TABLE bayes_tokens (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token INTEGER NOT NULL,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, token)
) WITHOUT ROWID;

-- The messages learned (by the SHA-256 of their bytes) and as what, so learning the same
-- message twice counts once and moving it back out of Junk moves its counts.
CREATE TABLE bayes_learned (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message TEXT NOT NULL,
    spam INTEGER NOT NULL,
    PRIMARY KEY (account_id, message)
) WITHOUT ROWID;
