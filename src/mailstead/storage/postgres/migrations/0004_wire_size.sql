-- Mailstead schema, version 4 (PostgreSQL): wire size and the unterminated flag, computed at
-- delivery (see storage/migrations/0004). NULL only for rows copied from an older store.
ALTER TABLE messages ADD COLUMN wire_size BIGINT;
ALTER TABLE messages ADD COLUMN unterminated SMALLINT;
