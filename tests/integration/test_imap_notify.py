"""NOTIFY (RFC 5465) against a real ``mailstead serve``: one session (RawIMAP, reading what
the server pushes while it sends no command) asks for events; another (imaplib) or SMTP
makes the changes. New, expunged and re-flagged messages of the selected mailbox arrive at
once (SELECTED) or with the expunges held back (SELECTED-DELAYED); other mailboxes give
STATUS; created, renamed and deleted mailboxes and subscriptions give LIST."""

from __future__ import annotations

import imaplib
import re
import smtplib
import time

import pytest
from helpers import Harness, RawIMAP, make_message

Account = tuple[str, str]


def watcher(h: Harness, account: Account) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    client.login(*account)
    return client


def actor(h: Harness, account: Account) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=15)
    client.login(*account)
    return client


def pushed(client: RawIMAP, pattern: bytes, timeout: float = 10) -> list[bytes]:
    """Untagged lines the server sends on its own, up to and including the first that
    matches ``pattern``, within ``timeout`` seconds (no command is sent)."""
    deadline = time.monotonic() + timeout
    lines: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing matching {pattern!r} pushed; got {lines}")
            client.sock.settimeout(left)
            try:
                line = client.read_line()
            except TimeoutError:
                continue
            lines.append(line)
            if re.search(pattern, line):
                return lines
    finally:
        client.sock.settimeout(10)


def silent(client: RawIMAP, seconds: float) -> None:
    """Nothing is pushed for ``seconds`` (a bounded check that something does not come)."""
    client.sock.settimeout(seconds)
    try:
        line = client.read_line()
    except TimeoutError:
        return
    finally:
        client.sock.settimeout(10)
    raise AssertionError(f"pushed unexpectedly: {line!r}")


def test_notify_selected_and_personal(imap_server: Harness, imap_account: Account) -> None:
    with watcher(imap_server, imap_account) as a, actor(imap_server, imap_account) as b:
        assert b" NOTIFY" in a.command("CAPABILITY").untagged[0]
        assert b.append("INBOX", None, None, make_message("n1"))[0] == "OK"
        assert b.create("Work")[0] == "OK"
        assert b.append("Work", None, None, make_message("w1"))[0] == "OK"
        assert a.command("SELECT INBOX").status == b"OK"
        response = a.command("NOTIFY SET STATUS (SELECTED (MessageNew (UID FLAGS) "
                             "MessageExpunge FlagChange)) (PERSONAL (MessageNew "
                             "MessageExpunge FlagChange MailboxName SubscriptionChange))")
        assert response.status == b"OK", response
        # RFC 5465 section 3.1: STATUS at once for the other mailboxes, not the selected.
        status = response.starting(b"STATUS")
        assert any(line.startswith(b"* STATUS Work (MESSAGES 1 UIDNEXT 2 ") for line in status)
        assert not any(b"INBOX" in line for line in status), status
        # The selected mailbox: new message with its fetch attributes, flags, expunge.
        b.append("INBOX", None, None, make_message("n2"))
        lines = pushed(a, rb"^\* 2 FETCH \(UID 2 FLAGS \(")
        assert b"* 2 EXISTS" in lines, lines
        b.select("INBOX")
        b.store("1", "+FLAGS", "(\\Flagged)")
        pushed(a, rb"^\* 1 FETCH \(UID 1 FLAGS \(.*\\Flagged")
        b.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        b.expunge()
        pushed(a, rb"^\* 1 EXPUNGE$")
        # Other mailboxes: STATUS for new messages and for flag changes (UNSEEN).
        b.append("Work", None, None, make_message("w2"))
        pushed(a, rb"^\* STATUS Work \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 2\)$")
        b.select("Work")
        b.store("1", "+FLAGS", "(\\Seen)")
        pushed(a, rb"^\* STATUS Work \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 1\)$")
        # MailboxName and SubscriptionChange (sections 5.4, 5.5).
        b.select("INBOX")
        assert b.create("Fresh")[0] == "OK"
        pushed(a, rb'^\* LIST \(\) "/" Fresh$')
        assert b.rename("Fresh", "Stale")[0] == "OK"
        pushed(a, rb'^\* LIST \(\) "/" Stale \("OLDNAME" \(Fresh\)\)$')
        assert b.subscribe("Stale")[0] == "OK"
        pushed(a, rb'^\* LIST \(\\Subscribed\) "/" Stale$')
        assert b.delete("Stale")[0] == "OK"
        pushed(a, rb'^\* LIST \(\\NonExistent\) "/" Stale$')
        # In IDLE too: the new message with its fetch attributes.
        tag = a.next_tag()
        a.send(tag + b" IDLE\r\n")
        assert a.read_line().startswith(b"+")
        b.append("INBOX", None, None, make_message("n4"))
        lines = pushed(a, rb"^\* 2 FETCH \(UID 3 FLAGS \(")
        assert b"* 2 EXISTS" in lines, lines
        a.send(b"DONE\r\n")
        assert a.read_until(tag).status == b"OK"
        # NOTIFY NONE: nothing more is pushed; the next command brings the news as before.
        assert a.command("NOTIFY NONE").status == b"OK"
        b.append("INBOX", None, None, make_message("n3"))
        silent(a, 1.0)
        assert b"* 3 EXISTS" in a.command("NOOP").untagged


def test_notify_selected_delayed_holds_expunges(imap_server: Harness,
                                                imap_account: Account) -> None:
    with watcher(imap_server, imap_account) as a, actor(imap_server, imap_account) as b:
        for n in range(2):
            b.append("INBOX", None, None, make_message(f"d{n}"))
        a.command("SELECT INBOX")
        assert a.command("NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge "
                         "FlagChange))").status == b"OK"
        b.select("INBOX")
        b.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        b.expunge()
        b.append("INBOX", None, None, make_message("d2"))
        # RFC 5465 section 6: the new message is pushed, the expunge waits for a command
        # that may carry it, so the numbers stay as they were until then.
        lines = pushed(a, rb"^\* 3 EXISTS$")
        assert not any(b"EXPUNGE" in line for line in lines), lines
        assert a.command("FETCH 2 (UID)").starting(b"2 FETCH (UID 2)")
        assert b"* 1 EXPUNGE" in a.command("NOOP").untagged


def test_notify_inboxes_by_smtp(imap_server: Harness, imap_account: Account) -> None:
    address, _ = imap_account
    with watcher(imap_server, imap_account) as a:
        assert a.command("NOTIFY SET (INBOXES (MessageNew MessageExpunge))").status == b"OK"
        with smtplib.SMTP("127.0.0.1", imap_server.smtp_port, timeout=30) as smtp:
            smtp.sendmail("sender@remote.test", [address], make_message("smtp1"))
        # Not selected: a STATUS for INBOX as soon as the delivery is committed.
        pushed(a, rb"^\* STATUS INBOX \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+\)$")


def test_notify_subtree_mailboxes_subscribed(imap_server: Harness,
                                             imap_account: Account) -> None:
    with watcher(imap_server, imap_account) as a, actor(imap_server, imap_account) as b:
        for name in ("Lists", "Lists/dev", "Other", "Named", "Quiet"):
            assert b.create(name)[0] == "OK"
        assert b.subscribe("Other")[0] == "OK"
        assert a.command("NOTIFY SET (SUBTREE Lists (MessageNew MessageExpunge)) "
                         "(MAILBOXES (Named) (MessageNew MessageExpunge)) "
                         "(SUBSCRIBED (MessageNew MessageExpunge))").status == b"OK"
        # RFC 5465 section 6: SUBTREE takes the mailbox and those below it, MAILBOXES the
        # ones named, SUBSCRIBED the subscribed ones; a mailbox in none of them is quiet.
        for name in ("Quiet", "Lists/dev", "Quiet", "Named", "Quiet", "Other"):
            assert b.append(name, None, None, make_message(f"t-{name}"))[0] == "OK"
        named: set[bytes] = set()
        while named != {b"Lists/dev", b"Named", b"Other"}:
            line = pushed(a, rb"^\* STATUS ")[-1]
            named.add(line.split(b" ")[2])
            assert b"Quiet" not in line, line
        silent(a, 0.5)  # and no STATUS for Quiet behind them


@pytest.mark.parametrize(("command", "status", "code"), [
    ("NOTIFY SET (SELECTED (MessageNew MessageExpunge MailboxMetadataChange))", b"NO",
     b"BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"),
    ("NOTIFY SET (PERSONAL (ServerMetadataChange))", b"NO", b"BADEVENT"),
    ("NOTIFY SET (SELECTED (MessageNew))", b"BAD", b""),
    ("NOTIFY SET (SELECTED (FlagChange))", b"BAD", b""),
    ("NOTIFY SET (PERSONAL (MessageNew (FLAGS) MessageExpunge))", b"BAD", b""),
    ("NOTIFY SET (SELECTED NONE) (SELECTED-DELAYED NONE)", b"BAD", b""),
    ("NOTIFY SET (NOWHERE (MessageNew MessageExpunge))", b"BAD", b""),
    ("NOTIFY SET", b"BAD", b""),
    ("NOTIFY MAYBE", b"BAD", b""),
])
def test_notify_refusals(imap_server: Harness, imap_account: Account, command: str,
                         status: bytes, code: bytes) -> None:
    with watcher(imap_server, imap_account) as a:
        response = a.command(command)
        assert response.status == status, response
        assert response.code().startswith(code), response
