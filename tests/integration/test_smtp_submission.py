"""Submission: 587 with STARTTLS then AUTH (RFC 6409, RFC 3207, RFC 4954) and 465 with implicit
TLS (RFC 8314), through smtplib, swaks and raw sockets."""

from __future__ import annotations

import base64
import smtplib
import subprocess

import pytest
from helpers import REMOTE_CLIENT, USERS, Harness, make_message, split_received

ALICE = "alice@example.test"
BOB = "bob@example.test"
ALICE_PW = USERS.passwords[ALICE]


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _text(error: bytes | str) -> str:
    return error.decode() if isinstance(error, bytes) else error


def _logged_in(server: Harness, port_name: str, user: str = ALICE,
               password: str = ALICE_PW) -> smtplib.SMTP:
    client = server.client(port_name)
    try:
        client.ehlo("laptop.example.test")
        if port_name == "submission":
            client.starttls(context=server.tls())
            client.ehlo("laptop.example.test")
        client.login(user, password)
    except BaseException:
        client.close()
        raise
    return client


def _assert_intact(stored: bytes, sent: bytes) -> None:
    received, rest = split_received(stored)
    assert received, stored[:200]
    assert rest == sent


def test_auth_before_tls_is_538(server: Harness) -> None:
    with server.raw("submission", source=REMOTE_CLIENT) as smtp:
        smtp.read_reply()
        ehlo = smtp.ehlo()
        assert any(line.upper() == "STARTTLS" for line in ehlo.lines[1:])
        reply = smtp.command(f"AUTH PLAIN {_plain(ALICE, ALICE_PW)}")
        assert (reply.code, reply.enhanced) == (538, "5.7.11"), reply  # RFC 4954 section 4


def test_mail_before_auth_is_530(server: Harness) -> None:
    with server.raw("submission") as smtp:
        smtp.read_reply()
        smtp.ehlo()
        smtp.starttls(server.tls())
        ehlo = smtp.ehlo()
        auth = [line for line in ehlo.lines[1:] if line.upper().startswith("AUTH")]
        assert auth, ehlo
        assert {"PLAIN", "LOGIN"} <= set(auth[0].upper().split()[1:])
        reply = smtp.command(f"MAIL FROM:<{ALICE}>")
        assert (reply.code, reply.enhanced) == (530, "5.7.0"), reply  # RFC 4954 section 6


@pytest.mark.parametrize("user", [ALICE, "nobody@example.test"])
def test_wrong_password_is_535(server: Harness, user: str) -> None:
    client = server.client("submission")
    try:
        client.ehlo("laptop.example.test")
        client.starttls(context=server.tls())
        client.ehlo("laptop.example.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login(user, "wrong-password")
        assert info.value.smtp_code == 535
        assert _text(info.value.smtp_error).startswith("5.7.8"), info.value.smtp_error
    finally:
        client.close()


@pytest.mark.parametrize(
    ("port_name", "mechanism", "initial_response"),
    [
        ("submission", "PLAIN", True),
        ("submission", "PLAIN", False),
        ("submission", "LOGIN", False),
        ("submissions", "PLAIN", True),
        ("submissions", "LOGIN", True),
    ],
)
def test_authenticated_submission_delivers_intact(
    server: Harness, port_name: str, mechanism: str, initial_response: bool, token: str
) -> None:
    message = make_message(token, sender=ALICE, to=BOB,
                           body="Grüße, 8-bit\r\n.leading dot\r\n".encode())
    client = server.client(port_name)
    try:
        client.ehlo("laptop.example.test")
        if port_name == "submission":
            client.starttls(context=server.tls())
            client.ehlo("laptop.example.test")
        client.user, client.password = ALICE, ALICE_PW
        authobject = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, authobject, initial_response_ok=initial_response)
        assert code == 235
        assert client.sendmail(ALICE, [BOB], message, mail_options=["BODY=8BITMIME"]) == {}
        client.quit()
    finally:
        client.close()
    stored = server.find(BOB, token)
    assert len(stored) == 1
    _assert_intact(stored[0], message)


def test_mail_from_not_own_address_is_553(server: Harness) -> None:
    client = _logged_in(server, "submission")
    try:
        code, text = client.mail(BOB)
        assert code == 553
        assert text.startswith(b"5.7.1"), text
    finally:
        client.close()


def test_send_as_own_alias(server: Harness, token: str) -> None:
    """info@example.test is an alias of alice, so alice may use it as sender and From:."""
    message = make_message(token, sender="info@example.test", to=BOB)
    client = _logged_in(server, "submission")
    try:
        assert client.sendmail("info@example.test", [BOB], message) == {}
    finally:
        client.close()
    assert len(server.find(BOB, token)) == 1


def test_from_header_not_own_is_553(server: Harness, token: str) -> None:
    message = make_message(token, sender=BOB, to=BOB)
    client = _logged_in(server, "submission")
    try:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail(ALICE, [BOB], message)
        assert info.value.smtp_code == 553
        assert _text(info.value.smtp_error).startswith("5.7.1"), info.value.smtp_error
    finally:
        client.close()
    assert not server.find(BOB, token)


def test_date_and_message_id_added(server: Harness, token: str) -> None:
    message = make_message(token, sender=ALICE, to=BOB, date=False, message_id=False)
    client = _logged_in(server, "submissions")
    try:
        assert client.sendmail(ALICE, [BOB], message) == {}
    finally:
        client.close()
    stored = server.find(BOB, token)
    assert len(stored) == 1
    header = stored[0].split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\ndate: " in header or header.startswith(b"date: ")  # RFC 6409 section 8.2
    assert b"\r\nmessage-id: <" in header  # RFC 6409 section 8.3
    assert stored[0].endswith(message.split(b"\r\n\r\n", 1)[1])


def test_remote_recipient_queued_local_delivered(server: Harness, token: str) -> None:
    message = make_message(token, sender=ALICE, to="carol@remote.test")
    client = _logged_in(server, "submission")
    try:
        assert client.sendmail(ALICE, ["carol@remote.test", BOB], message) == {}
    finally:
        client.close()
    assert len(server.find(BOB, token)) == 1
    entries = [q for q in server.queue() if q.rcpt_to == "carol@remote.test"
               and q.mail_from == ALICE]
    assert entries, server.queue()
    assert all(q.rcpt_to != BOB for q in server.queue())


def _swaks(swaks: str, server: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [swaks, "--server", "127.0.0.1", "--helo", "laptop.example.test",
         "--tls-verify", "--tls-ca-path", str(server.cert_path),
         "--tls-sni", "mail.example.test", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize(("port_name", "tls_flag", "auth"),
                         [("submission", "--tls", "PLAIN"), ("submission", "--tls", "LOGIN"),
                          ("submissions", "--tls-on-connect", "PLAIN")])
def test_swaks(server: Harness, swaks: str, port_name: str, tls_flag: str, auth: str,
               token: str) -> None:
    result = _swaks(
        swaks, server, "--port", str(server.port(port_name)), tls_flag,
        "--auth", auth, "--auth-user", ALICE, "--auth-password", ALICE_PW,
        "--from", ALICE, "--to", BOB, "--header", f"Subject: swaks {token}",
        "--body", f"token {token}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stored = server.find(BOB, token)
    assert len(stored) == 1
    assert f"Subject: swaks {token}".encode() in stored[0]


def test_swaks_wrong_password(server: Harness, swaks: str, token: str) -> None:
    result = _swaks(
        swaks, server, "--port", str(server.submission_port), "--tls",
        "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", "nope",
        "--from", ALICE, "--to", BOB, "--body", f"token {token}",
    )
    assert result.returncode != 0
    assert "535 5.7.8" in result.stdout, result.stdout
    assert not server.find(BOB, token)
