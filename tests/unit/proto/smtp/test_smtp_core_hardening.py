"""Defects found reviewing the SMTP core as an attacker would, one test each, plus the
invariants of the state table."""

from __future__ import annotations

import pytest
from smtp_core_driver import MAIL_OK, OK, QUEUED, RCPT_OK, START_DATA, Driver, b64, ehlo_driver

from mailstead.core.reply import Reply
from mailstead.proto.smtp.events import (
    NEED_DATA,
    AuthCredentials,
    ConnectionClosed,
    MailFrom,
    RcptTo,
)
from mailstead.proto.smtp.server import SMTPServerCore
from mailstead.proto.smtp.state import COMMANDS, TRANSITIONS, Phase

CLOSING = b"421 4.7.0 mx.example.test Too many errors, closing connection\r\n"
NO_USER = b"550 5.1.1 No such user\r\n"


# ---------------------------------------------------------------- malformed input accepted


def test_body_keyword_is_matched_in_ascii_only() -> None:
    # str.upper() maps the dotless i (U+0131) to "I": "7b\u0131t" must not pass as 7BIT.
    driver = ehlo_driver()
    out = driver.send("MAIL FROM:<a@r.test> BODY=7b\u0131t\r\n".encode())
    assert out == b"501 5.5.4 Syntax: BODY=7BIT|8BITMIME|BINARYMIME\r\n"
    assert driver.events == []


def test_auth_mechanism_is_matched_in_ascii_only() -> None:
    driver = Driver.start(submission=True, tls_active=True)
    driver.send(b"EHLO c.test\r\n")
    driver.events.clear()
    out = driver.send("AUTH pla\u0131n ".encode() + b64(b"\0alice\0secret") + b"\r\n")
    assert out == b"504 5.5.4 Unrecognized authentication type\r\n"
    assert driver.events == []
    assert driver.core.authenticated_as is None


@pytest.mark.parametrize("line", [b"AUTH LOGIN \r\n", b"AUTH PLAIN \r\n"])
def test_empty_initial_response_is_a_syntax_error(line: bytes) -> None:
    # RFC 4954 section 4: an empty initial response is written "=", never as nothing.
    driver = Driver.start(submission=True, tls_active=True)
    driver.send(b"EHLO c.test\r\n")
    assert driver.send(line) == b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"
    assert driver.send(b"NOOP\r\n") == OK  # back to commands, not inside an exchange


def test_client_text_quoted_in_replies_is_ascii() -> None:
    # RFC 5321 section 4.2: reply text is printable US-ASCII.
    driver = ehlo_driver()
    out = driver.send("MAIL FROM:<a@r.test> ü=1\r\n".encode())
    assert out == b"501 5.5.4 Invalid parameter syntax: \\xfc=1\r\n"
    assert out.isascii()


# ---------------------------------------------------------------- sessions that never end


def test_junk_commands_end_the_session() -> None:
    # EHLO was junk 1; NOOP 2, VRFY 3, then HELP and NOOP are past the limit: two errors.
    driver = ehlo_driver(max_junk_commands=3, max_errors=2)
    out = driver.send(b"NOOP\r\nVRFY x\r\nHELP\r\nNOOP\r\nNOOP\r\n")
    vrfy = b"252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    help_ = Driver.start().send(b"HELP\r\n")
    assert out == OK + vrfy + help_ + OK + CLOSING
    assert driver.events == [ConnectionClosed("too many errors")]


def test_junk_limit_counts_only_past_the_limit_and_restarts_after_a_message() -> None:
    driver = ehlo_driver(max_junk_commands=3, max_errors=1)
    assert driver.send(b"NOOP\r\nNOOP\r\n") == OK * 2  # EHLO + 2 = 3, at the limit
    out = driver.send(b"MAIL FROM:<a@r.test>\r\nRCPT TO:<b@e.test>\r\nDATA\r\nx\r\n.\r\n")
    assert out == MAIL_OK + RCPT_OK + START_DATA + QUEUED
    assert driver.send(b"NOOP\r\nNOOP\r\nNOOP\r\n") == OK * 3
    assert not driver.core.closed
    assert driver.send(b"NOOP\r\n") == OK + CLOSING


def test_rset_is_never_junk() -> None:
    # RFC 5321 section 4.1.1.5: the server MUST NOT close the connection because of RSET.
    driver = ehlo_driver(max_junk_commands=1, max_errors=1)
    assert driver.send(b"RSET\r\n" * 500) == OK * 500
    assert not driver.core.closed


def test_recipient_harvesting_is_bounded() -> None:
    # Refused recipients are not errors, but a client that only gets refusals is stopped.
    driver = ehlo_driver(max_junk_commands=3, max_errors=1)
    out = driver.send(b"MAIL FROM:<a@r.test>\r\n" + b"RCPT TO:<bad@e.test>\r\n" * 10)
    # EHLO was junk 1, two refusals reach the limit, the third is past it.
    assert out == MAIL_OK + NO_USER * 3 + CLOSING
    assert len(driver.of_type(RcptTo)) == 3


def test_endless_rcpt_past_the_recipient_limit_is_bounded() -> None:
    driver = ehlo_driver(max_recipients=1, max_junk_commands=5, max_errors=1)
    out = driver.send(b"MAIL FROM:<a@r.test>\r\n" + b"RCPT TO:<b@e.test>\r\n" * 100)
    many = b"452 4.5.3 Too many recipients\r\n"
    assert out == MAIL_OK + RCPT_OK + many * 5 + CLOSING


# ---------------------------------------------------------------- server-side contract


def test_auth_result_must_agree_with_its_reply() -> None:
    core = SMTPServerCore(Driver.start(submission=True, tls_active=True).core.settings)
    core.receive_data(b"EHLO c\r\nAUTH PLAIN " + b64(b"\0a\0b") + b"\r\n")
    core.next_event()
    assert isinstance(core.next_event(), AuthCredentials)
    with pytest.raises(ValueError, match="auth_result"):
        core.auth_result(True, Reply(535, "5.7.8", "No"))
    with pytest.raises(ValueError, match="auth_result"):
        core.auth_result(False, Reply(235, "2.7.0", "Yes"))
    core.auth_result(False)
    assert core.data_to_send().endswith(b"535 5.7.8 Authentication credentials invalid\r\n")


def test_input_stays_bounded_when_fed_on_need_data() -> None:
    # A client pipelining without end: the buffer holds one read plus one line at most.
    core = SMTPServerCore(Driver.start(max_recipients=10**6).core.settings)
    core.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\n")
    flood = b"RCPT TO:<someone@example.test>\r\n" * 2000
    read = 65536
    fed = 0
    while fed < 2_000_000:
        event = core.next_event()
        if event is NEED_DATA:
            core.receive_data(flood[:read])
            fed += read
        elif isinstance(event, MailFrom | RcptTo):
            core.respond(Reply(250, "2.1.5", "OK"))
        assert len(core._in) <= read + core.settings.max_command_line
        core.data_to_send()
    assert not core.closed


# ---------------------------------------------------------------- the state table


def test_every_command_has_a_rule_and_a_handler() -> None:
    core = SMTPServerCore(Driver.start().core.settings)
    assert set(COMMANDS) == set(core._handlers)
    assert set(TRANSITIONS) == set(Phase)
    assert TRANSITIONS[Phase.CLOSED] == {Phase.CLOSED}


def test_a_phase_change_outside_the_table_is_a_bug() -> None:
    core = SMTPServerCore(Driver.start().core.settings)
    core.shutdown()
    with pytest.raises(RuntimeError, match="SMTP core bug"):
        core._enter(Phase.DATA)
