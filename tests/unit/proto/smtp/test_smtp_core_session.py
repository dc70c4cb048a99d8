"""Byte-for-byte dialogues with the SMTP core: greeting, EHLO/HELO, sequencing, pipelining,
errors and the end of the session."""

from __future__ import annotations

import pytest
from smtp_core_driver import (
    BYE,
    EHLO_REPLY,
    GREETING,
    MAIL_OK,
    OK,
    QUEUED,
    RCPT_OK,
    START_DATA,
    Driver,
    ehlo_driver,
    settings,
    transaction_driver,
)

from mailstead.core.address import Address
from mailstead.core.reply import Reply
from mailstead.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Helo,
    MailFrom,
    MessageData,
    RcptTo,
    TransactionReset,
)
from mailstead.proto.smtp.server import SMTPServerCore


def test_greeting() -> None:
    driver = Driver.start()
    assert driver.greeting == GREETING
    assert driver.core.next_event() is NEED_DATA


def test_ehlo_reply_and_event() -> None:
    driver = Driver.start()
    assert driver.send(b"EHLO client.example.test\r\n") == EHLO_REPLY
    assert driver.events == [Helo("client.example.test", True)]
    assert driver.core.helo_name == "client.example.test"


def test_helo_reply_is_plain() -> None:
    driver = Driver.start()
    assert driver.send(b"HELO client.example.test\r\n") == b"250 mx.example.test\r\n"
    assert driver.events == [Helo("client.example.test", False)]


def test_ehlo_advertises_starttls_and_auth_by_settings() -> None:
    driver = Driver.start(starttls_available=True, submission=True)
    out = driver.send(b"EHLO c.test\r\n")
    assert out.endswith(b"250-CHUNKING\r\n250-DSN\r\n250 STARTTLS\r\n")  # no AUTH before TLS
    driver = Driver.start(starttls_available=True, submission=True, tls_active=True)
    out = driver.send(b"EHLO c.test\r\n")
    assert out.endswith(b"250-DSN\r\n250-REQUIRETLS\r\n250 AUTH PLAIN LOGIN\r\n")  # no STARTTLS
    driver = Driver.start(submission=True, auth_requires_tls=False)
    assert driver.send(b"EHLO c.test\r\n").endswith(b"250 AUTH PLAIN LOGIN\r\n")
    driver = Driver.start(submission=False, tls_active=True)
    assert b"AUTH" not in driver.send(b"EHLO c.test\r\n")


@pytest.mark.parametrize("line", [b"EHLO\r\n", b"EHLO \r\n", b"HELO\r\n", b"EHLO a b\r\n"])
def test_helo_without_valid_argument(line: bytes) -> None:
    driver = Driver.start()
    verb = line[:4].decode()
    assert driver.send(line) == f"501 5.5.4 Syntax: {verb} hostname\r\n".encode()
    assert driver.core.helo_name is None


def test_full_transaction() -> None:
    driver = ehlo_driver()
    out = driver.send(b"MAIL FROM:<a@remote.test>\r\n")
    assert out == MAIL_OK
    assert driver.send(b"RCPT TO:<b@example.test>\r\n") == RCPT_OK
    assert driver.send(b"DATA\r\n") == START_DATA
    assert driver.send(b"Subject: x\r\n\r\nhello\r\n.\r\n") == QUEUED
    assert driver.events == [
        MailFrom(Address("a", "remote.test"), {}, None, None, False),
        RcptTo(Address("b", "example.test"), {}),
        MessageData(b"Subject: x\r\n\r\nhello\r\n", Address("a", "remote.test"),
                    (Address("b", "example.test"),), False),
    ]


def test_pipelined_transaction_replies_in_order() -> None:
    driver = ehlo_driver()
    out = driver.send(
        b"MAIL FROM:<a@remote.test> SIZE=100 BODY=8BITMIME\r\n"
        b"RCPT TO:<b@example.test>\r\n"
        b"RCPT TO:<bad@example.test>\r\n"
        b"RCPT TO:<c@example.test>\r\n"
        b"DATA\r\n"
    )
    assert out == (MAIL_OK + RCPT_OK + b"550 5.1.1 No such user\r\n" + RCPT_OK + START_DATA)
    out = driver.send(b"hi\r\n.\r\nQUIT\r\n")
    assert out == QUEUED + BYE
    data = driver.of_type(MessageData)[0]
    assert isinstance(data, MessageData)
    assert data.recipients == (Address("b", "example.test"), Address("c", "example.test"))
    mail = driver.of_type(MailFrom)[0]
    assert mail == MailFrom(Address("a", "remote.test"), {"SIZE": "100", "BODY": "8BITMIME"},
                            100, "8BITMIME", False)
    assert isinstance(driver.events[-1], ConnectionClosed)


def test_core_pauses_on_a_decision_and_does_not_look_past_it() -> None:
    core = SMTPServerCore(settings())
    core.data_to_send()
    core.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<b@e.test>\r\nNOOP\r\n")
    assert isinstance(core.next_event(), Helo)
    assert isinstance(core.next_event(), MailFrom)
    assert core.next_event() is PAUSED
    assert core.next_event() is PAUSED
    assert core.data_to_send().endswith(b"250 DSN\r\n")  # nothing for MAIL yet
    core.respond(Reply(250, "2.1.0", "OK"))
    assert isinstance(core.next_event(), RcptTo)
    assert core.data_to_send() == b"250 2.1.0 OK\r\n"
    core.respond(Reply(451, "4.3.0", "Try later"))
    assert core.next_event() is NEED_DATA
    assert core.data_to_send() == b"451 4.3.0 Try later\r\n" + OK


def test_respond_without_pending_decision_is_a_programming_error() -> None:
    core = SMTPServerCore(settings())
    with pytest.raises(RuntimeError):
        core.respond(Reply(250, "2.0.0", "OK"))
    with pytest.raises(RuntimeError):
        core.auth_result(True)
    with pytest.raises(RuntimeError):
        core.tls_started()


def test_refused_sender_leaves_no_transaction() -> None:
    driver = ehlo_driver()
    out = driver.send(b"MAIL FROM:<spam@r.test>\r\nRCPT TO:<b@e.test>\r\nMAIL FROM:<a@r.test>\r\n")
    assert out == b"550 5.7.1 Sender refused\r\n503 5.5.1 Need MAIL command\r\n" + MAIL_OK


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"MAIL FROM:<a@r.test>\r\n", b"503 5.5.1 Send EHLO/HELO first\r\n"),
        (b"RCPT TO:<a@r.test>\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"DATA\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"BDAT 0 LAST\r\n", b"503 5.5.1 Need MAIL command\r\n"),
    ],
)
def test_sequence_before_ehlo(commands: bytes, expected: bytes) -> None:
    assert Driver.start().send(commands) == expected


def test_sequence_rules_inside_a_session() -> None:
    driver = ehlo_driver()
    assert driver.send(b"RCPT TO:<b@e.test>\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert driver.send(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert driver.send(b"MAIL FROM:<a@r.test>\r\n") == MAIL_OK
    assert driver.send(b"MAIL FROM:<a@r.test>\r\n") == b"503 5.5.1 Nested MAIL command\r\n"
    assert driver.send(b"DATA\r\n") == b"503 5.5.1 Need RCPT command\r\n"


def test_data_after_all_pipelined_rcpts_failed_is_554() -> None:
    driver = ehlo_driver()
    out = driver.send(b"MAIL FROM:<a@r.test>\r\nRCPT TO:<bad1@e.test>\r\n"
                      b"RCPT TO:<bad2@e.test>\r\nDATA\r\n")
    assert out == (MAIL_OK + b"550 5.1.1 No such user\r\n" * 2
                   + b"554 5.5.1 No valid recipients\r\n")


def test_too_many_recipients_452_is_not_counted_as_error() -> None:
    driver = ehlo_driver(max_recipients=2, max_errors=2)
    out = driver.send(b"MAIL FROM:<a@r.test>\r\n" + b"RCPT TO:<x@e.test>\r\n" * 5)
    assert out == MAIL_OK + RCPT_OK * 2 + b"452 4.5.3 Too many recipients\r\n" * 3
    assert driver.send(b"DATA\r\n") == START_DATA


def test_new_ehlo_and_rset_reset_the_transaction() -> None:
    driver = transaction_driver()
    assert driver.send(b"RSET\r\n") == OK
    assert driver.events == [TransactionReset(None)]
    assert driver.send(b"RCPT TO:<b@e.test>\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    driver = transaction_driver()
    assert driver.send(b"EHLO again.test\r\n") == EHLO_REPLY
    assert driver.events == [TransactionReset(None), Helo("again.test", True)]
    assert driver.send(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    driver = ehlo_driver()
    assert driver.send(b"RSET\r\n") == OK
    assert driver.events == []  # no transaction, nothing to report


def test_small_commands() -> None:
    driver = ehlo_driver()
    assert driver.send(b"NOOP\r\n") == OK
    assert driver.send(b"noop anything\r\n") == OK
    assert driver.send(b"VRFY someone\r\n") == (
        b"252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery\r\n")
    assert driver.send(b"VRFY\r\n") == b"501 5.5.4 Syntax: VRFY <address>\r\n"
    assert driver.send(b"EXPN list\r\n") == b"502 5.5.1 Command not implemented\r\n"
    assert driver.send(b"HELP\r\n").startswith(b"214 2.0.0 Commands: EHLO")
    assert driver.send(b"RSET x\r\n") == b"501 5.5.4 Syntax: RSET (no parameters allowed)\r\n"
    assert driver.send(b"DATA x\r\n") == b"501 5.5.4 Syntax: DATA (no parameters allowed)\r\n"
    assert driver.send(b"FOO\r\n") == b"500 5.5.1 Unrecognized command\r\n"
    assert driver.send(b"\r\n") == b"500 5.5.1 Unrecognized command\r\n"
    assert driver.send(b"MAILFROM:<a@b.test>\r\n") == b"500 5.5.1 Unrecognized command\r\n"


def test_quit_closes_and_later_input_is_ignored() -> None:
    driver = ehlo_driver()
    assert driver.send(b"QUIT\r\nNOOP\r\n") == BYE
    assert driver.events == [ConnectionClosed("client quit")]
    assert driver.core.closed
    assert driver.send(b"NOOP\r\n") == b""
    assert driver.core.next_event() is NEED_DATA


def test_quit_with_argument() -> None:
    assert ehlo_driver().send(b"QUIT now\r\n") == (
        b"501 5.5.4 Syntax: QUIT (no parameters allowed)\r\n")


def test_too_many_errors() -> None:
    driver = ehlo_driver(max_errors=3)
    out = driver.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert out == (b"500 5.5.1 Unrecognized command\r\n" * 3
                   + b"421 4.7.0 mx.example.test Too many errors, closing connection\r\n")
    assert driver.events == [ConnectionClosed("too many errors")]


def test_peer_eof() -> None:
    driver = ehlo_driver()
    assert driver.send(b"NOOP\r\nNOO") == OK
    assert driver.send(b"") == b""
    assert driver.events == [ConnectionClosed("peer closed connection")]


def test_eof_during_data_gives_no_message() -> None:
    driver = transaction_driver()
    assert driver.send(b"DATA\r\nhalf a message\r\n") == START_DATA
    driver.send(b"")
    assert driver.events == [ConnectionClosed("peer closed connection")]


def test_timeout_and_shutdown() -> None:
    driver = transaction_driver()
    driver.send(b"DATA\r\npartial")
    driver.core.timeout()
    driver.pump()
    assert driver.core.data_to_send() == (
        b"421 4.4.2 mx.example.test Idle timeout, closing connection\r\n")
    assert driver.events == [ConnectionClosed("idle timeout")]
    driver.core.timeout()
    assert driver.core.data_to_send() == b""
    driver = ehlo_driver()
    driver.core.shutdown()
    driver.pump()
    assert driver.core.data_to_send() == (
        b"421 4.3.2 mx.example.test Server shutting down, closing connection\r\n")
    assert driver.events == [ConnectionClosed("server shutdown")]


def test_shutdown_while_a_decision_is_pending_ignores_the_late_answer() -> None:
    core = SMTPServerCore(settings())
    core.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\n")
    assert isinstance(core.next_event(), Helo)
    assert isinstance(core.next_event(), MailFrom)
    core.data_to_send()
    core.shutdown()
    core.respond(Reply(250, "2.1.0", "OK"))  # the delivery finished after the shutdown
    assert core.data_to_send() == (
        b"421 4.3.2 mx.example.test Server shutting down, closing connection\r\n")
    assert core.next_event() == ConnectionClosed("server shutdown")
    assert core.next_event() is NEED_DATA


def test_policy_421_closes_the_connection() -> None:
    def decide(event: object) -> Reply | bool:
        return Reply(421, "4.7.0", "Too many connections from you")

    driver = Driver.start(decide)
    out = driver.send(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\nNOOP\r\n")
    assert out.endswith(b"250 DSN\r\n421 4.7.0 Too many connections from you\r\n")
    assert isinstance(driver.events[-1], ConnectionClosed)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:a@r.test", b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL TO:<a@r.test>", b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:<a@r.test", b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:<a@r.test>SIZE=1", b"501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:<a@r.test.>", b"501 5.1.7 Bad address syntax: trailing dot in domain"),
        (b"MAIL FROM:<a@r.test> FOO=bar", b"555 5.5.4 Unsupported parameter: FOO"),
        (b"MAIL FROM:<a@r.test> RET=BODY",
         b"501 5.5.4 Invalid DSN parameter: RET=FULL or RET=HDRS (RFC 3461 section 4.3)"),
        (b"MAIL FROM:<a@r.test> ENVID=a+zz",
         b"501 5.5.4 Invalid DSN parameter: not xtext (RFC 3461 section 4)"),
        (b"MAIL FROM:<a@r.test> REQUIRETLS",
         b"530 5.7.10 REQUIRETLS needs a TLS session: use STARTTLS first"),
        (b"MAIL FROM:<a@r.test> SIZE=10001",
         b"552 5.3.4 Message size exceeds fixed maximum message size"),
        (b"MAIL FROM:<a@r.test> SIZE=x", b"501 5.5.4 Syntax: SIZE=<number of octets> (RFC 1870)"),
        (b"MAIL FROM:<a@r.test> BODY=9BIT", b"501 5.5.4 Syntax: BODY=7BIT|8BITMIME|BINARYMIME"),
        (b"MAIL FROM:<a@r.test> SIZE=1 SIZE=2", b"501 5.5.4 Duplicate parameter: SIZE"),
        (b"MAIL FROM:<a@r.test> SMTPUTF8=yes",
         b"501 5.5.4 Syntax: SMTPUTF8 takes no value (RFC 6531)"),
        (b"MAIL FROM:<j\xc3\xb6rg@r.test>",
         b"553 5.6.7 Bad address syntax: non-ASCII address requires SMTPUTF8"),
        (b"MAIL FROM:<a@r.test>\tSIZE=1", b"500 5.5.2 Invalid character in command line"),
        (b"MAIL FROM:<\xff@r.test>", b"500 5.5.2 Command line is not valid UTF-8"),
    ],
)
def test_mail_syntax_errors(line: bytes, reply: bytes) -> None:
    driver = ehlo_driver()
    assert driver.send(line + b"\r\n") == reply + b"\r\n"
    assert driver.events == []


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RCPT TO:<>", b"501 5.1.3 Bad address syntax: null path not allowed here"),
        (b"RCPT TO:b@e.test", b"501 5.5.4 Syntax: RCPT TO:<address> [parameters]"),
        (b"RCPT TO:<b@e.test> NOTIFY=NEVER,SUCCESS", b"501 5.5.4 Invalid DSN parameter: "
         b"NOTIFY=NEVER or a list of SUCCESS,FAILURE,DELAY"),
        (b"RCPT TO:<b@e.test> ORCPT=rfc822;a+2", b"501 5.5.4 Invalid DSN parameter: "
         b"not xtext (RFC 3461 section 4)"),
        (b"RCPT TO:<b@e.test> ORCPT=nosemicolon", b"501 5.5.4 Invalid DSN parameter: "
         b"ORCPT=addr-type;xtext (RFC 3461 section 4.2)"),
        (b"RCPT TO:<b@e.test> XFOO=1", b"555 5.5.4 Unsupported parameter: XFOO"),
        (b"RCPT TO:<b@@e.test>", b"501 5.1.3 Bad address syntax: invalid domain label"),
    ],
)
def test_rcpt_syntax_errors(line: bytes, reply: bytes) -> None:
    driver = ehlo_driver()
    driver.send(b"MAIL FROM:<a@r.test>\r\n")
    driver.events.clear()
    assert driver.send(line + b"\r\n") == reply + b"\r\n"
    assert driver.events == []


def test_mail_accepts_known_parameters_and_null_sender() -> None:
    driver = ehlo_driver()
    out = driver.send(b"MAIL FROM:<> BODY=BINARYMIME SMTPUTF8 AUTH=<> size=0\r\n")
    assert out == MAIL_OK
    assert driver.events == [
        MailFrom(None, {"BODY": "BINARYMIME", "SMTPUTF8": None, "AUTH": "<>", "SIZE": "0"},
                 0, "BINARYMIME", True)
    ]
    driver = ehlo_driver()
    assert driver.send(b"MAIL FROM: <a@r.test>  AUTH=a+2Bb@r.test\r\n") == MAIL_OK


def test_smtputf8_addresses() -> None:
    driver = ehlo_driver()
    out = driver.send("MAIL FROM:<jörg@bücher.test> SMTPUTF8\r\nRCPT TO:<渡辺@例え.test>\r\n"
                      .encode())
    assert out == MAIL_OK + RCPT_OK
    rcpt = driver.of_type(RcptTo)[0]
    assert isinstance(rcpt, RcptTo)
    assert rcpt.recipient == Address("渡辺", "例え.test")


def test_relay_tricks_parse_as_written() -> None:
    driver = ehlo_driver()
    driver.send(b"MAIL FROM:<a@r.test>\r\n")
    driver.send(b"RCPT TO:<user%other.test@example.test>\r\n"
                b'RCPT TO:<"user@other.test"@example.test>\r\n'
                b"RCPT TO:<user!other@example.test>\r\n"
                b"RCPT TO:<@a.test,@b.test:u@c.test>\r\n")
    locals_ = [e.recipient.local for e in driver.of_type(RcptTo)]  # type: ignore[attr-defined]
    assert locals_ == ["user%other.test", "user@other.test", "user!other", "u"]


def test_postmaster_without_domain() -> None:
    driver = ehlo_driver()
    driver.send(b"MAIL FROM:<>\r\n")
    assert driver.send(b"RCPT TO:<Postmaster>\r\n") == RCPT_OK
    assert driver.of_type(RcptTo) == [RcptTo(Address("Postmaster", "mx.example.test"), {})]


def test_respond_refuses_a_non_final_reply() -> None:
    core = SMTPServerCore(settings())
    core.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\n")
    core.next_event()
    core.next_event()
    with pytest.raises(ValueError, match="not a final reply"):
        core.respond(Reply(354, None, "go on"))
