"""IMAP commands of RFC 3501 / RFC 9051 and their extensions against a real ``mailstead serve``,
driven by Python's imaplib (one client real users have) and, where the exact bytes matter,
by ``RawIMAP``. Every test gets a fresh account (``imap_account``)."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import time
import zlib
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import pytest
from helpers import (
    REMOTE_CLIENT,
    Harness,
    RawIMAP,
    RemoteIMAP4,
    make_message,
    rich_message,
    set_quota,
)

REQUIRED_CAPS = {
    "IMAP4REV1", "IMAP4REV2", "SASL-IR", "AUTH=PLAIN", "ENABLE", "IDLE", "NAMESPACE",
    "UIDPLUS", "MOVE", "UNSELECT", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "ESEARCH",
    "SEARCHRES", "SORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "CONDSTORE", "QRESYNC",
    "QUOTA", "UTF8=ACCEPT", "ID", "BINARY", "STATUS=SIZE", "COMPRESS=DEFLATE",
}

Account = tuple[str, str]


def parsedate(value: bytes) -> float:
    """An IMAP date-time ("14-Jul-2023 02:44:25 +0200") as a POSIX timestamp."""
    day, month, rest = value.decode().split("-", 2)
    return parsedate_to_datetime(f"{day} {month} {rest}").timestamp()


def imaps(h: Harness) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=15)


def logged_in(h: Harness, account: Account) -> imaplib.IMAP4_SSL:
    client = imaps(h)
    typ, _ = client.login(*account)
    assert typ == "OK"
    return client


def raw(h: Harness, account: Account | None = None) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    if account is not None:
        client.login(*account)
    return client


def deliver(h: Harness, to: str, messages: list[bytes]) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=30) as client:
        for message in messages:
            client.sendmail("sender@remote.test", [to], message)


def msg(n: int, *, subject: str | None = None, sender: str = "sender@remote.test",
        extra: tuple[str, ...] = (), body: bytes | None = None) -> bytes:
    headers = [f"From: <{sender}>", "To: <rcpt@example.test>",
               f"Subject: {subject if subject is not None else f'message {n}'}",
               f"Date: Mon, 0{1 + n % 9} Jan 2024 10:00:00 +0000",
               f"Message-ID: <m{n}@client.example.test>", *extra]
    text = body if body is not None else f"body of message {n}\r\n".encode()
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + text


def fill(client: imaplib.IMAP4, mailbox: str, messages: list[bytes]) -> None:
    for message in messages:
        typ, data = client.append(mailbox, None, None, message)
        assert typ == "OK", data


# ---------------------------------------------------------------------------------------------
# Connection state: capabilities, TLS, login


def test_capability_list_on_993_and_143(imap_server: Harness) -> None:
    with imaps(imap_server) as client:
        assert set(client.capabilities) >= REQUIRED_CAPS, client.capabilities
        assert "LOGINDISABLED" not in client.capabilities
        assert "STARTTLS" not in client.capabilities  # RFC 9051 section 6.2.1: not once in TLS
        assert any(c.startswith("APPENDLIMIT=") for c in client.capabilities)
        client.logout()

    with RemoteIMAP4("127.0.0.1", imap_server.port("imap"), timeout=15) as plain:
        caps = set(plain.capabilities)
        assert {"STARTTLS", "LOGINDISABLED"} <= caps
        assert "AUTH=PLAIN" not in caps  # RFC 9051 section 6.2.1: no mechanisms before TLS
        plain.starttls(imap_server.tls())
        caps = set(plain.capabilities)
        assert "LOGINDISABLED" not in caps
        assert "STARTTLS" not in caps
        assert caps >= REQUIRED_CAPS
        plain.logout()


def test_143_refuses_login_before_starttls(imap_server: Harness, imap_account: Account) -> None:
    address, password = imap_account
    with RawIMAP(imap_server.port("imap"), source=REMOTE_CLIENT) as client:
        assert client.greeting.startswith(b"* OK")
        response = client.command(f'LOGIN "{address}" "{password}"')
        assert response.status == b"NO", response
        assert response.code() == b"PRIVACYREQUIRED", response
        plain = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
        response = client.command(f"AUTHENTICATE PLAIN {plain}")
        assert response.status in (b"NO", b"BAD"), response
        client.starttls(imap_server.tls())
        caps = client.command("CAPABILITY")
        assert b"LOGINDISABLED" not in caps.untagged[0], caps
        client.login(address, password)
        assert client.command("SELECT INBOX").status == b"OK"


def test_login_failures(imap_server: Harness, imap_account: Account) -> None:
    address, password = imap_account
    with raw(imap_server) as client:
        response = client.command(f'LOGIN "{address}" "wrong-{password}"')
        assert response.status == b"NO"
        assert response.code() == b"AUTHENTICATIONFAILED"
        response = client.command('LOGIN "nobody@example.test" "x"')
        assert response.status == b"NO"
        assert response.code() == b"AUTHENTICATIONFAILED"
        # Commands of the authenticated state are refused before login.
        assert client.command("SELECT INBOX").status == b"BAD"
        client.login(address, password)
        assert client.command(f'LOGIN "{address}" "{password}"').status == b"BAD"


def test_authenticate_plain_sasl_ir_and_continuation(imap_server: Harness,
                                                    imap_account: Account) -> None:
    address, password = imap_account
    token = base64.b64encode(f"\0{address}\0{password}".encode())
    with raw(imap_server) as client:  # RFC 4959 SASL-IR: initial response on the line
        response = client.command(b"AUTHENTICATE PLAIN " + token)
        assert response.status == b"OK", response
        assert client.command("SELECT INBOX").status == b"OK"
    with raw(imap_server) as client:  # no initial response: "+ " then the response
        tag = client.next_tag()
        client.send(tag + b" AUTHENTICATE PLAIN\r\n")
        assert client.read_line().startswith(b"+")
        client.send(token + b"\r\n")
        assert client.read_until(tag).status == b"OK"
    with raw(imap_server) as client:  # RFC 9051 section 6.2.2: "*" cancels with BAD
        tag = client.next_tag()
        client.send(tag + b" AUTHENTICATE PLAIN\r\n")
        assert client.read_line().startswith(b"+")
        client.send(b"*\r\n")
        assert client.read_until(tag).status == b"BAD"
        bad = base64.b64encode(f"\0{address}\0nope".encode())
        response = client.command(b"AUTHENTICATE PLAIN " + bad)
        assert response.status == b"NO"
        assert response.code() == b"AUTHENTICATIONFAILED"
        response = client.command(b"AUTHENTICATE PLAIN !!notbase64!!")
        assert response.status in (b"BAD", b"NO")
        assert client.command("AUTHENTICATE CRAM-MD5").status in (b"NO", b"BAD")


def test_imaplib_authenticate_plain(imap_server: Harness, imap_account: Account) -> None:
    address, password = imap_account
    with imaps(imap_server) as client:
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0{address}\0{password}".encode())
        assert typ == "OK"
        assert client.select("INBOX")[0] == "OK"
        client.logout()


def test_enable_and_id_and_namespace(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        response = client.command("ENABLE CONDSTORE QRESYNC")
        assert response.status == b"OK"
        enabled = b" ".join(response.starting(b"ENABLED")).upper()
        assert b"CONDSTORE" in enabled
        assert b"QRESYNC" in enabled
        response = client.command("ENABLE X-UNKNOWN")
        assert response.status == b"OK"
        assert b"X-UNKNOWN" not in b"".join(response.untagged)
        response = client.command('ID ("name" "pytest" "version" "1")')
        assert response.status == b"OK"
        assert response.starting(b"ID"), response
        assert client.command("ID NIL").status == b"OK"
        response = client.command("NAMESPACE")
        assert response.status == b"OK"
        assert response.starting(b'NAMESPACE (("" "/")) NIL NIL'), response


# ---------------------------------------------------------------------------------------------
# Mailboxes


def test_select_and_examine(imap_server: Harness, imap_account: Account) -> None:
    address, _ = imap_account
    deliver(imap_server, address, [msg(n) for n in range(3)])
    with raw(imap_server, imap_account) as client:
        response = client.command("SELECT INBOX")
        assert response.status == b"OK", response
        assert response.code() == b"READ-WRITE", response
        assert b"* 3 EXISTS" in response.untagged
        joined = b"\n".join(response.untagged)
        for item in (rb"\* FLAGS \(", rb"PERMANENTFLAGS \(", rb"UIDVALIDITY \d+",
                     rb"UIDNEXT 4\]", rb"\* 3 RECENT"):
            assert re.search(item, joined), (item, joined)
        response = client.command("EXAMINE inbox")  # INBOX is case-insensitive
        assert response.status == b"OK", response
        assert response.code() == b"READ-ONLY", response
        assert client.command("STORE 1 +FLAGS (\\Seen)").status == b"NO"
        assert client.command("SELECT Nonexistent").status == b"NO"
        # A failed SELECT leaves no mailbox selected (RFC 9051 section 6.3.2).
        assert client.command("FETCH 1 FLAGS").status == b"BAD"


def test_create_delete_rename(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        assert client.create("Projects/2024/Q1")[0] == "OK"  # parents are created too
        # imaplib's default sends ``LIST "" *`` with the bare wildcard as the whole pattern
        # (RFC 9051 section 9 list-mailbox = 1*list-char).
        typ, listed = client.list('""', "*")
        assert typ == "OK", listed
        names = b"\n".join(listed)
        assert names == b"\n".join(client.list()[1])
        assert b'"/" Projects/2024/Q1' in names
        assert b'"/" Projects/2024' in names
        typ, data = client.create("Projects")
        assert typ == "NO"
        assert b"ALREADYEXISTS" in data[0]
        typ, data = client.delete("Nope")
        assert typ == "NO"
        assert b"NONEXISTENT" in data[0]
        assert client.delete("INBOX")[0] == "NO"
        assert client.rename("Projects", "Work")[0] == "OK"  # children move with it
        names = b"\n".join(client.list()[1])
        assert b"Work/2024/Q1" in names
        assert b"Projects" not in names
        assert client.rename("Work", "Sent")[0] == "NO"  # target exists
        assert client.rename("Missing", "Elsewhere")[0] == "NO"
        # RFC 9051 section 6.3.6: renaming INBOX moves its messages, INBOX stays (empty).
        fill(client, "INBOX", [msg(1), msg(2)])
        assert client.rename("INBOX", "Old-Inbox")[0] == "OK"
        assert client.select("INBOX")[1] == [b"0"]
        assert client.select("Old-Inbox")[1] == [b"2"]
        client.close()
        # Deleting a mailbox with children: RFC 9051 6.3.5 allows it (it becomes \NoSelect) or NO.
        typ, _ = client.delete("Work/2024")
        if typ == "OK":
            listed = b"\n".join(client.list('""', "Work*")[1])
            assert b"Work/2024/Q1" in listed
        assert client.delete("Work/2024/Q1")[0] == "OK"
        client.logout()


def test_list_unquoted_wildcard_pattern(imap_server: Harness, imap_account: Account) -> None:
    """imaplib sends ``LIST "" Work*``: RFC 9051 section 9 list-mailbox = 1*list-char, and
    list-char includes the wildcards, so an unquoted pattern is valid."""
    with raw(imap_server, imap_account) as client:
        client.command("CREATE Work/Sub")
        response = client.command('LIST "" Work*')
        assert response.status == b"OK", response
        assert len(response.starting(b"LIST")) == 2, response
        response = client.command("LIST \"\" %")
        assert response.status == b"OK", response
        assert b"Work" in b"".join(response.untagged), response


def test_subscribe_lsub_and_list_extended(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        fill(client, "INBOX", [msg(1), msg(2)])
        assert client.create("Lists/Python")[0] == "OK"
        assert client.subscribe("Lists/Python")[0] == "OK"
        assert client.subscribe("INBOX")[0] == "OK"
        lsub = b"\n".join(x for x in client.lsub()[1] if x)
        assert b"Lists/Python" in lsub
        assert b"INBOX" in lsub
        assert client.unsubscribe("INBOX")[0] == "OK"
        lsub = b"\n".join(x for x in client.lsub()[1] if x)
        assert b"INBOX" not in lsub
        client.logout()

    with raw(imap_server, imap_account) as r:
        response = r.command('LIST (SUBSCRIBED) "" "*"')
        assert response.status == b"OK"
        listed = b"\n".join(response.untagged)
        assert b"Lists/Python" in listed
        assert b"\\Subscribed" in listed
        assert b" INBOX" not in listed
        response = r.command('LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN SIZE) SPECIAL-USE '
                             "CHILDREN)")
        assert response.status == b"OK", response
        statuses = b"\n".join(response.starting(b"STATUS"))
        assert re.search(rb'STATUS "?INBOX"? \(.*MESSAGES 2', statuses), response
        assert re.search(rb'\\HasChildren\) "/" "?Lists"?', b"\n".join(response.untagged))
        response = r.command('LIST (SPECIAL-USE) "" "*"')
        assert response.status == b"OK"
        uses = b"\n".join(response.untagged)
        for flag in (b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk"):
            assert flag in uses
        assert b"Lists/Python" not in uses
        response = r.command('LIST "" ""')  # RFC 9051 section 6.3.9: the delimiter
        assert response.starting(b'LIST (\\Noselect) "/" ""'), response
        response = r.command('LIST "" "Lists/%"')
        assert response.starting(b'LIST (')
        assert b"Lists/Python" in response.untagged[0]
        response = r.command('CREATE "Archive/2024" (USE (\\Archive))')
        assert response.status in (b"OK", b"NO")


def test_status(imap_server: Harness, imap_account: Account) -> None:
    address, _ = imap_account
    messages = [msg(n) for n in range(4)]
    deliver(imap_server, address, messages)
    with raw(imap_server, imap_account) as client:
        response = client.command(
            "STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE HIGHESTMODSEQ "
            "APPENDLIMIT DELETED)")
        assert response.status == b"OK", response
        line = response.starting(b"STATUS")[0]
        assert b"MESSAGES 4" in line
        assert b"UNSEEN 4" in line
        assert b"UIDNEXT 5" in line
        assert re.search(rb"HIGHESTMODSEQ [1-9]\d*", line)
        assert re.search(rb"APPENDLIMIT \d+", line)
        size = int(re.search(rb"SIZE (\d+)", line).group(1))  # type: ignore[union-attr]
        assert size >= sum(len(m) for m in messages)
        assert client.command("STATUS Nope (MESSAGES)").status == b"NO"
        assert client.command("STATUS INBOX (BOGUS)").status == b"BAD"


def test_utf8_and_modified_utf7_names(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as rev1:
        # RFC 3501 section 5.1.3: a rev1 client names "Entwürfe" in modified UTF-7.
        assert rev1.command('CREATE "Entw&APw-rfe"').status == b"OK"
        assert rev1.command('CREATE "&BB8EQAQ4BDIENQRC-"').status == b"OK"  # Привет
        listed = b"\n".join(rev1.command('LIST "" "*"').untagged)
        assert b"Entw&APw-rfe" in listed
        assert "Entwürfe".encode() not in listed
        assert rev1.command('CREATE "bad&-utf7&ZZZ"').status in (b"NO", b"BAD")
    with raw(imap_server, imap_account) as utf8:
        assert utf8.command("ENABLE UTF8=ACCEPT").status == b"OK"
        listed = b"\n".join(utf8.command('LIST "" "*"').untagged)
        assert "Entwürfe".encode() in listed
        assert "Привет".encode() in listed
        assert utf8.command('CREATE "日本語/メール"'.encode()).status == b"OK"
        assert utf8.command('SELECT "Entwürfe"'.encode()).status == b"OK"
    with raw(imap_server, imap_account) as rev1:
        listed = b"\n".join(rev1.command('LIST "" "*"').untagged)
        assert b"&ZeVnLIqe-/&MOEw,DDr-" in listed, listed


@pytest.mark.parametrize("name", [
    "../escape", "a/../../b", "/absolute", "a//b", "ctl\x01name", "del\x7fname",
    ".", "..",
])
def test_mailbox_names_escaping_the_account_refused(imap_server: Harness, imap_account: Account,
                                                    name: str) -> None:
    with raw(imap_server, imap_account) as client:
        encoded = name.encode()
        response = client.command_literal(b"CREATE", encoded)
        assert response.status in (b"NO", b"BAD"), (name, response)
        listed = b"\n".join(client.command('LIST "" "*"').untagged)
        assert encoded not in listed.split(b'"/" ')[-1:]
        assert client.command("NOOP").status == b"OK"


# ---------------------------------------------------------------------------------------------
# APPEND, QUOTA


def test_append_flags_date_appenduid(imap_server: Harness, imap_account: Account) -> None:
    message = rich_message("append-1")
    with raw(imap_server, imap_account) as client:
        response = client.command_literal(
            b'APPEND INBOX (\\Flagged $Work) "14-Jul-2023 02:44:25 +0200"', message)
        assert response.status == b"OK", response
        match = re.match(rb"APPENDUID (\d+) (\d+)", response.code())
        assert match, response
        uid = int(match.group(2))
        client.command("SELECT INBOX")
        response = client.command(f"UID FETCH {uid} (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        line = response.starting(b"1 FETCH")[0]
        assert b"\\Flagged" in line
        assert b"$Work" in line
        assert b"\\Seen" not in line
        # The instant must be kept (RFC 9051 section 6.3.12); the zone may be normalised.
        date = re.search(rb'INTERNALDATE "([^"]+)"', line).group(1)  # type: ignore[union-attr]
        assert parsedate(date) == parsedate(b"14-Jul-2023 02:44:25 +0200"), date
        assert b"RFC822.SIZE %d" % len(message) in line
        assert message in line
        # Non-synchronising literal (RFC 7888 LITERAL+).
        tag = client.next_tag()
        client.send(tag + b" APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
        assert client.read_until(tag).status == b"OK"
        assert client.command_literal(b"APPEND Nope", message).code().startswith(b"TRYCREATE")
        response = client.command_literal(b'APPEND INBOX "not a date"', message)
        assert response.status == b"BAD"
        response = client.command_literal(b"APPEND INBOX (\\Recent)", message)
        assert response.status in (b"BAD", b"NO")
        assert client.command_literal(b"APPEND INBOX", b"").status in (b"NO", b"BAD")


def test_append_toobig_before_sending(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        caps = client.command("CAPABILITY").untagged[0]
        limit = int(re.search(rb"APPENDLIMIT=(\d+)", caps).group(1))  # type: ignore[union-attr]
        tag = client.next_tag()
        client.send(tag + b" APPEND INBOX {%d}\r\n" % (limit + 1))
        # RFC 7889 / RFC 9051 section 7.1: NO [TOOBIG] instead of the continuation request.
        response = client.read_until(tag)
        assert response.status == b"NO", response
        assert response.code() == b"TOOBIG", response
        assert client.command("NOOP").status == b"OK"


def test_quota(imap_server: Harness, imap_account: Account) -> None:
    address, _ = imap_account
    set_quota(imap_server.data_dir, address, 20 * 1024)
    with raw(imap_server, imap_account) as client:
        response = client.command("GETQUOTAROOT INBOX")
        assert response.status == b"OK"
        assert response.starting(b'QUOTAROOT INBOX ""') or response.starting(
            b'QUOTAROOT "INBOX" ""'), response
        assert response.starting(b'QUOTA "" (STORAGE 0 20)'), response
        message = make_message("q", body=b"x" * 12000 + b"\r\n")
        assert client.command_literal(b"APPEND INBOX", message).status == b"OK"
        response = client.command('GETQUOTA ""')
        assert response.starting(b'QUOTA "" (STORAGE 12 20)'), response
        response = client.command_literal(b"APPEND INBOX", message)
        assert response.status == b"NO", response
        assert response.code() == b"OVERQUOTA", response
        assert client.command('GETQUOTA "other"').status == b"NO"
        assert client.command('SETQUOTA "" (STORAGE 99999)').status in (b"NO", b"BAD")
    # Delivery by SMTP honours the same quota.
    with smtplib.SMTP("127.0.0.1", imap_server.smtp_port, timeout=30) as smtp, \
            pytest.raises(smtplib.SMTPException):
        smtp.sendmail("sender@remote.test", [address], message)


# ---------------------------------------------------------------------------------------------
# Selected state: expunge family


def test_check_close_unselect_expunge(imap_server: Harness, imap_account: Account) -> None:
    with logged_in(imap_server, imap_account) as client:
        fill(client, "INBOX", [msg(n) for n in range(6)])
        client.select("INBOX")
        assert client.check()[0] == "OK"
        client.store("1,2", "+FLAGS", "(\\Deleted)")
        assert client.unselect()[0] == "OK"  # RFC 3691: no expunge
        assert client.select("INBOX")[1] == [b"6"]
        typ, data = client.expunge()
        # RFC 9051 section 7.5.1: each EXPUNGE shifts the numbers after it.
        assert typ == "OK", data
        assert data in ([b"1", b"1"], [b"2", b"1"]), data
        client.store("1", "+FLAGS", "(\\Deleted)")
        assert client.close()[0] == "OK"  # CLOSE expunges silently
        assert client.select("INBOX")[1] == [b"3"]
        typ, data = client.uid("SEARCH", "ALL")
        uids = data[0].split()
        client.store("1:*", "+FLAGS", "(\\Deleted)")
        typ, data = client.uid("EXPUNGE", uids[0].decode())  # RFC 4315: only that UID
        assert typ == "OK"
        assert client.select("INBOX")[1] == [b"2"]
        client.select("INBOX", readonly=True)
        assert client.expunge()[0] == "NO"  # read-only
        assert client.close()[0] == "OK"
        assert client.select("INBOX")[1] == [b"2"]  # CLOSE after EXAMINE expunges nothing
        client.logout()


# ---------------------------------------------------------------------------------------------
# FETCH


def test_fetch_every_attribute(imap_server: Harness, imap_account: Account) -> None:
    message = rich_message("fetch-1")
    with raw(imap_server, imap_account) as client:
        client.command_literal(b"APPEND INBOX", message)
        client.command("SELECT INBOX")
        response = client.command(
            "FETCH 1 (FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)")
        line = response.starting(b"1 FETCH")[0]
        assert b"RFC822.SIZE %d" % len(message) in line
        assert b'"test fetch-1"' in line  # ENVELOPE subject
        assert b'"<fetch-1@client.example.test>"' in line  # ENVELOPE message-id
        assert b'(NIL NIL "sender" "remote.test")' in line  # ENVELOPE from address
        # BODYSTRUCTURE extension data (RFC 9051 section 7.5.2): multipart parameters with
        # the boundary, and the attachment's disposition.
        assert b'"mixed" ("boundary" "b1")' in line.replace(b'"MIXED"', b'"mixed"').replace(
            b'"BOUNDARY"', b'"boundary"'), line
        assert re.search(rb'\("attachment" \("filename" "blob.bin"\)\)', line, re.I), line
        # BODY is BODYSTRUCTURE without extension data.
        body = line[line.index(b" BODY (") :]
        assert b"attachment" not in body.split(b"BODYSTRUCTURE")[0].lower()

        response = client.command("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject X-Token)])")
        line = response.starting(b"1 FETCH")[0]
        assert b"Subject: test fetch-1\r\nX-Token: fetch-1\r\n\r\n" in line
        assert b"\\Seen" not in client.command("FETCH 1 FLAGS").untagged[0]
        response = client.command("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Subject)])")
        assert b"Subject:" not in response.untagged[0]
        assert b"X-Token" in response.untagged[0]
        response = client.command("FETCH 1 (BODY.PEEK[1.MIME] BODY.PEEK[2]<0.20>)")
        line = response.untagged[0]
        assert b"Content-Type: text/plain; charset=utf-8" in line
        assert re.search(rb"BODY\[2\]<0> \{20\}\r\nAAECAwQFBgcICQoLDA0O", line), line
        response = client.command("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
        line = response.untagged[0]
        assert b"BINARY.SIZE[2] 2048" in line, line
        assert bytes(range(256)) * 8 in line  # RFC 3516: decoded from base64
        response = client.command("FETCH 1 (BODY.PEEK[1]<5.10> BODY.PEEK[TEXT]<0.10>)")
        assert re.search(rb"BODY\[1\]<5> \{10\}", response.untagged[0]), response
        response = client.command("FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[99])")
        assert response.status in (b"OK", b"NO")  # a missing part is empty or refused
        response = client.command("FETCH 1 RFC822.HEADER")
        assert b"X-Token: fetch-1" in response.untagged[0]
        response = client.command("FETCH 1 (BODY[TEXT])")  # not PEEK: sets \Seen
        assert b"\\Seen" in response.untagged[0], response
        response = client.command("FETCH 1 (BODY.PEEK[] MODSEQ)")
        # RFC 7162 section 3.1: the first CONDSTORE-enabling command reports HIGHESTMODSEQ.
        assert response.untagged[0].startswith(b"* OK [HIGHESTMODSEQ "), response
        assert message in response.untagged[1]
        assert b"MODSEQ (" in response.untagged[1]
        assert client.command("FETCH 1 FAST").status == b"OK"
        assert client.command("FETCH 1 ALL").status == b"OK"
        # The macros stand alone (RFC 9051 section 9, "fetch"): not inside a list.
        assert client.command("FETCH 1 (FAST)").status == b"BAD"
        assert client.command("FETCH 1 FULL").status == b"OK"
        assert client.command("FETCH 1 (BODY[1.2.3.4.5])").status in (b"OK", b"NO")
        assert client.command("FETCH 1 (NOSUCH)").status == b"BAD"
        assert client.command("FETCH 2 FLAGS").status in (b"BAD", b"NO")  # beyond EXISTS


def test_fetch_binary_of_8bit_and_unknown_encoding(imap_server: Harness,
                                                   imap_account: Account) -> None:
    message = msg(1, extra=("MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                            "Content-Transfer-Encoding: x-unknown"), body=b"data\r\n")
    with raw(imap_server, imap_account) as client:
        client.command_literal(b"APPEND INBOX", message)
        client.command("SELECT INBOX")
        response = client.command("FETCH 1 BINARY.PEEK[1]")
        # RFC 3516 section 4.3: an encoding the server cannot decode is NO [UNKNOWN-CTE].
        assert response.status == b"NO", response
        assert response.code() == b"UNKNOWN-CTE", response


# ---------------------------------------------------------------------------------------------
# STORE, COPY, MOVE, CONDSTORE, QRESYNC


def test_store_variants(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        for n in range(3):
            client.command_literal(b"APPEND INBOX", msg(n))
        client.command("SELECT INBOX")
        response = client.command("STORE 1:2 +FLAGS (\\Seen $Label1)")
        assert len(response.starting(b"1 FETCH")) == 1
        assert len(response.starting(b"2 FETCH")) == 1
        assert b"$Label1" in response.untagged[0]
        response = client.command("STORE 1 +FLAGS.SILENT (\\Answered)")
        assert response.status == b"OK", response
        assert not response.starting(b"1 FETCH"), response
        response = client.command("STORE 1 -FLAGS (\\Seen)")
        assert b"\\Seen" not in response.untagged[0]
        assert b"\\Answered" in response.untagged[0]
        response = client.command("STORE 3 FLAGS (\\Draft)")
        assert b"(\\Draft)" in response.untagged[0] or b"\\Draft" in response.untagged[0]
        response = client.command("UID STORE 1:* FLAGS.SILENT ()")
        assert response.status == b"OK"
        assert client.command("STORE 1 +FLAGS (\\Recent)").status in (b"BAD", b"NO")
        assert client.command("STORE 1 +FLAGS (\\Bogus)").status in (b"BAD", b"NO")
        assert client.command("STORE 1 XFLAGS (\\Seen)").status == b"BAD"


def test_condstore_and_unchangedsince(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        for n in range(3):
            client.command_literal(b"APPEND INBOX", msg(n))
        response = client.command("SELECT INBOX (CONDSTORE)")
        match = re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(response.untagged))
        assert match, response
        highest = int(match.group(1))
        response = client.command("FETCH 1:* (MODSEQ)")
        modseqs = [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", b"".join(response.untagged))]
        assert len(modseqs) == 3
        assert max(modseqs) <= highest
        response = client.command(f"STORE 1 (UNCHANGEDSINCE {modseqs[0]}) +FLAGS (\\Seen)")
        assert response.status == b"OK"
        new = int(re.search(rb"MODSEQ \((\d+)\)", response.untagged[0]).group(1))  # type: ignore[union-attr]
        assert new > highest
        # RFC 7162 section 3.1.3: a message changed since then is not stored: [MODIFIED 1].
        response = client.command(
            f"STORE 1,2 (UNCHANGEDSINCE {max(modseqs)}) +FLAGS (\\Flagged)")
        assert response.status == b"OK", response
        assert response.code() == b"MODIFIED 1", response
        response = client.command(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
        changed = b"\n".join(response.untagged)
        assert b"* 1 FETCH" in changed
        assert b"* 2 FETCH" in changed
        assert b"* 3 FETCH" not in changed
        response = client.command(f"SEARCH MODSEQ {new}")
        assert re.search(rb"\* SEARCH 1 2 \(MODSEQ \d+\)", b"".join(response.untagged)), response


def test_qresync_vanished(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        for n in range(5):
            client.command_literal(b"APPEND INBOX", msg(n))
        assert client.command("ENABLE QRESYNC").status == b"OK"
        response = client.command("SELECT INBOX")
        joined = b"".join(response.untagged)
        validity = int(re.search(rb"UIDVALIDITY (\d+)", joined).group(1))  # type: ignore[union-attr]
        modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", joined).group(1))  # type: ignore[union-attr]
        client.command("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
        client.command("STORE 5 +FLAGS.SILENT (\\Seen)")
        response = client.command("EXPUNGE")
        # RFC 7162 section 3.2.10: with QRESYNC enabled, VANISHED replaces EXPUNGE.
        assert response.starting(b"VANISHED 2,4"), response
        assert not response.starting(b"2 EXPUNGE"), response
        client.command("UNSELECT")
        response = client.command(f"SELECT INBOX (QRESYNC ({validity} {modseq} 1:5))")
        assert response.status == b"OK"
        assert response.starting(b"VANISHED (EARLIER) 2,4"), response
        fetched = b"\n".join(response.starting(b"3 FETCH"))
        assert b"UID 5" in fetched, response
        assert b"\\Seen" in fetched, response
        response = client.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
        assert response.starting(b"VANISHED (EARLIER) 2,4"), response


def test_copy_move_and_uid_variants(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        for n in range(4):
            client.command_literal(b"APPEND INBOX", msg(n))
        client.command("CREATE Target")
        client.command("SELECT INBOX")
        response = client.command("COPY 1:2 Target")
        assert re.match(rb"COPYUID \d+ 1:2 1:2", response.code()), response
        response = client.command("UID COPY 4 Target")
        assert re.match(rb"COPYUID \d+ 4 3", response.code()), response
        response = client.command("MOVE 1 Target")
        assert response.status == b"OK"
        ok_codes = [line for line in response.untagged if b"COPYUID" in line]
        assert ok_codes, response
        assert re.search(rb"COPYUID \d+ 1 4", ok_codes[0]), response
        assert response.starting(b"1 EXPUNGE"), response
        response = client.command("UID MOVE 3 Target")
        assert response.starting(b"2 EXPUNGE"), response  # UID 3 was message 2 by now
        response = client.command("UID SEARCH ALL")
        assert response.starting(b"SEARCH 2 4"), response
        response = client.command("UID FETCH 4 (FLAGS)")
        assert re.search(rb"\* 2 FETCH \(.*UID 4", response.untagged[0]), response
        assert client.command("COPY 1 Missing").code() == b"TRYCREATE"
        assert client.command("UID COPY 999 Target").status == b"OK"  # RFC 9051 6.4.9
        assert client.command("COPY 99 Target").status in (b"NO", b"BAD")
        response = client.command('STATUS Target (MESSAGES)')
        assert b"MESSAGES 5" in response.untagged[0], response


# ---------------------------------------------------------------------------------------------
# SEARCH, SORT, THREAD


@pytest.fixture
def search_box(imap_server: Harness, imap_account: Account) -> Iterator[RawIMAP]:
    client = raw(imap_server, imap_account)
    messages = [
        (msg(1, subject="Hello world", sender="ann@a.test", body=b"apples and pears\r\n"),
         b"(\\Seen)", b'"01-Feb-2024 10:00:00 +0000"'),
        (msg(2, subject="Re: Hello world", sender="bob@b.test",
             extra=("In-Reply-To: <m1@client.example.test>",
                    "References: <m1@client.example.test>"),
             body=b"bananas\r\n" * 300),
         b"(\\Flagged $Important)", b'"05-Feb-2024 10:00:00 +0000"'),
        (msg(3, subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus Köln",
             sender="cat@c.test", extra=("Content-Type: text/plain; charset=utf-8",),
             body="Straße und Grüße\r\n".encode()), b"()", b'"10-Feb-2024 10:00:00 +0000"'),
        (msg(4, subject="zebra", sender="ann@a.test",
             extra=("X-Custom: findme",)), b"(\\Deleted)", b'"15-Feb-2024 10:00:00 +0000"'),
    ]
    with client:
        for body, flags, date in messages:
            response = client.command_literal(b"APPEND INBOX " + flags + b" " + date, body)
            assert response.status == b"OK", response
        client.command("SELECT INBOX")
        yield client


@pytest.mark.parametrize(("criteria", "expected"), [
    (b"ALL", b"1 2 3 4"),
    (b"SEEN", b"1"),
    (b"UNSEEN", b"2 3 4"),
    (b"FLAGGED", b"2"),
    (b"DELETED", b"4"),
    (b"UNDELETED NOT SEEN", b"2 3"),
    (b"KEYWORD $Important", b"2"),
    (b"UNKEYWORD $Important", b"1 3 4"),
    (b"FROM ann@a.test", b"1 4"),
    (b'SUBJECT "hello"', b"1 2"),
    (b"BODY bananas", b"2"),
    (b"TEXT apples", b"1"),
    (b"HEADER X-Custom findme", b"4"),
    (b"HEADER In-Reply-To \"\"", b"2"),
    (b"LARGER 1000", b"2"),
    (b"SMALLER 1000", b"1 3 4"),
    (b"SINCE 05-Feb-2024", b"2 3 4"),
    (b"BEFORE 05-Feb-2024", b"1"),
    (b"ON 10-Feb-2024", b"3"),
    (b"SENTBEFORE 03-Jan-2024", b"1"),
    (b"OR FROM bob@b.test FROM cat@c.test", b"2 3"),
    (b"2:3", b"2 3"),
    (b"UID 1,4", b"1 4"),
    (b"NOT (OR SEEN FLAGGED)", b"3 4"),
    (b"(FROM ann SUBJECT zebra)", b"4"),
    (b"NEW", b"2 3 4"),  # \Recent went to this session, which appended and selected
    (b"CHARSET UTF-8 SUBJECT {7+}\r\ngr\xc3\xbc\xc3\x9fe", b"3"),  # RFC 7888 literal
    (b"CHARSET UTF-8 BODY {7+}\r\nstra\xc3\x9fe", b"3"),
    (b"CHARSET UTF-8 TEXT {5+}\r\nK\xc3\xb6ln", b"3"),
])
def test_search_keys(search_box: RawIMAP, criteria: bytes, expected: bytes) -> None:
    response = search_box.command(b"SEARCH " + criteria)
    assert response.status == b"OK", response
    got = response.starting(b"SEARCH")
    assert got == [(b"* SEARCH " + expected).rstrip()], (criteria, response)


def test_search_errors_charset_esearch_searchres(search_box: RawIMAP) -> None:
    client = search_box
    response = client.command("SEARCH CHARSET KOI8-X ALL")
    assert response.status == b"NO", response
    assert response.code().startswith(b"BADCHARSET"), response
    assert client.command("SEARCH NOSUCHKEY").status == b"BAD"
    assert client.command("SEARCH SINCE 32-Foo-2024").status == b"BAD"
    response = client.command_literal(b"SEARCH CHARSET UTF-8 BODY", "Straße".encode())
    assert response.starting(b"SEARCH 3"), response
    # RFC 4731 ESEARCH.
    response = client.command("SEARCH RETURN (MIN MAX COUNT ALL) UNDELETED")
    line = response.starting(b"ESEARCH")[0]
    assert b"MIN 1" in line
    assert b"MAX 3" in line
    assert b"COUNT 3" in line
    assert b"ALL 1:3" in line
    response = client.command("UID SEARCH RETURN () FLAGGED")
    assert re.search(rb"\* ESEARCH \(TAG \"[^\"]+\"\) UID ALL 2", response.untagged[0]), response
    response = client.command("SEARCH RETURN (COUNT) NEW")
    assert response.starting(b"ESEARCH"), response
    # RFC 5182 SEARCHRES: save the result, use it as "$".
    response = client.command("SEARCH RETURN (SAVE) FROM ann")
    assert response.status == b"OK", response
    assert not response.starting(b"SEARCH 1"), response
    response = client.command("FETCH $ (UID)")
    assert len(response.starting(b"1 FETCH")) == 1
    assert len(response.starting(b"4 FETCH")) == 1
    response = client.command("SEARCH $ SUBJECT zebra")
    assert response.starting(b"SEARCH 4"), response


def test_sort_and_thread(search_box: RawIMAP) -> None:
    client = search_box
    response = client.command("SORT (SUBJECT) UTF-8 ALL")
    # RFC 5256 base subject: "Re: Hello world" sorts as "hello world"; stable by sequence.
    assert response.starting(b"SORT 3 1 2 4"), response
    assert client.command("SORT (REVERSE ARRIVAL) UTF-8 ALL").starting(b"SORT 4 3 2 1")
    assert client.command("SORT (SIZE) UTF-8 ALL").untagged[0].endswith(b" 2")
    assert client.command("SORT (FROM) UTF-8 ALL").starting(b"SORT 1 4 2 3")
    response = client.command("UID SORT (DATE) UTF-8 SEEN")
    assert response.starting(b"SORT 1"), response
    assert client.command("SORT (NOPE) UTF-8 ALL").status == b"BAD"
    response = client.command("THREAD REFERENCES UTF-8 ALL")
    assert response.status == b"OK"
    assert re.search(rb"\(1 2\)", response.untagged[0]), response
    response = client.command("THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert re.search(rb"\(1 2\)", response.untagged[0]), response
    assert client.command("THREAD NOPE UTF-8 ALL").status == b"BAD"


# ---------------------------------------------------------------------------------------------
# COMPRESS=DEFLATE


def test_compress_deflate(imap_server: Harness, imap_account: Account) -> None:
    message = rich_message("compress")
    with raw(imap_server, imap_account) as client:
        assert client.compress().status == b"OK"
        assert client.command("NOOP").status == b"OK"
        assert client.command_literal(b"APPEND INBOX", message).status == b"OK"
        client.command("SELECT INBOX")
        response = client.command("FETCH 1 BODY.PEEK[]")
        assert message in response.untagged[0]
        # RFC 4978 section 3: a second COMPRESS is refused with [COMPRESSIONACTIVE].
        response = client.command("COMPRESS DEFLATE")
        assert response.status == b"NO", response
        assert response.code() == b"COMPRESSIONACTIVE", response
        assert client.command("COMPRESS XZ").status in (b"BAD", b"NO")
    assert zlib  # the module the client side used


def test_logout(imap_server: Harness, imap_account: Account) -> None:
    with raw(imap_server, imap_account) as client:
        response = client.command("LOGOUT")
        assert response.status == b"OK"
        assert response.starting(b"BYE")
        assert client.expect_closed() == b""
    time.sleep(0)
