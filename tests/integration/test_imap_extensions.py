"""OBJECTID (RFC 8474), SAVEDATE (RFC 8514), PREVIEW (RFC 8970), MULTIAPPEND (RFC 3502),
REPLACE (RFC 8508) and CATENATE (RFC 4469) against a real ``mailstead serve``, through
imaplib and, where the exact bytes matter, ``RawIMAP``."""

from __future__ import annotations

import imaplib
import re
import time
from datetime import UTC, datetime

from helpers import Harness
from test_imap_commands import Account, deliver, logged_in, msg, raw

_ID = re.compile(rb"^[A-Za-z0-9_-]{1,255}$")


def fetched(client: imaplib.IMAP4, uids: str, items: str) -> dict[int, bytes]:
    """UID -> the FETCH response text of each message."""
    typ, data = client.uid("FETCH", uids, items)
    assert typ == "OK", data
    out: dict[int, bytes] = {}
    for entry in data:
        line = entry[0] + entry[1] if isinstance(entry, tuple) else entry
        if not isinstance(line, bytes) or b"UID " not in line:
            continue
        found = re.search(rb"UID (\d+)", line)
        assert found, line
        out[int(found.group(1))] = line
    return out


def item(line: bytes, name: bytes) -> bytes:
    found = re.search(name + rb" \(([^)]*)\)", line)
    assert found, (name, line)
    assert _ID.match(found.group(1)), found.group(1)  # RFC 8474 section 4: objectid
    return found.group(1)


def test_object_ids(imap_server: Harness, imap_account: Account) -> None:
    address = imap_account[0]
    with logged_in(imap_server, imap_account) as client:
        for cap in ("OBJECTID", "SAVEDATE", "PREVIEW"):
            assert cap in client.capabilities
        typ, data = client.create("Projects")
        assert typ == "OK"
        created = re.search(rb"\[MAILBOXID \(([^)]+)\)\]", data[0])
        assert created, data
        box_id = created.group(1)
        typ, data = client.status("Projects", "(MESSAGES MAILBOXID)")
        assert typ == "OK", data
        assert b"MAILBOXID (" + box_id + b")" in data[0], data
        # RFC 8474 section 4.1: RENAME keeps the MAILBOXID; another mailbox has its own.
        assert client.rename("Projects", "Work")[0] == "OK"
        client.select("Work")
        assert client.response("MAILBOXID")[1] == [b"(" + box_id + b")"]
        client.select("INBOX")
        assert client.response("MAILBOXID")[1][0] != b"(" + box_id + b")"

        deliver(imap_server, address, [msg(1, subject="root")])
        reply = msg(2, subject="Re: root", extra=("In-Reply-To: <m1@client.example.test>",
                                                   "References: <m1@client.example.test>"))
        assert client.append("INBOX", None, None, reply)[0] == "OK"
        deliver(imap_server, address, [msg(3, subject="unrelated")])
        # A reply to the reply carrying only References still joins.
        deeper = msg(4, subject="Re: Re: root",
                     extra=("References: <m1@client.example.test> <m2@client.example.test>",))
        assert client.append("INBOX", None, None, deeper)[0] == "OK"
        client.select("INBOX")
        lines = fetched(client, "1:*", "(EMAILID THREADID)")
        assert sorted(lines) == [1, 2, 3, 4], lines
        threads = {uid: item(line, b"THREADID") for uid, line in lines.items()}
        emails = {uid: item(line, b"EMAILID") for uid, line in lines.items()}
        assert threads[1] == threads[2] == threads[4] != threads[3], (threads, lines)
        assert len(set(emails.values())) == 4
        # RFC 8474 section 5.1: the EMAILID survives COPY and MOVE; so does the thread.
        typ, _ = client.uid("COPY", "2", "Work")
        assert typ == "OK"
        client.select("Work")
        [copy_line] = fetched(client, "1:*", "(EMAILID THREADID)").values()
        assert item(copy_line, b"EMAILID") == emails[2]
        assert item(copy_line, b"THREADID") == threads[2]
        client.select("INBOX")
        # RFC 8474 section 6: SEARCH EMAILID / THREADID.
        typ, data = client.uid("SEARCH", None, "THREADID", threads[1].decode())
        assert typ == "OK", data
        assert data[0].split() == [b"1", b"2", b"4"], data
        typ, data = client.uid("SEARCH", None, "EMAILID", emails[3].decode())
        assert typ == "OK", data
        assert data[0].split() == [b"3"], data
        typ, data = client.uid("SEARCH", None, "THREADID", "Tnosuchthread")
        assert typ == "OK", data
        assert data[0].split() == [], data
        client.logout()


def test_savedate(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        old = imaplib.Time2Internaldate(datetime(2001, 5, 6, 7, 8, 9, tzinfo=UTC))
        before = time.time()
        assert client.append("INBOX", None, old, msg(1))[0] == "OK"
        client.select("INBOX")
        [line] = fetched(client, "1", "(INTERNALDATE SAVEDATE)").values()
        assert b'INTERNALDATE " 6-May-2001' in line, line
        saved = re.search(rb'SAVEDATE "([^"]+)"', line)
        assert saved, line
        when = datetime.strptime(saved.group(1).decode(), "%d-%b-%Y %H:%M:%S %z").timestamp()
        assert before - 2 <= when <= time.time() + 2  # RFC 8514: when it was saved, not sent
        assert client.uid("COPY", "1", "Archive")[0] == "OK"
        today = imaplib.Time2Internaldate(time.time())[1:12]
        for key, expected in (
            (f"SAVEDON {today}", [b"1"]), ("SAVEDBEFORE 1-Jan-2002", []),
            ("SAVEDSINCE 1-Jan-2002", [b"1"]), ("SAVEDATESUPPORTED", [b"1"]),
            ("BEFORE 1-Jan-2002", [b"1"]),
        ):
            typ, data = client.uid("SEARCH", None, *key.split())
            assert typ == "OK", (key, data)
            assert data[0].split() == expected, (key, data)
        client.select("Archive")
        [copied] = fetched(client, "1", "(INTERNALDATE SAVEDATE)").values()
        assert b'INTERNALDATE " 6-May-2001' in copied
        copy_saved = re.search(rb'SAVEDATE "([^"]+)"', copied)
        assert copy_saved, copied
        # RFC 8514 section 3: a COPY is saved into its mailbox when the COPY happens.
        copy_when = datetime.strptime(copy_saved.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
        assert when <= copy_when.timestamp() <= time.time() + 2
        client.logout()


def test_preview(imap_server: Harness, imap_account: Account) -> None:
    alternative = (
        b"Subject: alt\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html <b>part</b></p>\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 at  noon,\r\n"
        b"  see you\r\n--b--\r\n"
    )
    html = (b"Subject: h\r\nContent-Type: text/html\r\n\r\n<html><head><style>p{}</style>"
            b"</head><body><script>alert(1)</script><p>Hello &amp; welcome</p></body></html>\r\n")
    image = (b"Subject: i\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
             b"\r\niVBORw0KGgo=\r\n")
    long = b"Subject: l\r\n\r\n" + b"word " * 200 + b"\r\n"
    with logged_in(imap_server, imap_account) as client:
        for message in (alternative, html, image, long):
            assert client.append("INBOX", None, None, message)[0] == "OK"
        client.select("INBOX")
    with raw(imap_server, imap_account) as r:
        r.command("ENABLE UTF8=ACCEPT")
        r.command("SELECT INBOX")
        resp = r.command("UID FETCH 1:4 (PREVIEW)")
        assert resp.status == b"OK", resp
        lines = resp.starting(b"")
        assert 'PREVIEW "Café at noon, see you"'.encode() in lines[0], lines
        assert b'PREVIEW "Hello & welcome"' in lines[1], lines
        assert b"PREVIEW NIL" in lines[2], lines
        found = re.search(rb'PREVIEW "([^"]*)"', lines[3])
        assert found, lines[3]  # RFC 8970 section 3.1
        assert len(found.group(1)) == 256, lines[3]  # RFC 8970 section 3.1
        lazy = r.command("UID FETCH 2 (UID PREVIEW (LAZY) FLAGS)")
        assert lazy.status == b"OK", lazy
        assert b'PREVIEW "Hello & welcome"' in lazy.untagged[0], lazy
        # A message fetched for its preview is not marked \Seen (RFC 8970 section 3).
        flags = r.command("UID FETCH 1:4 (FLAGS)")
        assert all(b"\\Seen" not in line for line in flags.untagged), flags
        r.command("LOGOUT")

