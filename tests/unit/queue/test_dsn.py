"""DSN messages: RFC 3464 fields, RFC 6522 structure, and hostile remote text kept inert."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailstead.core.reply import Reply
from mailstead.queue.dsn import DsnRecipient, build_dsn, header_section, one_line, status_of

ORIGINAL = (
    b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: hello\r\n"
    b"Message-ID: <m1@a.test>\r\n\r\nsecret body text\r\n"
)


def build(*recipients: DsnRecipient, original: bytes = ORIGINAL) -> email.message.Message:
    raw = build_dsn(hostname="mail.a.test", sender="alice@a.test", queue_id="Q123",
                    arrival=1_700_000_000.0, original=original, recipients=recipients,
                    now=1_700_000_600.0)
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in a DSN"
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def test_failed_dsn_structure_and_fields() -> None:
    msg = build(DsnRecipient("bob@b.test", "failed", "5.1.1",
                             "550 5.1.1 No such user bob", "mx.b.test", 1_700_000_500.0))
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mail.a.test>"
    assert msg["To"] == "<alice@a.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    text = parts[0].get_payload(decode=True).decode()
    assert "could not be delivered" in text
    assert "550 5.1.1 No such user bob" in text
    assert "What to do" in text
    status = parts[1].as_string()
    for line in ("Reporting-MTA: dns; mail.a.test", "Final-Recipient: rfc822; bob@b.test",
                 "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.b.test",
                 "Diagnostic-Code: smtp; 550 5.1.1 No such user bob", "Arrival-Date:",
                 "Last-Attempt-Date:"):
        assert line in status
    headers = parts[2].as_string()
    assert "Subject: hello" in headers
    assert "secret body text" not in headers


def test_delayed_dsn_says_still_trying() -> None:
    msg = build(DsnRecipient("bob@b.test", "delayed", "4.4.1", None, None,
                             retry_until=1_700_400_000.0, reason="connection refused"))
    assert "Delayed" in msg["Subject"]
    parts = msg.get_payload()
    assert "Action: delayed" in parts[1].as_string()
    assert "Will-Retry-Until:" in parts[1].as_string()
    assert "still being retried" in parts[0].get_payload(decode=True).decode()


def test_hostile_reply_cannot_inject_fields() -> None:
    evil = "550 nope\r\nAction: delivered\r\n\r\n--boundary\x00"
    msg = build(DsnRecipient("bob@b.test", "failed", "5.0.0", evil, "mx\r\nX-Evil: 1"))
    status = msg.get_payload()[1].as_string()
    assert "\nAction: delivered" not in status
    assert "\nX-Evil" not in status
    starts = [line.split(":")[0] for line in status.splitlines() if ":" in line]
    assert starts.count("Action") == 1
    assert "X-Evil" not in starts


def test_null_sender_gets_no_dsn() -> None:
    with pytest.raises(ValueError, match="null reverse-path"):
        build_dsn(hostname="h.test", sender="", queue_id="Q", arrival=0, original=ORIGINAL,
                  recipients=[DsnRecipient("b@b.test", "failed", "5.0.0")], now=0)


def test_utf8_uses_global_types() -> None:
    msg = build(DsnRecipient("bjørn@b.test", "failed", "5.1.1"),
                original="From: ø@a.test\r\nSubject: ü\r\n\r\nx".encode())
    types = [p.get_content_type() for p in msg.get_payload()]
    assert types[1:] == ["message/global-delivery-status", "message/global-headers"]


@pytest.mark.parametrize(("reply", "status"), [
    (Reply(550, "5.1.1", "x"), "5.1.1"),
    (Reply(550, None, "x"), "5.0.0"),
    (Reply(451, "5.1.1", "mismatched class"), "4.0.0"),
    (Reply(421, "4.7.0", "x"), "4.7.0"),
])
def test_status_of(reply: Reply, status: str) -> None:
    assert status_of(reply) == status


def test_helpers_bound_their_output() -> None:
    assert one_line("a\r\nb\x00c") == "a b c"
    assert len(one_line("x" * 5000)) == 1000
    huge = b"X-A: " + b"a" * 200_000 + b"\r\n\r\nbody"
    assert len(header_section(huge)) <= 64 * 1024 + 2
