"""FETCH BINARY decoding (RFC 3516), HEADER.FIELDS with repeated and differently cased names
(RFC 9051 section 6.4.5) and ENVELOPE group syntax (RFC 3501 section 7.4.2) against a real
``mailstead serve``, through imaplib, comparing the exact bytes of each answer; BINARY and
HEADER.FIELDS also with a private Dovecot's answer for the same message."""

from __future__ import annotations

import base64
import imaplib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import Harness

Account = tuple[str, str]

QP_BODY = (
    b"caf=C3=A9 =3D equals=3d lower\r\n"
    b"soft=\r\n"
    b"break and padded=  \r\n"
    b"line trailing   \r\n"
    b"last=20\r\n"
)
# The CRLF before the next delimiter belongs to the delimiter (RFC 2046 section 5.1.1).
QP_DECODED = b"caf\xc3\xa9 = equals= lower\r\nsoftbreak and paddedline trailing\r\nlast "
BLOB = bytes(range(256)) + b"\x00tail"
MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: undisclosed-recipients:;\r\n"
    b"Cc: group: a@b.test, c@d.test;, e@f.test\r\n"
    b'Bcc: "foo" , x@y.test\r\n'
    b'Reply-To: empty:;, "stray name"\r\n'
    b"Subject: a folded\r\n\tsubject line\r\n"
    b"from: Second <second@example.test>\r\n"
    b"X-Other: kept\r\n"
    b"FROM: third@example.test\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <sections@client.example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: Quoted-Printable\r\n"
    b"\r\n"
    + QP_BODY
    + b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes(BLOB).replace(b"\n", b"\r\n")
    + b"--b1--\r\n"
)
FROM_FIELDS = (
    b"From: Alice <alice@example.test>\r\n"
    b"from: Second <second@example.test>\r\n"
    b"FROM: third@example.test\r\n\r\n"
)


def _login(h: Harness, account: Account) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=15)
    typ, _ = client.login(*account)
    assert typ == "OK"
    typ, data = client.append("INBOX", None, None, MESSAGE)
    assert typ == "OK", data
    typ, _ = client.select("INBOX")
    assert typ == "OK"
    return client


def _items(data: list[object]) -> dict[bytes, bytes]:
    """imaplib's FETCH answer as {item name: value}: literals keyed by the text before them,
    atoms parsed from the remaining lines."""
    out: dict[bytes, bytes] = {}
    for entry in data:
        head = entry[0] if isinstance(entry, tuple) else entry
        assert isinstance(head, bytes)
        if isinstance(entry, tuple):  # the literal belongs to the last item named in head
            key = re.findall(rb"((?:BINARY|BODY)\[[^\]]*\](?:<\d+>)?) ~?\{\d+\}$", head)
            assert key, head
            out[key[-1]] = entry[1]
        for size in re.findall(rb"BINARY\.SIZE\[[^\]]*\] \d+", head):
            name, value = size.rsplit(b" ", 1)
            out[name] = value
    return out


def test_binary_decodes_quoted_printable_and_base64(imap_server: Harness,
                                                     imap_account: Account) -> None:
    with _login(imap_server, imap_account) as client:
        typ, data = client.fetch("1", "(BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2]<0.10>)")
        assert typ == "OK", data
        items = _items(data)
        # RFC 2045 section 6.7: soft breaks (also after transport padding) vanish, =XX in
        # either case decodes, trailing white space of a line is deleted.
        assert items[b"BINARY[1]"] == QP_DECODED, items
        assert items[b"BINARY.SIZE[1]"] == b"%d" % len(QP_DECODED)
        # RFC 3516 section 4.2: a partial range counts decoded octets.
        assert items[b"BINARY[2]<0>"] == BLOB[:10]
        typ, data = client.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2])")
        assert typ == "OK", data
        items = _items(data)
        assert items[b"BINARY[2]"] == BLOB
        assert items[b"BINARY.SIZE[2]"] == b"%d" % len(BLOB)
        typ, data = client.fetch("1", "(BINARY.PEEK[1]<5.4>)")
        assert _items(data)[b"BINARY[1]<5>"] == QP_DECODED[5:9]


def test_header_fields_with_repeated_names(imap_server: Harness,
                                           imap_account: Account) -> None:
    with _login(imap_server, imap_account) as client:
        typ, data = client.fetch(
            "1", "(BODY.PEEK[HEADER.FIELDS (FROM)] BODY.PEEK[HEADER.FIELDS (FROM FROM)])")
        assert typ == "OK", data
        # RFC 9051 section 6.4.5: each field comes once, with all its occurrences in order;
        # section 7.5.2: each item is named as asked, so two sections asked, two answered.
        assert _items(data) == {b"BODY[HEADER.FIELDS (FROM)]": FROM_FIELDS,
                                b"BODY[HEADER.FIELDS (FROM FROM)]": FROM_FIELDS}, data
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (from FROM)])")
        assert typ == "OK", data
        # Matching ignores case; the echo is upper-cased, as Dovecot's is.
        assert _items(data) == {b"BODY[HEADER.FIELDS (FROM FROM)]": FROM_FIELDS}, data
        typ, data = client.fetch(
            "1", "(BODY.PEEK[HEADER.FIELDS (subject SUBJECT x-other)] "
                 "BODY.PEEK[HEADER.FIELDS.NOT (FROM from To CC bcc Reply-To Date "
                 "Message-ID MIME-Version Content-Type Content-Type)] "
                 "BODY.PEEK[HEADER.FIELDS (X-Absent X-ABSENT)])")
        assert typ == "OK", data
        # Folded fields keep their folding; a subset with no field is just the blank line.
        assert _items(data) == {
            b"BODY[HEADER.FIELDS (SUBJECT SUBJECT X-OTHER)]":
                b"Subject: a folded\r\n\tsubject line\r\nX-Other: kept\r\n\r\n",
            b"BODY[HEADER.FIELDS.NOT (FROM FROM TO CC BCC REPLY-TO DATE MESSAGE-ID "
            b"MIME-VERSION CONTENT-TYPE CONTENT-TYPE)]":
                b"Subject: a folded\r\n\tsubject line\r\nX-Other: kept\r\n\r\n",
            b"BODY[HEADER.FIELDS (X-ABSENT X-ABSENT)]": b"\r\n",
        }, data


def test_envelope_groups_follow_rfc3501(imap_server: Harness, imap_account: Account) -> None:
    with _login(imap_server, imap_account) as client:
        typ, data = client.fetch("1", "(ENVELOPE)")
        assert typ == "OK", data
        assert data == [
            b'1 (ENVELOPE ("Mon, 01 Jan 2024 10:00:00 +0000" "a folded\tsubject line" '
            b'(("Alice" NIL "alice" "example.test")) '
            b'(("Alice" NIL "alice" "example.test")) '
            b'((NIL NIL "empty" NIL)(NIL NIL NIL NIL)) '
            b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
            b'((NIL NIL "group" NIL)(NIL NIL "a" "b.test")(NIL NIL "c" "d.test")'
            b'(NIL NIL NIL NIL)(NIL NIL "e" "f.test")) '
            b'((NIL NIL "x" "y.test")) '
            b'NIL "<sections@client.example.test>"))'
        ], data


DOVECOT_IMAP = Path("/usr/lib/dovecot/imap")
# Items whose content both servers must send byte for byte alike (Dovecot's ENVELOPE is left
# out on purpose: it invents ("foo" NIL "MISSING_MAILBOX" "MISSING_DOMAIN") entries).
SAME_AS_DOVECOT = ("BINARY.PEEK[1]", "BINARY.PEEK[2]", "BINARY.PEEK[1]<3.20>",
                   "BODY.PEEK[HEADER.FIELDS (FROM FROM)]",
                   "BODY.PEEK[HEADER.FIELDS.NOT (from FROM Content-Type)]",
                   "BODY.PEEK[HEADER.FIELDS (SUBJECT subject)]")


def _literals(response: bytes) -> list[bytes]:
    """The literals of one FETCH response, in order ({n} and ~{n} alike)."""
    out, pos = [], 0
    while (match := re.compile(rb"~?\{(\d+)\}\r\n").search(response, pos)) is not None:
        size = int(match.group(1))
        out.append(response[match.end() : match.end() + size])
        pos = match.end() + size
    return out


def _dovecot_fetch(message: bytes, items: str) -> bytes:
    """The FETCH response of a private, preauthenticated Dovecot (its imap binary on stdin,
    no listener) for ``message``."""
    if os.geteuid() != 0:
        pytest.skip("Dovecot is started as root; not root here")
    if not DOVECOT_IMAP.exists():
        pytest.skip("dovecot-imapd is not installed")
    d = Path(tempfile.mkdtemp(prefix="mailstead-dovecot-", dir="/tmp"))
    try:
        d.chmod(0o755)
        (d / "mail").mkdir()
        shutil.chown(d / "mail", "dovecot", "dovecot")
        (d / "dovecot.conf").write_text(
            f"base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n"
            f"mail_location = maildir:{d}/mail\nmail_uid = dovecot\nmail_gid = dovecot\n"
            "first_valid_uid = 1\nfirst_valid_gid = 1\nprotocols = imap\nssl = no\n")
        script = (b"a APPEND INBOX {%d}\r\n" % len(message) + message
                  + b"\r\nb SELECT INBOX\r\nc FETCH 1 (" + items.encode() + b")\r\nd LOGOUT\r\n")
        done = subprocess.run([str(DOVECOT_IMAP), "-c", str(d / "dovecot.conf")], input=script,
                              capture_output=True, timeout=30, check=False,
                              env={**os.environ, "USER": "root", "HOME": str(d)})
    finally:
        shutil.rmtree(d, ignore_errors=True)
    start = done.stdout.find(b"* 1 FETCH (")
    assert start >= 0, done.stdout + done.stderr
    assert b"\r\nc OK" in done.stdout, done.stdout + done.stderr
    return done.stdout[start : done.stdout.index(b"\r\nc OK")]


def test_binary_and_header_fields_match_dovecot(imap_server: Harness,
                                                imap_account: Account) -> None:
    # BINARY.SIZE is not compared: Dovecot 2.3 answers 18446744073709551584 (-32) for the
    # padded quoted-printable part; ours is checked against our own literal above.
    items = " ".join(SAME_AS_DOVECOT)
    theirs = _literals(_dovecot_fetch(MESSAGE, items))
    with _login(imap_server, imap_account) as client:
        typ, data = client.fetch("1", f"({items})")
        assert typ == "OK", data
    ours = [entry[1] for entry in data if isinstance(entry, tuple)]
    assert len(ours) == len(SAME_AS_DOVECOT), data
    assert ours == theirs
