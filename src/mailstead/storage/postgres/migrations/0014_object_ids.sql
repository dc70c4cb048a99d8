-- Mailstead schema, version 14 (PostgreSQL): what IMAP OBJECTID (RFC 8474) and SAVEDATE
-- (RFC 8514) need.
--
-- saved_at: when the message was saved into this mailbox (delivery, APPEND, COPY, MOVE),
-- RFC 8514 section 3; every insert gets the commit's clock by default. NULL on rows from
-- before this version: they read as their internal date (COALESCE(saved_at, internal_date)).
ALTER TABLE messages ADD COLUMN saved_at DOUBLE PRECISION;
ALTER TABLE messages ALTER COLUMN saved_at SET DEFAULT extract(epoch FROM clock_timestamp());
-- thread_id: the RFC 8474 section 5.2 THREADID, assigned at delivery from the Message-ID,
-- In-Reply-To and References fields (storage/rules.py). NULL on older rows: they read as a
-- thread of their own, named after their body ('T' || first 24 hex digits of the blob).
ALTER TABLE messages ADD COLUMN thread_id TEXT;
CREATE INDEX messages_thread ON messages (thread_id) WHERE thread_id IS NOT NULL;

-- Which thread each Message-ID seen in an account belongs to (see the SQLite migration).
CREATE TABLE thread_keys (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    PRIMARY KEY (account_id, key)
);
-- A regular expression rather than a cast to jsonb, so a damaged row cannot stop the upgrade.
INSERT INTO thread_keys (account_id, key, thread_id)
SELECT DISTINCT ON (b.account_id, k.key) b.account_id, k.key, 'T' || left(m.blob, 24)
  FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id,
       LATERAL (SELECT substring(m.envelope FROM '"message_id":"(<[^"\\<> ]{1,248}>)"') AS key) k
 WHERE k.key IS NOT NULL
 ORDER BY b.account_id, k.key, m.id;
