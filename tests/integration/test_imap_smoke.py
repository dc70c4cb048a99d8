"""End-to-end IMAP against a real ``mailstead serve``: 993 and 143+STARTTLS with imaplib,
mail delivered over SMTP port 25, FETCH/STORE, IDLE woken by a delivery within a second,
COMPRESS=DEFLATE, and the per-command limits answered without breaking the server."""

from __future__ import annotations

import imaplib
import socket
import ssl
import time
import zlib

import pytest
from helpers import PASSWORDS, Harness, RemoteIMAP4, make_message

USER = "alice@example.test"
PASSWORD = PASSWORDS[USER]


def imaps(server: Harness) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=server.tls(),
                             timeout=15)


def deliver(server: Harness, token: str) -> None:
    with server.client("smtp") as smtp:
        smtp.sendmail("sender@remote.test", [USER], make_message(token))


def test_login_over_993_list_select_fetch_store(server: Harness, token: str) -> None:
    deliver(server, token)
    imap = imaps(server)
    try:
        assert "IMAP4REV2" in imap.capabilities
        assert "IDLE" in imap.capabilities
        typ, data = imap.login(USER, PASSWORD)
        assert typ == "OK"
        typ, boxes = imap.list()
        assert typ == "OK"
        listed = b"\n".join(b for b in boxes if isinstance(b, bytes))
        assert b'"/" INBOX' in listed
        assert b"\\Sent" in listed
        typ, data = imap.select("INBOX")
        assert typ == "OK"
        assert int(data[0] or 0) >= 1
        typ, found = imap.uid("SEARCH", "TEXT", token)
        assert typ == "OK"
        assert found[0]
        uid = found[0].split()[-1].decode()
        typ, fetched = imap.uid("FETCH", uid, "(FLAGS BODY.PEEK[] ENVELOPE)")
        assert typ == "OK"
        body = b"".join(part[1] for part in fetched if isinstance(part, tuple))
        assert token.encode() in body
        typ, stored = imap.uid("STORE", uid, "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        assert b"\\Flagged" in stored[0]
        typ, flags = imap.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Flagged" in flags[0]
        # A malformed command is answered BAD and the session goes on.
        with pytest.raises(imaplib.IMAP4.error):
            imap._simple_command("FETCH", "0 (FLAGS)")
        assert imap.noop()[0] == "OK"
    finally:
        imap.logout()


def test_143_logindisabled_until_starttls(server: Harness) -> None:
    imap = RemoteIMAP4("127.0.0.1", server.port("imap"), timeout=15)
    try:
        assert "LOGINDISABLED" in imap.capabilities
        assert "STARTTLS" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            imap.login(USER, PASSWORD)
        imap.starttls(server.tls())
        assert "LOGINDISABLED" not in imap.capabilities
        assert imap.login(USER, PASSWORD)[0] == "OK"
        assert imap.select("INBOX", readonly=True)[0] == "OK"
    finally:
        imap.logout()


def test_starttls_discards_pipelined_plaintext(server: Harness) -> None:
    with socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10) as sock:
        sock.recv(4096)
        sock.sendall(b"a STARTTLS\r\nb LOGIN injected command\r\n")
        reply = b""
        while b"a OK" not in reply:
            reply += sock.recv(4096)
        with server.tls().wrap_socket(sock, server_hostname="mail.example.test") as tls:
            tls.sendall(b"c NOOP\r\n")
            answer = tls.recv(4096)
        assert answer.startswith(b"c OK"), answer  # nothing from the injected line


def test_idle_is_woken_by_smtp_delivery(server: Harness, token: str) -> None:
    imap = imaps(server)
    try:
        imap.login(USER, PASSWORD)
        imap.select("INBOX")
        tag = imap._new_tag().decode()
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline().startswith(b"+ ")
        started = time.monotonic()
        deliver(server, token)
        line = imap.readline()
        elapsed = time.monotonic() - started
        assert line.startswith(b"* "), line
        assert b"EXISTS" in line, line
        assert elapsed < 1.0 + 0.5, f"IDLE woke after {elapsed:.2f}s"  # 0.5 s for SMTP itself
        imap.send(b"DONE\r\n")
        while True:
            line = imap.readline()
            if line.startswith(tag.encode()):
                assert b"OK" in line
                break
    finally:
        imap.logout()


def test_compress_deflate(server: Harness) -> None:
    ctx: ssl.SSLContext = server.tls()
    with (
        socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="mail.example.test") as sock,
    ):
        sock.recv(4096)
        sock.sendall(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
        buf = b""
        while b"a OK" not in buf:
            buf += sock.recv(4096)
        sock.sendall(b"b COMPRESS DEFLATE\r\n")
        buf = b""
        while b"b OK" not in buf:
            buf += sock.recv(4096)
        deflate = zlib.compressobj(wbits=-15)
        inflate = zlib.decompressobj(wbits=-15)
        sock.sendall(deflate.compress(b"c NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
        out = b""
        while b"c OK" not in out:
            out += inflate.decompress(sock.recv(4096))
        assert out.endswith(b"c OK NOOP completed\r\n")


def test_huge_literal_refused_before_it_is_sent(server: Harness) -> None:
    imap = imaps(server)
    try:
        imap.login(USER, PASSWORD)
        tag = imap._new_tag().decode()
        imap.send(f"{tag} APPEND INBOX {{999999999}}\r\n".encode())
        line = imap.readline()
        assert line.startswith(f"{tag} NO [TOOBIG]".encode()), line
        assert imap.noop()[0] == "OK"
    finally:
        imap.logout()
