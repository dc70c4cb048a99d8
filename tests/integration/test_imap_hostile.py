"""Hostile and malformed IMAP input over raw sockets: each gets the right BAD / NO (or BYE
and a close), the server logs no traceback, and a second client is served meanwhile."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time

import pytest
from helpers import Harness, RawIMAP

Account = tuple[str, str]


def session(h: Harness, account: Account, *, plain: bool = False) -> RawIMAP:
    client = (RawIMAP(h.port("imap")) if plain
              else RawIMAP(h.port("imaps"), tls=h.tls()))
    if not plain:
        client.login(*account)
    return client


def assert_still_serving(h: Harness, account: Account) -> None:
    with session(h, account) as other:
        assert other.command("SELECT INBOX").status == b"OK"
        assert other.command("NOOP").status == b"OK"
    assert "Traceback" not in h.log(), h.log()[-5000:]


@pytest.mark.parametrize("line", [
    b'SELECT "INBOX',  # unbalanced quote
    b"FETCH 1 (FLAGS",  # unbalanced parenthesis
    b"FETCH 1 FLAGS)",
    b"LOGIN {abc}",  # not a literal
    b'SELECT "IN\\BOX"',  # bad escape
    b"FETCH 0 FLAGS",  # RFC 9051 section 9: seq-number is nz-number
    b"FETCH 1: FLAGS",
    b"FETCH *:*:* FLAGS",
    b"FETCH 4294967296 FLAGS",  # beyond 2^32-1
    b"FETCH 1,,2 FLAGS",
    b"FETCH -1 FLAGS",
    b"UID FETCH 1:0 FLAGS",
    b"FETCH 1 BODY[1.0]",
    b"FETCH 1 BODY[]<5.0>",
    b"FETCH 1 BODY[HEADER.FIELDS ()]",
    b"STORE 1 +FLAGS (\\Seen",
    b"SEARCH ALL)",
    b"SEARCH UID 0",
    b"SEARCH 1:*:2",
    b"SEARCH CHARSET UTF-8 SUBJECT gr\xc3\xbc\xc3\x9fe",  # 8-bit outside a literal
    b"\xff\xfe\x00garbage",
    b"a b c d e f",
    b"",
    b"SELECT",
    b"NOOP extra",
    b"FETCH 1 (" + b"FLAGS " * 5000 + b")",
])
def test_malformed_commands_get_bad(imap_server: Harness, imap_account: Account,
                                    line: bytes) -> None:
    with session(imap_server, imap_account) as client:
        client.command("SELECT INBOX")
        response = client.command(line)
        assert response.status in (b"BAD", b"NO"), (line[:80], response)
        assert client.command("NOOP").status == b"OK"
    assert_still_serving(imap_server, imap_account)


def test_deep_parentheses(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        client.command("SELECT INBOX")
        deep = b"SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000
        response = client.command(deep)
        assert response.status == b"BAD", response  # refused, not a RecursionError
        nested = b"SEARCH " + b"NOT " * 5000 + b"ALL"
        assert client.command(nested).status in (b"BAD", b"OK")
        assert client.command("NOOP").status == b"OK"
    assert_still_serving(imap_server, imap_account)


def test_huge_literals(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        tag = client.next_tag()
        client.send(tag + b" APPEND INBOX {4000000000}\r\n")
        response = client.read_until(tag)
        assert response.status == b"NO", response
        assert response.code() == b"TOOBIG", response
        tag = client.next_tag()
        client.send(tag + b" LOGIN {99999999999999999999}\r\n")
        assert client.read_until(tag).status in (b"BAD", b"NO")
        assert client.command("NOOP").status == b"OK"
    for size in (4000000000, 2 * 1024 * 1024 + 10):  # far over, and just over the limit
        with session(imap_server, imap_account) as client:
            # A too-big non-synchronising literal: its octets are on their way, and reading
            # them all would tie the connection up for 4 GB. RFC 7888 section 4: refuse it
            # with [TOOBIG], say BYE and close at once.
            tag = client.next_tag()
            started = time.monotonic()
            client.send(tag + b" APPEND INBOX {%d+}\r\n" % size + b"x" * 1000)
            toobig = client.read_until(tag)
            assert toobig.status == b"NO", toobig
            assert toobig.code() == b"TOOBIG", toobig
            bye = client.read_line()
            assert bye.startswith(b"* BYE"), bye
            client.sock.settimeout(5)
            with contextlib.suppress(ConnectionError):
                assert client.sock.recv(100) == b"", "the connection stays open after BYE"
            assert time.monotonic() - started < 3
    assert_still_serving(imap_server, imap_account)


def test_unbalanced_literal_then_close(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        tag = client.next_tag()
        client.send(tag + b" LOGIN {20}\r\n")
        assert client.read_line().startswith(b"+")
        client.send(b"short\r\n")  # fewer bytes than announced, then hang up
    with session(imap_server, imap_account) as client:
        client.command("SELECT INBOX")
        tag = client.next_tag()
        client.send(tag + b" SEARCH {3}\r\nALLX UNSEEN\r\n")  # literal then junk
        line = client.read_line()
        if line.startswith(b"+"):
            line = client.read_line()
        assert line.startswith(tag + b" BAD") or line.startswith(b"* BAD"), line
    assert_still_serving(imap_server, imap_account)


def test_overlong_line(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        client.send(b"t1 NOOP " + b"x" * 200_000 + b"\r\n")
        got = client.expect_closed(timeout=10) if False else b""
        line = client.read_line()
        # RFC 9051 section 4: the server may refuse a too-long line with BAD or BYE.
        assert b"BAD" in line or b"BYE" in line, line
        del got
    assert_still_serving(imap_server, imap_account)


def test_random_garbage(imap_server: Harness, imap_account: Account) -> None:
    rng = random.Random(3)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", imap_server.port("imap")), timeout=5) as sock:
            sock.recv(4096)
            payload = bytes(rng.randrange(256) for _ in range(2000)) + os.urandom(2000)
            try:
                sock.sendall(payload + b"\r\n" * 20)
                sock.settimeout(5)
                while sock.recv(65536):
                    pass
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                pass
    assert_still_serving(imap_server, imap_account)


def test_too_many_bad_commands_bye(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account, plain=True) as client:
        seen_bye = False
        for _ in range(20):  # DEFAULT_IMAP max_bad_commands is 5
            try:
                response = client.command(b"BOGUS")
            except ConnectionError:
                seen_bye = True
                break
            if response.starting(b"BYE"):
                seen_bye = True
                break
            assert response.status == b"BAD"
        assert seen_bye, "no BYE after 20 bad commands"
        assert client.expect_closed() == b""
    assert_still_serving(imap_server, imap_account)


def test_idle_done_garbage(imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as client:
        client.command("SELECT INBOX")
        tag = client.next_tag()
        client.send(tag + b" IDLE\r\n")
        assert client.read_line().startswith(b"+")
        client.send(b"NOT-DONE\r\n")
        # RFC 2177: anything but DONE ends IDLE with BAD.
        assert client.read_until(tag).status == b"BAD"
        assert client.command("NOOP").status == b"OK"
    assert_still_serving(imap_server, imap_account)
