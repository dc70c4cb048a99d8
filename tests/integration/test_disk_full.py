"""A nearly full disk against a real ``mailstead serve`` whose data directory is on a small
tmpfs: below the free-space reserve new mail gets SMTP 452 4.3.1 and IMAP APPEND
``NO [UNAVAILABLE]``, while users still delete (POP3 DELE/QUIT, IMAP STORE \\Deleted +
EXPUNGE); the refusals are logged a bounded number of times; mail is taken again by itself
once space is back, and nothing acknowledged is lost.

Mounting needs root (CAP_SYS_ADMIN): elsewhere the test is skipped and says so."""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    Harness,
    Server,
    ServerError,
    Users,
    init_data_dir,
    make_message,
    read_mailbox,
    rewrite_tables,
    run_cli,
)

MIB = 1024 * 1024
FS_SIZE = 48 * MIB
RESERVE_MB = 12
ALICE, ALICE_PW = "alice@example.test", "alice-Secret-1"
BOB, BOB_PW = "bob@example.test", "bob-Secret-2"
USERS = Users(passwords={ALICE: ALICE_PW, BOB: BOB_PW})
# The server's peak resident memory must stay under this through the whole test.
MAX_HWM_KIB = 200 * 1024


@pytest.fixture
def small_fs(tmp_path: Path, store_backend: str) -> Iterator[Path]:
    if store_backend != "sqlite":
        pytest.skip("the reserve guards the embedded store's filesystem; PostgreSQL's disk "
                    "is the database server's")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs",
                           str(mount_point)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the data directory (needs root): "
                    f"{done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def send(h: Harness, address: str, token: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=10) as client:
        client.ehlo("client.example.test")
        client.mail("sender@remote.test")
        client.rcpt(address)
        try:
            return client.data(make_message(token, to=address))
        except smtplib.SMTPDataError as exc:  # refused at DATA already (nothing to spool)
            return exc.smtp_code, exc.smtp_error


def until(what: str, condition: object, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_below_the_reserve_mail_waits_and_deleting_works(small_fs: Path) -> None:
    data_dir = small_fs / "data"
    try:
        init_data_dir(data_dir, USERS, DEFAULT_SMTP)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    rewrite_tables(data_dir / "mailstead.toml",
                   {"store": {"reserve_mb": RESERVE_MB, "reserve_percent": 50}})
    server = Server(data_dir, log_path=small_fs.parent / "serve.log").start(timeout=20)
    filler = small_fs / "filler"
    token = f"tok-{uuid.uuid4().hex[:12]}"
    try:
        h = Harness(server)
        kept = [f"{token}-kept-{n}" for n in range(4)]
        doomed = [f"{token}-doomed-{n}" for n in range(3)]
        for tok in kept + doomed[:2]:
            assert send(h, ALICE, tok)[0] == 250
        assert send(h, BOB, doomed[2])[0] == 250
        imap = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=10)
        try:
            imap.login(ALICE, ALICE_PW)
            assert imap.create("Old")[0] == "OK"
            imap.select("INBOX")
            assert imap.copy("1", "Old")[0] == "OK"
        finally:
            imap.logout()
        # Fill the disk, outside the mail, to 6 MiB free: under the 12 MiB reserve.
        with filler.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, free_bytes(small_fs) - 6 * MIB)
        assert free_bytes(small_fs) < RESERVE_MB * MIB

        replies: list[tuple[int, bytes]] = []
        until("deliveries get 452", lambda: replies.append(send(h, ALICE, f"{token}-late"))
              or replies[-1][0] == 452, 3)
        code, text = replies[-1]
        assert text.startswith(b"4.3.1"), text
        # A flood of refused deliveries is logged a bounded number of times.
        for n in range(15):
            assert send(h, ALICE, f"{token}-flood-{n}")[0] == 452
        log = server.log_text()
        assert log.count("store.disk_low") == 1, log[-3000:]
        assert log.count("store.write_refused") <= 2, log[-3000:]

        imap = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=10)
        try:
            imap.login(ALICE, ALICE_PW)
            typ, data = imap.append("INBOX", None, None, make_message(f"{token}-append"))
            assert typ == "NO", data
            assert b"[UNAVAILABLE]" in data[-1]
            # Deleting works below the reserve: STORE \Deleted, then EXPUNGE.
            imap.select("INBOX")
            typ, found = imap.search(None, "HEADER", "X-Token", f"{token}-doomed")
            numbers = found[0].split()
            assert len(numbers) == 2
            assert imap.store(b",".join(numbers), "+FLAGS", "(\\Deleted)")[0] == "OK"
            typ, gone = imap.expunge()
            assert typ == "OK", gone
            # COPY adds mail: refused. DELETE of a mailbox frees space: done.
            typ, data = imap.copy("1", "INBOX")
            assert typ == "NO", data
            assert b"[UNAVAILABLE]" in data[-1]
            assert imap.delete("Old")[0] == "OK"
            # Another client is answered at once meanwhile.
            started = time.monotonic()
            with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=5) as other:
                assert other.ehlo()[0] == 250
            assert time.monotonic() - started < 1.0
        finally:
            with contextlib.suppress(imaplib.IMAP4.error):
                imap.logout()
        pop = poplib.POP3_SSL("127.0.0.1", h.port("pop3s"), context=h.tls(), timeout=10)
        try:
            pop.user(BOB)
            pop.pass_(BOB_PW)
            assert pop.dele(1).startswith(b"+OK")
        finally:
            assert pop.quit().startswith(b"+OK")  # the deletion happens at QUIT (RFC 1939)
        assert not read_mailbox(data_dir, BOB)
        # The administration commands work below the reserve (they open the store too).
        assert ALICE in run_cli("user", "list", "--data-dir", str(data_dir))

        # Space comes back: mail is taken again without anyone doing anything.
        filler.unlink()
        until("deliveries accepted again",
              lambda: send(h, ALICE, f"{token}-again")[0] == 250, 3)
        assert "store.disk_ok" in server.log_text()
        stored = b"\n".join(read_mailbox(data_dir, ALICE))
        for tok in kept:
            assert tok.encode() in stored, tok  # nothing acknowledged is lost
        for tok in doomed[:2]:
            assert tok.encode() not in stored
        assert f"{token}-flood".encode() not in stored
        hwm = vm_hwm_kib(server.pid)
        print(f"16+ refused deliveries: {log.count('store.write_refused')} warning(s), "
              f"server VmHWM {hwm} KiB")
        assert hwm < MAX_HWM_KIB
    finally:
        code = server.stop()
        log = server.log_text()
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
    assert code == 0, log[-5000:]
    assert "Traceback" not in log, log[-5000:]
