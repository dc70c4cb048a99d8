"""SMTP delivery honours the storage quota exactly, as APPEND does (RFC 9208 section 5.1).

The RCPT check alone ("is the mailbox already full?") let one message take an account past
its quota (309 KB stored against 200 KB). The size is now checked at the end of data, and at
RCPT when the client declared SIZE= (RFC 1870); a full mailbox is refused with 552 5.2.2.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from pathlib import Path

from helpers import (
    Harness,
    RawSMTP,
    _open_store,
    _run,
    add_user,
    dot_stuff,
    make_message,
    rss_kib,
    set_quota,
)

QUOTA = 200 * 1000  # octets
# The server may grow by this much at most while these tests run.
MAX_RSS_GROWTH_KIB = 64 * 1024


async def _quota(data_dir: Path, address: str) -> tuple[int, int | None, int]:
    store = await _open_store(data_dir)
    try:
        account = await store.get_account(address)
        assert account is not None
        quota = await store.get_quota(account.id)  # type: ignore[attr-defined]
        return quota.used, quota.limit, quota.messages
    finally:
        await store.close()


def quota_of(server: Harness, address: str) -> tuple[int, int | None, int]:
    """(octets stored, limit, messages) of ``address``, from the store."""
    result: tuple[int, int | None, int] = _run(_quota(server.data_dir, address))
    return result


def new_account(server: Harness) -> str:
    address = f"q{uuid.uuid4().hex[:12]}@example.test"
    add_user(server.data_dir, address, f"Pw-{uuid.uuid4().hex}")
    set_quota(server.data_dir, address, QUOTA)
    return address


def send_without_size(server: Harness, rcpts: list[str], message: bytes) -> tuple[int, str]:
    """One transaction over DATA without SIZE=, so only the end-of-data check can refuse."""
    with RawSMTP(server.smtp_port) as smtp:
        smtp.read_reply()
        smtp.ehlo()
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        for rcpt in rcpts:
            reply = smtp.command(f"RCPT TO:<{rcpt}>")
            assert reply.code == 250, reply
        assert smtp.command("DATA").code == 354
        stuffed = dot_stuff(message)
        smtp.send(stuffed[:-3])
        # While this message waits for its end, another client is answered at once.
        start = time.monotonic()
        with RawSMTP(server.smtp_port, timeout=1.0) as other:
            assert other.read_reply().code == 220
            assert other.command("NOOP").code == 250
        assert time.monotonic() - start < 1.0
        smtp.send(stuffed[-3:])
        reply = smtp.read_reply()
        assert smtp.command("QUIT").code == 221
    return reply.code, reply.enhanced


def test_delivery_never_stores_past_the_quota(server: Harness, token: str) -> None:
    address = new_account(server)
    rss_before = rss_kib(server.server.pid)
    big = make_message(token, body=b"x" * 998 + b"\r\n" + (b"y" * 998 + b"\r\n") * 102)
    assert 100_000 < len(big) < QUOTA // 2 + 5000  # two fit only without our headers
    assert send_without_size(server, [address], big) == (250, "2.0.0")
    used, _, _ = quota_of(server, address)
    assert used <= QUOTA
    # Under the quota at RCPT, over it once this message is stored: refused at its end.
    assert send_without_size(server, [address], big) == (552, "5.2.2")
    # With another recipient that has room, one reply answers for both: deferred, not
    # stored for either (and never acknowledged and lost for the full mailbox).
    other = new_account(server)
    assert send_without_size(server, [address, other], big) == (452, "4.2.2")
    assert quota_of(server, other)[2] == 0
    # What still fits is taken.
    small = make_message(token + "-small", body=b"fits\r\n")
    assert send_without_size(server, [address], small) == (250, "2.0.0")
    used, limit, messages = quota_of(server, address)
    assert (limit, messages) == (QUOTA, 2)
    assert used <= QUOTA
    assert rss_kib(server.server.pid) - rss_before < MAX_RSS_GROWTH_KIB


def test_declared_size_refuses_only_the_full_recipient(server: Harness, token: str) -> None:
    full, roomy = new_account(server), new_account(server)
    message = make_message(token, body=(b"z" * 998 + b"\r\n") * 120)
    assert send_without_size(server, [full], message)[0] == 250  # ~120 KB of 200 KB
    # smtplib declares SIZE= (RFC 1870), so RCPT can refuse the one recipient without room
    # and the message still goes to the other.
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        refused = smtp.sendmail("sender@remote.test", [full, roomy], message)
    code, text = refused[full]
    assert code == 552
    assert text.startswith(b"5.2.2"), text
    assert roomy not in refused
    assert quota_of(server, roomy)[2] == 1
    used, limit, messages = quota_of(server, full)
    assert messages == 1
    assert limit is not None
    assert used <= limit
