"""Connection accounting against hostile clients, on a real server with small limits: raw TCP
connections that never start their TLS handshake, and slowloris floods that send a byte now
and then without ever finishing a command."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import (
    HOSTNAME,
    PASSWORDS,
    USERS,
    Harness,
    Server,
    configure_imap,
    dot_stuff,
    init_data_dir,
    make_message,
    rewrite_tables,
)

ALICE = "alice@example.test"
SMTP_LIMITS: dict[str, Any] = {"max_connections": 50, "max_connections_per_ip": 20,
                               "idle_timeout": 30}
IMAP_LIMITS: dict[str, Any] = {"max_connections": 40, "max_connections_per_ip": 20}
HANDSHAKE_TIMEOUT = 2.0
RSS_GROWTH_LIMIT = 40 * 1024  # KiB the server may grow by during an attack


@pytest.fixture(scope="module")
def hostile_server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str
) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    init_data_dir(data_dir, USERS, SMTP_LIMITS)
    configure_imap(data_dir, IMAP_LIMITS)
    rewrite_tables(data_dir / "mailstead.toml",
                   {"connections": {"tls_handshake_timeout": HANDSHAKE_TIMEOUT}})
    server = Server(data_dir).start(timeout=20)
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        log = server.log_text()
        assert code == 0, log[-5000:]
        assert "Traceback" not in log, log[-20000:]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``field`` of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def connect_from(source: str, port: int, timeout: float = 5) -> socket.socket:
    """A TCP connection to the server from the loopback address ``source`` (all of
    127.0.0.0/8 is this host on Linux)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the server has closed ``sock`` (EOF or reset); the socket must be readable."""
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (BlockingIOError, TimeoutError):
        return False


def wait_closed(socks: list[socket.socket], until: float) -> set[socket.socket]:
    """The sockets of ``socks`` the server has closed by ``until`` (monotonic time)."""
    closed: set[socket.socket] = set()
    while time.monotonic() < until and len(closed) < len(socks):
        waiting = [s for s in socks if s not in closed]
        readable, _, _ = select.select(waiting, [], [], max(0.0, until - time.monotonic()))
        for sock in readable:
            if closed_by_peer(sock):
                closed.add(sock)
    return closed


def read_line(sock: socket.socket) -> bytes:
    out = b""
    while not out.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {out!r}")
        out += chunk
    return out


def imaps_login(port: int, source: str, tls: ssl.SSLContext) -> bytes:
    """TLS, greeting and LOGIN on the implicit-TLS port; the tagged answer."""
    with tls.wrap_socket(connect_from(source, port), server_hostname=HOSTNAME) as sock:
        assert read_line(sock).startswith(b"* OK")
        sock.sendall(b'a LOGIN "%s" "%s"\r\n' % (ALICE.encode(), PASSWORDS[ALICE].encode()))
        while not (line := read_line(sock)).startswith(b"a "):
            pass
        sock.sendall(b"b LOGOUT\r\n")
        return line


def imap_starttls_login(port: int, source: str, tls: ssl.SSLContext) -> ssl.SSLSocket:
    """Greeting, STARTTLS and LOGIN on the plain IMAP port; the logged-in TLS socket."""
    plain = connect_from(source, port)
    try:
        assert read_line(plain).startswith(b"* OK")
        plain.sendall(b"s STARTTLS\r\n")
        assert read_line(plain).startswith(b"s OK")
        sock = tls.wrap_socket(plain, server_hostname=HOSTNAME)
    except BaseException:
        plain.close()
        raise
    try:
        sock.sendall(b'a LOGIN "%s" "%s"\r\n' % (ALICE.encode(), PASSWORDS[ALICE].encode()))
        while not (line := read_line(sock)).startswith(b"a "):
            pass
        assert line.startswith(b"a OK"), line
    except BaseException:
        sock.close()
        raise
    return sock


def test_implicit_tls_connections_counted_at_accept(hostile_server: Harness) -> None:
    """200 raw TCP connections to the implicit-TLS IMAP port from one address that never
    send a ClientHello: the server keeps the per-address limit of them (closing the rest at
    accept), closes those after the handshake timeout, and serves others all along."""
    h = hostile_server
    port, limit = h.port("imaps"), IMAP_LIMITS["max_connections_per_ip"]
    tls = h.tls()
    rss_before = rss_kib(h.server.pid)
    with contextlib.ExitStack() as stack:
        start = time.monotonic()
        socks = [stack.enter_context(connect_from("127.0.0.1", port)) for _ in range(200)]
        for sock in socks:
            sock.setblocking(False)
        # Well before the handshake timeout, all but the limit are closed.
        early = wait_closed(socks, start + HANDSHAKE_TIMEOUT * 0.75)
        assert len(early) >= 200 - limit, f"{len(early)} of 200 closed at accept"
        # Another client completes TLS and LOGIN within 1 s while they are held.
        begin = time.monotonic()
        assert b"a OK" in imaps_login(port, "127.0.0.2", tls)
        assert time.monotonic() - begin < 1.0
        # The handshake timeout closes the held ones.
        held = [s for s in socks if s not in early]
        late = wait_closed(held, start + HANDSHAKE_TIMEOUT + 3)
        assert len(late) == len(held), f"{len(held) - len(late)} still open"
        assert time.monotonic() - start >= HANDSHAKE_TIMEOUT * 0.9
    # The address is welcome again.
    assert b"a OK" in imaps_login(port, "127.0.0.1", tls)
    growth = rss_kib(h.server.pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth} KiB"


def test_starttls_handshake_times_out(hostile_server: Harness) -> None:
    """A client that asks for STARTTLS and then sends nothing is closed after the handshake
    timeout, not held for the old 30 s."""
    h = hostile_server
    with connect_from("127.0.0.3", h.port("imap")) as sock:
        assert read_line(sock).startswith(b"* OK")
        sock.sendall(b"a STARTTLS\r\n")
        assert read_line(sock).startswith(b"a OK")
        start = time.monotonic()
        sock.setblocking(False)
        assert wait_closed([sock], start + HANDSHAKE_TIMEOUT + 3)
        assert time.monotonic() - start >= HANDSHAKE_TIMEOUT * 0.9


class Slowloris:
    """Connections from 127.0.0.``first``.. that each send one byte of a command line per
    ``interval`` and never finish it; a connection the server closes is opened again, so the
    flood keeps up its pressure for as long as it runs."""

    def __init__(self, port: int, count: int, interval: float, *, first: int = 2,
                 greeting: bytes = b"220") -> None:
        self.port = port
        self.sources = [f"127.0.0.{n}" for n in range(first, first + count)]
        self.greeting = greeting
        self.interval = interval
        self.socks: dict[str, socket.socket | None] = dict.fromkeys(self.sources)
        self.greetings: list[bytes] = []
        self.goodbyes: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def _open(self, source: str) -> None:
        try:
            sock = connect_from(source, self.port)
            sock.settimeout(2)
            greeting = sock.recv(4096)
        except OSError:
            return
        with self._lock:
            self.greetings.append(greeting)
        if greeting.startswith(self.greeting):
            sock.setblocking(False)
            self.socks[source] = sock
        else:
            sock.close()

    def start(self) -> None:
        for source in self.sources:
            self._open(source)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for source, sock in list(self.socks.items()):
                if sock is None:
                    self._open(source)
                    continue
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data is not None:  # an answer or EOF: the server let go of this one
                    with self._lock:
                        self.goodbyes.append(data)
                    sock.close()
                    self.socks[source] = None
                    continue
                with contextlib.suppress(OSError):
                    sock.send(b"E")

    def wait_goodbye(self, start: bytes, until: float) -> list[bytes]:
        """The goodbyes so far, once one starts with ``start`` or ``until`` has passed."""
        while True:
            with self._lock:
                goodbyes = list(self.goodbyes)
            if any(g.startswith(start) for g in goodbyes) or time.monotonic() > until:
                return goodbyes
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks.values():
            if sock is not None:
                sock.close()


def test_slowloris_flood_leaves_a_slot_for_real_mail(hostile_server: Harness, token: str) -> None:
    """60 connections from 60 addresses, one byte each per second, against 50 SMTP slots:
    a real MX client still gets 220 and delivers within 1 s, the slowest sessions are shed
    with 421 4.4.2, and the server's memory stays bounded."""
    h = hostile_server
    rss_before = rss_kib(h.server.pid)
    flood = Slowloris(h.smtp_port, 60, interval=0.5)
    flood.start()
    try:
        # The attack runs a moment before the real client comes: its sessions are then
        # idle (no complete command) for longer than a fresh connection.
        time.sleep(1.5)
        begin = time.monotonic()
        with connect_from("127.0.0.1", h.smtp_port) as sock:
            sock.settimeout(5)
            replies = []

            def command(line: bytes) -> bytes:
                sock.sendall(line)
                reply = b""
                while not reply.endswith(b"\r\n") or reply.splitlines()[-1][3:4] == b"-":
                    chunk = sock.recv(4096)
                    assert chunk, f"closed after {reply!r}"
                    reply += chunk
                replies.append(reply)
                return reply

            assert command(b"")[:3] == b"220", replies
            assert command(b"EHLO mx.remote.test\r\n")[:3] == b"250", replies
            assert command(b"MAIL FROM:<sender@remote.test>\r\n")[:3] == b"250", replies
            assert command(f"RCPT TO:<{ALICE}>\r\n".encode())[:3] == b"250", replies
            assert command(b"DATA\r\n")[:3] == b"354", replies
            assert command(dot_stuff(make_message(token)))[:3] == b"250", replies
            elapsed = time.monotonic() - begin
            command(b"QUIT\r\n")
        assert elapsed < 1.0, f"the real client took {elapsed:.2f} s"
        goodbyes = flood.wait_goodbye(b"421 4.4.2", time.monotonic() + 5)
        assert any(g.startswith(b"421 4.4.2") for g in goodbyes), goodbyes[:5]
        growth = rss_kib(h.server.pid) - rss_before
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth} KiB"
    finally:
        flood.stop()
    assert len(h.find(ALICE, token)) == 1


def test_plain_port_refusal_still_replies(hostile_server: Harness) -> None:
    """Over the per-address limit on a plain port the client still gets the protocol's
    refusal (IMAP BYE), not a silent close."""
    h = hostile_server
    limit = IMAP_LIMITS["max_connections_per_ip"]
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect_from("127.0.0.4", h.port("imap")))
                for _ in range(limit)]
        for sock in held:
            assert read_line(sock).startswith(b"* OK")
        with connect_from("127.0.0.4", h.port("imap")) as extra:
            assert read_line(extra).startswith(b"* BYE [UNAVAILABLE]")



def test_idle_sessions_outlast_a_slowloris_flood(hostile_server: Harness) -> None:
    """IMAP: 10 logged-in IDLE sessions and a flood of 40 slow connections against 40 slots.
    The flood's sessions are shed with BYE, a new client logs in within 1 s, and every IDLE
    session is still there (DONE gets its OK)."""
    h = hostile_server
    port = h.port("imap")
    tls = h.tls()
    with contextlib.ExitStack() as stack:
        idlers = []
        for n in range(10):
            sock = stack.enter_context(imap_starttls_login(port, "127.0.0.5", tls))
            sock.sendall(b"b SELECT INBOX\r\nc IDLE\r\n")
            while not (line := read_line(sock)).startswith(b"+"):
                assert not line.startswith((b"b NO", b"* BYE")), (n, line)
            idlers.append(sock)
        flood = Slowloris(port, 40, interval=0.5, first=10, greeting=b"* OK")
        flood.start()
        try:
            # The attack runs a moment before the real client comes (see the SMTP test).
            time.sleep(1.5)
            begin = time.monotonic()
            imap_starttls_login(port, "127.0.0.6", tls).close()
            assert time.monotonic() - begin < 1.0
            goodbyes = flood.wait_goodbye(b"* BYE [UNAVAILABLE] Idle too long",
                                          time.monotonic() + 5)
            assert any(b"BYE [UNAVAILABLE] Idle too long" in g for g in goodbyes), goodbyes[:5]
        finally:
            flood.stop()
        for sock in idlers:
            sock.sendall(b"DONE\r\n")
            while not (line := read_line(sock)).startswith(b"c "):
                assert not line.startswith(b"* BYE"), line
            assert line.startswith(b"c OK"), line
