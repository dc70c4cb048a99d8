"""Quotas an administrator can set, and the warnings users get as their mailbox fills.

``user add --quota``, ``user quota ADDRESS SIZE`` (and ``none``), ``user show`` and
``user list -l``, ``[limits] default_quota``, all seen by a running server over IMAP
GETQUOTAROOT (RFC 9208); when a delivery (SMTP) or an APPEND takes an account past 80% and
then 95% of its quota, one warning from the domain's postmaster arrives in INBOX per crossing,
again only after usage fell below the level, and the warning itself is never refused for
quota.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import (
    DOMAIN,
    REPO,
    Browser,
    Harness,
    Users,
    child_env,
    init_data_dir,
    rewrite_tables,
    run_cli,
)

BIG = 21_000  # four of these take a "100K" quota past 80%, three stay under it


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailstead", *args, "--data-dir", str(data_dir)],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          env=child_env(), cwd=REPO, check=False)


def new_user(h: Harness, *extra: str) -> tuple[str, str]:
    address, password = f"q{uuid.uuid4().hex[:12]}@{DOMAIN}", f"Pw-{uuid.uuid4().hex}"
    run_cli("user", "add", address, "--password-stdin", *extra, "--data-dir", str(h.data_dir),
            stdin=password + "\n")
    return address, password


def imap(h: Harness, address: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=30)
    client.starttls(h.tls())
    client.login(address, password)
    return client


def storage(client: imaplib.IMAP4) -> tuple[int, int] | None:
    """(used KiB, limit KiB) from GETQUOTAROOT INBOX, None when there is no quota."""
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK", data
    text = b" ".join(d for part in data for d in (part if isinstance(part, list) else [part])
                     if isinstance(d, bytes)).decode()
    found = re.search(r"STORAGE (\d+) (\d+)", text)
    return None if found is None else (int(found[1]), int(found[2]))


def deliver(h: Harness, to: str, size: int) -> int:
    """One message of about ``size`` octets over port 25; the reply code after DATA."""
    body = ("x" * 76 + "\r\n") * (size // 78)
    message = (f"From: <sender@remote.test>\r\nTo: <{to}>\r\nSubject: filler\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=30) as client:
        try:
            client.sendmail("sender@remote.test", [to], message.encode())
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
        except smtplib.SMTPRecipientsRefused as exc:
            return next(iter(exc.recipients.values()))[0]
    return 250


def append(client: imaplib.IMAP4, size: int) -> str:
    """APPENDs a message of exactly ``size`` octets to INBOX; the tagged status."""
    head = f"From: <me@{DOMAIN}>\r\nSubject: appended\r\n\r\n"
    left = size - len(head)
    body = ("y" * 76 + "\r\n") * (left // 78) + "z" * (left % 78)
    message = (head + body).encode()
    assert len(message) == size
    typ, _ = client.append("INBOX", None, None, message)
    return str(typ)


def inbox_size(client: imaplib.IMAP4) -> int:
    """The octets stored in INBOX (STATUS SIZE, RFC 8438): here all the account holds."""
    typ, data = client.status("INBOX", "(SIZE)")
    assert typ == "OK", data
    return int(re.search(rb"SIZE (\d+)", data[0])[1])  # type: ignore[index]


def warnings(client: imaplib.IMAP4) -> list[str]:
    """The subjects of the quota warnings in INBOX, oldest first."""
    client.select("INBOX")
    typ, data = client.search(None, "FROM", f"postmaster@{DOMAIN}")
    assert typ == "OK"
    subjects = []
    for num in data[0].split():
        typ, got = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM AUTO-SUBMITTED)])")
        assert typ == "OK"
        raw = got[0][1].decode()
        assert "auto-generated" in raw
        subjects.append(re.search(r"Subject: (.*)", raw)[1].strip())  # type: ignore[index]
    return subjects


def test_quota_is_set_shown_and_reported_over_imap(imap_server: Harness) -> None:
    h = imap_server
    address, password = new_user(h, "--quota", "100K")
    shown = run_cli("user", "show", address, "--data-dir", str(h.data_dir))
    assert "of 100 KiB (0%)" in shown, shown
    assert address in run_cli("user", "list", "-l", "--data-dir", str(h.data_dir))
    client = imap(h, address, password)
    try:
        assert storage(client) == (0, 100)
        out = run_cli("user", "quota", address, "2G", "--data-dir", str(h.data_dir))
        assert "set to 2 GiB" in out
        assert storage(client) == (0, 2 * 1024 * 1024)
        run_cli("user", "quota", address, "none", "--data-dir", str(h.data_dir))
        assert storage(client) is None
        assert "(no quota)" in run_cli("user", "quota", address, "--data-dir", str(h.data_dir))
    finally:
        client.logout()
    bad = cli(h.data_dir, "user", "quota", address, "2X")
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1
    assert "is not a size" in bad.stderr
    missing = cli(h.data_dir, "user", "quota", f"nobody@{DOMAIN}", "1G")
    assert missing.returncode == 1
    assert "no account" in missing.stderr


def test_default_quota_from_the_config(tmp_path: Path, store_backend: str) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, Users(passwords={}))
    rewrite_tables(data_dir / "mailstead.toml", {"limits": {"default_quota": "1M"}})
    address = f"d@{DOMAIN}"
    run_cli("user", "add", address, "--password-stdin", "--data-dir", str(data_dir),
            stdin="Long-enough-pw-1\n")
    assert "of 1 MiB" in run_cli("user", "quota", address, "--data-dir", str(data_dir))
    run_cli("user", "add", f"e@{DOMAIN}", "--password-stdin", "--quota", "none",
            "--data-dir", str(data_dir), stdin="Long-enough-pw-1\n")
    assert "(no quota)" in run_cli("user", "quota", f"e@{DOMAIN}", "--data-dir", str(data_dir))
    rewrite_tables(data_dir / "mailstead.toml", {"limits": {"default_quota": "lots"}})
    bad = cli(data_dir, "user", "list")
    assert bad.returncode == 1
    assert "default_quota" in bad.stderr


def test_warnings_at_80_and_95_percent_once_per_crossing(imap_server: Harness) -> None:
    h = imap_server
    address, password = new_user(h, "--quota", "100K")
    client = imap(h, address, password)
    try:
        for _ in range(3):
            assert deliver(h, address, BIG) == 250
        assert warnings(client) == []  # about 60%
        assert deliver(h, address, BIG) == 250  # past 80%
        assert warnings(client) == ["Your mailbox is 80% full"]
        assert deliver(h, address, 1_000) == 250
        assert warnings(client) == ["Your mailbox is 80% full"]  # not again
        # An APPEND that fills the quota to the octet: past 95%, and the warning is stored
        # even though the account has no room left at all.
        assert append(client, 100 * 1024 - inbox_size(client)) == "OK"
        assert warnings(client) == ["Your mailbox is 80% full", "Your mailbox is 95% full"]
        assert inbox_size(client) > 100 * 1024
        assert deliver(h, address, 1_000) != 250  # full: refused for now
        assert warnings(client) == ["Your mailbox is 80% full", "Your mailbox is 95% full"]
        # Making room (the four big ones and the appended one) re-arms the levels ...
        client.select("INBOX")
        typ, data = client.search(None, "LARGER", "10000")
        assert typ == "OK"
        client.store(b",".join(data[0].split()).decode(), "+FLAGS", "\\Deleted")
        client.expunge()
        assert (storage(client) or (100, 0))[0] < 80
        # ... and crossing 80% again warns again, once.
        for _ in range(4):
            assert deliver(h, address, BIG) == 250
        assert warnings(client) == ["Your mailbox is 80% full", "Your mailbox is 95% full",
                                    "Your mailbox is 80% full"]
    finally:
        client.logout()


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0"])
def test_user_add_refuses_a_bad_quota(imap_server: Harness, text: str) -> None:
    proc = cli(imap_server.data_dir, "user", "add", f"z{uuid.uuid4().hex[:8]}@{DOMAIN}",
               "--password-stdin", f"--quota={text}", stdin="Long-enough-pw-1\n")
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_admin_web_page_sets_and_shows_quotas(imap_server: Harness) -> None:
    h = imap_server
    root, root_pw = new_user(h, "--admin")
    user, user_pw = new_user(h)
    browser = Browser(h.server)
    assert browser.sign_in(root, root_pw) == 303
    token = browser.csrf("/admin/users")
    status, _, _ = browser.request("POST", "/admin/users/quota",
                                   {"csrf": token, "address": user, "quota": "500M"})
    assert status == 303
    status, _, html = browser.request("GET", "/admin/users")
    assert status == 200
    assert "of 500 MiB (0%)" in html
    assert 'value="500M"' in html  # the form shows the exact value, to edit
    client = imap(h, user, user_pw)
    try:
        assert storage(client) == (0, 500 * 1024)
        status, _, html = browser.request("POST", "/admin/users/quota",
                                          {"csrf": token, "address": user, "quota": "huge"})
        assert status == 400
        assert "is not a size" in html
        assert storage(client) == (0, 500 * 1024)  # unchanged
        browser.request("POST", "/admin/users/quota",
                        {"csrf": token, "address": user, "quota": "none"})
        assert storage(client) is None
    finally:
        client.logout()
    # A user added on the page with a quota has it.
    added = f"w{uuid.uuid4().hex[:10]}@{DOMAIN}"
    status, _, _ = browser.request("POST", "/admin/users", {
        "csrf": token, "address": added, "password": "Long-enough-pw-1", "quota": "1G"})
    assert status == 303
    assert "of 1 GiB" in run_cli("user", "quota", added, "--data-dir", str(h.data_dir))
