"""IMAP4rev1 and IMAP4rev2: the sans-I/O core."""
