"""Hostile Sieve at delivery: a 2 KB script of ``:matches`` patterns and a 48 KB message
that makes them work hard neither stall the server nor lose the message (the run stops at
its budget, off the event loop, the message is kept in INBOX and the owner told once)."""

from __future__ import annotations

import imaplib
import smtplib
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    HOSTNAME,
    Server,
    Users,
    init_data_dir,
    read_mailbox,
    run_cli,
    tls_context,
)

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse battery staple"
# Keys of "a?" runs that match almost everywhere in a long run of "a" and fail only at
# their last character: a backtracking matcher retries every start of each (quadratic); a
# linear one still scans 48 KB per key, which the run's step budget stops.
ENDS = [c for c in string.ascii_lowercase + string.digits + "!#$%&'()+,-./:;<=>@[]^_`{|}~"
        if c != "a"]
KEYS = [f"*{'a?' * n}{end}*" for n in (3, 5) for end in ENDS]
HOSTILE_SCRIPT = ('require ["fileinto"];\r\nif header :matches "Subject" ['
                  + ", ".join(f'"{k}"' for k in KEYS) + '] {\r\n  fileinto "Junk";\r\n}\r\n')
# The server's high-water mark may not grow by more than this while the attack runs.
MEMORY_BOUND_KIB = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("sieve-hostile") / "data"
    init_data_dir(data_dir, Users(passwords={ALICE: PASSWORD, BOB: PASSWORD}), DEFAULT_SMTP)
    srv = Server(data_dir).start(timeout=20)
    try:
        yield srv
    finally:
        code = srv.stop()
        log = srv.log_text()
        assert code == 0, log[-5000:]
        assert "Traceback" not in log, log[-20000:]


def _hostile_message(token: str) -> bytes:
    """About 48 KB: a Subject of 53 folded lines of 900 "a" (unfolded: "a" runs and spaces)."""
    folded = "\r\n ".join(["a" * 900] * 53)
    return (f"From: mallory@remote.test\r\nTo: {ALICE}\r\nSubject: {folded}\r\n"
            f"Message-ID: <{token}@remote.test>\r\n\r\n{token}\r\n").encode()


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def _install(server: Server, address: str, script: str) -> None:
    path = server.data_dir.parent / "hostile.sieve"
    path.write_text(script, encoding="utf-8")
    run_cli("sieve", "put", address, "hostile", str(path), "--data-dir", str(server.data_dir))


def _deliver_while_noop(server: Server, data: bytes) -> tuple[float, list[float]]:
    """Delivers ``data`` to ALICE over port 25 while BOB's IMAP session sends NOOPs; the
    delivery's duration and every NOOP's latency."""
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=60)
    latencies: list[float] = []
    took: list[float] = []
    try:
        imap.starttls(ssl_context=tls_context(server.cert_path, HOSTNAME))
        imap.login(BOB, PASSWORD)

        def send() -> None:
            start = time.monotonic()
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=120) as smtp:
                smtp.sendmail("mallory@remote.test", [ALICE], data)
            took.append(time.monotonic() - start)

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 120
        while sender.is_alive() and time.monotonic() < deadline:
            start = time.monotonic()
            assert imap.noop()[0] == "OK"
            latencies.append(time.monotonic() - start)
        sender.join(120)
        assert took, "the delivery did not finish"
    finally:
        imap.logout()
    return took[0], latencies


def test_hostile_matches_neither_stalls_nor_loses_mail(server: Server) -> None:
    assert 1800 <= len(HOSTILE_SCRIPT) <= 2300
    _install(server, ALICE, HOSTILE_SCRIPT)
    data = _hostile_message("hostile-1")
    assert 46_000 <= len(data) <= 50_000
    hwm_before = _vm(server.pid, "VmHWM")
    took, latencies = _deliver_while_noop(server, data)
    print(f"delivery {took:.2f} s, slowest NOOP {max(latencies):.3f} s, "
          f"VmHWM {hwm_before} -> {_vm(server.pid, 'VmHWM')} KiB")
    # Another client is answered within 1 s all along, and the delivery itself is quick.
    assert latencies
    assert max(latencies) < 1.0, (took, latencies)
    assert took < 10.0
    assert _vm(server.pid, "VmHWM") - hwm_before < MEMORY_BOUND_KIB
    inbox = read_mailbox(server.data_dir, ALICE)
    assert [m for m in inbox if b"hostile-1" in m], "the message was not kept in INBOX"
    notices = [m for m in inbox if b"Your mail filter (Sieve script) was stopped" in m]
    assert len(notices) == 1
    assert "sieve script of account" in server.log_text()
    # A second attack: kept again, but the owner is told only once.
    took, latencies = _deliver_while_noop(server, _hostile_message("hostile-2"))
    assert max(latencies) < 1.0
    inbox = read_mailbox(server.data_dir, ALICE)
    assert [m for m in inbox if b"hostile-2" in m]
    assert len([m for m in inbox if b"Your mail filter (Sieve script) was stopped" in m]) == 1
