-- Mailstead schema, version 2 (PostgreSQL): subscriptions, vanished UIDs, quota totals and
-- the full-text documents; see storage/migrations/0002 for the why of each.

CREATE TABLE subscriptions (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE vanished (
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid        BIGINT NOT NULL,
    modseq     BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX vanished_modseq ON vanished (mailbox_id, modseq);
ALTER TABLE mailboxes ADD COLUMN vanished_floor BIGINT NOT NULL DEFAULT 0;

ALTER TABLE accounts ADD COLUMN quota BIGINT;
ALTER TABLE accounts ADD COLUMN used_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN used_messages BIGINT NOT NULL DEFAULT 0;

-- Running quota totals, kept in the transaction of every insert and delete of a message.
CREATE FUNCTION messages_quota() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE accounts SET used_bytes = used_bytes + NEW.size, used_messages = used_messages + 1
         WHERE id = (SELECT account_id FROM mailboxes WHERE id = NEW.mailbox_id);
        RETURN NEW;
    END IF;
    UPDATE accounts SET used_bytes = used_bytes - OLD.size, used_messages = used_messages - 1
     WHERE id = (SELECT account_id FROM mailboxes WHERE id = OLD.mailbox_id);
    RETURN OLD;
END $$;
CREATE TRIGGER messages_quota_insert AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_quota();
CREATE TRIGGER messages_quota_delete AFTER DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_quota();

-- Full-text documents, one per blob, case-folded (textindex.py); a search is a substring
-- match (strpos) over the documents of one mailbox (RFC 9051 section 6.4.4 "contains").
-- complete = 0: the text was cut at the indexing limit, the blob is scanned at search time.
CREATE TABLE fts_docs (
    blob     TEXT PRIMARY KEY,
    header   TEXT NOT NULL,
    body     TEXT NOT NULL,
    complete SMALLINT NOT NULL DEFAULT 1
);

-- Blobs delivered but not indexed yet (indexed when idle, or by the first search).
CREATE TABLE fts_pending (
    blob TEXT PRIMARY KEY
);
CREATE FUNCTION messages_fts_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fts_docs WHERE blob = NEW.blob) THEN
        INSERT INTO fts_pending (blob) VALUES (NEW.blob) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER messages_fts_pending AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_fts_pending();
