"""The IMAP service: a session executing parsed commands against the store (issue 3)."""
