"""Which commands a UIDONLY session may not run (RFC 9586 section 3.1)."""

from __future__ import annotations

from mailstead.imap.uidonly import refusal
from mailstead.proto.imap.ast import Command
from mailstead.proto.imap.framing import NEED_DATA, CommandFrame, CommandFramer
from mailstead.proto.imap.parser import parse_command


def command(wire: bytes) -> Command:
    framer = CommandFramer()
    framer.receive_data(wire + b"\r\n")
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, CommandFrame):
            return parse_command(event)
    raise AssertionError(wire)


def test_sequence_numbers_are_refused() -> None:
    for wire in (b"a FETCH 1 FLAGS", b"a STORE 1:* +FLAGS (\\Seen)", b"a COPY 1 X",
                 b"a MOVE 2 X", b"a SEARCH ALL", b"a SORT (DATE) UTF-8 ALL",
                 b"a THREAD REFERENCES UTF-8 ALL", b"a UID SEARCH 1:5",
                 b"a UID SEARCH NOT (SEEN 3)", b"a UID SORT (DATE) UTF-8 OR 1 SEEN"):
        assert refusal(command(wire)) is not None, wire


def test_uid_forms_are_allowed() -> None:
    for wire in (b"a UID FETCH 1:* FLAGS", b"a UID STORE 1 +FLAGS (\\Seen)",
                 b"a UID SEARCH UID 1:5 SEEN", b"a UID SEARCH $", b"a UID MOVE 1 X",
                 b"a EXPUNGE", b"a UID EXPUNGE 1", b"a NOOP", b"a SELECT INBOX"):
        assert refusal(command(wire)) is None, wire
