"""``mailstead verify`` and ``verify --repair`` against a live ``mailstead serve``: a clean store
checks clean while SMTP deliveries run; a damaged body, a missing body, an orphan body, a temp
leftover, lowered UIDNEXT/HIGHESTMODSEQ and skewed quota usage are each reported; ``--repair``
fixes the counters and orphans, names the messages whose bodies must come from a backup, and a
second verify reports only those."""

from __future__ import annotations

import asyncio
import hashlib
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
USERS = Users(passwords={ALICE: ALICE_PW})
OLD = time.time() - 3 * 3600  # past the one-hour orphan grace


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("verify") / "data"
    try:
        init_data_dir(data_dir, USERS, DEFAULT_SMTP)
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


def verify(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstead", "verify", "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, timeout=120, env=child_env(), cwd=REPO, check=False)


def deliver(h: Harness, tokens: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=15) as client:
        for token in tokens:
            client.sendmail("sender@remote.test", [ALICE], make_message(token, to=ALICE))


async def _inbox(data_dir: Path) -> list[tuple[int, str]]:
    """(UID, blob) of alice's INBOX, through the store interface."""
    from mailstead.storage import open_store

    store = await open_store(data_dir)
    try:
        account = await store.get_account(ALICE)
        assert account is not None
        return [(m.uid, m.blob) for m in await store.list_messages(account.id, "INBOX")]
    finally:
        await store.close()


def inbox(h: Harness) -> list[tuple[int, str]]:
    return asyncio.run(_inbox(h.data_dir))


def test_a_clean_store_verifies_clean_while_deliveries_run(harness: Harness) -> None:
    deliver(harness, [f"warm-{n}" for n in range(5)])
    stop = threading.Event()
    sent: list[int] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", harness.smtp_port, timeout=15) as client:
                n = 0
                while not stop.is_set() and n < 2000:
                    client.sendmail("sender@remote.test", [ALICE],
                                    make_message(f"load-{n}", to=ALICE))
                    n += 1
                    sent.append(n)
        except BaseException as exc:  # reported below, never lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        runs = []
        for _ in range(3):
            runs.append(verify(harness.data_dir))
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert len(sent) > 0
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "verify: the store is sound" in run.stdout
        assert "checked 1 accounts" in run.stdout
    final = verify(harness.data_dir)
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"{5 + len(sent)} messages" in final.stdout


async def _corrupt(data_dir: Path, flip: str, drop: str, orphan: bytes) -> None:
    """Damages the store directly, beside the running server: one body's byte flipped, one
    body gone, an old orphan body, lowered UIDNEXT and HIGHESTMODSEQ, skewed quota usage."""
    from mailstead.storage import open_store

    orphan_name = hashlib.sha256(orphan).hexdigest()
    counters = ("UPDATE mailboxes SET uidnext = 2, highestmodseq = 1 WHERE name = 'INBOX'",
                "UPDATE accounts SET used_bytes = used_bytes + 12345")
    store = await open_store(data_dir)
    try:
        pool: Any = getattr(store, "pool", None)
        if pool is not None:
            data = bytes(await pool.fetchval("SELECT data FROM blobs WHERE hash = $1", flip))
            await pool.execute("UPDATE blobs SET data = $1 WHERE hash = $2",
                               data[:-3] + bytes([data[-3] ^ 0x20]) + data[-2:], flip)
            async with pool.acquire() as conn, conn.transaction():
                # The foreign key would keep the row: a lost body, as after a bad restore.
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute("DELETE FROM blobs WHERE hash = $1", drop)
            await pool.execute(
                "INSERT INTO blobs (hash, size, created_at, data) VALUES ($1, $2, $3, $4)",
                orphan_name, len(orphan), OLD, orphan)
            for sql in counters:
                await pool.execute(sql)
            return
        blobs = store.blobs  # type: ignore[attr-defined]
    finally:
        await store.close()
    path = blobs.path(flip)
    data = path.read_bytes()
    path.write_bytes(data[:-3] + bytes([data[-3] ^ 0x20]) + data[-2:])
    blobs.path(drop).unlink()
    orphan_path = blobs.path(orphan_name)
    orphan_path.parent.mkdir(parents=True, exist_ok=True)
    orphan_path.write_bytes(orphan)
    os.utime(orphan_path, (OLD, OLD))
    temp = orphan_path.parent / ".tmp-0123456789abcdef"
    temp.write_bytes(b"half a body")
    os.utime(temp, (OLD, OLD))
    conn = sqlite3.connect(data_dir / "mailstead.db", timeout=10)
    try:
        with conn:
            for sql in counters:
                conn.execute(sql)
    finally:
        conn.close()


def test_verify_finds_each_fault_and_repair_fixes_all_but_the_lost_bodies(
    harness: Harness, store_backend: str
) -> None:
    deliver(harness, ["verify-flip", "verify-drop", "verify-keep"])
    messages = inbox(harness)
    top = max(uid for uid, _ in messages)
    (flip_uid, flip), (drop_uid, drop) = messages[-3], messages[-2]
    orphan = b"Subject: nobody's\r\n\r\nan orphan body\r\n"
    orphan_name = hashlib.sha256(orphan).hexdigest()
    asyncio.run(_corrupt(harness.data_dir, flip, drop, orphan))

    found = verify(harness.data_dir)
    out = found.stdout
    assert found.returncode == 1, out + found.stderr
    assert found.stderr == ""
    assert f"damaged {flip}" in out
    assert f"missing {drop}" in out
    assert f"message {ALICE} 'INBOX' UID {flip_uid}: body {flip} is damaged" in out
    assert f"message {ALICE} 'INBOX' UID {drop_uid}: body {drop} is missing" in out
    assert f"orphan body {orphan_name}" in out
    assert f"UIDNEXT 2 is not above its highest UID {top}" in out
    assert "HIGHESTMODSEQ 1 is below its highest MODSEQ" in out
    assert f"account {ALICE}: quota usage says" in out
    if store_backend == "sqlite":
        assert "temp leftover" in out
        assert ".tmp-0123456789abcdef" in out

    repaired = verify(harness.data_dir, "--repair")
    out = repaired.stdout
    assert repaired.returncode == 1, out + repaired.stderr
    assert f"repaired: mailbox 'INBOX' of {ALICE}: UIDNEXT 2 -> {top + 1}" in out
    assert f"repaired: account {ALICE}: quota usage set to" in out
    assert "repaired: removed 1 orphan bodies" in out
    if store_backend == "sqlite":
        assert "repaired: removed 1 temp leftovers" in out
    assert "not repaired (restore these from a backup" in out
    assert f"UID {flip_uid}: body {flip} is damaged" in out.split("not repaired")[1]
    assert f"UID {drop_uid}: body {drop} is missing" in out.split("not repaired")[1]

    again = verify(harness.data_dir)
    out = again.stdout
    assert again.returncode == 1
    for clean in ("mailbox counters: ok", "quota usage: ok", "orphan bodies: ok",
                  "temp leftovers: ok", "message sizes: ok"):
        assert clean in out, out
    assert "checked, 1 damaged, 1 missing" in out

    # The raised UIDNEXT is what the server assigns next: no UID is given twice.
    deliver(harness, ["verify-after"])
    assert max(uid for uid, _ in inbox(harness)) == top + 1
