"""The free-space reserve (storage/space.py) with an injected statvfs and clock: refusal
below the reserve, automatic recovery with a margin, rate-limited warnings, and the writer's
full-text indexer pausing while the disk is low."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.errors import DiskFull, StoreError
from mailstead.storage import space as space_mod
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.space import MIB, PROBE_INTERVAL, SpaceGuard, reserve_bytes
from mailstead.storage.sqlite.store import SQLiteStore

BLOCK = 4096


class FakeDisk:
    """A filesystem of ``total`` bytes whose free space the test sets."""

    def __init__(self, total: int, free: int) -> None:
        self.total = total
        self.free = free
        self.now = 0.0

    def statvfs(self, _path: str) -> os.statvfs_result:
        blocks, avail = self.total // BLOCK, self.free // BLOCK
        return os.statvfs_result((BLOCK, BLOCK, blocks, avail, avail, 1000, 500, 500, 0, 255))

    def clock(self) -> float:
        return self.now

    def later(self, seconds: float = PROBE_INTERVAL) -> None:
        self.now += seconds


def guard(disk: FakeDisk, mb: int = 200, percent: int = 1) -> SpaceGuard:
    return SpaceGuard(Path("/data"), reserve_mb=mb, reserve_percent=percent,
                      statvfs=disk.statvfs, clock=disk.clock)


@given(st.integers(0, 2**50), st.integers(0, 10**6), st.integers(0, 50))
def test_the_reserve_is_the_smaller_of_both_limits(total: int, mb: int, percent: int) -> None:
    got = reserve_bytes(total, mb, percent)
    assert got == min(mb * MIB, total * percent // 100)
    assert 0 <= got <= total


def test_refuses_below_the_reserve_and_recovers_by_itself(
    caplog: pytest.LogCaptureFixture
) -> None:
    disk = FakeDisk(total=100 * 1024 * MIB, free=10 * 1024 * MIB)  # reserve: 200 MiB
    g = guard(disk)
    g.check("a new message")
    disk.free = 150 * MIB
    assert not g.low()  # the last probe is reused for PROBE_INTERVAL
    disk.later()
    with caplog.at_level(logging.WARNING):
        for _ in range(500):  # a flood of refused writes within one minute
            with pytest.raises(DiskFull, match="150 MiB free"):
                g.check("a new message")
            disk.later(0.1)
    assert caplog.text.count("store.disk_low") == 1
    assert caplog.text.count("store.write_refused") == 1
    assert issubclass(DiskFull, StoreError)
    disk.free = 205 * MIB  # above the reserve but within the 5% margin: still low
    disk.later()
    assert g.low()
    disk.free = 300 * MIB
    disk.later()
    assert not g.low()
    assert "store.disk_ok" in caplog.text
    g.check("a new message")


def test_a_burst_between_probes_cannot_run_through_the_reserve() -> None:
    disk = FakeDisk(total=100 * 1024 * MIB, free=260 * MIB)  # 60 MiB above the reserve
    g = guard(disk)
    for _ in range(5):
        g.check("a new message", 10 * MIB)  # 50 MiB admitted, the disk not probed again
    with pytest.raises(DiskFull):
        g.check("a new message", 20 * MIB)  # would leave 190 MiB: refused alone
    assert not g.low()
    g.check("a new message", 5 * MIB)
    with pytest.raises(DiskFull):
        g.check("a new message", 6 * MIB)
    disk.free = 1024 * MIB  # the next probe forgets what was spent
    disk.later()
    g.check("a new message", 20 * MIB)


def test_zero_turns_the_reserve_off() -> None:
    disk = FakeDisk(total=10 * MIB, free=0)
    assert not guard(disk, mb=0).low()
    assert not guard(disk, percent=0).low()


def test_a_failing_probe_lets_writes_try(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_path: str) -> os.statvfs_result:
        raise OSError(5, "Input/output error")

    g = SpaceGuard(Path("/data"), statvfs=broken)
    g.check("a new message")
    assert "store.space_probe_failed" in caplog.text


def test_store_refuses_new_mail_and_the_indexer_pauses_below_the_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(space_mod, "PROBE_INTERVAL", 0.0)
    disk = FakeDisk(total=100 * 1024 * MIB, free=10 * 1024 * MIB)
    g = SpaceGuard(tmp_path, statvfs=disk.statvfs)

    def message(n: int, account: int) -> IncomingMessage:
        return IncomingMessage(
            data=b"Subject: word%d\r\n\r\nfindme%d\r\n" % (n, n), queue_id=f"Q{n}",
            mail_from="s@remote.test", local=[LocalDelivery(account)], remote=[],
            internal_date=1.0, envelope="{}", bodystructure="{}")

    async def body() -> None:
        store = await SQLiteStore.open(tmp_path / "data", space=g)
        try:
            await store.add_domain("example.test")
            alice = (await store.add_account("alice@example.test", "h")).id
            disk.free = 100 * MIB  # below the 200 MiB reserve
            with pytest.raises(DiskFull):
                await store.accept_message(message(1, alice))
            # A message that got in anyway (the check is bypassed here) is not indexed
            # while the disk stays low.
            check = g.check
            g.check = lambda what, size=0: None  # type: ignore[method-assign]
            await store.accept_message(message(2, alice))
            g.check = check  # type: ignore[method-assign]
            # Deleting still works below the reserve.
            inbox = (await store.get_mailbox(alice, "INBOX"))
            assert inbox is not None
            await asyncio.sleep(0.6)  # the writer's idle indexing would have run by now
            pending = await store._in_reader(
                lambda c: c.execute("SELECT COUNT(*) FROM fts_pending").fetchone()[0])
            assert pending == 1  # paused: nothing indexed below the reserve
            assert await store.delete_messages(inbox.id, [1]) == [1]
            disk.free = 10 * 1024 * MIB

            async def indexed() -> bool:
                return await store._in_reader(
                    lambda c: c.execute("SELECT COUNT(*) FROM fts_pending").fetchone()[0]
                ) == 0

            for _ in range(100):  # resumes by itself, within a few idle periods
                if await indexed():
                    break
                await asyncio.sleep(0.05)
            assert await indexed()
        finally:
            await store.close()

    asyncio.run(body())
