"""``mailstead backup`` under an SMTP load, ``restore`` into an empty directory, a server on
the restored data, and faults in the backup found by ``backup --verify`` and ``verify``."""

from __future__ import annotations

import imaplib
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    REPO,
    Harness,
    Server,
    Users,
    child_env,
    init_data_dir,
    make_message,
    new_database,
    read_mailbox,
    run_cli,
    split_received,
)

ALICE = "alice@example.test"
PASSWORD = "correct horse battery"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailstead", *args], capture_output=True,
                          text=True, timeout=120, env=child_env(), cwd=REPO, check=False)


class Load:
    """Delivers messages continuously over SMTP, recording when each got its 250."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[tuple[str, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=15) as client:
                n = 0
                while not self.stop.is_set():
                    token = f"load{n:05d}"
                    client.sendmail("sender@remote.test", [ALICE], make_message(token))
                    self.acked.append((token, time.monotonic()))
                    n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int, deadline: float = 30) -> None:
        end = time.monotonic() + deadline
        while len(self.acked) < count:
            assert time.monotonic() < end, f"only {len(self.acked)} messages delivered"
            assert self.error is None, self.error
            self.stop.wait(0.01)


def by_token(messages: list[bytes]) -> dict[str, bytes]:
    found = {}
    for data in messages:
        for line in data.split(b"\r\n"):
            if line.startswith(b"X-Token: "):
                found[line[9:].decode()] = data
    return found


def imap_messages(h: Harness) -> list[bytes]:
    client = imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=30)
    try:
        client.starttls(h.tls())
        client.login(ALICE, PASSWORD)
        typ, _ = client.select("INBOX", readonly=True)
        assert typ == "OK"
        typ, data = client.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        client.logout()


def test_backup_under_load_restore_and_faults(tmp_path: Path, store_backend: str) -> None:
    if store_backend == "postgresql":
        pytest.skip("bodies live in the database: test_postgresql_backup_under_load_and_faults")
    source = tmp_path / "source"
    init_data_dir(source, Users({ALICE: PASSWORD}))
    dest = tmp_path / "backup"
    server = Server(source).start()
    try:
        h = Harness(server)
        load = Load(h.smtp_port)
        load.thread.start()
        load.wait_for(30)
        began = time.monotonic()
        first = run_cli("backup", "--data-dir", str(source), str(dest))
        load.wait_for(len(load.acked) + 10)  # the load went on during and after the backup
        load.stop.set()
        load.thread.join(30)
        assert load.error is None, load.error
        before = [t for t, at in load.acked if at < began]
        assert len(before) >= 30
        assert "copied" in first
        # Incremental: only the bodies delivered since are copied.
        second = run_cli("backup", "--data-dir", str(source), str(dest))
    finally:
        server.stop()
    source_bytes = by_token(read_mailbox(source, ALICE))
    assert set(source_bytes) == {t for t, _ in load.acked}
    snaps = sorted((dest / "snapshots").iterdir())
    assert len(snaps) == 2
    copied = int(second.split(" copied")[0].rsplit(" ", 1)[-1].replace(",", ""))
    present = int(second.split(" already there")[0].rsplit(" ", 1)[-1].replace(",", ""))
    assert copied == len(load.acked) - int(first.split(" copied")[0].rsplit(" ", 1)[-1]), second
    assert present == len(load.acked) - copied
    assert "the backup is sound" in run_cli("backup", "--verify", str(dest))

    # Restore the first snapshot (taken under load) into an empty directory and serve it.
    restored = tmp_path / "restored"
    run_cli("restore", str(dest), "--data-dir", str(restored), "--snapshot", snaps[0].name)
    assert "the store is sound" in run_cli("verify", "--data-dir", str(restored))
    server = Server(restored).start()
    try:
        h = Harness(server)
        served = by_token(imap_messages(h))
    finally:
        server.stop()
    for token in before:
        assert token in served, f"{token} acknowledged before the backup is not in it"
        assert served[token] == source_bytes[token]
        _, body = split_received(served[token])
        assert body == make_message(token)

    # A flipped byte in one body and a deleted other one are found.
    names = sorted(p for p in (dest / "blobs").rglob("*") if p.is_file())
    flipped, deleted = names[0], names[1]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    deleted.unlink()
    proc = run("backup", "--verify", str(dest))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"damaged body {flipped.name}" in proc.stdout
    assert f"missing body {deleted.name}" in proc.stdout
    assert "Traceback" not in proc.stderr
    damaged_dir = tmp_path / "restored-damaged"
    proc = run("restore", str(dest), "--data-dir", str(damaged_dir))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert flipped.name in proc.stdout
    assert deleted.name in proc.stdout
    proc = run("verify", "--data-dir", str(damaged_dir))
    assert proc.returncode == 1
    assert flipped.name in proc.stdout
    assert deleted.name in proc.stdout


def test_restore_refuses_non_empty_and_truncated(tmp_path: Path, store_backend: str) -> None:
    if store_backend == "postgresql":
        pytest.skip("the PostgreSQL faults are in test_postgresql_backup_under_load_and_faults")
    source = tmp_path / "source"
    init_data_dir(source, Users({ALICE: PASSWORD}))
    dest = tmp_path / "backup"
    run_cli("backup", "--data-dir", str(source), str(dest))
    proc = run("restore", str(dest), "--data-dir", str(source))
    assert proc.returncode == 1
    assert "not empty" in proc.stderr
    assert "Traceback" not in proc.stderr
    (snap,) = (dest / "snapshots").iterdir()
    db = snap / "mailstead.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    proc = run("backup", "--verify", str(dest))
    assert proc.returncode == 1
    assert "mailstead.db" in proc.stdout
    proc = run("restore", str(dest), "--data-dir", str(tmp_path / "new"))
    assert proc.returncode == 1
    assert "damaged" in proc.stderr
    assert not (tmp_path / "new").exists()


def test_postgresql_backup_under_load_and_faults(tmp_path: Path, store_backend: str) -> None:
    if store_backend != "postgresql":
        pytest.skip("the embedded store: test_backup_under_load_restore_and_faults")
    source = tmp_path / "source"
    init_data_dir(source, Users({ALICE: PASSWORD}))
    dest = tmp_path / "backup"
    server = Server(source).start()
    try:
        load = Load(Harness(server).smtp_port)
        load.thread.start()
        load.wait_for(30)
        began = time.monotonic()
        out = run_cli("backup", "--data-dir", str(source), str(dest))
        load.wait_for(len(load.acked) + 10)
        load.stop.set()
        load.thread.join(30)
        assert load.error is None, load.error
    finally:
        server.stop()
    assert "tables dumped" in out
    before = [t for t, at in load.acked if at < began]
    assert len(before) >= 30
    source_bytes = by_token(read_mailbox(source, ALICE))
    assert set(source_bytes) == {t for t, _ in load.acked}
    assert "the backup is sound" in run_cli("backup", "--verify", str(dest))
    assert not (dest / "blobs").exists() or not any((dest / "blobs").iterdir())

    # Into the source's own database (the config's DSN): refused, it is not empty.
    proc = run("restore", str(dest), "--data-dir", str(tmp_path / "into-source"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not empty" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "into-source").exists()

    restored = tmp_path / "restored"
    dsn = new_database()
    run_cli("restore", str(dest), "--data-dir", str(restored), "--store", dsn)
    assert dsn in (restored / "mailstead.toml").read_text()
    assert "the store is sound" in run_cli("verify", "--data-dir", str(restored))
    server = Server(restored).start()
    try:
        served = by_token(imap_messages(Harness(server)))
    finally:
        server.stop()
    for token in before:
        assert token in served, f"{token} acknowledged before the backup is not in it"
        assert served[token] == source_bytes[token]
    assert set(served) <= set(source_bytes)

    # A flipped byte in the bodies' dump and a deleted table dump are found.
    (snap,) = (dest / "snapshots").iterdir()
    bodies, messages = snap / "database" / "blobs.copy", snap / "database" / "messages.copy"
    data = bytearray(bodies.read_bytes())
    data[len(data) // 2] ^= 0x01
    bodies.write_bytes(bytes(data))
    messages.unlink()
    proc = run("backup", "--verify", str(dest))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "database/blobs.copy: SHA-256 or size differs" in proc.stdout
    assert "database/messages.copy: missing" in proc.stdout
    proc = run("restore", str(dest), "--data-dir", str(tmp_path / "again"), "--store",
               new_database())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "damaged, nothing restored" in proc.stderr, proc.stderr
    assert not (tmp_path / "again").exists()
