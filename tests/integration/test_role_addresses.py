"""Role addresses from the start (RFC 5321 section 4.5.1, RFC 2142): on a freshly initialised
server, postmaster (with and without a domain, any case), abuse and every report address
``mailstead dns`` publishes are accepted on port 25 and land in the first administrator's
INBOX (read back over IMAP); an alias for one of them wins."""

from __future__ import annotations

import imaplib
import re
import smtplib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DOMAIN,
    HOSTNAME,
    Harness,
    Server,
    Users,
    init_data_dir,
    run_cli,
)

ALICE = f"alice@{DOMAIN}"  # created first, not an administrator
BOB = f"bob@{DOMAIN}"  # the first administrator
PASSWORD = "role-Secret-1"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir: Path = tmp_path_factory.mktemp("roles") / "data"
    init_data_dir(data_dir, Users(passwords={ALICE: PASSWORD}))
    run_cli("user", "add", BOB, "--admin", "--password-stdin", "--data-dir", str(data_dir),
            stdin=PASSWORD + "\n")
    server = Server(data_dir).start()
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        assert code == 0, server.log_text()[-4000:]
        assert "Traceback" not in server.log_text()


def _send(h: Harness, rcpt: str, token: str) -> tuple[int, bytes]:
    """RCPT TO:<rcpt> then, when accepted, a message carrying ``token``."""
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=15) as smtp:
        smtp.ehlo("client.remote.test")
        smtp.mail("someone@remote.test")
        code, text = smtp.rcpt(rcpt)
        if code == 250:
            smtp.data(f"From: someone@remote.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\n"
                      f"{token}\r\n".encode())
        return code, text


def _imap_subjects(h: Harness, user: str) -> str:
    """Every Subject in ``user``'s INBOX, read over IMAP (STARTTLS on 143)."""
    imap = imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=15)
    try:
        imap.starttls(h.tls())
        imap.login(user, PASSWORD)
        typ, count = imap.select("INBOX", readonly=True)
        if typ == "OK" and count[0] == b"0":
            return ""
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        return b" ".join(p[1] for p in data if isinstance(p, tuple)).decode()
    finally:
        imap.logout()


@pytest.mark.parametrize("rcpt", ["<postmaster>", "postmaster", f"Postmaster@{DOMAIN}",
                                  f"postmaster@{HOSTNAME}", f"abuse@{DOMAIN}",
                                  f"ABUSE+x@{DOMAIN}"])
def test_role_address_reaches_the_first_admin(fresh: Harness, rcpt: str) -> None:
    token = f"role-{uuid.uuid4().hex[:10]}"
    address = rcpt.strip("<>")
    code, text = _send(fresh, address, token)
    assert code == 250, (rcpt, code, text)
    assert token in _imap_subjects(fresh, BOB)
    assert token not in _imap_subjects(fresh, ALICE)


def test_published_report_addresses_are_accepted(fresh: Harness) -> None:
    zone = run_cli("dns", DOMAIN, "--data-dir", str(fresh.data_dir))
    addresses = set(re.findall(r"(?:rua|ruf)=mailto:([^;\"\s,]+)", zone))
    assert len(addresses) >= 2, zone  # DMARC and TLS-RPT
    for address in sorted(addresses):
        token = f"report-{uuid.uuid4().hex[:10]}"
        code, text = _send(fresh, address, token)
        assert code == 250, (address, code, text)
        assert token in _imap_subjects(fresh, BOB)


def test_an_alias_for_a_role_wins(fresh: Harness) -> None:
    where = ("--data-dir", str(fresh.data_dir))
    run_cli("alias", "add", f"abuse@{DOMAIN}", ALICE, *where)
    try:
        token = f"alias-{uuid.uuid4().hex[:10]}"
        assert _send(fresh, f"abuse@{DOMAIN}", token)[0] == 250
        assert token in _imap_subjects(fresh, ALICE)
        assert token not in _imap_subjects(fresh, BOB)
    finally:
        run_cli("alias", "remove", f"abuse@{DOMAIN}", *where)


def test_other_unknown_users_are_still_refused(fresh: Harness) -> None:
    code, _ = _send(fresh, f"nobody@{DOMAIN}", "x")
    assert code == 550
    code, _ = _send(fresh, f"nobody@{HOSTNAME}", "x")
    assert code == 554  # the host name is not a mail domain: no relay
