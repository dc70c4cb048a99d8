"""SMTP smuggling (bare CR/LF end-of-data variants) and STARTTLS command injection."""

from __future__ import annotations

import pytest
from helpers import Harness

ALICE = "alice@example.test"
BOB = "bob@example.test"


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n",
                                      b"\r\n.\r"])
def test_smuggled_end_of_data_is_one_refused_transaction(
    server: Harness, fake_end: bytes, token: str
) -> None:
    """Only CRLF.CRLF ends DATA (RFC 5321 section 4.1.1.4); bare CR or LF in the data is refused
    with 554 5.6.0 after the real end, so the 'smuggled' commands are never run."""
    smuggled = (
        b"MAIL FROM:<admin@example.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\n"
        b"DATA\r\n"
        b"From: <admin@example.test>\r\n"
        b"Subject: smuggled " + token.encode() + b"\r\n\r\n"
        b"smuggled " + token.encode() + b"\r\n"
    )
    data = (
        b"From: <sender@remote.test>\r\nSubject: cover " + token.encode() + b"\r\n\r\n"
        b"cover " + token.encode() + fake_end + smuggled + b".\r\n"
    )
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        assert smtp.command(f"RCPT TO:<{ALICE}>").code == 250
        assert smtp.command("DATA").code == 354
        smtp.send(data)
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (554, "5.6.0"), reply
        # Exactly one reply for all of it: the next one is the answer to QUIT.
        assert smtp.command("QUIT").code == 221
        smtp.expect_closed()
    assert not server.find(ALICE, token)
    assert not server.find(BOB, token)


def test_data_with_bare_lf_inside_a_line_is_refused(server: Harness, token: str) -> None:
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        smtp.command("MAIL FROM:<sender@remote.test>")
        smtp.command(f"RCPT TO:<{ALICE}>")
        assert smtp.command("DATA").code == 354
        smtp.send(b"Subject: " + token.encode() + b"\r\n\r\nline one\nline two\r\n.\r\n")
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (554, "5.6.0"), reply
        assert smtp.command("NOOP").code == 250
    assert not server.find(ALICE, token)


@pytest.mark.parametrize("port_name", ["smtp", "submission"])
def test_starttls_injection_discarded(server: Harness, port_name: str) -> None:
    """Commands pipelined after STARTTLS are thrown away, not run after the handshake
    (RFC 3207 section 5; CVE-2011-0411)."""
    with server.raw(port_name) as smtp:
        smtp.read_reply()
        smtp.ehlo()
        smtp.send(b"STARTTLS\r\nRSET\r\n")
        reply = smtp.read_reply()
        assert reply.code == 220, reply
        assert not smtp.buffer, smtp.buffer
        smtp.wrap_tls(server.tls())
        smtp.expect_silence(1.0)
        ehlo = smtp.command("EHLO client.example.test")
        assert ehlo.code == 250
        assert ehlo.lines[0].startswith("mail.example.test"), ehlo
        assert len(ehlo.lines) > 1, "the first reply after TLS must be the multi-line EHLO reply"
        assert smtp.command("NOOP").code == 250
        smtp.expect_silence(0.3)


def test_starttls_injection_of_a_transaction(server: Harness, token: str) -> None:
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        smtp.send(
            b"STARTTLS\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
            b"DATA\r\nSubject: " + token.encode() + b"\r\n\r\ninjected\r\n.\r\n"
        )
        assert smtp.read_reply().code == 220
        smtp.wrap_tls(server.tls())
        smtp.expect_silence(1.0)
        smtp.ehlo()
        # The injected MAIL never happened: DATA now has no transaction.
        assert smtp.command("DATA").code == 503
    assert not server.find(ALICE, token)


def test_starttls_twice_refused(server: Harness) -> None:
    with server.raw("submission") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        smtp.starttls(server.tls())
        smtp.ehlo()
        reply = smtp.command("STARTTLS")
        assert 500 <= reply.code < 600, reply  # RFC 3207 section 4.2: no second STARTTLS
        assert smtp.command("NOOP").code == 250
