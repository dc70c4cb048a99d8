"""DATA and BDAT: end of data, dot-unstuffing, the smuggling defence, limits, chunking."""

from __future__ import annotations

import time

import pytest
from smtp_core_driver import (
    BYE,
    MAIL_OK,
    OK,
    QUEUED,
    RCPT_OK,
    START_DATA,
    Driver,
    settings,
    transaction_driver,
)

from mailstead.core.address import Address
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import (
    NEED_DATA,
    ConnectionClosed,
    MailFrom,
    MessageData,
    TransactionReset,
)
from mailstead.proto.smtp.framing import dot_stuff
from mailstead.proto.smtp.server import SMTPServerCore

BARE = (b"554 5.6.0 Message refused: bare CR or LF in message data; lines must end in CRLF "
        b"(RFC 5321 2.3.8)\r\n")
TOO_BIG = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"


def messages(driver: Driver) -> list[bytes]:
    return [e.data for e in driver.events if isinstance(e, MessageData)]


def test_empty_message() -> None:
    driver = transaction_driver()
    assert driver.send(b"DATA\r\n.\r\n") == START_DATA + QUEUED
    assert messages(driver) == [b""]


def test_dot_unstuffing() -> None:
    driver = transaction_driver()
    wire = b"..leading dot\r\n...\r\nmiddle . dot\r\n..\r\n.\r\n"
    assert driver.send(b"DATA\r\n" + wire) == START_DATA + QUEUED
    assert messages(driver) == [b".leading dot\r\n..\r\nmiddle . dot\r\n.\r\n"]


def test_data_split_at_every_offset() -> None:
    wire = b"Subject: t\r\n\r\n..x\r\nbody\r\n.\r\nNOOP\r\n"
    for cut in range(len(wire) + 1):
        driver = transaction_driver()
        driver.send(b"DATA\r\n")
        out = driver.send_chunks([wire[:cut], wire[cut:]])
        assert out == QUEUED + OK, cut
        assert messages(driver) == [b"Subject: t\r\n\r\n.x\r\nbody\r\n"], cut


def test_data_byte_by_byte() -> None:
    wire = b"a\r\n.b\r\n\r\n.\r\n"
    driver = transaction_driver()
    driver.send(b"DATA\r\n")
    out = driver.send_chunks([bytes([b]) for b in wire])
    assert out == QUEUED
    assert messages(driver) == [b"a\r\nb\r\n\r\n"]


def test_transaction_resets_after_message_reply() -> None:
    driver = transaction_driver()
    out = driver.send(b"DATA\r\nx\r\n.\r\nRCPT TO:<b@e.test>\r\nMAIL FROM:<a@r.test>\r\n")
    assert out == START_DATA + QUEUED + b"503 5.5.1 Need MAIL command\r\n" + MAIL_OK


# The SMTP smuggling variants: none ends the data, none starts a second transaction.
SMUGGLING_ENDS = [
    b"\n.\n",
    b"\r.\r",
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r.\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
    b"\n\n.\n\n",
]


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS)
def test_smuggling_variants_are_one_refused_transaction(fake_end: bytes) -> None:
    smuggled = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\n"
                b"DATA\r\nFrom: admin\r\n\r\nsmuggled\r\n")
    driver = transaction_driver()
    assert driver.send(b"DATA\r\n") == START_DATA
    out = driver.send(b"Subject: cover\r\n\r\ncover" + fake_end + smuggled + b".\r\nNOOP\r\n")
    assert out == BARE + OK
    assert messages(driver) == []
    assert driver.events == [TransactionReset(replies.BARE_EOL_DATA)]
    assert not any(isinstance(e, MailFrom) for e in driver.events)


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS)
def test_smuggling_variants_split_everywhere(fake_end: bytes) -> None:
    wire = b"x" + fake_end + b"MAIL FROM:<e@v.test>\r\n.\r\n"
    for cut in range(len(wire) + 1):
        driver = transaction_driver()
        driver.send(b"DATA\r\n")
        assert driver.send_chunks([wire[:cut], wire[cut:]]) == BARE, cut


def test_bare_lf_at_message_start_and_lone_lf_lines() -> None:
    driver = transaction_driver()
    assert driver.send(b"DATA\r\n\n.\n\r\n.\r\n") == START_DATA + BARE


def test_bare_cr_in_a_line() -> None:
    driver = transaction_driver()
    assert driver.send(b"DATA\r\nSubject: a\rb\r\n.\r\n") == START_DATA + BARE


def test_message_too_big_is_read_to_the_end_then_552() -> None:
    driver = transaction_driver(max_message_size=100)
    out = driver.send(b"DATA\r\n" + b"0123456789abcdefghi\r\n" * 10 + b".\r\nNOOP\r\n")
    assert out == START_DATA + TOO_BIG + OK
    assert driver.events == [TransactionReset(replies.TOO_BIG)]
    # The limit is on the unstuffed size: exactly 100 octets pass.
    driver = transaction_driver(max_message_size=100)
    body = b"." + b"x" * 97 + b"\r\n"
    assert driver.send(b"DATA\r\n" + dot_stuff(body)) == START_DATA + QUEUED
    assert messages(driver) == [body]


def test_big_message_keeps_memory_bounded() -> None:
    driver = transaction_driver(max_message_size=1000)
    driver.send(b"DATA\r\n")
    line = b"y" * 78 + b"\r\n"
    for _ in range(2000):
        assert driver.send(line * 10) == b""
        assert len(driver.core._in) == 0
        assert driver.core._data is not None
        assert sum(map(len, driver.core._data._chunks)) <= 1000
    assert driver.send(b".\r\n") == TOO_BIG


def test_data_line_too_long() -> None:
    long_reply = (b"500 5.5.2 Line too long: message lines are limited to 998 octets plus "
                  b"CRLF (RFC 5322 2.1.1)\r\n")
    driver = transaction_driver()
    ok_line = b"x" * 998 + b"\r\n"
    assert driver.send(b"DATA\r\n" + ok_line + b".\r\n") == START_DATA + QUEUED
    driver = transaction_driver()
    assert driver.send(b"DATA\r\n" + b"x" * 999 + b"\r\n.\r\n") == START_DATA + long_reply
    # An endless line without CRLF is dropped as it comes.
    driver = transaction_driver(max_message_size=10**9)
    driver.send(b"DATA\r\n")
    for _ in range(100):
        driver.send(b"z" * 5000)
        assert driver.core._data is not None
        assert len(driver.core._data._buf) < 10
    assert driver.send(b"\r\n.\r\n") == long_reply


def test_data_after_binarymime_is_503() -> None:
    driver = Driver.start()
    out = driver.send(b"EHLO c.test\r\nMAIL FROM:<a@r.test> BODY=BINARYMIME\r\n"
                      b"RCPT TO:<b@e.test>\r\nDATA\r\n")
    assert out.endswith(MAIL_OK + RCPT_OK
                        + b"503 5.5.1 BODY=BINARYMIME requires BDAT (RFC 3030 section 3)\r\n")


def test_data_scan_is_fast() -> None:
    body = (b"Received: from somewhere by somewhere else with ESMTP id 1234567890\r\n" * 60)[:4000]
    body = body[: body.rfind(b"\r\n") + 2]
    wire = dot_stuff(body)
    core = SMTPServerCore(settings(max_message_size=10**6))
    core.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\n")
    core.next_event()
    core.next_event()
    core.respond(replies.MAIL_OK)
    best = float("inf")
    for _ in range(200):
        core.receive_data(b"RCPT TO:<b@e.test>\r\n")
        core.next_event()
        core.respond(replies.RCPT_OK)
        core.receive_data(b"DATA\r\n")
        assert core.next_event() is NEED_DATA
        start = time.perf_counter()
        core.receive_data(wire)
        event = core.next_event()
        best = min(best, time.perf_counter() - start)
        assert isinstance(event, MessageData)
        assert event.data == body
        core.respond(replies.queued("Q"))
        core.receive_data(b"MAIL FROM:<a@r.test>\r\n")
        core.next_event()
        core.respond(replies.MAIL_OK)
        core.data_to_send()
    assert best < 100e-6, f"{best * 1e6:.1f} µs for a 4 KB message"


# ---------------------------------------------------------------- BDAT (RFC 3030)


def test_bdat_chunks() -> None:
    driver = transaction_driver()
    out = driver.send(b"BDAT 5\r\nabc\r\nBDAT 7 LAST\r\n\r\n.\r\nxy")
    assert out == b"250 2.0.0 5 octets received\r\n" + QUEUED
    data = driver.of_type(MessageData)
    assert data == [MessageData(b"abc\r\n\r\n.\r\nxy", Address("a", "remote.test"),
                                (Address("b", "example.test"),), True)]


def test_bdat_zero_last_and_pipelined_commands() -> None:
    driver = transaction_driver()
    assert driver.send(b"BDAT 0 LAST\r\nQUIT\r\n") == QUEUED + BYE
    assert messages(driver) == [b""]


def test_bdat_split_at_every_offset() -> None:
    wire = b"BDAT 12\r\nhello\r\n.\r\nxyBDAT 3 last\r\nz\r\nNOOP\r\n"
    for cut in range(len(wire) + 1):
        driver = transaction_driver()
        out = driver.send_chunks([wire[:cut], wire[cut:]])
        assert out == b"250 2.0.0 12 octets received\r\n" + QUEUED + OK, cut
        assert messages(driver) == [b"hello\r\n.\r\nxyz\r\n"], cut


def test_bdat_three_way_splits() -> None:
    wire = b"BDAT 5 LAST\r\n\r\n.\r\n"
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            driver = transaction_driver()
            assert driver.send_chunks([wire[:i], wire[i:j], wire[j:]]) == QUEUED
            assert messages(driver) == [b"\r\n.\r\n"]


# The attack of a bare LF inside BDAT: our CRLF-only header split saw alice's From, every
# LF-reading client saw carol's.
SPOOF = (b"X-A: 1\nFrom: CEO <carol@b.test>\nSubject: x\n\r\nFrom: alice@a.test\r\n\r\n"
         b"body\r\n")


def test_bdat_bare_lf_is_refused_like_data() -> None:
    driver = transaction_driver()
    out = driver.send(b"BDAT %d LAST\r\n" % len(SPOOF) + SPOOF + b"NOOP\r\n")
    assert out == BARE + OK
    assert messages(driver) == []
    assert driver.events == [TransactionReset(replies.BARE_EOL_DATA)]


@pytest.mark.parametrize("chunks", [
    [b"a\r", b"\nb\r\n"],  # a CRLF split by the chunk boundary is a CRLF
    [b"a\r", b"", b"\nb\r\n"],  # an empty chunk in between changes nothing
    [b"", b"a\r\n"],
])
def test_bdat_crlf_across_chunks_is_accepted(chunks: list[bytes]) -> None:
    driver = transaction_driver()
    wire = b"".join(b"BDAT %d\r\n" % len(c) + c for c in chunks) + b"BDAT 0 LAST\r\n"
    out = driver.send(wire)
    assert out.endswith(QUEUED)
    assert messages(driver) == [b"".join(chunks)]


@pytest.mark.parametrize("chunks", [
    [b"a\r", b"b\r\n"],  # the CR ending a chunk is not followed by LF
    [b"a\r\n", b"\nb\r\n"],  # the LF starting a chunk follows a CRLF
    [b"a", b"\nb\r\n"],  # the LF starting a chunk has no CR before it
    [b"a\r\nb\r"],  # the message ends in a CR
    [b"a\r", b"\r\n"],
])
def test_bdat_bare_cr_or_lf_across_chunks_is_refused(chunks: list[bytes]) -> None:
    driver = transaction_driver()
    out = b""
    for n, chunk in enumerate(chunks):
        last = b" LAST" if n == len(chunks) - 1 else b""
        out += driver.send(b"BDAT %d%s\r\n" % (len(chunk), last) + chunk)
    assert out.endswith(BARE)
    assert messages(driver) == []
    assert TransactionReset(replies.BARE_EOL_DATA) in driver.events


def test_binarymime_judges_only_the_header() -> None:
    driver = Driver.start()
    driver.send(b"EHLO c.test\r\nMAIL FROM:<a@remote.test> BODY=BINARYMIME\r\n"
                b"RCPT TO:<b@example.test>\r\n")
    body = b"Subject: bin\r\n\r\n\x00\n\r\xff\r"
    out = driver.send(b"BDAT 16\r\n" + body[:16] + b"BDAT %d LAST\r\n" % (len(body) - 16)
                      + body[16:])
    assert out.endswith(QUEUED)
    assert messages(driver) == [body]
    driver.send(b"MAIL FROM:<a@remote.test> BODY=BINARYMIME\r\nRCPT TO:<b@example.test>\r\n")
    bad = b"Subject: bin\nFrom: x@b.test\r\n\r\n\x00\n"
    assert driver.send(b"BDAT %d LAST\r\n" % len(bad) + bad).endswith(BARE)


def test_bdat_without_transaction_discards_the_chunk() -> None:
    driver = Driver.start()
    driver.send(b"EHLO c.test\r\n")
    out = driver.send(b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
    assert out == b"503 5.5.1 Need MAIL command\r\n" + OK
    driver.send(b"MAIL FROM:<a@r.test>\r\n")
    out = driver.send(b"BDAT 6 LAST\r\nDATA\r\nNOOP\r\n")
    assert out == b"503 5.5.1 Need RCPT command\r\n" + OK


def test_data_after_bdat_is_503() -> None:
    driver = transaction_driver()
    out = driver.send(b"BDAT 3\r\nabcDATA\r\n")
    assert out == (b"250 2.0.0 3 octets received\r\n"
                   b"503 5.5.1 DATA not allowed after BDAT in a transaction "
                   b"(RFC 3030 section 2)\r\n")


def test_bdat_size_limit_across_chunks() -> None:
    driver = transaction_driver(max_message_size=10)
    out = driver.send(b"BDAT 6\r\n123456BDAT 6\r\n123456BDAT 1 LAST\r\nxNOOP\r\n")
    assert out == (b"250 2.0.0 6 octets received\r\n" + TOO_BIG
                   + b"503 5.5.1 Need MAIL command\r\n" + OK)
    assert driver.events == [TransactionReset(replies.TOO_BIG)]


def test_bdat_huge_chunk_is_not_kept() -> None:
    driver = transaction_driver(max_message_size=100)
    driver.send(b"BDAT 1000000 LAST\r\n")
    for _ in range(100):
        assert driver.send(b"x" * 10000) in (b"", TOO_BIG)
        assert driver.core._bdat is None or driver.core._bdat._chunks == []
    assert driver.events == [TransactionReset(replies.TOO_BIG)]


@pytest.mark.parametrize("args", [b"", b"x", b"-1", b"10 MORE", b"10  LAST", b"1" * 19])
def test_bad_bdat_syntax_closes(args: bytes) -> None:
    driver = transaction_driver()
    out = driver.send(b"BDAT " + args + b"\r\nNOOP\r\n")
    assert out == (b"501 5.5.4 Syntax: BDAT <size> [LAST]\r\n"
                   b"421 4.7.0 mx.example.test Cannot find the end of a malformed BDAT chunk, "
                   b"closing connection\r\n")
    assert driver.events == [ConnectionClosed("malformed BDAT")]
