"""SEARCH EMAILID/THREADID (RFC 8474 section 6) and SAVED* (RFC 8514 section 4.3): parsing
and evaluation."""

from __future__ import annotations

from datetime import UTC, datetime

from test_imap_parser import args, bad

from mailstead.proto.imap.ast import SearchKey
from mailstead.proto.imap.search import evaluate
from mailstead.storage.interfaces import MessageInfo


def message(uid: int, blob: str, thread: str, saved: float) -> MessageInfo:
    return MessageInfo(uid, 1, uid, 1, (), 1_000_000_000.0, 10, blob, "{}", "{}",
                       saved_at=saved, thread_id=thread)


DAY = datetime(2024, 3, 10, 12, tzinfo=UTC).timestamp()
MSGS = [message(1, "a" * 64, "Tone", DAY), message(2, "b" * 64, "Tone", DAY + 86400),
        message(3, "c" * 64, "Ttwo", DAY + 2 * 86400)]


def search(wire: bytes) -> list[int]:
    parsed = args(b"a SEARCH " + wire)
    key: SearchKey = parsed.key  # type: ignore[attr-defined]
    return evaluate(key, MSGS)


def test_object_id_keys() -> None:
    assert search(b"THREADID Tone") == [1, 2]
    assert search(b"EMAILID M" + b"c" * 24) == [3]
    assert search(b"NOT THREADID Tone") == [3]
    assert search(b"EMAILID Mnothing") == []


def test_saved_date_keys() -> None:
    assert search(b"SAVEDON 11-Mar-2024") == [2]
    assert search(b"SAVEDBEFORE 11-Mar-2024") == [1]
    assert search(b"SAVEDSINCE 11-Mar-2024") == [2, 3]
    assert search(b"SAVEDATESUPPORTED") == [1, 2, 3]
    # An internal date is not a save date.
    assert search(b"SAVEDBEFORE 1-Jan-2002") == []
    assert search(b"BEFORE 1-Jan-2002") == [1, 2, 3]


def test_malformed_object_ids_are_refused() -> None:
    assert bad(b"a SEARCH EMAILID").status == "BAD"
    assert bad(b"a SEARCH THREADID T!x").status == "BAD"
    assert bad(b'a SEARCH THREADID "quoted"').status == "BAD"
    assert bad(b"a SEARCH EMAILID " + b"M" * 300).status == "BAD"


def test_status_mailboxid_parses() -> None:
    parsed = args(b"a STATUS INBOX (MESSAGES MAILBOXID)")
    assert parsed.items == ("MESSAGES", "MAILBOXID")  # type: ignore[attr-defined]
