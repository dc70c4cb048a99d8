"""The sans-I/O SMTP client core, byte for byte: what it writes for what the server says."""

from __future__ import annotations

import base64

import pytest

from mailstead.core.reply import Reply
from mailstead.core.secret import Secret
from mailstead.proto.smtp.client import (
    MAX_REPLY_LINE,
    NEED_DATA,
    AuthDone,
    ClientEvent,
    Closed,
    Extensions,
    Ready,
    SessionFailed,
    SMTPClientCore,
    TlsReady,
    TransactionResult,
    check_path,
    normalise_body,
)

EHLO_PIPE = (b"250-mx.b.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
             b"250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
EHLO_PLAIN = b"250-mx.b.test\r\n250 8BITMIME\r\n"


def feed(core: SMTPClientCore, data: bytes) -> list[ClientEvent]:
    core.receive_data(data)
    events: list[ClientEvent] = []
    while (event := core.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
    return events


def ready(ehlo: bytes = EHLO_PIPE) -> SMTPClientCore:
    core = SMTPClientCore("a.test")
    assert feed(core, b"220 mx.b.test ESMTP\r\n") == []
    assert core.data_to_send() == b"EHLO a.test\r\n"
    events = feed(core, ehlo)
    assert len(events) == 1
    assert isinstance(events[0], Ready)
    return core


def test_greeting_then_ehlo_and_extensions() -> None:
    core = ready()
    ext = core.extensions
    assert "PIPELINING" in ext
    assert "starttls" in ext
    assert "SMTPUTF8" not in ext
    assert ext.size == 1000
    assert ext.auth == ("PLAIN", "LOGIN")
    assert core.idle


def test_ehlo_refused_falls_back_to_helo() -> None:
    core = SMTPClientCore("a.test")
    feed(core, b"220 old.b.test SMTP\r\n")
    assert core.data_to_send() == b"EHLO a.test\r\n"
    assert feed(core, b"502 5.5.1 What?\r\n") == []
    assert core.data_to_send() == b"HELO a.test\r\n"
    [event] = feed(core, b"250 old.b.test\r\n")
    assert isinstance(event, Ready)
    assert not event.esmtp
    assert event.extensions == Extensions()


def test_refusing_greeting_is_a_session_failure() -> None:
    core = SMTPClientCore("a.test")
    [event] = feed(core, b"554 5.7.1 go away\r\n")
    assert event == SessionFailed("greeting", Reply(554, "5.7.1", "go away"))
    core.quit()
    assert core.data_to_send() == b"QUIT\r\n"
    [closed] = feed(core, b"221 bye\r\n")
    assert isinstance(closed, Closed)
    assert closed.reason == "QUIT answered"


def test_pipelined_transaction_bytes_and_per_recipient_replies() -> None:
    core = ready()
    core.send_mail("alice@a.test", ["bob@b.test", "carol@b.test", "dave@b.test"],
                   b"Subject: x\r\n\r\n.hidden\r\nend", mail_params=("SIZE=30",))
    assert core.data_to_send() == (
        b"MAIL FROM:<alice@a.test> SIZE=30\r\nRCPT TO:<bob@b.test>\r\n"
        b"RCPT TO:<carol@b.test>\r\nRCPT TO:<dave@b.test>\r\nDATA\r\n")
    events = feed(core, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n451 4.2.1 later\r\n"
                        b"550 5.1.1 no such user\r\n354 go\r\n")
    assert events == []
    # RFC 5321 4.5.2: the leading dot is doubled, the data ends in CRLF . CRLF.
    assert core.data_to_send() == b"Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n"
    [result] = feed(core, b"250 2.0.0 queued as X\r\n")
    assert isinstance(result, TransactionResult)
    assert [result.final(i).code for i in range(3)] == [250, 451, 550]
    assert result.final(2) == Reply(550, "5.1.1", "no such user")


def test_without_pipelining_one_command_at_a_time_and_no_data_when_all_fail() -> None:
    core = ready(EHLO_PLAIN)
    core.send_mail("", ["bob@b.test", "carol@b.test"], b"x")
    assert core.data_to_send() == b"MAIL FROM:<>\r\n"
    feed(core, b"250 ok\r\n")
    assert core.data_to_send() == b"RCPT TO:<bob@b.test>\r\n"
    feed(core, b"550 5.1.1 no\r\n")
    assert core.data_to_send() == b"RCPT TO:<carol@b.test>\r\n"
    [result] = feed(core, b"450 4.2.0 busy\r\n")
    assert core.data_to_send() == b""  # no DATA without an accepted recipient
    assert isinstance(result, TransactionResult)
    assert result.data is None
    assert [result.final(i).code for i in range(2)] == [550, 450]


def test_mail_refused_applies_to_every_recipient() -> None:
    core = ready()
    core.send_mail("alice@a.test", ["bob@b.test", "carol@b.test"], b"x")
    core.data_to_send()
    [result] = feed(core, b"552 5.3.4 too big\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
                          b"503 5.5.1 need MAIL\r\n")
    assert isinstance(result, TransactionResult)
    assert result.rcpts == (Reply(552, "5.3.4", "too big"),) * 2
    assert result.final(1).code == 552


def test_354_after_all_recipients_failed_sends_only_the_dot() -> None:
    core = ready()
    core.send_mail("alice@a.test", ["bob@b.test"], b"secret body")
    core.data_to_send()
    feed(core, b"250 ok\r\n550 5.1.1 no\r\n354 go ahead\r\n")
    assert core.data_to_send() == b".\r\n"  # RFC 2920 3.1: nothing of the message
    [result] = feed(core, b"554 5.5.1 no valid recipients\r\n")
    assert isinstance(result, TransactionResult)
    assert result.data is None
    assert result.final(0).code == 550


def test_bare_cr_and_lf_are_never_sent() -> None:
    assert normalise_body(b"a\nb\rc\r\n.d") == b"a\r\nb\r\nc\r\n..d\r\n.\r\n"
    assert normalise_body(b".") == b"..\r\n.\r\n"
    assert normalise_body(b"") == b".\r\n"
    assert normalise_body(b"x\r\n\r\n.\r\n") == b"x\r\n\r\n..\r\n.\r\n"  # no early end


def test_starttls_then_ehlo_again_and_injection_refused() -> None:
    core = ready()
    core.start_tls()
    assert core.data_to_send() == b"STARTTLS\r\n"
    [event] = feed(core, b"220 2.0.0 go\r\n")
    assert isinstance(event, TlsReady)
    core.tls_started()
    assert core.data_to_send() == b"EHLO a.test\r\n"
    assert core.extensions == Extensions()  # forgotten until the new EHLO reply
    [event] = feed(core, EHLO_PLAIN)
    assert isinstance(event, Ready)

    core = ready()
    core.start_tls()
    core.data_to_send()
    # CVE-2011-0411 pattern: a reply pipelined in the clear behind the 220.
    [event] = feed(core, b"220 go\r\n250 injected\r\n")
    assert isinstance(event, Closed)
    assert "after its STARTTLS reply" in event.reason


def test_auth_plain_and_login() -> None:
    core = ready()
    core.auth("PLAIN", "alice", Secret("pw"))
    assert core.data_to_send() == b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n"
    [event] = feed(core, b"235 2.7.0 ok\r\n")
    assert isinstance(event, AuthDone)

    core = ready()
    core.auth("LOGIN", "alice", Secret("pw"))
    assert core.data_to_send() == b"AUTH LOGIN\r\n"
    feed(core, b"334 VXNlcm5hbWU6\r\n")
    assert core.data_to_send() == b"YWxpY2U=\r\n"
    feed(core, b"334 UGFzc3dvcmQ6\r\n")
    assert core.data_to_send() == b"cHc=\r\n"
    [event] = feed(core, b"535 5.7.8 bad credentials\r\n")
    assert event == SessionFailed("AUTH", Reply(535, "5.7.8", "bad credentials"))


def test_421_mid_transaction_ends_it_and_closes() -> None:
    core = ready()
    core.send_mail("alice@a.test", ["bob@b.test"], b"x")
    core.data_to_send()
    events = feed(core, b"250 ok\r\n421 4.3.2 shutting down\r\n")
    assert isinstance(events[0], TransactionResult)
    assert events[0].final(0).code == 421
    assert isinstance(events[1], Closed)
    assert core.closed


@pytest.mark.parametrize(
    "hostile",
    [
        b"hello\r\n",  # no code
        b"250-a\r\n251 b\r\n",  # codes differ inside one reply
        b"2500 x\r\n",  # four digits
        b"250\x00x\r\n",  # garbage separator
        b"x" * (MAX_REPLY_LINE + 10),  # endless line
        b"250-x\r\n" * 300,  # endless multi-line reply
        b"250 unexpected\r\n",  # a reply with no command outstanding
    ],
)
def test_hostile_replies_close_without_raising(hostile: bytes) -> None:
    core = ready()
    events = feed(core, hostile)
    assert isinstance(events[-1], Closed)
    assert core.closed
    assert feed(core, b"250 more\r\n") == []  # nothing after close


def test_eof_and_lf_only_replies() -> None:
    core = SMTPClientCore("a.test")
    assert feed(core, b"220 lf only\n") == []  # tolerated, as Postfix does
    [event] = feed(core, b"")
    assert isinstance(event, Closed)
    assert "EHLO" in event.reason


def test_command_injection_through_addresses_is_refused() -> None:
    core = ready()
    for bad in ["bob@b.test>\r\nRCPT TO:<x@y", "bob @b.test", "a<b@b.test", "nodomain"]:
        with pytest.raises(ValueError, match=r"address|unsafe"):
            core.send_mail("alice@a.test", [bad], b"x")
    assert core.data_to_send() == b""
    assert check_path('"john smith"@b.test') == '"john smith"@b.test'
    with pytest.raises(ValueError, match="unsafe"):
        check_path('"john\r\nsmith"@b.test')
    with pytest.raises(ValueError, match="EHLO"):
        SMTPClientCore("a.test\r\nQUIT")


def test_enhanced_codes_parsed_from_multiline_replies() -> None:
    core = ready()
    core.send_mail("alice@a.test", ["bob@b.test"], b"x")
    core.data_to_send()
    [result] = feed(core, b"250 ok\r\n550-5.7.1 policy\r\n550 5.7.1 see http://x\r\n"
                          b"554 5.5.1 no valid recipients\r\n")
    assert isinstance(result, TransactionResult)
    assert result.final(0) == Reply(550, "5.7.1", "policy\nsee http://x")
