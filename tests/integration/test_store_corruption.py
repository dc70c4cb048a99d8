"""A damaged SQLite database against a real ``mailstead serve``: refused at start with one
line that says to run ``mailstead verify``, and, when a page goes bad while it runs, answered
with a permanent error (IMAP ``NO [SERVERBUG]``) and that log line, never a 4xx for ever.

Only the embedded store has a file to damage: the PostgreSQL runs are skipped."""

from __future__ import annotations

import imaplib
import poplib
import shutil
import smtplib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    REPO,
    Harness,
    Server,
    ServerError,
    Users,
    child_env,
    init_data_dir,
    make_message,
)

ALICE, ALICE_PW = "alice@example.test", "alice-Secret-1"
BOB, BOB_PW = "bob@example.test", "bob-Secret-2"
USERS = Users(passwords={ALICE: ALICE_PW, BOB: BOB_PW})
PAGE = 4096  # SQLite's default page size, which the store keeps
LEAF_TABLE = 0x0D  # b-tree page type byte of a table leaf (sqlite.org/fileformat2.html 1.6)


def deliver(h: Harness, address: str, token: str, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=15) as client:
        for n in range(count):
            client.sendmail("sender@remote.test", [address],
                            make_message(f"{token}-{n:03d}", to=address))


def damage_pages(db: Path, needle: bytes) -> int:
    """Sets an invalid page type on every table leaf page holding ``needle`` (as a failing
    disk or a stray write would), in the middle of the file; returns how many."""
    raw = bytearray(db.read_bytes())
    damaged = 0
    for start in range(PAGE, len(raw), PAGE):  # page 1 (the schema) stays intact
        page = raw[start : start + PAGE]
        if page[0] == LEAF_TABLE and needle in page:
            raw[start] = 0xFF
            raw[start + 8 : start + 64] = b"\xa5" * 56
            damaged += 1
    with db.open("r+b") as f:
        f.write(raw)
    return damaged


def verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstead", "verify", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env=child_env(), cwd=REPO, check=False)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> tuple[Path, str]:
    """A stopped server's data dir whose alice has 40 messages with one token, made once per
    module and checked sound by ``mailstead verify``; each test damages a copy."""
    if store_backend != "sqlite":
        pytest.skip("corrupts the SQLite file; PostgreSQL pages are the database server's")
    data_dir = tmp_path_factory.mktemp("corruption") / "data"
    init_data_dir(data_dir, USERS, DEFAULT_SMTP)
    token = f"tok-{uuid.uuid4().hex[:12]}"
    server = Server(data_dir).start(timeout=20)
    try:
        deliver(Harness(server), ALICE, token, 40)
    finally:
        assert server.stop() == 0, server.log_text()[-5000:]
    wal = data_dir / "mailstead.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed at close
    healthy = verify(data_dir)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "the store is sound" in healthy.stdout
    return data_dir, token


@pytest.fixture
def filled(pristine: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    source, token = pristine
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir)
    return data_dir, token


def test_a_damaged_database_is_refused_at_start_with_the_verify_advice(
    filled: tuple[Path, str]
) -> None:
    data_dir, token = filled
    assert damage_pages(data_dir / "mailstead.db", token.encode()) > 0
    server = Server(data_dir)
    with pytest.raises(ServerError) as refused:
        server.start(timeout=20)
    lines = [line for line in server.log_text().splitlines() if line.startswith("mailstead:")]
    assert len(lines) == 1, server.log_text()[-5000:]
    assert "is damaged" in lines[0]
    assert "mailstead verify" in lines[0]
    assert "exit code 1" in str(refused.value)
    assert "Traceback" not in server.log_text()
    report = verify(data_dir)
    assert report.returncode == 1, report.stdout + report.stderr
    assert "problem(s)" in report.stdout
    assert "the store is damaged" in report.stdout


def test_a_page_damaged_while_running_gets_a_permanent_error_and_the_log_line(
    filled: tuple[Path, str]
) -> None:
    data_dir, token = filled
    server = Server(data_dir).start(timeout=20)
    try:
        h = Harness(server)
        assert damage_pages(data_dir / "mailstead.db", token.encode()) > 0
        client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(),
                                   timeout=15)
        try:
            client.login(ALICE, ALICE_PW)
            for _ in range(2):  # the same answer each time: permanent, not "try again"
                typ, data = client.select("INBOX")
                assert typ == "NO", data
                assert b"[SERVERBUG]" in data[-1], data
                assert b"try again" not in data[-1].lower()
            # Another client is answered at once meanwhile.
            started = time.monotonic()
            with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=5) as other:
                assert other.ehlo()[0] == 250
            assert time.monotonic() - started < 1.0
            assert client.noop()[0] == "OK"
        finally:
            client.logout()
        # POP3 reads the same rows: a permanent -ERR [SYS/PERM], not [SYS/TEMP].
        pop = poplib.POP3_SSL("127.0.0.1", h.port("pop3s"), context=h.tls(), timeout=15)
        try:
            pop.user(ALICE)
            with pytest.raises(poplib.error_proto, match=r"SYS/PERM"):
                pop.pass_(ALICE_PW)
        finally:
            pop.close()
        log = server.log_text()
        assert "store.database_corrupt" in log, log[-5000:]
        assert "mailstead verify" in log
    finally:
        code = server.stop()
        assert code == 0, server.log_text()[-5000:]
    assert "Traceback" not in server.log_text()
