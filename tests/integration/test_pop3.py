"""POP3 against a real ``mailstead serve``: Python's poplib and raw sockets on 110 (STLS) and
995, every RFC 1939 command, AUTH PLAIN, bad input, the [IN-USE] lock, deletion only at QUIT
and what the store shows afterwards."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    Harness,
    RemotePOP3,
    Server,
    ServerError,
    Users,
    init_data_dir,
    make_message,
    rewrite_tables,
    rich_message,
)

USERS = Users(passwords={f"pop{i}@example.test": f"pop{i}-Secret-pw" for i in range(12)})
POP3: dict[str, int | float] = {
    "idle_timeout": 4,
    "auth_failure_delay": 0.5,
    "max_errors": 5,
    "max_connections": 50,
    "max_connections_per_ip": 8,
}
AUTH_REFUSED = re.compile(rb"^-ERR \[AUTH\] .*turn on SSL/TLS")


@pytest.fixture(scope="module")
def pop(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("pop3") / "data"
    try:
        init_data_dir(data_dir, USERS, DEFAULT_SMTP)
        rewrite_tables(data_dir / "mailstead.toml", {"pop3": POP3})
        server = Server(data_dir).start(timeout=20)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        log = server.log_text()
        assert code == 0, log[-20000:]
        assert "Traceback" not in log, log[-20000:]


def user(n: int) -> tuple[str, str]:
    address = f"pop{n}@example.test"
    return address, USERS.passwords[address]


def deliver(h: Harness, to: str, messages: list[bytes]) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=30) as client:
        for message in messages:
            client.sendmail("sender@remote.test", [to], message)


async def _inbox(data_dir: Path, address: str) -> tuple[int, list[tuple[int, bytes]]]:
    from mailstead.storage import open_store

    store = await open_store(data_dir)
    try:
        account = await store.get_account(address)
        assert account is not None
        mailbox = await store.get_mailbox(account.id, "INBOX")
        assert mailbox is not None
        infos = await store.list_messages_in(mailbox.id)
        return mailbox.uidvalidity, [(i.uid, await store.read_blob(i.blob)) for i in infos]
    finally:
        await store.close()


def inbox(h: Harness, address: str) -> tuple[int, list[tuple[int, bytes]]]:
    """(UIDVALIDITY, [(uid, stored bytes)]) of the INBOX, read through the MailStore API."""
    return asyncio.run(_inbox(h.data_dir, address))


def pop3s(h: Harness) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", h.port("pop3s"), context=h.tls(), timeout=15)


def login(h: Harness, n: int) -> poplib.POP3_SSL:
    client = pop3s(h)
    address, password = user(n)
    try:
        client.user(address)
        client.pass_(password)
    except BaseException:
        client.close()
        raise
    return client


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


class Raw:
    """A POP3 client that sends exactly the bytes it is given."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock: socket.socket = tls.wrap_socket(sock) if tls else sock
        self.buffer = b""
        self.greeting = self.line()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; partial {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def cmd(self, data: bytes) -> bytes:
        self.send(data + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def expect_closed(self, timeout: float = 10) -> None:
        assert not self.buffer, self.buffer
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(100)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return
        assert data == b"", data


# ------------------------------------------------------------------- port 110 and STLS


def test_110_refuses_passwords_before_stls_then_works_after(pop: Harness) -> None:
    client = RemotePOP3("127.0.0.1", pop.port("pop3"), timeout=15)
    try:
        assert client.getwelcome().startswith(b"+OK")
        caps = client.capa()
        assert "STLS" in caps
        assert "USER" not in caps
        assert "SASL" not in caps
        with pytest.raises(poplib.error_proto) as info:
            client.user(user(0)[0])
        assert AUTH_REFUSED.match(info.value.args[0]), info.value
        client.stls(pop.tls())
        caps = client.capa()
        assert "STLS" not in caps
        assert caps["SASL"] == ["PLAIN"]
        assert "USER" in caps
        assert {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} <= set(caps)
        client.user(user(0)[0])
        assert client.pass_(user(0)[1]).startswith(b"+OK")
        assert client.stat()[0] >= 0
    finally:
        client.quit()


def test_stls_discards_pipelined_plaintext(pop: Harness) -> None:
    """RFC 2595 section 4: what follows STLS in the same packet must never be executed."""
    raw = Raw(pop.port("pop3"))
    try:
        address, password = user(0)
        raw.send(f"STLS\r\nUSER {address}\r\nPASS {password}\r\n".encode())
        assert raw.line() == b"+OK Begin TLS negotiation"
        assert raw.buffer == b""
        raw.sock = pop.tls().wrap_socket(raw.sock)
        assert raw.cmd(b"STAT") == b"-ERR Not logged in: send USER and PASS, or AUTH, first"
        assert raw.cmd(b"STLS") == b"-ERR TLS is already active"
    finally:
        raw.close()


# ------------------------------------------------------------------- every command on 995


def test_every_command_over_995(pop: Harness) -> None:
    address, _ = user(1)
    sent = [make_message("p1-a", to=address), rich_message("p1-b", to=address),
            make_message("p1-c", to=address, body=b".\r\n..\r\n.x\r\nend\r\n")]
    deliver(pop, address, sent)
    uidvalidity, stored = inbox(pop, address)
    assert len(stored) == 3
    client = login(pop, 1)
    try:
        count, total = client.stat()
        assert count == 3
        assert total == sum(len(data) for _, data in stored)
        resp, listing, _ = client.list()
        assert resp.startswith(b"+OK 3 messages")
        assert listing == [b"%d %d" % (n, len(d)) for n, (_, d) in enumerate(stored, start=1)]
        assert client.list(2) == b"+OK 2 %d" % len(stored[1][1])
        _, uidl, _ = client.uidl()
        assert uidl == [b"%d %d.%d" % (n, uidvalidity, uid)
                        for n, (uid, _) in enumerate(stored, start=1)]
        assert client.uidl(3) == b"+OK 3 %d.%d" % (uidvalidity, stored[2][0])
        for n, (_, data) in enumerate(stored, start=1):
            resp, lines, octets = client.retr(n)
            assert resp == b"+OK %d octets" % len(data)
            assert joined(lines) == data  # byte for byte, dots unstuffed by poplib
            assert octets == len(data)
        assert stored[2][1].endswith(b"\r\n.\r\n..\r\n.x\r\nend\r\n")
        _, top, _ = client.top(2, 3)
        header, _, body = stored[1][1].partition(b"\r\n\r\n")
        assert joined(top) == header + b"\r\n\r\n" + b"".join(
            line + b"\r\n" for line in body.split(b"\r\n")[:3])
        assert client.noop() == b"+OK"
        assert client.dele(1) == b"+OK Message 1 deleted"
        assert client.stat() == (2, total - len(stored[0][1]))
        with pytest.raises(poplib.error_proto, match="deleted"):
            client.retr(1)
        assert client.rset().startswith(b"+OK Maildrop has 3 messages")
        assert client.stat() == (3, total)
        client.dele(2)
        assert client.quit() == b"+OK Bye, 2 messages left"
    except BaseException:
        client.close()
        raise
    after = inbox(pop, address)[1]
    assert [uid for uid, _ in after] == [stored[0][0], stored[2][0]]


def test_auth_plain_initial_response_and_continuation(pop: Harness) -> None:
    address, password = user(2)
    token = base64.b64encode(f"\0{address}\0{password}".encode())
    raw = Raw(pop.port("pop3s"), pop.tls())
    try:
        assert raw.cmd(b"AUTH PLAIN " + token).startswith(b"+OK Logged in")
        assert raw.cmd(b"QUIT").startswith(b"+OK Bye")
    finally:
        raw.close()
    raw = Raw(pop.port("pop3s"), pop.tls())
    try:
        assert raw.cmd(b"AUTH PLAIN") == b"+ "
        assert raw.cmd(token).startswith(b"+OK Logged in")
    finally:
        raw.close()
    raw = Raw(pop.port("pop3s"), pop.tls())
    try:
        assert raw.cmd(b"AUTH PLAIN") == b"+ "
        assert raw.cmd(b"*") == b"-ERR Authentication cancelled"
        wrong = base64.b64encode(f"\0{address}\0wrong".encode())
        assert raw.cmd(b"AUTH PLAIN " + wrong) == b"-ERR [AUTH] Authentication failed"
        other = base64.b64encode(f"pop3@example.test\0{address}\0{password}".encode())
        assert raw.cmd(b"AUTH PLAIN " + other).startswith(b"-ERR [AUTH] Authorization")
    finally:
        raw.close()


# ------------------------------------------------------------------- bad input


def test_bad_input(pop: Harness) -> None:
    address, _ = user(3)
    deliver(pop, address, [make_message("p3-a", to=address)])
    raw = Raw(pop.port("pop3s"), pop.tls())
    try:
        assert raw.cmd(b"STAT") == b"-ERR Not logged in: send USER and PASS, or AUTH, first"
        assert raw.cmd(b"XYZZY") == b"-ERR Unknown command"
        raw.cmd(f"USER {address}".encode())
        assert raw.cmd(f"PASS {USERS.passwords[address]}".encode()).startswith(b"+OK")
        assert raw.cmd(b"DELE 1") == b"+OK Message 1 deleted"
        assert raw.cmd(b"RETR 2") == b"-ERR No such message"
        assert raw.cmd(b"NOOP") == b"+OK"  # errors are counted but the session goes on
        assert raw.cmd(b"LIST " + b"9" * 300) == (
            b"-ERR Command line too long: at most 255 octets (RFC 2449)")
        # The fifth error closes the session (max_errors = 5); nothing was deleted.
        assert raw.cmd(b"USER x") == b"-ERR Already logged in"
        assert raw.line() == b"-ERR Too many invalid commands, closing connection"
        raw.expect_closed()
    finally:
        raw.close()
    assert len(inbox(pop, address)[1]) == 1


def test_huge_line_without_crlf_is_bounded(pop: Harness) -> None:
    raw = Raw(pop.port("pop3s"), pop.tls())
    try:
        raw.send(b"A" * 100_000)
        assert raw.line() == b"-ERR Command line too long: at most 255 octets (RFC 2449)"
        raw.send(b"\r\nCAPA\r\n")
        assert raw.line() == b"+OK Capability list follows"
        assert b"UIDL" in raw.multiline()
    finally:
        raw.close()


# ------------------------------------------------------------------- locking and deletion


def test_second_session_gets_in_use(pop: Harness) -> None:
    first = login(pop, 4)
    try:
        second = pop3s(pop)
        try:
            address, password = user(4)
            second.user(address)
            with pytest.raises(poplib.error_proto) as info:
                second.pass_(password)
            assert info.value.args[0].startswith(b"-ERR [IN-USE]")
            # Over port 110 + STLS too: one lock for both listeners.
            plain = poplib.POP3("127.0.0.1", pop.port("pop3"), timeout=15)
            plain.stls(pop.tls())
            plain.user(address)
            with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
                plain.pass_(password)
            plain.quit()
        finally:
            second.close()
    finally:
        first.quit()
    login(pop, 4).quit()  # released at QUIT


def test_deletion_only_at_quit(pop: Harness) -> None:
    address, _ = user(5)
    deliver(pop, address, [make_message(f"p5-{i}", to=address) for i in range(3)])
    before = inbox(pop, address)[1]
    client = login(pop, 5)
    client.dele(1)
    client.dele(3)
    assert inbox(pop, address)[1] == before  # marked, not removed
    assert client.quit() == b"+OK Bye, 1 messages left"
    after = inbox(pop, address)[1]
    assert after == [before[1]]  # gone from list_messages_in, which IMAP reads too


def test_dropped_connection_deletes_nothing(pop: Harness) -> None:
    address, _ = user(6)
    deliver(pop, address, [make_message(f"p6-{i}", to=address) for i in range(2)])
    before = inbox(pop, address)[1]
    client = login(pop, 6)
    client.dele(1)
    client.dele(2)
    client.close()  # drops the connection without QUIT
    deadline = time.monotonic() + 10
    while True:  # the lock is released once the server notices
        try:
            client = login(pop, 6)
            break
        except poplib.error_proto as exc:
            error = exc.args[0]
        assert b"IN-USE" in error
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.stat()[0] == 2
    client.quit()
    assert inbox(pop, address)[1] == before


def test_uidl_stable_and_new_mail_not_seen_mid_session(pop: Harness) -> None:
    address, _ = user(7)
    deliver(pop, address, [make_message("p7-a", to=address)])
    client = login(pop, 7)
    first = client.uidl()[1]
    deliver(pop, address, [make_message("p7-b", to=address)])
    assert client.stat()[0] == 1  # RFC 1939: the maildrop is fixed for the session
    client.quit()
    client = login(pop, 7)
    second = client.uidl()[1]
    client.quit()
    assert second[0] == first[0]
    assert len(second) == 2


# ------------------------------------------------------------------- limits


def test_failed_login_is_delayed_without_blocking_others(pop: Harness) -> None:
    address, _ = user(8)
    results: dict[str, float] = {}

    def fail() -> None:
        client = pop3s(pop)
        client.user(address)
        start = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"^b?'?-ERR \[AUTH\]"):
            client.pass_("wrong password")
        results["failed"] = time.monotonic() - start
        client.close()

    thread = threading.Thread(target=fail)
    thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    login(pop, 9).quit()
    results["other"] = time.monotonic() - start
    thread.join(10)
    assert results["failed"] >= POP3["auth_failure_delay"]
    assert results["other"] < POP3["auth_failure_delay"] + 1.5


def test_idle_timeout_closes_silently(pop: Harness) -> None:
    raw = Raw(pop.port("pop3s"), pop.tls())
    try:
        start = time.monotonic()
        raw.expect_closed(timeout=POP3["idle_timeout"] + 5)
        assert time.monotonic() - start >= POP3["idle_timeout"] - 0.5
    finally:
        raw.close()


def test_connections_per_ip_limit(pop: Harness) -> None:
    conns = []
    try:
        for _ in range(int(POP3["max_connections_per_ip"])):
            conns.append(Raw(pop.port("pop3")))
        sock = socket.create_connection(("127.0.0.1", pop.port("pop3")), timeout=10)
        with sock:
            assert sock.recv(200).startswith(b"-ERR [SYS/TEMP] Too many connections")
    finally:
        for conn in conns:
            conn.close()


def _imap_append_raw(h: Harness, address: str, password: str, messages: list[bytes]) -> None:
    """APPENDs ``messages`` byte for byte (imaplib.append would rewrite their line endings)."""
    with socket.create_connection(("127.0.0.1", h.port("imaps")), timeout=15) as plain, \
            h.tls().wrap_socket(plain, server_hostname="mail.example.test") as sock:
        buffer = b""

        def reply(tag: bytes) -> bytes:
            nonlocal buffer
            while True:
                while b"\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    assert chunk, "IMAP connection closed"
                    buffer += chunk
                line, buffer = buffer.split(b"\r\n", 1)
                if line.startswith(tag):
                    return line

        reply(b"* OK")
        sock.sendall(b"a1 LOGIN %s %s\r\n" % (address.encode(), password.encode()))
        assert reply(b"a1 ").startswith(b"a1 OK"), "IMAP login failed"
        for n, data in enumerate(messages, start=2):
            tag = b"a%d" % n
            sock.sendall(tag + b" APPEND INBOX {%d}\r\n" % len(data))
            assert reply(b"+").startswith(b"+")
            sock.sendall(data + b"\r\n")
            assert reply(tag + b" ").startswith(tag + b" OK")
        sock.sendall(b"a0 LOGOUT\r\n")


def test_bare_lf_sizes_agree_between_list_retr_and_imap(pop: Harness) -> None:
    """Messages stored with bare LFs and an unterminated last line (only IMAP APPEND can do
    that): LIST/STAT come from the stored wire size, without reading bodies, and still equal
    what RETR sends; IMAP RFC822.SIZE equals the BODY[] it sends, in CRLF form."""
    address, password = user(10)
    stored = [
        b"From: a@remote.test\nSubject: bare lf\n\nline one\n.dot line\nno final newline",
        b"From: a@remote.test\r\nSubject: mixed\r\n\r\nbody\nmore\r\nbare cr\r here\n",
        b"From: a@remote.test\r\nSubject: plain\r\n\r\nall CRLF\r\n",
    ]
    _imap_append_raw(pop, address, password, stored)
    assert [data for _, data in inbox(pop, address)[1]] == stored
    crlf = [data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for data in stored]
    wire = [data if data.endswith(b"\r\n") else data + b"\r\n" for data in crlf]

    client = login(pop, 10)
    try:
        resp, listing, _ = client.list()
        assert resp.startswith(b"+OK")
        assert listing == [b"%d %d" % (n, len(w)) for n, w in enumerate(wire, start=1)]
        assert client.stat() == (3, sum(len(w) for w in wire))
        for n, expected in enumerate(wire, start=1):
            resp, lines, octets = client.retr(n)
            assert resp == b"+OK %d octets" % len(expected)
            # poplib undoes the byte-stuffing and drops the CRLFs: rebuild what was sent.
            assert joined(lines) == expected
            assert octets == len(expected)  # poplib counts the octets after un-stuffing
    finally:
        client.quit()

    imap = imaplib.IMAP4_SSL("127.0.0.1", pop.port("imaps"), ssl_context=pop.tls(), timeout=15)
    try:
        imap.login(address, password)
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch("1:3", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        fetched = [item for item in data if isinstance(item, tuple)]
        assert len(fetched) == 3
        for (head, body), expected in zip(fetched, crlf, strict=True):
            size = re.search(rb"RFC822\.SIZE (\d+)", head)
            assert size is not None
            assert int(size.group(1)) == len(body) == len(expected)
            assert body == expected
    finally:
        imap.logout()
