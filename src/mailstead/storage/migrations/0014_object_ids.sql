-- Mailstead schema, version 14: what IMAP OBJECTID (RFC 8474) and SAVEDATE (RFC 8514) need.
--
-- saved_at: when the message was saved into this mailbox (delivery, APPEND, COPY, MOVE),
-- RFC 8514 section 3. NULL on rows from before this version: they read as their internal
-- date (the store selects COALESCE(saved_at, internal_date)), so no row is rewritten here.
ALTER TABLE messages ADD COLUMN saved_at REAL;
-- thread_id: the RFC 8474 section 5.2 THREADID, assigned at delivery from the Message-ID,
-- In-Reply-To and References fields (storage/rules.py). NULL on older rows: they read as a
-- thread of their own, named after their body ('T' || first 24 hex digits of the blob), so
-- copies of one message stay in one thread.
ALTER TABLE messages ADD COLUMN thread_id TEXT;
CREATE INDEX messages_thread ON messages (thread_id) WHERE thread_id IS NOT NULL;

-- Which thread each Message-ID seen in an account (as a message's own id or among its
-- references) belongs to: a later reply, or a parent that arrives after its reply, joins it.
CREATE TABLE thread_keys (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;
-- The stored messages' own Message-IDs, so replies delivered from now on join their threads.
INSERT OR IGNORE INTO thread_keys (account_id, key, thread_id)
SELECT account_id, mid, 'T' || substr(blob, 1, 24) FROM (
    SELECT b.account_id, m.blob, m.id,
           CASE WHEN json_valid(m.envelope) THEN json_extract(m.envelope, '$.message_id') END AS mid
      FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
)
 WHERE mid GLOB '<?*>' AND substr(mid, 2, length(mid) - 2) NOT GLOB '*[ <>"]*'
   AND length(mid) <= 250
 ORDER BY id;
