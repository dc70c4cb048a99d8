-- Mailstead schema, version 6 (PostgreSQL): administrators (issue 7).
ALTER TABLE accounts ADD COLUMN is_admin SMALLINT NOT NULL DEFAULT 0;
