"""Message content of unfinished SMTP transactions is spooled to temp files, within budgets.

Many sessions that send large DATA without the final dot must not make the server hold it all
in memory; the temp files go away with their sessions; a budget answers 452 4.3.1 when full.
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    PASSWORDS,
    USERS,
    Harness,
    RawSMTP,
    Server,
    dot_stuff,
    init_data_dir,
    make_message,
    split_received,
)

ALICE = "alice@example.test"
MIB = 1024 * 1024
SESSIONS = 20
PER_SESSION = 12 * MIB  # the 45 MB, scaled down; 240 MB in all
PIECE = 256 * 1024
# What the attack may add to the server's peak memory (VmHWM over VmRSS before it); before
# the spool the 240 MB held by the sessions showed up here in full.
RSS_BOUND_KIB = 64 * 1024
LINE = b"x" * 76 + b"\r\n"

BIG_SMTP = {**DEFAULT_SMTP, "max_message_size": 16 * MIB, "max_connections_per_ip": 40}
TINY_SMTP = {**DEFAULT_SMTP, "spool_memory_budget": 128 * 1024,
             "spool_disk_budget": 256 * 1024, "max_connections_per_ip": 40}


def _start(root: Path, smtp: dict[str, object]) -> Iterator[Harness]:
    data_dir = root / "data"
    init_data_dir(data_dir, USERS, smtp)
    server = Server(data_dir).start(timeout=20)
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        assert code == 0, server.log_text()[-5000:]
        assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    yield from _start(tmp_path_factory.mktemp("spool-big"), BIG_SMTP)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory,
                store_backend: str) -> Iterator[Harness]:
    yield from _start(tmp_path_factory.mktemp("spool-tiny"), TINY_SMTP)


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for pid {pid}")


def _spool_files(h: Harness) -> list[Path]:
    tmp = h.data_dir / "tmp"
    return sorted(p for p in tmp.iterdir() if p.name.startswith("smtp-")) if tmp.exists() else []


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _open_data(h: Harness, token: str) -> RawSMTP:
    smtp = h.raw("smtp", timeout=30)
    try:
        assert smtp.read_reply().code == 220
        smtp.ehlo()
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        assert smtp.command(f"RCPT TO:<{ALICE}>").code == 250
        reply = smtp.command("DATA")
        assert reply.code == 354, reply
    except BaseException:
        smtp.close()
        raise
    return smtp


def _fetch_over_imap(h: Harness, token: str) -> bytes:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=30)
    try:
        assert client.login(ALICE, PASSWORDS[ALICE])[0] == "OK"
        assert client.select("INBOX", readonly=True)[0] == "OK"
        typ, found = client.uid("SEARCH", "HEADER", "X-Token", token)
        assert typ == "OK", found
        assert found[0], found
        uids = found[0].split()
        assert len(uids) == 1, uids
        typ, parts = client.uid("FETCH", uids[0], "(BODY.PEEK[])")
        assert typ == "OK"
        item = parts[0]
        assert isinstance(item, tuple)
        return item[1]
    finally:
        client.logout()


def test_unfinished_data_is_spooled_not_held(big_server: Harness, token: str) -> None:
    """20 sessions each send 12 MB of DATA without the final dot: the server's peak memory
    grows by less than RSS_BOUND_KIB, the content sits in 0600 temp files, another client
    is served within 1 s; the files go away with the sessions; a big complete message
    arrives byte for byte."""
    h = big_server
    pid = h.server.pid
    header = make_message(token + "-held", body=b"")
    sessions = [_open_data(h, token) for _ in range(SESSIONS)]
    try:
        before_kib = _status_kib(pid, "VmRSS")
        for s in sessions:
            s.send(header)
        block = LINE * (PIECE // len(LINE))
        sent = len(header)
        while sent < PER_SESSION:
            for s in sessions:
                s.send(block)
            sent += len(block)
        _wait_for("every session's spool file",
                  lambda: len(_spool_files(h)) == SESSIONS
                  and sum(p.stat().st_size for p in _spool_files(h)) >= SESSIONS * (sent - PIECE))
        for path in _spool_files(h):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        peak_kib = _status_kib(pid, "VmHWM")
        grown = peak_kib - before_kib
        print(f"\nVmRSS before {before_kib} KiB, VmHWM after {peak_kib} KiB "
              f"(+{grown} KiB) for {SESSIONS} x {sent // MIB} MiB unfinished")
        assert grown < RSS_BOUND_KIB, (before_kib, peak_kib)

        # Meanwhile another client delivers within a second.
        start = time.monotonic()
        with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=10) as client:
            client.sendmail("sender@remote.test", [ALICE], make_message(token + "-quick"))
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, elapsed
    finally:
        for s in sessions:
            s.close()
    _wait_for("the temp files to go", lambda: not _spool_files(h))
    assert len(h.find(ALICE, token + "-quick")) == 1
    assert not h.find(ALICE, token + "-held")

    # A big message that completes is stored byte for byte.
    body = b"".join(b"%08d " % n + LINE[:60] + b"\r\n" for n in range(10 * MIB // 71))
    body += b".a line that starts with a dot\r\n"
    big = make_message(token + "-big", body=body)
    smtp = _open_data(h, token)
    with smtp:
        smtp.send(dot_stuff(big))
        reply = smtp.read_reply()
        assert reply.code == 250, reply
    assert not _spool_files(h)
    fields, rest = split_received(_fetch_over_imap(h, token + "-big"))
    assert fields
    assert rest == big


def test_memory_budget_answers_452(tiny_server: Harness, token: str) -> None:
    """A 128 KiB budget holds two messages' in-memory parts: the third DATA (and a BDAT) gets
    452 4.3.1; once one is finished there is room again."""
    h = tiny_server
    first, second = _open_data(h, token), _open_data(h, token)
    try:
        with h.raw("smtp") as third:
            assert third.read_reply().code == 220
            third.ehlo()
            assert third.command("MAIL FROM:<sender@remote.test>").code == 250
            assert third.command(f"RCPT TO:<{ALICE}>").code == 250
            reply = third.command("DATA")
            assert (reply.code, reply.enhanced) == (452, "4.3.1"), reply
            # RFC 3030 section 2: the refused chunk is read and dropped, with the transaction.
            third.send(b"BDAT 5 LAST\r\nhello")
            reply = third.read_reply()
            assert (reply.code, reply.enhanced) == (452, "4.3.1"), reply
            assert third.command("NOOP").code == 250
            first.send(dot_stuff(make_message(token + "-first")))
            assert first.read_reply().code == 250
            assert third.command("MAIL FROM:<sender@remote.test>").code == 250
            assert third.command(f"RCPT TO:<{ALICE}>").code == 250
            assert third.command("DATA").code == 354
            third.send(dot_stuff(make_message(token + "-third")))
            assert third.read_reply().code == 250
    finally:
        first.close()
        second.close()
    assert len(h.find(ALICE, token + "-first")) == 1
    assert len(h.find(ALICE, token + "-third")) == 1


def test_disk_budget_answers_452(tiny_server: Harness, token: str) -> None:
    """A message bigger than the 256 KiB of temp files allowed is refused with 452 4.3.1: at
    MAIL when its SIZE= says so (RFC 1870 section 6.2), else once read to its end; nothing
    is left behind and the session goes on."""
    h = tiny_server
    big = make_message(token + "-big", body=LINE * (300 * 1024 // len(LINE)))
    with h.raw("smtp") as smtp:
        assert smtp.read_reply().code == 220
        smtp.ehlo()
        reply = smtp.command(f"MAIL FROM:<sender@remote.test> SIZE={len(big)}")
        assert (reply.code, reply.enhanced) == (452, "4.3.1"), reply
        assert smtp.command("MAIL FROM:<sender@remote.test> SIZE=1000").code == 250
    with _open_data(h, token) as smtp:
        smtp.send(dot_stuff(big))
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (452, "4.3.1"), reply
        assert smtp.command("NOOP").code == 250
    _wait_for("the temp files to go", lambda: not _spool_files(h))
    assert not h.find(ALICE, token + "-big")
    assert not os.listdir(h.data_dir / "tmp")
