-- Mailstead schema, version 13: \Recent (RFC 3501 section 2.3.2) kept in the store, as
-- Dovecot keeps it in its index, so it is exact across sessions, processes and restarts.
-- ``first_recent_uid``: messages with a UID from it on are recent, and not yet taken by any
-- session; a read-write SELECT (or a session selected read-write that sees new messages)
-- takes them by raising it to UIDNEXT in one transaction, so one session gets each message.
-- Mailboxes of an older store start with nothing recent: an upgrade must not make old mail
-- recent again.
ALTER TABLE mailboxes ADD COLUMN first_recent_uid INTEGER NOT NULL DEFAULT 1;
UPDATE mailboxes SET first_recent_uid = uidnext;
