-- Mailstead schema, version 12: where imported messages came from (interchange/sink.py), so
-- that a second or interrupted import copies only what is missing. ``source`` names the
-- source account or file tree ("imap://user@host:993", "maildir:/path"), ``origin`` a message
-- within its source folder ("UIDVALIDITY/UID", a maildir unique name); ``blob`` is the
-- SHA-256 of the stored bytes, to recognise a copy that was committed before its origin row.
CREATE TABLE import_origins (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    source     TEXT NOT NULL,
    origin     TEXT NOT NULL,
    blob       TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, source, origin)
);
