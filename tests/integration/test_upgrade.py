"""Upgrades from every earlier release (releases.txt): the release's own code, in a venv of
its own (releases.py), builds a store through a real ``mailstead serve`` (store_world.py:
messages, folders, flags and keywords, UID gaps, a queued remote recipient, two-factor
authentication and an app password, a Sieve script, a DKIM key, a web session); this
checkout then opens it, and every IMAP client must see each UIDVALIDITY, UID, MODSEQ, flag and
body unchanged, every login and the web session still work, and the store carries on from its
counters. Also: an upgrade killed half-way finishes at the next start, and the older program
refuses the upgraded store in one line instead of misreading it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyotp
import pytest
from helpers import Server, ServerError, Users, child_env, init_data_dir
from releases import Release, releases, runtime
from store_world import (
    ALICE,
    BOB,
    PASSWORDS,
    SIEVE_NAME,
    World,
    assert_carries_on,
    assert_same_view,
    built_world,
    cli,
    login_refused,
    queue_rows,
    record,
    wait_deferred,
    web_account_page,
)

pytestmark = pytest.mark.slow

DELIVERIES = 60
FILLER_MB = 400
RELEASES = releases()


def _snapshot(world: World, rt: Any) -> dict[str, Any]:
    """What the old release shows of its store, read while its server runs."""
    data_dir = world.data_dir
    return {
        "queue": wait_deferred(data_dir, rt),
        "view": record(world.harness, world.credentials()),
        "dkim": cli(data_dir, "dkim", "list", "example.test", runtime=rt),
        "sieve": cli(data_dir, "sieve", "get", ALICE, SIEVE_NAME, runtime=rt),
        "app_passwords": cli(data_dir, "app-password", "list", BOB, runtime=rt),
    }


def _app_passwords(listing: str) -> list[list[str]]:
    rows = [line.split()[:3] for line in listing.splitlines()[1:] if line.strip()]
    assert rows, listing
    return rows


def _check_upgraded(world: World, before: dict[str, Any], server: Server) -> None:
    data_dir = world.data_dir
    h = world.harness
    assert_same_view(before["view"], record(h, world.credentials()))
    # Two-factor authentication and the app password survive: bob's own password is still
    # refused for mail, his app password works (record logged in with it), his TOTP verifies.
    assert "app-specific password" in login_refused(h, BOB, PASSWORDS[BOB])
    # The code of the next 30-second step: the one of this step may have been used up when
    # two-factor authentication was turned on (a code works once, RFC 6238 section 5.2).
    totp = pyotp.TOTP(world.totp_secret).at(time.time() + 30)
    cli(data_dir, "user", "2fa", "verify", BOB, stdin=totp + "\n")
    # Name and creation time; the last-use column moves on with every login.
    assert _app_passwords(cli(data_dir, "app-password", "list", BOB)) == _app_passwords(
        before["app_passwords"])
    assert cli(data_dir, "sieve", "get", ALICE, SIEVE_NAME) == before["sieve"]
    assert cli(data_dir, "dkim", "list", "example.test") == before["dkim"]
    rows = queue_rows(data_dir)
    assert len(rows) == len(before["queue"])
    assert all("far@remote.test" in row and " deferred " in row for row in rows), rows
    code, page = web_account_page(server, world.web_cookie)
    assert code == 200, page[:500]
    assert ALICE in page
    assert "fault" not in cli(data_dir, "verify").lower()

    assert_carries_on(h, before["view"])


def _one_line_refusal(world: World, rt: Any) -> str:
    with pytest.raises(ServerError) as refused:
        cli(world.data_dir, "user", "list", runtime=rt)
    text = str(refused.value)
    stderr = text.split("stderr:\n", 1)[1].strip()
    assert "exited 1" in text
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    return stderr


@pytest.mark.parametrize("release", RELEASES, ids=[r.tag for r in RELEASES])
def test_upgrade_keeps_what_clients_see(
    release: Release, tmp_path: Path, store_backend: str
) -> None:
    rt = runtime(release)
    with built_world(tmp_path / "data", DELIVERIES, runtime=rt) as world:
        before = _snapshot(world, rt)
        assert before["view"][ALICE]["boxes"]["Projects"]["messages"]  # Sieve filed one
        assert world.server.stop() == 0

        server = Server(world.data_dir)  # this checkout
        world.server = server
        server.start()
        log = server.log_text()
        assert "store.pre_upgrade_backup" in log, log[-3000:]
        backups = world.data_dir / "backups"
        if store_backend == "sqlite":
            (copy,) = backups.glob("pre-upgrade-*.db")
            conn = sqlite3.connect(copy)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            finally:
                conn.close()
        else:
            (dest,) = backups.glob("pre-upgrade-*")
            assert "fault" not in cli(world.data_dir, "backup", "--verify", str(dest)).lower()
        _check_upgraded(world, before, server)
        assert server.stop() == 0
        assert "Traceback" not in server.log_text()

        # The release that wrote the store cannot read what the upgrade made of it.
        refusal = _one_line_refusal(world, rt)
        assert "schema" in refusal.lower() or "newer" in refusal.lower(), refusal


def _schema(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.backends("sqlite", reason="kills the embedded store's pre-upgrade VACUUM INTO")
@pytest.mark.parametrize("release", RELEASES[-1:], ids=[r.tag for r in RELEASES[-1:]])
def test_upgrade_killed_half_way_finishes_at_the_next_start(
    release: Release, tmp_path: Path, store_backend: str
) -> None:
    rt = runtime(release)
    with built_world(tmp_path / "data", 12, runtime=rt) as world:
        before = _snapshot(world, rt)
        assert world.server.stop() == 0
        db = world.data_dir / "mailstead.db"
        old_schema = _schema(db)
        backups = world.data_dir / "backups"

        # A filler table makes the pre-upgrade copy (the first half of the upgrade) take
        # long enough to kill the new program in the middle of it.
        filler = sqlite3.connect(db, isolation_level=None)
        try:
            filler.execute("CREATE TABLE upgrade_test_filler (b BLOB)")
            filler.executemany("INSERT INTO upgrade_test_filler VALUES (zeroblob(1048576))",
                               [()] * FILLER_MB)
        finally:
            filler.close()
        server = Server(world.data_dir)
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(server.start, 60)
            deadline = time.monotonic() + 30
            while not list(backups.glob("pre-upgrade-*.db.part")):
                assert time.monotonic() < deadline, server.log_text()[-3000:]
                assert not starting.done(), server.log_text()[-3000:]
                time.sleep(0.001)
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGKILL)
            with pytest.raises(ServerError, match="exited before it was ready"):
                starting.result()
        assert not list(backups.glob("pre-upgrade-*.db"))  # no whole copy yet
        assert _schema(db) == old_schema  # and no step applied without one
        filler = sqlite3.connect(db, isolation_level=None)
        try:
            filler.execute("DROP TABLE upgrade_test_filler")
        finally:
            filler.close()

        server = Server(world.data_dir)
        world.server = server
        server.start()
        assert _schema(db) > old_schema
        assert len(list(backups.glob("pre-upgrade-*.db"))) == 1
        assert not list(backups.glob("*.part"))  # the killed attempt's partial copy is gone
        _check_upgraded(world, before, server)
        assert server.stop() == 0


@pytest.mark.backends("sqlite", reason="stamps the embedded store as a newer release's")
def test_store_of_a_newer_release_is_refused_in_one_line(
    tmp_path: Path, store_backend: str
) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, Users(passwords={ALICE: PASSWORDS[ALICE]}))
    db = data_dir / "mailstead.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        schema = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])
        conn.execute("INSERT INTO schema_version VALUES (?, 'from_the_future', 0)", (schema + 1,))
        conn.execute("UPDATE store_meta SET value = '9.1.0' WHERE key IN ('written_by', "
                     "'min_reader')")
    finally:
        conn.close()
    before = db.read_bytes()
    for argv in (("user", "list"), ("serve",)):
        proc = subprocess.run(
            [sys.executable, "-m", "mailstead", *argv, "--data-dir", str(data_dir)],
            capture_output=True, text=True, env=child_env(), timeout=60, check=False)
        assert proc.returncode == 1, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "Mailstead 9.1.0" in lines[0]
        assert "install 9.1.0 or newer" in lines[0]
    assert db.read_bytes() == before  # refused before anything was written
