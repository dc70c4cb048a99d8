"""``mailstead import imap`` against a scripted hostile IMAP server (TLS on loopback): one that
stops answering, and one that announces a gigantic literal. Each ends as one clear line and
exit 1, promptly, never a hang or a traceback."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import REPO, Harness, child_env

from mailstead.core.certs import generate_self_signed

Script = Callable[[ssl.SSLSocket], None]


def _lines(conn: ssl.SSLSocket) -> Iterator[bytes]:
    buffer = b""
    while True:
        while b"\r\n" not in buffer:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buffer += chunk
        line, _, buffer = buffer.partition(b"\r\n")
        yield line


def _logged_in(conn: ssl.SSLSocket) -> Iterator[tuple[bytes, bytes]]:
    """Greets, answers CAPABILITY and LOGIN, then yields (tag, command) of what follows."""
    conn.sendall(b"* OK hostile ready\r\n")
    for line in _lines(conn):
        tag, _, command = line.partition(b" ")
        verb = command.split(b" ", 1)[0].upper()
        if verb == b"CAPABILITY":
            conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
        elif verb == b"LOGIN":
            conn.sendall(tag + b" OK logged in\r\n")
        else:
            yield tag, command


def _silent_after_login(conn: ssl.SSLSocket) -> None:
    for _tag, _command in _logged_in(conn):
        return  # never answers the LIST


def _huge_literal(conn: ssl.SSLSocket) -> None:
    for tag, command in _logged_in(conn):
        verb = command.split(b" ", 1)[0].upper()
        if verb == b"LIST":
            conn.sendall(b'* LIST () "/" "INBOX"\r\n' + tag + b" OK done\r\n")
        elif verb in (b"EXAMINE", b"SELECT"):
            conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" + tag
                         + b" OK [READ-ONLY] done\r\n")
        elif verb == b"UID" and b"RFC822.SIZE" in command.upper():
            conn.sendall(b"* 1 FETCH (UID 1 RFC822.SIZE 100)\r\n" + tag + b" OK done\r\n")
        elif verb == b"UID":
            conn.sendall(b"* 1 FETCH (UID 1 BODY[] {99999999999}\r\n" + b"x" * 65536)
            return


@pytest.fixture
def hostile(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, Path]]:
    script: Script = request.param
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed("hostile.test", cert, key,
                         ip_addresses=[ipaddress.IPv4Address("127.0.0.1")])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    done = threading.Event()

    def serve() -> None:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                script(conn)
                done.wait(30)
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, cert
    finally:
        done.set()
        listener.close()
        thread.join(10)


def _run(h: Harness, address: str, port: int, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstead", "import", "imap", "--host", "127.0.0.1", "--port",
         str(port), "--ssl", "--user", "x@hostile.test", "--password-stdin", "--into", address,
         "--ca-file", str(cert), "--timeout", "2", "--data-dir", str(h.data_dir)],
        input="secret-password\n", capture_output=True, text=True, timeout=60, env=child_env(),
        cwd=REPO, check=False)


@pytest.mark.parametrize("hostile", [_silent_after_login], indirect=True)
def test_a_server_that_stops_answering_is_a_clear_error(
    hostile: tuple[int, Path], imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    proc = _run(imap_server, imap_account[0], *hostile)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "timed out" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("hostile", [_huge_literal], indirect=True)
def test_a_gigantic_literal_is_refused(
    hostile: tuple[int, Path], imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    proc = _run(imap_server, imap_account[0], *hostile)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "literal of 99,999,999,999 octets" in proc.stderr
