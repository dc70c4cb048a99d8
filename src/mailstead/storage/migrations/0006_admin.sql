-- Administrators (issue 7): an account with is_admin = 1 may use the web admin pages.
-- Set with `mailstead user add --admin` or `mailstead user admin ADDRESS [--off]`; checked on
-- every admin request, so taking the flag away takes effect at once.
ALTER TABLE accounts ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
