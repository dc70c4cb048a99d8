"""The classifier: errors and server replies of Mailstead and of common servers and providers
map to the cause a person can act on."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from mailstead.diagnostics.classify import (
    Cause,
    LoginReply,
    classify_connect_error,
    classify_login,
    classify_tls_error,
    fix,
    greeting_protocol,
    greeting_refusal,
    looks_like_tls,
    words,
)


def test_every_cause_has_words_and_a_fix() -> None:
    for cause in Cause:
        assert words(cause)
        if cause is not Cause.OK:
            assert fix(cause)


@pytest.mark.parametrize(("exc", "cause"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Cause.REFUSED),
    (TimeoutError(), Cause.TIMED_OUT),
    (socket.gaierror(-2, "Name or service not known"), Cause.NO_ADDRESS),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), Cause.UNREACHABLE),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 993), "
             "[Errno 111] Connection refused"), Cause.REFUSED),
])
def test_connect_errors(exc: BaseException, cause: Cause) -> None:
    assert classify_connect_error(exc) is cause


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(("exc", "cause"), [
    (_verify_error(10, "certificate has expired"), Cause.CERT_EXPIRED),
    (_verify_error(62, "Hostname mismatch"), Cause.CERT_NAME),
    (_verify_error(18, "self-signed certificate"), Cause.CERT_UNTRUSTED),
    (_verify_error(20, "unable to get local issuer certificate"), Cause.CERT_UNTRUSTED),
    (_verify_error(9, "certificate is not yet valid"), Cause.CERT_OTHER),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     Cause.EXPECTS_STARTTLS),
    (ssl.SSLError(1, "[SSL: RECORD_LAYER_FAILURE] record layer failure"),
     Cause.EXPECTS_STARTTLS),
    (ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] handshake failure"),
     Cause.TLS_FAILED),
    (TimeoutError(), Cause.DROPPED),
])
def test_tls_errors(exc: BaseException, cause: Cause) -> None:
    assert classify_tls_error(exc) is cause


@pytest.mark.parametrize(("line", "protocol"), [
    (b"220 mail.example.test ESMTP Mailstead", "smtp"),
    (b"220-first line", "smtp"),
    (b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.", "imap"),
    (b"* PREAUTH welcome", "imap"),
    (b"+OK Dovecot ready.", "pop3"),
    (b"-ERR go away", "pop3"),
    (b"HTTP/1.1 400 Bad Request", "http"),
    (b"SSH-2.0-OpenSSH_9.2", None),
    (b"", None),
    (b"\x16\x03\x01\x00", None),
    (b'"IMPLEMENTATION" "Mailstead"\r\n', "managesieve"),
    (b'"STARTTLS"\r\n', "managesieve"),
    (b'"not a capability\r\n', None),
])
def test_greetings(line: bytes, protocol: str | None) -> None:
    assert greeting_protocol(line) == protocol


def test_greeting_refusals() -> None:
    assert greeting_refusal("smtp", b"554 5.7.1 no service for you")
    assert not greeting_refusal("smtp", b"220 hello")
    assert greeting_refusal("imap", b"* BYE too many connections")
    assert greeting_refusal("pop3", b"-ERR [SYS/TEMP] busy")
    assert greeting_refusal("managesieve", b'BYE (TRYLATER) "too many connections"')
    assert not greeting_refusal("managesieve", b'"IMPLEMENTATION" "Mailstead"')


def test_tls_records_are_recognised() -> None:
    assert looks_like_tls(b"\x15\x03\x03\x00\x02\x02\x32")  # an alert
    assert not looks_like_tls(b"220 ")
    assert not looks_like_tls(b"\x15")


@pytest.mark.parametrize(("reply", "cause"), [
    # Mailstead's own texts (servers/smtp.py, imap/auth.py, servers/pop3.py)
    (LoginReply(False, "535 5.7.8", "5.7.8 Two-factor authentication is on for this "
                "account: use an app-specific password, not the account password"),
     Cause.APP_PASSWORD),
    (LoginReply(False, "AUTHENTICATIONFAILED", "Two-factor authentication is on for this "
                "account: use an app-specific password"), Cause.APP_PASSWORD),
    (LoginReply(False, "454 4.7.0", "4.7.0 Temporary authentication failure: too many "
                "failed logins from your address, try again later", True), Cause.BLOCKED),
    (LoginReply(False, "UNAVAILABLE", "Too many failed logins from your address, try again "
                "later", True), Cause.BLOCKED),
    (LoginReply(False, "SYS/TEMP", "Too many failed logins from your address, try again "
                "later", True), Cause.BLOCKED),
    (LoginReply(False, "535 5.7.8", "5.7.8 Authentication credentials invalid"),
     Cause.WRONG_PASSWORD),
    (LoginReply(False, "AUTHENTICATIONFAILED", "Invalid credentials"), Cause.WRONG_PASSWORD),
    (LoginReply(False, "AUTH", "Authentication failed"), Cause.WRONG_PASSWORD),
    # Other servers and providers
    (LoginReply(False, "534 5.7.9", "5.7.9 Application-specific password required. Learn "
                "more at https://support.google.com/mail/?p=InvalidSecondFactor"),
     Cause.APP_PASSWORD),
    (LoginReply(False, "ALERT", "Application-specific password required"), Cause.APP_PASSWORD),
    (LoginReply(False, "534 5.7.14", "5.7.14 <https://accounts.google.com/signin/continue> "
                "Please log in with your web browser and then try again."), Cause.WEB_LOGIN),
    (LoginReply(False, "535 5.7.139", "5.7.139 Authentication unsuccessful, basic "
                "authentication is disabled."), Cause.WEB_LOGIN),
    (LoginReply(False, "535 5.7.8", "Error: authentication failed: authentication failure"),
     Cause.WRONG_PASSWORD),  # Postfix
    (LoginReply(False, "AUTHENTICATIONFAILED", "Authentication failed."),
     Cause.WRONG_PASSWORD),  # Dovecot
    (LoginReply(False, "", "Plaintext authentication disallowed on non-secure (SSL/TLS) "
                "connections."), Cause.LOGIN_BEFORE_TLS),  # Dovecot
    (LoginReply(False, "530 5.7.0", "Must issue a STARTTLS command first"),
     Cause.LOGIN_BEFORE_TLS),
    (LoginReply(False, "538 5.7.11", "Encryption required for requested authentication "
                "mechanism"), Cause.LOGIN_BEFORE_TLS),
    (LoginReply(False, "UNAVAILABLE", "Internal error occurred.", True), Cause.TEMPORARY),
    (LoginReply(False, "ALERT", "Too many login failures"), Cause.BLOCKED),
    (LoginReply(True, "", "Logged in"), Cause.OK),
    (LoginReply(False, "IN-USE", "Mailbox is locked by another POP3 session, try again "
                "later", True), Cause.IN_USE),
])
def test_login_replies(reply: LoginReply, cause: Cause) -> None:
    assert classify_login(reply) is cause
