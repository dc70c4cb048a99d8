"""The SMTP spool: memory up to the threshold, then a private temp file; budgets over all
sessions; nothing left behind once a message is done with."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core.budget import ByteBudget
from mailstead.servers.spool import (
    MEMORY_THRESHOLD,
    R_NO_ROOM,
    SPOOL_PREFIX,
    Spool,
    SpoolLimits,
)

MIB = 1024 * 1024


def _limits(tmp_path: Path, memory: int = 4 * MEMORY_THRESHOLD, disk: int = 4 * MIB) -> SpoolLimits:
    limits = SpoolLimits(tmp_path / "tmp", memory, disk)
    limits.prepare()
    return limits


def _files(limits: SpoolLimits) -> list[Path]:
    return list(limits.directory.iterdir())


def test_small_message_stays_in_memory(tmp_path: Path) -> None:
    limits = _limits(tmp_path)
    spool = Spool(limits)
    assert spool.open() is None
    assert limits.memory_used == MEMORY_THRESHOLD
    spool.write(b"a" * 1000)
    spool.write(b"b" * (MEMORY_THRESHOLD - 1000))
    assert not spool.on_disk
    assert not _files(limits)
    assert asyncio.run(spool.read()) == b"a" * 1000 + b"b" * (MEMORY_THRESHOLD - 1000)
    spool.close()
    assert (limits.memory_used, limits.disk_used) == (0, 0)


def test_large_message_moves_to_a_private_file(tmp_path: Path) -> None:
    limits = _limits(tmp_path)
    spool = Spool(limits)
    assert spool.open() is None
    data = os.urandom(3 * MEMORY_THRESHOLD + 17)
    for i in range(0, len(data), 5000):
        spool.write(data[i : i + 5000])
    assert spool.on_disk
    [path] = _files(limits)
    assert path.name.startswith(SPOOL_PREFIX)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Once on disk the message gives its memory back, and counts against the disk budget.
    assert (limits.memory_used, limits.disk_used) == (0, len(data))
    assert asyncio.run(spool.read()) == data
    spool.close()
    assert not _files(limits)
    assert (limits.memory_used, limits.disk_used) == (0, 0)


def test_reopen_forgets_the_previous_message(tmp_path: Path) -> None:
    limits = _limits(tmp_path)
    spool = Spool(limits)
    spool.open()
    spool.write(b"x" * (2 * MEMORY_THRESHOLD))
    assert spool.open() is None
    assert not _files(limits)
    assert spool.size == 0
    spool.write(b"new")
    assert asyncio.run(spool.read()) == b"new"
    spool.close()
    spool.close()  # idempotent
    assert (limits.memory_used, limits.disk_used) == (0, 0)


def test_memory_budget_refuses_a_new_message(tmp_path: Path) -> None:
    limits = _limits(tmp_path, memory=2 * MEMORY_THRESHOLD)
    a, b, c = Spool(limits), Spool(limits), Spool(limits)
    assert a.open() is None
    assert b.open() is None
    assert c.open() == R_NO_ROOM
    assert (R_NO_ROOM.code, R_NO_ROOM.enhanced) == (452, "4.3.1")
    # A message that moved to disk no longer holds memory: there is room again.
    a.write(b"y" * (MEMORY_THRESHOLD + 1))
    assert c.open() is None
    for s in (a, b, c):
        s.close()
    assert (limits.memory_used, limits.disk_used) == (0, 0)


def test_disk_budget_fails_the_message_and_frees_its_file(tmp_path: Path) -> None:
    limits = _limits(tmp_path, disk=MIB)
    a, b = Spool(limits), Spool(limits)
    a.open()
    b.open()
    a.write(b"a" * (MIB - 100))
    assert a.failure() is None
    b.write(b"b" * MEMORY_THRESHOLD)  # in memory: no disk needed
    b.write(b"b" * 200)  # would go over the disk budget
    assert b.failure() == R_NO_ROOM
    b.write(b"more")  # ignored once failed
    assert len(_files(limits)) == 1
    assert limits.disk_used == MIB - 100
    # Over the disk budget, a new message is refused right away.
    a.write(b"a" * 100)
    assert Spool(limits).open() == R_NO_ROOM
    a.close()
    b.close()
    assert not _files(limits)
    assert (limits.memory_used, limits.disk_used) == (0, 0)


def test_room_for_a_declared_size(tmp_path: Path) -> None:
    limits = _limits(tmp_path, disk=MIB)
    assert limits.room_for(MIB)
    assert not limits.room_for(MIB + 1)
    spool = Spool(limits)
    spool.open()
    spool.write(b"z" * (MIB // 2))
    assert not limits.room_for(MIB // 2 + 1)
    assert limits.room_for(MEMORY_THRESHOLD)  # stays in memory
    spool.close()
    assert limits.room_for(MIB)


def test_prepare_removes_what_a_crash_left(tmp_path: Path) -> None:
    directory = tmp_path / "tmp"
    directory.mkdir()
    (directory / f"{SPOOL_PREFIX}stale").write_bytes(b"half a message")
    (directory / "other").write_bytes(b"not ours")
    SpoolLimits(directory, MIB, MIB).prepare()
    assert [p.name for p in directory.iterdir()] == ["other"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40_000), max_size=8))
def test_read_returns_what_was_written(chunks: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as root:
        limits = SpoolLimits(Path(root) / "tmp", 4 * MEMORY_THRESHOLD, 4 * MIB)
        limits.prepare()
        spool = Spool(limits)
        try:
            assert spool.open() is None
            for chunk in chunks:
                spool.write(chunk)
            assert spool.size == sum(map(len, chunks))
            assert spool.on_disk == (spool.size > MEMORY_THRESHOLD)
            assert asyncio.run(spool.read()) == b"".join(chunks)
        finally:
            spool.close()
        assert not _files(limits)
        assert (limits.memory_used, limits.disk_used) == (0, 0)


def test_byte_gate_bounds_what_is_held_at_once() -> None:
    async def main() -> list[int]:
        gate = ByteBudget(100)
        peaks: list[int] = []

        async def commit(size: int) -> None:
            async with gate.hold(size):
                peaks.append(gate.used)
                await asyncio.sleep(0)

        await asyncio.gather(*(commit(n) for n in (60, 60, 30, 500, 10)))
        assert gate.used == 0
        return peaks

    peaks = asyncio.run(main())
    assert len(peaks) == 5
    assert max(peaks) <= 100


def test_the_free_space_reserve_is_not_spent_on_unfinished_messages(tmp_path: Path) -> None:
    """Below the data directory's reserve a new message is refused (452 4.3.1) and one that
    outgrows memory fails instead of writing its file: that space is for deletions."""
    free = [10 * MIB]

    def room(size: int) -> bool:
        return free[0] - size >= 0

    limits = SpoolLimits(tmp_path / "tmp", 4 * MEMORY_THRESHOLD, 64 * MIB, room=room)
    limits.prepare()
    spool = Spool(limits)
    assert spool.open() is None
    free[0] = MEMORY_THRESHOLD  # the disk fills meanwhile
    spool.write(b"x" * (2 * MEMORY_THRESHOLD))
    assert spool.failure() == R_NO_ROOM
    assert not _files(limits)
    spool.close()
    free[0] = -1  # below the reserve
    assert spool.open() == R_NO_ROOM
    assert limits.memory_used == 0
