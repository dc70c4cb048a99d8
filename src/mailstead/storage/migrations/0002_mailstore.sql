-- Mailstead schema, version 2: mailbox access for IMAP and POP3 (issues 3 and 4).

-- RFC 3501 section 6.3.6 / RFC 9051 section 6.3.7: a subscription is just a name; it may name
-- a mailbox that does not exist (any more), so no reference to mailboxes.
CREATE TABLE subscriptions (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
) WITHOUT ROWID;

-- Expunged UIDs with the MODSEQ of their expunge, for QRESYNC VANISHED (RFC 7162 section
-- 3.2.10). Bounded: the oldest rows of a mailbox are compacted away and
-- mailboxes.vanished_floor remembers the highest MODSEQ forgotten; asked for changes since an
-- older MODSEQ, the store reports every UID below UIDNEXT that is not present (RFC 7162
-- section 3.2.5.1 allows reporting UIDs that were expunged earlier).
CREATE TABLE vanished (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid        INTEGER NOT NULL,
    modseq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX vanished_modseq ON vanished (mailbox_id, modseq);
ALTER TABLE mailboxes ADD COLUMN vanished_floor INTEGER NOT NULL DEFAULT 0;

-- RFC 9208 quota: NULL is unlimited. used_bytes/used_messages are running totals kept by the
-- triggers below in the same transaction as every insert and delete of a message, so reading
-- the quota never sums a large mailbox.
ALTER TABLE accounts ADD COLUMN quota INTEGER;
ALTER TABLE accounts ADD COLUMN used_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN used_messages INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET
    used_bytes = (SELECT COALESCE(SUM(m.size), 0) FROM messages m
                  JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = accounts.id),
    used_messages = (SELECT COUNT(*) FROM messages m
                     JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = accounts.id);

CREATE TRIGGER messages_quota_insert AFTER INSERT ON messages BEGIN
    UPDATE accounts SET used_bytes = used_bytes + NEW.size, used_messages = used_messages + 1
     WHERE id = (SELECT account_id FROM mailboxes WHERE id = NEW.mailbox_id);
END;
CREATE TRIGGER messages_quota_delete AFTER DELETE ON messages BEGIN
    UPDATE accounts SET used_bytes = used_bytes - OLD.size, used_messages = used_messages - 1
     WHERE id = (SELECT account_id FROM mailboxes WHERE id = OLD.mailbox_id);
END;

-- Full-text index over message text, one document per blob (copies share it). The trigram
-- tokenizer matches any substring of 3 or more characters (RFC 9051 section 6.4.4 "contains");
-- the text is stored case-folded, so the match is case-insensitive for every script.
-- fts_docs.id is the rowid of the document in fts; complete = 0 marks a document whose text
-- was cut at the indexing limit (such messages are scanned at search time instead).
CREATE TABLE fts_docs (
    id       INTEGER PRIMARY KEY,
    blob     TEXT NOT NULL UNIQUE,
    complete INTEGER NOT NULL DEFAULT 1
);
-- Searches visit the (rare) incomplete documents on every call: find them without a scan.
CREATE INDEX fts_docs_incomplete ON fts_docs (id) WHERE complete = 0;
CREATE VIRTUAL TABLE fts USING fts5 (header, body, tokenize = 'trigram case_sensitive 1');

-- Blobs delivered but not indexed yet. Delivery only adds a row here (the SMTP hot path stays
-- cheap); the writer thread indexes them when it is idle, and a search indexes the ones of
-- its mailbox first.
CREATE TABLE fts_pending (
    blob TEXT PRIMARY KEY
) WITHOUT ROWID;
INSERT OR IGNORE INTO fts_pending (blob) SELECT DISTINCT blob FROM messages;
CREATE TRIGGER messages_fts_pending AFTER INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM fts_docs WHERE blob = NEW.blob) BEGIN
    INSERT OR IGNORE INTO fts_pending (blob) VALUES (NEW.blob);
END;
