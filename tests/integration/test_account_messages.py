"""Three account messages, seen by real clients of a running server: an app password used on a
protocol it was not made for says which protocols it is for (IMAP, POP3, SMTP AUTH: the
response codes stay AUTHENTICATIONFAILED, [AUTH], 535 5.7.8); a TOTP code typed again on the
web sign-in is reported as already used, not as wrong; and a password built on the address
(``weak@example.test1`` for weak@example.test) is refused by ``user add`` in one line."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import subprocess
import sys
import uuid

import pytest
from helpers import DOMAIN, REPO, Browser, Harness, child_env, enable_2fa, run_cli


def cli(h: Harness, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailstead", *args, "--data-dir",
                           str(h.data_dir)], input=stdin, capture_output=True, text=True,
                          timeout=60, env=child_env(), cwd=REPO, check=False)


def new_user(h: Harness) -> tuple[str, str]:
    address, password = f"m{uuid.uuid4().hex[:12]}@{DOMAIN}", f"Pw-{uuid.uuid4().hex}"
    run_cli("user", "add", address, "--password-stdin", "--data-dir", str(h.data_dir),
            stdin=password + "\n")
    return address, password


def app_password(h: Harness, address: str, protocols: str) -> str:
    out = run_cli("app-password", "add", address, "--name", f"a{uuid.uuid4().hex[:6]}",
                  "--protocols", protocols, "--data-dir", str(h.data_dir))
    found = re.search(r"^  ([a-z]{4} [a-z]{4} [a-z]{4} [a-z]{4})$", out, re.M)
    assert found, out
    return found[1]


def imap_refusal(h: Harness, address: str, password: str) -> str:
    with imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=30) as client:
        client.starttls(h.tls())
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login(address, password)
    return str(refused.value)


def pop3_refusal(h: Harness, address: str, password: str) -> str:
    client = poplib.POP3_SSL("127.0.0.1", h.port("pop3s"), context=h.tls(), timeout=30)
    try:
        client.user(address)
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_(password)
    finally:
        client.close()
    return refused.value.args[0].decode()


def smtp_refusal(h: Harness, address: str, password: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", h.port("submission"), timeout=30) as client:
        client.starttls(context=h.tls())
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(address, password)
    return refused.value.smtp_code, refused.value.smtp_error.decode()


def test_app_password_on_another_protocol_says_which_it_is_for(imap_server: Harness) -> None:
    h = imap_server
    address, _ = new_user(h)
    mail = app_password(h, address, "imap,pop3")
    code, text = smtp_refusal(h, address, mail)
    assert code == 535
    assert text == "5.7.8 this app password is for IMAP, POP3 only"
    sending = app_password(h, address, "smtp")
    assert "[AUTHENTICATIONFAILED] this app password is for SMTP only" in imap_refusal(
        h, address, sending)
    assert pop3_refusal(h, address, sending) == (
        "-ERR [AUTH] this app password is for SMTP only")
    # A wrong password is still just wrong, in the same words as before.
    assert "[AUTHENTICATIONFAILED] Invalid credentials" in imap_refusal(h, address, "x" * 16)
    assert smtp_refusal(h, address, "abcd efgh ijkl mnop") == (
        535, "5.7.8 Authentication credentials invalid")


def test_a_reused_totp_code_is_reported_as_used(imap_server: Harness) -> None:
    h = imap_server
    address, password = new_user(h)
    enrolled = enable_2fa(h.data_dir, address)  # its code is spent now
    typed, recovery = enrolled.typed, enrolled.recovery_codes
    browser = Browser(h.server)
    token = browser.csrf("/login")
    status, headers, _ = browser.request("POST", "/login", {
        "csrf": token, "username": address, "password": password})
    assert status == 303
    assert headers["location"] == "/login/code"
    token = browser.csrf("/login/code")
    status, _, html = browser.request("POST", "/login/code", {"csrf": token, "code": typed})
    assert status == 403
    assert "This code was already used; wait for the next one." in html
    wrong = "000000" if typed != "000000" else "111111"
    status, _, html = browser.request("POST", "/login/code", {"csrf": token, "code": wrong})
    assert status == 403
    assert "That code is not right" in html
    status, headers, _ = browser.request("POST", "/login/code",
                                         {"csrf": token, "code": recovery[0]})
    assert status == 303
    assert headers["location"] == "/account"
    # The command line says the same.
    again = cli(h, "user", "2fa", "verify", address, typed)
    assert again.returncode == 1
    assert "already used; wait for the next one" in again.stderr


@pytest.mark.parametrize("password", [
    "weak@example.test1",   # the address and one more character
    "Example-Weak-12",      # the domain's label and the user name, any case
    "weak-example.test",
    "TEST-weak-2024",
])
def test_a_password_built_on_the_address_is_refused(imap_server: Harness,
                                                    password: str) -> None:
    address = f"weak@{DOMAIN}"
    proc = cli(imap_server, "user", "add", address, "--password-stdin", stdin=password + "\n")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "mailstead: password is built on the address: without its user name and domain it "
        "must still have at least 8 characters")
    assert "Traceback" not in proc.stderr
