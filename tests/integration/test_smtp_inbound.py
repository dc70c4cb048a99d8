"""Port 25 ("smtp"): mail from other servers to local users, and nothing else (no open relay)."""

from __future__ import annotations

import smtplib

import pytest
from helpers import Harness, dot_stuff, make_message, rich_message, split_received

ALICE = "alice@example.test"
BOB = "bob@example.test"


def _send(server: Harness, message: bytes, rcpts: list[str],
          sender: str = "sender@remote.test") -> dict[str, tuple[int, bytes]]:
    with server.client("smtp") as client:
        client.ehlo("mx.remote.test")
        return client.sendmail(sender, rcpts, message, mail_options=["BODY=8BITMIME"])


def _assert_stored_intact(stored: bytes, sent: bytes) -> None:
    """Our Received: field(s) first (RFC 5321 section 4.4), then the sent bytes untouched."""
    received, rest = split_received(stored)
    assert received, f"no Received: header prepended: {stored[:200]!r}"
    assert b"mail.example.test" in received[0], received[0]
    assert rest == sent


def test_greeting_and_ehlo(server: Harness) -> None:
    with server.raw("smtp") as smtp:
        greeting = smtp.read_reply()
        assert greeting.code == 220
        assert greeting.lines[0].startswith("mail.example.test")  # RFC 5321 section 4.3.1
        reply = smtp.ehlo()
        keywords = {line.split()[0].upper() for line in reply.lines[1:]}
        assert {"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE", "STARTTLS"} <= keywords
        assert "AUTH" not in keywords  # no AUTH on the MX port: nothing to authenticate for
        assert smtp.command("QUIT").code == 221
        smtp.expect_closed()


def test_auth_refused_on_port_25(server: Harness) -> None:
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        reply = smtp.command("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1TZWNyZXQtMQ==")
        assert 500 <= reply.code < 600, reply


def test_delivers_rich_message_byte_for_byte(server: Harness, token: str) -> None:
    message = rich_message(token)
    assert _send(server, message, [ALICE]) == {}
    stored = server.find(ALICE, token)
    assert len(stored) == 1
    _assert_stored_intact(stored[0], message)


def test_raw_dot_stuffing_round_trip(server: Harness, token: str) -> None:
    """Dot-stuffed lines are unstuffed exactly once (RFC 5321 section 4.5.2)."""
    body = f"..\r\n...\r\n.x\r\n .\r\ntoken {token}\r\n".encode()
    message = make_message(token, body=body)
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        assert smtp.command(f"RCPT TO:<{ALICE}>").code == 250
        assert smtp.command("DATA").code == 354
        smtp.send(dot_stuff(message))
        assert smtp.read_reply().code == 250
        assert smtp.command("QUIT").code == 221
    stored = server.find(ALICE, token)
    assert len(stored) == 1
    _assert_stored_intact(stored[0], message)


def test_null_sender_accepted(server: Harness, token: str) -> None:
    """Bounces come from <> and must be accepted (RFC 5321 section 4.5.5)."""
    message = make_message(token, sender="mailer-daemon@remote.test")
    assert _send(server, message, [BOB], sender="") == {}
    assert len(server.find(BOB, token)) == 1


def test_unknown_local_user_550(server: Harness) -> None:
    with server.client("smtp") as client:
        client.ehlo("mx.remote.test")
        assert client.mail("sender@remote.test")[0] == 250
        code, text = client.rcpt("nobody@example.test")
        assert code == 550
        assert text.startswith(b"5.1.1"), text


@pytest.mark.parametrize(
    "rcpt",
    [
        "victim@other.test",
        "user%other.test@example.test",
        '"user@other.test"@example.test',
        "user!other.test@example.test",
        "@example.test,@x.test:user@other.test",
        "user@other.test.",
        "user@[127.0.0.1]",
        "alice@example.test@other.test",
        "alice@mail.example.test",
    ],
)
def test_no_relay(server: Harness, rcpt: str, token: str) -> None:
    """No relaying for anyone on port 25, whatever the address tricks (RFC 5321 section 3.6.2,
    RFC 2505 section 2.3), and nothing of the message is stored or queued."""
    queued_before = len(server.queue())
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        reply = smtp.command(f"RCPT TO:<{rcpt}>")
        assert 500 <= reply.code < 600, f"{rcpt} -> {reply}"
        data = smtp.command("DATA")
        assert data.code >= 500, f"DATA without recipients got {data}"  # RFC 5321 3.3: 554/503
        assert smtp.command("QUIT").code == 221
    assert len(server.queue()) == queued_before
    assert not [q for q in server.queue() if "other.test" in q.rcpt_to]
    assert not server.find(ALICE, token)


def test_plain_relay_is_554_571(server: Harness) -> None:
    with server.client("smtp") as client:
        client.ehlo("mx.remote.test")
        client.mail("sender@remote.test")
        code, text = client.rcpt("victim@other.test")
        assert code == 554
        assert text.startswith(b"5.7.1"), text


def test_plus_addressing(server: Harness, token: str) -> None:
    assert _send(server, make_message(token), ["alice+newsletters@example.test"]) == {}
    assert len(server.find(ALICE, token)) == 1


def test_alias(server: Harness, token: str) -> None:
    assert _send(server, make_message(token), ["sales@example.test"]) == {}
    assert len(server.find(BOB, token)) == 1
    assert not server.find(ALICE, token)


def test_catch_all(server: Harness, token: str) -> None:
    assert _send(server, make_message(token), ["anything-at-all@catchall.test"]) == {}
    assert len(server.find(ALICE, token)) == 1


def test_same_recipient_once(server: Harness, token: str) -> None:
    """alice, alice+x, ALICE and an alias of alice are one mailbox: one copy; bob gets one too."""
    rcpts = [ALICE, "alice+x@example.test", "ALICE@Example.Test", "info@example.test", BOB]
    assert _send(server, make_message(token), rcpts) == {}
    assert len(server.find(ALICE, token)) == 1
    assert len(server.find(BOB, token)) == 1


def test_mixed_good_and_bad_recipients(server: Harness, token: str) -> None:
    message = make_message(token)
    with server.client("smtp") as client:
        client.ehlo("mx.remote.test")
        refused = client.sendmail("sender@remote.test", [ALICE, "ghost@example.test"], message)
    assert set(refused) == {"ghost@example.test"}
    assert refused["ghost@example.test"][0] == 550
    assert len(server.find(ALICE, token)) == 1


def test_rset_abandons_transaction(server: Harness, token: str) -> None:
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        assert smtp.command(f"RCPT TO:<{ALICE}>").code == 250
        assert smtp.command("RSET").code == 250
        assert smtp.command("DATA").code == 503  # RFC 5321 section 4.1.1.5: no transaction
        payload = dot_stuff(make_message(token))
        smtp.send(payload)
        # Those lines are now commands, each refused; the session must survive them.
        for _ in range(payload.count(b"\r\n")):
            assert smtp.read_reply().code >= 500
        assert smtp.command("NOOP").code == 250
    assert not server.find(ALICE, token)


def test_pipelined_transactions(server: Harness, token: str) -> None:
    """RFC 2920: two whole transactions in one write, answered in order."""
    first, second = make_message(token + "-1"), make_message(token + "-2")
    batch = b""
    for message in (first, second):
        batch += f"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n".encode()
        batch += dot_stuff(message)
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        smtp.send(batch + b"QUIT\r\n")
        codes = [smtp.read_reply().code for _ in range(9)]
        assert codes == [250, 250, 354, 250, 250, 250, 354, 250, 221]
        smtp.expect_closed()
    _assert_stored_intact(server.find(ALICE, token + "-1")[0], first)
    _assert_stored_intact(server.find(ALICE, token + "-2")[0], second)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\xff\xfe\r\n",
        b"EHLO \xc3\x28\r\n",
        b"MAIL FROM:<\r\n",
        b"RCPT TO:<alice@example.test>\r\n",
        b"MAIL FROM:<a@b.test> SIZE=-1\r\n",
        b"MAIL FROM:<a@b.test> SIZE=99999999999999999999999999\r\n",
        b"MAIL FROM:<a@b.test> BODY=NOPE\r\n",
        b"\r\n",
        b"HELO\r\n",
    ],
)
def test_hostile_commands_get_a_reply_and_session_survives(server: Harness,
                                                           garbage: bytes) -> None:
    with server.raw("smtp") as smtp:
        smtp.read_reply()
        reply = smtp.command(garbage.rstrip(b"\r\n"))
        assert 500 <= reply.code < 600, reply
        assert smtp.command("NOOP").code == 250


def test_smtplib_rejects_are_exceptions_not_silence(server: Harness) -> None:
    with server.client("smtp") as client:
        client.ehlo("mx.remote.test")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("sender@remote.test", ["ghost@example.test"], b"Subject: x\r\n\r\n")
