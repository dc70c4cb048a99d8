-- Mailstead schema, version 10: which node claimed each active queue row (issue 10). A node
-- that restarts after a crash takes its own rows back at once (its attempts died with it)
-- instead of waiting for their lease to run out; other nodes' rows keep their lease.
-- '' for rows claimed before this version or by a store without node names.
ALTER TABLE queue ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
