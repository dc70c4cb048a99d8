"""OBJECTID (RFC 8474), SAVEDATE (RFC 8514), PREVIEW (RFC 8970), MULTIAPPEND (RFC 3502),
REPLACE (RFC 8508) and CATENATE (RFC 4469) against a real ``mailstead serve``, through
imaplib and, where the exact bytes matter, ``RawIMAP``."""

from __future__ import annotations

import imaplib
import re
import time
from datetime import UTC, datetime

from helpers import Harness, RawIMAP, set_quota
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


def plus(data: bytes) -> bytes:
    """A LITERAL+ literal (RFC 7888): header and octets in one go."""
    return b"{%d+}\r\n" % len(data) + data


def body_of(r: RawIMAP, uid: int) -> bytes:
    resp = r.command(f"UID FETCH {uid} BODY.PEEK[]")
    assert resp.status == b"OK", resp
    [line] = [u for u in resp.untagged if b"FETCH" in u]
    found = re.search(rb"BODY\[\] \{(\d+)\}\r\n", line)
    assert found, line[:200]
    start = found.end()
    return line[start : start + int(found.group(1))]


def uids_in(r: RawIMAP, mailbox: str) -> list[int]:
    r.command(f"EXAMINE {mailbox}")
    resp = r.command("UID SEARCH ALL")
    [line] = resp.starting(b"SEARCH")
    return [int(n) for n in line.split()[2:]]


def test_multiappend(imap_server: Harness, imap_account: Account) -> None:
    small = msg(1)
    # Over the spooling threshold (64 KiB): each goes to its own temporary file.
    big1 = msg(2, body=b"a" * 100_000 + b"\r\n")
    big2 = msg(3, body=b"b" * 150_000 + b"\r\n")
    with raw(imap_server, imap_account) as r:
        assert b"MULTIAPPEND" in r.command("CAPABILITY").untagged[0]
        uidvalidity = int(r.command("STATUS INBOX (UIDVALIDITY)").untagged[0].split()[-1][:-1])
        tag = r.next_tag()
        r.send(tag + b' APPEND INBOX (\\Seen) ' + plus(small)
               + b' (\\Flagged) "01-Feb-2020 10:00:00 +0000" ' + plus(big1)
               + b" " + plus(big2) + b"\r\n")
        resp = r.read_until(tag)
        # RFC 3502 section 6.3.11 with RFC 4315 section 3: one UID set for all.
        assert resp.status == b"OK", resp
        assert resp.code() == b"APPENDUID %d 1:3" % uidvalidity, resp
        r.command("SELECT INBOX")
        flags = r.command("UID FETCH 1:3 (FLAGS INTERNALDATE)").untagged
        assert b"\\Seen" in flags[0]
        assert b"\\Flagged" in flags[1]
        assert b" 1-Feb-2020 10:00:00 +0000" in flags[1]
        assert b"\\Flagged" not in flags[2]
        assert [body_of(r, 1), body_of(r, 2), body_of(r, 3)] == [small, big1, big2]
        # Synchronising literals: a continuation request before each message.
        tag = r.next_tag()
        r.send(tag + b" APPEND Archive {%d}\r\n" % len(small))
        assert r.read_line().startswith(b"+")
        r.send(small + b" {%d}\r\n" % len(big1))
        assert r.read_line().startswith(b"+")
        r.send(big1 + b"\r\n")
        resp = r.read_until(tag)
        assert resp.status == b"OK", resp
        assert uids_in(r, "Archive") == [1, 2]
        # All or none: a bad flag, or one message too many for the quota, appends nothing.
        tag = r.next_tag()
        r.send(tag + b" APPEND Archive " + plus(small) + b" (\\Bogus) " + plus(small)
               + b"\r\n")
        assert r.read_until(tag).status == b"BAD"
        tag = r.next_tag()
        r.send(tag + b" APPEND Archive " + plus(small) + b" " + plus(b"") + b"\r\n")
        assert r.read_until(tag).status == b"NO"
        assert uids_in(r, "Archive") == [1, 2]
        r.command("LOGOUT")


def test_multiappend_over_quota_appends_nothing(imap_server: Harness,
                                                imap_account: Account) -> None:
    set_quota(imap_server.data_dir, imap_account[0], 250_000)
    big = msg(5, body=b"q" * 100_000 + b"\r\n")
    with raw(imap_server, imap_account) as r:
        tag = r.next_tag()
        r.send(tag + b" APPEND INBOX " + plus(big) + b" " + plus(big) + b" " + plus(big)
               + b"\r\n")
        resp = r.read_until(tag)
        assert resp.status == b"NO", resp
        assert resp.code() == b"OVERQUOTA"
        assert uids_in(r, "INBOX") == []
        r.command("LOGOUT")


def test_replace(imap_server: Harness, imap_account: Account) -> None:
    v1, v2, v3 = (msg(n, subject=f"draft v{n}") for n in (1, 2, 3))
    with raw(imap_server, imap_account) as r:
        assert b"REPLACE" in r.command("CAPABILITY").untagged[0]
        assert r.command("REPLACE 1 Drafts {1+}\r\nx").status == b"BAD"  # not selected
        tag = r.next_tag()
        r.send(tag + b" APPEND Drafts (\\Draft) " + plus(v1) + b"\r\n")
        assert r.read_until(tag).status == b"OK"
        validity = int(r.command("STATUS Drafts (UIDVALIDITY)").untagged[0].split()[-1][:-1])
        r.command("SELECT Drafts")
        tag = r.next_tag()
        r.send(tag + b" UID REPLACE 1 Drafts (\\Draft \\Seen) " + plus(v2) + b"\r\n")
        resp = r.read_until(tag)
        assert resp.status == b"OK", resp
        # RFC 8508 section 3.3: APPENDUID untagged, the new message, the old one expunged.
        assert resp.untagged[0].startswith(b"* OK [APPENDUID %d 2]" % validity), resp
        assert b"* 1 EXPUNGE" in resp.untagged, resp
        assert b"* 1 EXISTS" in resp.untagged, resp  # the new one, after the EXPUNGE
        assert body_of(r, 2) == v2
        assert b"\\Seen" in r.command("UID FETCH 2 FLAGS").untagged[0]
        # By sequence number, into another mailbox: the draft leaves Drafts.
        tag = r.next_tag()
        r.send(tag + b" REPLACE 1 Sent " + plus(v3) + b"\r\n")
        resp = r.read_until(tag)
        assert resp.status == b"OK", resp
        assert b"* 1 EXPUNGE" in resp.untagged, resp
        assert uids_in(r, "Sent") == [1]
        assert uids_in(r, "Drafts") == []
        r.command("SELECT Sent")
        assert body_of(r, 1) == v3
        # A UID that is not there, a number out of range, a read-only mailbox.
        tag = r.next_tag()
        r.send(tag + b" UID REPLACE 99 Sent " + plus(v1) + b"\r\n")
        assert r.read_until(tag).status == b"NO"
        tag = r.next_tag()
        r.send(tag + b" REPLACE 5 Sent " + plus(v1) + b"\r\n")
        assert r.read_until(tag).status == b"BAD"
        r.command("EXAMINE Sent")
        tag = r.next_tag()
        r.send(tag + b" REPLACE 1 Sent " + plus(v1) + b"\r\n")
        resp = r.read_until(tag)
        assert resp.status == b"NO", resp
        assert resp.code() == b"READ-ONLY"
        assert uids_in(r, "Sent") == [1]
        r.command("LOGOUT")


def test_catenate(imap_server: Harness, imap_account: Account) -> None:
    original = (b"From: <a@example.test>\r\nSubject: forwarded\r\nMIME-Version: 1.0\r\n"
                b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
                b"Content-Type: text/plain\r\n\r\nfirst part\r\n--x\r\n"
                b"Content-Type: application/octet-stream\r\n\r\nSECOND\r\n--x--\r\n")
    head = (b"From: <me@example.test>\r\nSubject: with attachment\r\n"
            b'Content-Type: multipart/mixed; boundary="y"\r\n\r\n--y\r\n'
            b"Content-Type: text/plain\r\n\r\nsee below\r\n--y\r\n")
    tail = b"\r\n--y--\r\n"
    with raw(imap_server, imap_account) as r:
        assert b"CATENATE" in r.command("CAPABILITY").untagged[0]
        tag = r.next_tag()
        r.send(tag + b" APPEND INBOX " + plus(original) + b"\r\n")
        assert r.read_until(tag).status == b"OK"
        validity = int(r.command("STATUS INBOX (UIDVALIDITY)").untagged[0].split()[-1][:-1])
        url = b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2.MIME"' % validity
        part = b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2"' % validity
        tag = r.next_tag()
        r.send(tag + b" APPEND Drafts (\\Draft) CATENATE (TEXT " + plus(head) + b" URL " + url
               + b" URL " + part + b" TEXT " + plus(tail) + b")\r\n")
        resp = r.read_until(tag)
        assert resp.status == b"OK", resp
        assert resp.code().startswith(b"APPENDUID "), resp
        r.command("SELECT Drafts")
        expected = head + b"Content-Type: application/octet-stream\r\n\r\nSECOND" + tail
        assert body_of(r, 1) == expected
        # Relative to the selected mailbox, a whole message: RFC 4469 section 5.
        tag = r.next_tag()
        r.send(tag + b' APPEND Drafts CATENATE (URL ";UID=1" TEXT ' + plus(b"\r\nP.S.\r\n")
               + b")\r\n")
        assert r.read_until(tag).status == b"OK"
        assert body_of(r, 2) == expected + b"\r\nP.S.\r\n"
        # RFC 4469 section 6: what we cannot serve is NO [BADURL ...], and nothing is saved.
        for bad in (b'"imap://me@other.test/INBOX;UIDVALIDITY=1/;UID=1"',
                    b'"/INBOX;UIDVALIDITY=%d/;UID=1"' % (validity + 1),
                    b'"/INBOX;UIDVALIDITY=%d/;UID=77"' % validity,
                    b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=9"' % validity,
                    b'"/Nowhere;UIDVALIDITY=1/;UID=1"'):
            tag = r.next_tag()
            r.send(tag + b" APPEND Drafts CATENATE (TEXT " + plus(b"x") + b" URL " + bad
                   + b")\r\n")
            resp = r.read_until(tag)
            assert resp.status == b"NO", (bad, resp)
            assert resp.code() == b"BADURL " + bad.strip(b'"'), (bad, resp)
        # A MULTIAPPEND of which the second is a CATENATE with a bad URL appends neither.
        tag = r.next_tag()
        r.send(tag + b" APPEND Drafts " + plus(msg(9)) + b' CATENATE (URL ";UID=5")\r\n')
        assert r.read_until(tag).status == b"NO"
        assert uids_in(r, "Drafts") == [1, 2]
        r.command("LOGOUT")


def test_catenate_toobig_and_replace_from_the_old_draft(imap_server: Harness,
                                                       imap_account: Account) -> None:
    with raw(imap_server, imap_account) as r:
        caps = r.command("CAPABILITY").untagged[0]
        found = re.search(rb"APPENDLIMIT=(\d+)", caps)
        assert found, caps
        limit = int(found.group(1))
        # Two URLs to a message of more than half of APPENDLIMIT: RFC 4469 section 5 TOOBIG.
        big = msg(1, body=b"z" * (limit // 2 + 10) + b"\r\n")
        tag = r.next_tag()
        r.send(tag + b" APPEND Drafts " + plus(big) + b"\r\n")
        assert r.read_until(tag).status == b"OK"
        r.command("SELECT Drafts")
        tag = r.next_tag()
        r.send(tag + b' APPEND Drafts CATENATE (URL ";UID=1" URL ";UID=1")\r\n')
        resp = r.read_until(tag)
        assert resp.status == b"NO", resp
        assert resp.code() == b"TOOBIG"
        # A client saving a draft again: REPLACE it by the old one's body and a new header.
        header = b"Subject: draft, edited\r\n\r\n"  # BODY[TEXT] starts after the blank line
        tag = r.next_tag()
        r.send(tag + b" UID REPLACE 1 Drafts CATENATE (TEXT " + plus(header)
               + b' URL ";UID=1/;SECTION=TEXT")\r\n')
        resp = r.read_until(tag)
        assert resp.status == b"OK", resp
        assert uids_in(r, "Drafts") == [2]
        r.command("SELECT Drafts")
        assert body_of(r, 2) == header + big.split(b"\r\n\r\n", 1)[1]
        r.command("LOGOUT")


def test_multiappend_literals_are_bounded_in_all(imap_server: Harness,
                                                 imap_account: Account) -> None:
    """One command's spooled literals may total 8 x APPENDLIMIT (servers/imap.py): the next
    synchronising literal past that is refused before it is sent, and nothing is stored."""
    with raw(imap_server, imap_account) as r:
        found = re.search(rb"APPENDLIMIT=(\d+)", r.command("CAPABILITY").untagged[0])
        assert found
        limit = int(found.group(1))
        one = msg(1, body=b"w" * (limit - 400) + b"\r\n")
        assert len(one) <= limit
        tag = r.next_tag()
        r.send(tag + b" APPEND INBOX {%d}\r\n" % len(one))
        for _ in range(7):
            assert r.read_line().startswith(b"+")
            r.send(one + b" {%d}\r\n" % len(one))
        assert r.read_line().startswith(b"+")
        r.send(one + b" {%d}\r\n" % limit)  # the ninth would pass 8 x APPENDLIMIT
        line = r.read_line()
        assert line.startswith(tag + b" NO [TOOBIG]"), line
        assert r.command("NOOP").status == b"OK"  # the session goes on
        assert uids_in(r, "INBOX") == []
        r.command("LOGOUT")
