"""POP3ServerCore, byte for byte: AUTHORIZATION state, USER/PASS, AUTH PLAIN (RFC 5034),
STLS (RFC 2595), CAPA (RFC 2449) and the TLS-only rule for passwords."""

from __future__ import annotations

import pytest
from pop3_core_driver import PASSWORD, USER, Driver, b64, entries

from mailstead.proto.pop3.events import Credentials, StartTLS
from mailstead.proto.pop3.server import State

PLAIN_OK = b64(f"\0{USER}\0{PASSWORD}")
REFUSED = (
    b"-ERR [AUTH] Plaintext authentication is disallowed on non-secure connections: turn on "
    b"SSL/TLS in your mail client (STLS on port 110, or port 995)\r\n"
)
CAPA_PLAIN = (
    b"+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
    b"PIPELINING\r\nSTLS\r\nIMPLEMENTATION Mailstead\r\n.\r\n"
)
CAPA_TLS = (
    b"+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
    b"PIPELINING\r\nUSER\r\nSASL PLAIN\r\nIMPLEMENTATION Mailstead\r\n.\r\n"
)
CAPA_TRANSACTION = (
    b"+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
    b"PIPELINING\r\nIMPLEMENTATION Mailstead\r\n.\r\n"
)


def plaintext() -> Driver:
    return Driver.new(tls_active=False)


def test_capa_in_each_state() -> None:
    assert plaintext().run(b"CAPA\r\n") == CAPA_PLAIN
    d = Driver.new()
    assert d.run(b"CAPA\r\n") == CAPA_TLS
    d.login()
    assert d.run(b"CAPA\r\n") == CAPA_TRANSACTION


def test_capa_without_certificate_offers_no_stls() -> None:
    d = Driver.new(tls_active=False, stls_available=False)
    assert b"STLS" not in d.run(b"CAPA\r\n")
    assert d.run(b"STLS\r\n") == b"-ERR TLS is not available\r\n"


@pytest.mark.parametrize("line", [b"USER alice@example.test", b"PASS secret", b"AUTH PLAIN"])
def test_passwords_refused_before_tls_with_a_clear_text(line: bytes) -> None:
    d = plaintext()
    assert d.run(line + b"\r\n") == REFUSED
    assert not d.of(Credentials)


def test_plaintext_allowed_when_configured() -> None:
    d = Driver.new(tls_active=False, auth_requires_tls=False)
    assert d.login().startswith(b"+OK Send PASS\r\n+OK Logged in, 3 messages")
    assert d.core.state is State.TRANSACTION


def test_stls_then_login() -> None:
    d = plaintext()
    assert d.run(b"STLS\r\n") == b"+OK Begin TLS negotiation\r\n"
    assert d.of(StartTLS)
    assert d.core.tls_active
    assert d.run(b"CAPA\r\n") == CAPA_TLS
    assert d.login().startswith(b"+OK Send PASS\r\n+OK Logged in")
    assert d.run(b"STLS\r\n") == b"-ERR Already logged in\r\n"


def test_stls_discards_pipelined_plaintext() -> None:
    """RFC 2595 section 4 / RFC 3207 section 5: commands after STLS in the same packet are
    injected plaintext; they must never run inside the TLS session."""
    d = plaintext()
    d.tls_upgrade = False
    out = d.run(f"STLS\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    assert out == b"+OK Begin TLS negotiation\r\n"
    d.core.receive_data(b"STAT\r\n")  # still plaintext: dropped while waiting for TLS
    d.core.tls_started()
    assert d.run(b"") == b""
    assert not d.of(Credentials)
    assert d.core.state is State.CLOSED  # the b"" above closed it; nothing ran


def test_stls_twice_refused() -> None:
    d = plaintext()
    d.run(b"STLS\r\n")
    assert d.run(b"STLS\r\n") == b"-ERR TLS is already active\r\n"


def test_tls_started_without_stls_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Driver.new().core.tls_started()


def test_user_pass_failure_then_success() -> None:
    d = Driver.new()
    assert d.run(f"USER {USER}\r\nPASS wrong\r\n".encode()) == (
        b"+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n"
    )
    assert d.core.state is State.AUTHORIZATION
    assert d.run(f"PASS {PASSWORD}\r\n".encode()) == b"-ERR Send USER first\r\n"
    assert d.login().startswith(b"+OK Send PASS\r\n+OK Logged in, 3 messages")
    assert d.core.authenticated_as == USER


def test_password_keeps_its_spaces() -> None:
    d = Driver.new()
    d.run(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    creds = d.of(Credentials)
    assert len(creds) == 1
    assert creds[0].password.reveal() == PASSWORD == "right password"
    assert creds[0].mechanism == "USER"


def test_user_must_be_followed_by_pass() -> None:
    d = Driver.new()
    assert d.run(f"USER {USER}\r\nCAPA\r\nPASS {PASSWORD}\r\n".encode()).endswith(
        b"-ERR Send USER first\r\n"
    )


def test_in_use() -> None:
    d = Driver.new()
    d.in_use = True
    assert d.login() == (
        b"+OK Send PASS\r\n"
        b"-ERR [IN-USE] Mailbox is locked by another POP3 session, try again later\r\n"
    )
    assert d.core.state is State.AUTHORIZATION


def test_transaction_commands_need_login() -> None:
    d = Driver.new()
    for cmd in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 1", b"UIDL"):
        assert d.run(cmd + b"\r\n") == (
            b"-ERR Not logged in: send USER and PASS, or AUTH, first\r\n"
        ), cmd


def test_apop_not_offered() -> None:
    d = Driver.new()
    assert d.run(b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n") == (
        b"-ERR APOP is not supported: use USER/PASS or AUTH PLAIN over TLS\r\n"
    )


def test_quit_in_authorization() -> None:
    d = Driver.new()
    assert d.run(b"QUIT\r\n") == b"+OK Bye\r\n"
    assert d.core.closed


def test_auth_plain_with_initial_response() -> None:
    d = Driver.new()
    out = d.run(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    total = sum(e.size for e in entries())
    assert out == b"+OK Logged in, 3 messages (%d octets)\r\n" % total
    assert d.of(Credentials)[0].mechanism == "PLAIN"


def test_auth_plain_with_continuation() -> None:
    d = Driver.new()
    assert d.run(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert d.run(PLAIN_OK.encode() + b"\r\n").startswith(b"+OK Logged in")


def test_auth_plain_empty_initial_response_and_cancel() -> None:
    d = Driver.new()
    assert d.run(b"AUTH PLAIN =\r\n") == (
        b"-ERR Malformed authentication data: PLAIN message must contain exactly two NUL "
        b"separators\r\n"
    )
    assert d.run(b"AUTH PLAIN\r\n*\r\n") == b"+ \r\n-ERR Authentication cancelled\r\n"
    assert d.core.state is State.AUTHORIZATION


def test_auth_plain_wrong_password_and_bad_base64() -> None:
    d = Driver.new()
    bad = b64(f"\0{USER}\0nope")
    assert d.run(f"AUTH PLAIN {bad}\r\n".encode()) == b"-ERR [AUTH] Authentication failed\r\n"
    assert d.run(b"AUTH PLAIN !!!\r\n") == b"-ERR Invalid base64 in authentication data\r\n"
    assert d.run(b"AUTH PLAIN\r\n%%%\r\n") == (
        b"+ \r\n-ERR Invalid base64 in authentication data\r\n"
    )


def test_auth_unknown_mechanism_and_listing() -> None:
    d = Driver.new()
    assert d.run(b"AUTH CRAM-MD5\r\n") == b"-ERR Unsupported authentication mechanism\r\n"
    assert d.run(b"AUTH LOGIN\r\n") == b"-ERR Unsupported authentication mechanism\r\n"
    assert d.run(b"AUTH\r\n") == b"+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n"
    assert plaintext().run(b"AUTH\r\n") == b"+OK Supported mechanisms follow\r\n.\r\n"


def test_auth_line_may_exceed_255_octets() -> None:
    """RFC 5034 section 4: SASL data is not bound by the RFC 2449 command line limit."""
    d = Driver.new()
    long_user = "a" * 200 + "@example.test"
    line = f"AUTH PLAIN {b64(chr(0) + long_user + chr(0) + 'p' * 100)}\r\n".encode()
    assert len(line) > 255
    assert d.run(line) == b"-ERR [AUTH] Authentication failed\r\n"
    assert d.of(Credentials)[0].username == long_user


def test_auth_response_over_the_framing_limit_cancels() -> None:
    d = Driver.new()
    assert d.run(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert d.run(b"A" * 3000 + b"\r\n") == (
        b"-ERR Command line too long: at most 255 octets (RFC 2449)\r\n"
    )
    assert d.run(b"CAPA\r\n") == CAPA_TLS  # back to commands


def test_failed_logins_count_as_errors() -> None:
    d = Driver.new(max_errors=2)
    out = d.run(f"USER {USER}\r\nPASS a\r\nUSER {USER}\r\nPASS b\r\nQUIT\r\n".encode())
    assert out == (
        b"+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n+OK Send PASS\r\n"
        b"-ERR [AUTH] Authentication failed\r\n"
        b"-ERR Too many invalid commands, closing connection\r\n"
    )
    assert d.core.closed


def test_authzid_is_passed_on() -> None:
    d = Driver.new()
    d.run(f"AUTH PLAIN {b64('other@example.test' + chr(0) + USER + chr(0) + 'x')}\r\n".encode())
    assert d.of(Credentials)[0].authzid == "other@example.test"
