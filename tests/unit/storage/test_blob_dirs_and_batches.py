"""Blob directories made up front and remembered, and the writer's batch hand-back (bodies
hashed in the writer thread, one cross-thread call per loop per batch)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from mailstead.storage.blobs import BlobStore
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.sqlite.store import SQLiteStore


def _name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_first_level_directories_exist_from_the_start(tmp_path: Path) -> None:
    BlobStore(tmp_path / "blobs")
    names = sorted(p.name for p in (tmp_path / "blobs").iterdir())
    assert names == [f"{n:02x}" for n in range(256)]
    assert all(p.is_dir() for p in (tmp_path / "blobs").iterdir())
    # Opening again creates nothing and keeps what is there.
    (tmp_path / "blobs" / "00" / "keep").write_bytes(b"x")
    BlobStore(tmp_path / "blobs")
    assert (tmp_path / "blobs" / "00" / "keep").read_bytes() == b"x"


@pytest.mark.parametrize("mode", ["fsync", "syncfs"])
def test_directory_removed_behind_our_back_is_made_again(tmp_path: Path, mode: Any) -> None:
    try:
        blobs = BlobStore(tmp_path / "blobs", sync=mode)
    except OSError:
        pytest.skip("syncfs not available")
    first = b"first body"
    blobs.write_many([(_name(first), first)])
    assert blobs.exists(_name(first))
    shutil.rmtree(blobs.path(_name(first)).parent)  # the remembered second-level directory
    assert not blobs.exists(_name(first))
    blobs.write_many([(_name(first), first)])
    assert blobs.read(_name(first)) == first
    assert blobs.path(_name(first)) == tmp_path / "blobs" / _name(first)[:2] / _name(first)[
        2:4] / _name(first)


def test_existing_dirs_are_not_statted_again(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", sync="syncfs") if _has_syncfs(tmp_path) else None
    if blobs is None:
        pytest.skip("syncfs not available")
    a = b"a" * 100
    blobs.write_many([(_name(a), a)])
    sibling = _name(a)[:4] + "0" * 60  # same directory, another (well-formed) name
    with mock.patch.object(BlobStore, "_ensure_dir", side_effect=AssertionError("statted")):
        blobs.write_many([(sibling, b"other")])
    # Read raw: the name is made up, so the checked read would (rightly) refuse the bytes.
    assert blobs.path(sibling).read_bytes() == b"other"


def _has_syncfs(tmp_path: Path) -> bool:
    try:
        BlobStore(tmp_path / "probe", sync="syncfs")
    except OSError:
        return False
    return True


def _message(data: bytes, account: int) -> IncomingMessage:
    return IncomingMessage(
        data=data, queue_id="Q1", mail_from="s@remote.test",
        local=[LocalDelivery(account_id=account)], remote=[], internal_date=1.0,
        envelope="{}", bodystructure="{}", auth_account_id=None,
    )


def test_batch_is_hashed_in_the_writer_and_settled_once_per_loop(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            account = (await store.add_account("a@e.test", "h")).id
            loop = asyncio.get_running_loop()
            calls: list[Any] = []
            real = loop.call_soon_threadsafe

            def spy(callback: Any, *args: Any) -> Any:
                calls.append(callback)
                return real(callback, *args)

            datas = [b"message %d" % i for i in range(20)] + [b"message 0"]  # one duplicate
            with mock.patch.object(loop, "call_soon_threadsafe", side_effect=spy), \
                    mock.patch("mailstead.storage.sqlite.store.blob_hash") as loop_hash:
                results = await asyncio.gather(
                    *(store.accept_message(_message(d, account)) for d in datas))
            loop_hash.assert_not_called()  # small bodies are hashed by the writer thread
            assert [r.blob for r in results] == [_name(d) for d in datas]
            assert len({r.delivered[0][2] for r in results}) == len(datas)  # distinct UIDs
            assert 1 <= len(calls) < len(datas)  # batched: far fewer than one per message
            for d in datas:
                assert store.blobs.read(_name(d)) == d
            listed = await store.list_messages(account, "INBOX")
            assert sorted(m.blob for m in listed) == sorted(_name(d) for d in datas)
        finally:
            await store.close()

    asyncio.run(body())


def test_a_failing_message_does_not_fail_its_batch(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            account = (await store.add_account("a@e.test", "h")).id
            bad = IncomingMessage(
                data=b"to a missing mailbox", queue_id="Q2", mail_from="",
                local=[LocalDelivery(account_id=account, mailbox="Nope")], remote=[],
                internal_date=1.0, envelope="{}", bodystructure="{}", auth_account_id=None,
            )
            results = await asyncio.gather(
                store.accept_message(_message(b"good 1", account)),
                store.accept_message(bad),
                store.accept_message(_message(b"good 2", account)),
                return_exceptions=True,
            )
            assert not isinstance(results[0], BaseException)
            assert isinstance(results[1], Exception)
            assert not isinstance(results[2], BaseException)
            assert len(await store.list_messages(account, "INBOX")) == 2
        finally:
            await store.close()

    asyncio.run(body())
