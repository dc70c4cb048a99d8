"""Several IMAP sessions on one mailbox (RFC 9051 section 5.2 and 7.5): untagged EXISTS,
EXPUNGE / VANISHED and FETCH FLAGS reach the other sessions at NOOP, IDLE wakes within a
second for SMTP delivery, APPEND and COPY, and an expunge never shifts sequence numbers
under another session in the middle of its command."""

from __future__ import annotations

import re
import smtplib
import time

from helpers import Harness, RawIMAP, make_message

Account = tuple[str, str]


def session(h: Harness, account: Account) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    client.login(*account)
    return client


def append(client: RawIMAP, n: int, mailbox: bytes = b"INBOX") -> None:
    response = client.command_literal(b"APPEND " + mailbox, make_message(f"s{n}"))
    assert response.status == b"OK", response


def wait_untagged(client: RawIMAP, pattern: bytes, timeout: float) -> tuple[bytes, float]:
    """Read untagged lines (in IDLE) until one matches ``pattern``; the line and seconds."""
    start = time.monotonic()
    client.sock.settimeout(timeout)
    try:
        while True:
            line = client.read_line()
            if re.search(pattern, line):
                return line, time.monotonic() - start
    finally:
        client.sock.settimeout(10)


def idle(client: RawIMAP) -> bytes:
    tag = client.next_tag()
    client.send(tag + b" IDLE\r\n")
    assert client.read_line().startswith(b"+"), "no continuation request for IDLE"
    return tag


def done(client: RawIMAP, tag: bytes) -> None:
    client.send(b"DONE\r\n")
    assert client.read_until(tag).status == b"OK"


def test_two_sessions_see_exists_flags_expunge(imap_server: Harness,
                                               imap_account: Account) -> None:
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        for n in range(3):
            append(a, n)
        a.command("SELECT INBOX")
        b.command("SELECT INBOX")
        append(a, 3)
        assert b"* 4 EXISTS" in b.command("NOOP").untagged
        a.command("STORE 2 +FLAGS (\\Flagged)")
        response = b.command("NOOP")
        assert any(re.match(rb"\* 2 FETCH \(.*\\Flagged", line) for line in response.untagged), \
            response
        a.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        a.command("EXPUNGE")
        response = b.command("NOOP")
        assert b"* 1 EXPUNGE" in response.untagged, response
        assert b.command("FETCH 3 UID").starting(b"3 FETCH (UID 4)")


def test_qresync_session_gets_vanished(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        for n in range(3):
            append(a, n)
        a.command("SELECT INBOX")
        assert b.command("ENABLE QRESYNC").status == b"OK"
        b.command("SELECT INBOX")
        a.command("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        a.command("UID EXPUNGE 2")
        response = b.command("NOOP")
        # RFC 7162 section 3.2.10: VANISHED (UIDs) instead of EXPUNGE once QRESYNC is on.
        assert b"* VANISHED 2" in response.untagged, response
        assert not response.starting(b"2 EXPUNGE"), response


def test_expunge_never_shifts_numbers_mid_command(imap_server: Harness,
                                                  imap_account: Account) -> None:
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        for n in range(5):
            append(a, n)
        a.command("SELECT INBOX")
        b.command("SELECT INBOX")
        a.command("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        a.command("EXPUNGE")
        # RFC 9051 section 7.5.1: no EXPUNGE during FETCH, STORE or SEARCH; b still counts 5.
        # (The UID variants MAY carry EXPUNGE: RFC 3501 section 7.4.1, so none is used here.)
        for command in ("FETCH 1:* (UID)", "STORE 3 +FLAGS (\\Seen)", "SEARCH ALL"):
            response = b.command(command)
            assert not any(b"EXPUNGE" in line for line in response.untagged), (command, response)
        response = b.command("FETCH 3:5 (UID)")
        uids = re.findall(rb"\* (\d) FETCH \(UID (\d+)\)", b"".join(
            line + b"\n" for line in response.untagged))
        assert uids == [(b"3", b"3"), (b"4", b"4"), (b"5", b"5")], response
        response = b.command("SEARCH ALL")
        assert response.starting(b"SEARCH"), response
        response = b.command("NOOP")
        assert response.untagged.count(b"* 1 EXPUNGE") == 2 or response.starting(b"2 EXPUNGE"), \
            response
        assert b.command("FETCH 1:* (UID)").starting(b"1 FETCH (UID 3)")


def test_idle_woken_by_smtp_delivery(imap_server: Harness, imap_account: Account) -> None:
    address, _ = imap_account
    with session(imap_server, imap_account) as watcher:
        watcher.command("SELECT INBOX")
        tag = idle(watcher)
        time.sleep(0.2)
        sent = time.monotonic()
        with smtplib.SMTP("127.0.0.1", imap_server.smtp_port, timeout=30) as smtp:
            smtp.sendmail("sender@remote.test", [address], make_message("idle-smtp"))
        accepted = time.monotonic() - sent
        _, waited = wait_untagged(watcher, rb"^\* 1 EXISTS", 5)
        assert waited - accepted < 1.0, f"EXISTS {waited - accepted:.2f} s after the 250"
        done(watcher, tag)


def test_idle_woken_by_append_and_copy(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        a.command("CREATE Other")
        append(a, 1, b"Other")
        b.command("SELECT INBOX")
        tag = idle(b)
        t0 = time.monotonic()
        append(a, 2)
        _, waited = wait_untagged(b, rb"^\* 1 EXISTS", 5)
        assert waited < 1.0 + (time.monotonic() - t0), waited
        a.command("SELECT Other")
        t0 = time.monotonic()
        assert a.command("COPY 1 INBOX").status == b"OK"
        _, waited = wait_untagged(b, rb"^\* 2 EXISTS", 5)
        assert waited < 1.0, waited
        t0 = time.monotonic()
        a.command("SELECT INBOX")
        a.command("STORE 1 +FLAGS (\\Seen)")
        line, waited = wait_untagged(b, rb"^\* 1 FETCH", 5)
        assert b"\\Seen" in line
        assert waited < 1.0
        done(b, tag)


def test_connections_per_account_limit(imap_server: Harness, imap_account: Account) -> None:
    """More than max_connections_per_account logins get NO [UNAVAILABLE] (issue 3, item 6)."""
    sessions: list[RawIMAP] = []
    try:
        refused = None
        for _ in range(60):
            client = RawIMAP(imap_server.port("imaps"), tls=imap_server.tls())
            sessions.append(client)
            response = client.command(f'LOGIN "{imap_account[0]}" "{imap_account[1]}"')
            if response.status != b"OK":
                refused = response
                break
        assert refused is not None, "60 sessions of one account were all let in"
        assert refused.status == b"NO", refused
        assert refused.code() == b"UNAVAILABLE", refused
    finally:
        for client in sessions:
            client.close()
