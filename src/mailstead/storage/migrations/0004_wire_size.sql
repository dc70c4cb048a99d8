-- Mailstead schema, version 4: the size of each message as it goes out on the wire, computed
-- once at delivery so a POP3 login (LIST/STAT, RFC 1939 section 5) and IMAP RFC822.SIZE
-- (RFC 9051 section 7.5.2) never read message bodies.
--
-- wire_size:   octets of the message with every line break as CRLF (RFC 5322 section 2.1):
--              size + one CR for each bare LF.
-- unterminated: 1 when the last line has no line break (an IMAP APPEND may store that); POP3
--              completes such a line with CRLF before its terminator (RFC 1939 section 3).
--
-- Both are NULL for rows written before this version: the bodies live in blob files, which
-- SQL cannot read, so the store measures those rows when it first lists them and writes the
-- figures back (storage/sqlite/messages.py, ``unmeasured``).
ALTER TABLE messages ADD COLUMN wire_size INTEGER;
ALTER TABLE messages ADD COLUMN unterminated INTEGER;
