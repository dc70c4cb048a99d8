"""The same server through IMAPClient, whose stricter response parser is a second opinion on
the syntax of what Mailstead sends (ENVELOPE, BODYSTRUCTURE, ESEARCH, SORT, THREAD, IDLE)."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from helpers import Harness, make_message, rich_message
from imapclient import IMAPClient

Account = tuple[str, str]


@pytest.fixture
def client(imap_server: Harness, imap_account: Account) -> Iterator[IMAPClient]:
    with IMAPClient("127.0.0.1", port=imap_server.port("imaps"), ssl=True,
                    ssl_context=imap_server.tls(), timeout=15) as c:
        c.login(*imap_account)
        yield c


def test_folders_and_capabilities(client: IMAPClient) -> None:
    caps = set(client.capabilities())
    assert {b"IDLE", b"MOVE", b"CONDSTORE", b"QRESYNC", b"SORT", b"ESEARCH"} <= caps
    client.create_folder("Projects/One")
    assert client.folder_exists("Projects/One")
    client.rename_folder("Projects", "Work")
    names = {name for _, _, name in client.list_folders()}
    assert {"INBOX", "Work", "Work/One", "Sent", "Trash"} <= names
    assert client.find_special_folder(b"\\Sent") == "Sent"
    client.subscribe_folder("Work/One")
    assert "Work/One" in {name for _, _, name in client.list_sub_folders()}
    ns = client.namespace()
    assert ns.personal == (("", "/"),)
    status = client.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UNSEEN"])
    assert status[b"MESSAGES"] == 0
    assert status[b"UIDNEXT"] == 1
    assert client.id_({"name": "imapclient"}) is not None
    client.delete_folder("Work/One")
    assert not client.folder_exists("Work/One")


def test_append_fetch_envelope_bodystructure(client: IMAPClient) -> None:
    message = rich_message("ic-1")
    when = datetime(2023, 7, 14, 2, 44, 25, tzinfo=UTC)
    result = client.append("INBOX", message, flags=[b"\\Flagged"], msg_time=when)
    assert b"APPENDUID" in result
    client.select_folder("INBOX")
    data = client.fetch(client.search("ALL"), ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "INTERNALDATE",
                                "RFC822.SIZE", "BODY.PEEK[]", "BINARY.SIZE[2]"])
    (_uid, item), = data.items()
    envelope = item[b"ENVELOPE"]
    assert envelope.subject == b"test ic-1"
    assert envelope.from_[0].mailbox == b"sender"
    assert envelope.from_[0].host == b"remote.test"
    assert envelope.message_id == b"<ic-1@client.example.test>"
    structure = item[b"BODYSTRUCTURE"]
    assert structure.is_multipart
    assert structure[1].lower() == b"mixed"
    assert item[b"BODY[]"] == message
    assert item[b"RFC822.SIZE"] == len(message)
    assert b"\\Flagged" in item[b"FLAGS"]
    assert item[b"INTERNALDATE"].replace(tzinfo=None) == when.replace(tzinfo=None) or \
        item[b"INTERNALDATE"].timestamp() == when.timestamp()
    assert item[b"BINARY.SIZE[2]"] == 2048


def test_search_sort_thread_store_move(client: IMAPClient) -> None:
    for n, subject in enumerate(["beta", "alpha", "Re: beta"]):
        extra = ("In-Reply-To: <ic-0@client.example.test>",) if n == 2 else ()
        client.append("INBOX", make_message(f"ic-{n}", extra_headers=extra).replace(
            f"Subject: test ic-{n}".encode(), f"Subject: {subject}".encode()))
    client.select_folder("INBOX")
    assert client.search(["SUBJECT", "beta"]) == [1, 3]
    assert client.search("UNSEEN") == [1, 2, 3]
    assert client.sort(["SUBJECT"]) == [2, 1, 3]
    threads = client.thread("REFERENCES")
    assert (1, 3) in threads
    assert (2,) in threads
    client.add_flags([1], [b"\\Seen", b"$Done"])
    assert set(client.get_flags([1])[1]) - {b"\\Recent"} == {b"\\Seen", b"$Done"}
    client.remove_flags([1], [b"$Done"])
    assert set(client.get_flags([1])[1]) - {b"\\Recent"} == {b"\\Seen"}
    client.create_folder("Done")
    client.move([1], "Done")
    assert client.search("ALL") == [2, 3]
    client.copy([2], "Done")
    assert client.folder_status("Done", ["MESSAGES"])[b"MESSAGES"] == 2
    client.delete_messages([2])
    client.expunge()
    assert client.search("ALL") == [3]
    quota = client.get_quota_root("INBOX")
    assert quota[0].quota_roots == [""] or quota[0].quota_roots == ['""']


def test_condstore_select_and_changedsince(client: IMAPClient) -> None:
    client.enable("CONDSTORE")
    for n in range(3):
        client.append("INBOX", make_message(f"cs-{n}"))
    info = client.select_folder("INBOX")
    highest = info[b"HIGHESTMODSEQ"]
    client.add_flags([2], [b"\\Answered"])
    changed = client.fetch(client.search("ALL"), ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
    assert list(changed) == [2]
    assert changed[2][b"MODSEQ"][0] > highest


def test_idle_sees_delivery(imap_server: Harness, imap_account: Account,
                            client: IMAPClient) -> None:
    client.select_folder("INBOX")
    client.idle()
    with smtplib.SMTP("127.0.0.1", imap_server.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@remote.test", [imap_account[0]], make_message("ic-idle"))
    t0 = time.monotonic()
    responses = client.idle_check(timeout=5)
    client.idle_done()
    assert (1, b"EXISTS") in responses, responses
    assert time.monotonic() - t0 < 1.5
