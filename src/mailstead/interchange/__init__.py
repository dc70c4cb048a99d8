"""Import and export of mail: other servers over IMAP, Maildir and mbox files."""
