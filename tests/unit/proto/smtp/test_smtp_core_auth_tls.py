"""STARTTLS (RFC 3207) and AUTH (RFC 4954) dialogues, and the submission rules."""

from __future__ import annotations

import pytest
from smtp_core_driver import MAIL_OK, OK, Driver, b64

from mailstead.core.reply import Reply
from mailstead.core.secret import Secret
from mailstead.proto.smtp.events import (
    NEED_DATA,
    AuthCredentials,
    ConnectionClosed,
    Helo,
    StartTLS,
)

AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
AUTH_FAILED = b"535 5.7.8 Authentication credentials invalid\r\n"
TLS_READY = b"220 2.0.0 Ready to start TLS\r\n"


def submission(**overrides: object) -> Driver:
    params: dict[str, object] = {"submission": True, "tls_active": True}
    params.update(overrides)
    driver = Driver.start(**params)
    driver.send(b"EHLO client.test\r\n")
    driver.events.clear()
    return driver


# ---------------------------------------------------------------- STARTTLS


def test_starttls_discards_pipelined_injection() -> None:
    driver = Driver.start(starttls_available=True)
    driver.send(b"EHLO c.test\r\n")
    driver.events.clear()
    out = driver.send(b"STARTTLS\r\nMAIL FROM:<evil@r.test>\r\nRSET\r\n")
    assert out == TLS_READY
    assert driver.events == [StartTLS()]
    # Plaintext arriving before the handshake completes is dropped too.
    assert driver.send(b"RCPT TO:<x@e.test>\r\n") == b""
    driver.core.tls_started()
    assert driver.core.tls_active
    assert driver.core.helo_name is None
    out = driver.send(b"EHLO c.test\r\n")
    assert out.endswith(b"250-CHUNKING\r\n250-DSN\r\n250 REQUIRETLS\r\n")  # no STARTTLS
    assert driver.send(b"MAIL FROM:<a@r.test>\r\n") == MAIL_OK


def test_starttls_forgets_the_session() -> None:
    driver = Driver.start(starttls_available=True)
    driver.send(b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\n")
    assert driver.send(b"STARTTLS\r\n") == TLS_READY
    driver.core.tls_started()
    assert driver.send(b"MAIL FROM:<a@r.test>\r\n") == b"503 5.5.1 Send EHLO/HELO first\r\n"


def test_starttls_rules() -> None:
    driver = Driver.start(starttls_available=True)
    assert driver.send(b"STARTTLS now\r\n") == (
        b"501 5.5.4 Syntax: STARTTLS (no parameters allowed)\r\n")
    driver = Driver.start(starttls_available=False)
    assert driver.send(b"STARTTLS\r\n") == b"502 5.5.1 STARTTLS not available\r\n"
    driver = Driver.start(starttls_available=True, tls_active=True)
    assert driver.send(b"STARTTLS\r\n") == b"503 5.5.1 TLS already active\r\n"


def test_no_data_accepted_while_waiting_for_tls() -> None:
    driver = Driver.start(starttls_available=True)
    driver.send(b"STARTTLS\r\n")
    assert driver.core.next_event() is NEED_DATA
    driver.core.receive_data(b"QUIT\r\n")
    assert driver.core.next_event() is NEED_DATA
    assert driver.core.data_to_send() == b""


# ---------------------------------------------------------------- submission and AUTH


def test_submission_requires_auth_for_mail() -> None:
    driver = submission()
    assert driver.send(b"MAIL FROM:<a@e.test>\r\n") == b"530 5.7.0 Authentication required\r\n"


def test_auth_plain_with_initial_response() -> None:
    driver = submission()
    out = driver.send(b"AUTH PLAIN " + b64(b"\0alice@e.test\0secret") + b"\r\n")
    assert out == AUTH_OK
    assert driver.events == [AuthCredentials("PLAIN", "", "alice@e.test", Secret("secret"))]
    assert driver.core.authenticated_as == "alice@e.test"
    assert driver.send(b"MAIL FROM:<alice@e.test>\r\n") == MAIL_OK


def test_auth_plain_with_challenge_and_authzid() -> None:
    driver = submission()
    assert driver.send(b"AUTH plain\r\n") == b"334 \r\n"
    assert driver.send(b64(b"admin\0alice\0secret") + b"\r\n") == AUTH_OK
    assert driver.events == [AuthCredentials("PLAIN", "admin", "alice", Secret("secret"))]


def test_auth_plain_empty_initial_response_is_malformed() -> None:
    driver = submission()
    assert driver.send(b"AUTH PLAIN =\r\n") == (
        b"501 5.5.2 Malformed authentication data: PLAIN message must contain exactly two NUL "
        b"separators\r\n")


def test_auth_login() -> None:
    driver = submission()
    assert driver.send(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert driver.send(b64(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert driver.send(b64(b"secret") + b"\r\n") == AUTH_OK
    assert driver.events == [AuthCredentials("LOGIN", "", "alice", Secret("secret"))]


def test_auth_login_with_initial_username_and_empty_initial_response() -> None:
    driver = submission()
    assert driver.send(b"AUTH LOGIN " + b64(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert driver.send(b64(b"wrong") + b"\r\n") == AUTH_FAILED
    assert driver.core.authenticated_as is None
    assert driver.send(b"AUTH LOGIN =\r\n") == b"334 VXNlcm5hbWU6\r\n"


def test_auth_cancel_and_garbage() -> None:
    driver = submission()
    assert driver.send(b"AUTH LOGIN\r\n*\r\n") == (
        b"334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n")
    assert driver.send(b"AUTH PLAIN\r\n!!notbase64\r\n") == (
        b"334 \r\n501 5.5.2 Cannot decode base64 response\r\n")
    assert driver.send(b"AUTH PLAIN AGE\r\n") == b"501 5.5.2 Cannot decode base64 response\r\n"
    assert driver.send(b"AUTH PLAIN * \r\n") == (
        b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n")
    # After each failure the session is back to commands.
    assert driver.send(b"NOOP\r\n") == OK
    assert driver.events == []


def test_auth_failures_are_counted() -> None:
    driver = submission(max_errors=2)
    bad = b"AUTH PLAIN " + b64(b"\0alice\0guess") + b"\r\n"
    out = driver.send(bad + bad + bad)
    assert out == AUTH_FAILED * 2 + (
        b"421 4.7.0 mx.example.test Too many errors, closing connection\r\n")
    assert isinstance(driver.events[-1], ConnectionClosed)


def test_auth_result_with_custom_reply() -> None:
    def decide(event: object) -> Reply | bool:
        return Reply(454, "4.7.0", "Temporary authentication failure")

    driver = Driver.start(decide, submission=True, tls_active=True)
    driver.send(b"EHLO c.test\r\n")
    assert driver.send(b"AUTH PLAIN " + b64(b"\0a\0b") + b"\r\n") == (
        b"454 4.7.0 Temporary authentication failure\r\n")


@pytest.mark.parametrize(
    ("overrides", "setup", "line", "reply"),
    [
        ({"submission": False}, b"EHLO c\r\n", b"AUTH PLAIN",
         b"502 5.5.1 AUTH not available on this port"),
        ({"tls_active": False}, b"EHLO c\r\n", b"AUTH PLAIN",
         b"538 5.7.11 Encryption required for requested authentication mechanism"),
        ({}, b"", b"AUTH PLAIN", b"503 5.5.1 Send EHLO/HELO first"),
        ({}, b"EHLO c\r\n", b"AUTH CRAM-MD5", b"504 5.5.4 Unrecognized authentication type"),
        ({}, b"EHLO c\r\n", b"AUTH", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
        ({"auth_mechanisms": ("PLAIN",)}, b"EHLO c\r\n", b"AUTH LOGIN",
         b"504 5.5.4 Unrecognized authentication type"),
    ],
)
def test_auth_refusals(overrides: dict[str, object], setup: bytes, line: bytes,
                       reply: bytes) -> None:
    params: dict[str, object] = {"submission": True, "tls_active": True}
    params.update(overrides)
    driver = Driver.start(**params)
    if setup:
        driver.send(setup)
    assert driver.send(line + b"\r\n") == reply + b"\r\n"


def test_auth_twice_and_during_transaction() -> None:
    driver = submission()
    plain = b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n"
    assert driver.send(plain) == AUTH_OK
    assert driver.send(plain) == b"503 5.5.1 Already authenticated\r\n"
    driver = submission(auth_requires_tls=False, tls_active=False)
    driver.core._mail = object()  # type: ignore[assignment]  # a transaction is open
    assert driver.send(plain) == b"503 5.5.1 AUTH not permitted during a mail transaction\r\n"


def test_long_auth_line_is_allowed_up_to_rfc4954_limit() -> None:
    driver = submission(max_command_line=512)
    blob = b64(b"\0alice\0" + b"p" * 200)
    assert driver.send(b"AUTH PLAIN " + blob + b"\r\n") == AUTH_FAILED  # long but fine
    assert driver.send(b"NOOP " + b"x" * 600 + b"\r\n") == b"500 5.5.2 Line too long\r\n"
    assert driver.send(b"AUTH PLAIN\r\n" + b"A" * 13000 + b"\r\n") == (
        b"334 \r\n500 5.5.2 Line too long\r\n")


def test_tls_started_forgets_authentication() -> None:
    driver = Driver.start(submission=True, auth_requires_tls=False, starttls_available=True)
    driver.send(b"EHLO c.test\r\nAUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
    assert driver.core.authenticated_as == "alice"
    assert driver.send(b"STARTTLS\r\n") == TLS_READY
    driver.core.tls_started()
    assert driver.core.authenticated_as is None
    driver.send(b"EHLO c.test\r\n")
    assert isinstance(driver.events[-1], Helo)
