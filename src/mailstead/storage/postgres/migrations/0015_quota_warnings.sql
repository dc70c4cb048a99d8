-- Mailstead schema, version 15 (PostgreSQL): the quota warning level (0, 80 or 95 percent) an account was
-- last warned at (accounts/quotawarn.py), so each crossing of a level sends one warning, on
-- whichever node delivers, and a level is warned again only after usage fell below it.
ALTER TABLE accounts ADD COLUMN quota_warned INTEGER NOT NULL DEFAULT 0;
