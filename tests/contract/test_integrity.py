"""Every backend proves a body against its SHA-256 name on read: a damaged body is refused
with CorruptData (counted), left out of ``read_blobs``, and never handed on."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.errors import CorruptData
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Store
from storebackends import Opener, run_with


def _message(data: bytes, account_id: int) -> IncomingMessage:
    return IncomingMessage(
        data=data, queue_id="Q" + hashlib.sha256(data).hexdigest()[:8],
        mail_from="sender@remote.test", local=[LocalDelivery(account_id)], remote=[],
        internal_date=1_700_000_000.0, envelope="{}", bodystructure="{}",
    )


async def _overwrite(store: Store, blob: str, data: bytes) -> None:
    pool: Any = getattr(store, "pool", None)
    if pool is not None:
        await pool.execute("UPDATE blobs SET data = $1 WHERE hash = $2", data, blob)
    else:
        store.blobs.path(blob).write_bytes(data)


def test_a_damaged_body_is_refused_and_counted(
    opener: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(store: Store) -> None:
        await store.add_domain("example.test")
        alice = (await store.add_account("alice@example.test", "h")).id
        good = (await store.accept_message(_message(b"Subject: a\r\n\r\ngood\r\n", alice))).blob
        bad = (await store.accept_message(_message(b"Subject: b\r\n\r\nfine\r\n", alice))).blob
        await _overwrite(store, bad, b"Subject: b\r\n\r\nfiNe\r\n")
        # read_blobs leaves it out; read_blob reports it. (The background full-text indexer
        # may meet the damage too and count it: the counter only grows.)
        assert await store.read_blobs([good, bad]) == {good: b"Subject: a\r\n\r\ngood\r\n"}
        before = store.integrity.corrupt_blobs
        with caplog.at_level(logging.ERROR), pytest.raises(CorruptData, match="SHA-256"):
            await store.read_blob(bad)
        assert store.integrity.corrupt_blobs > before
        assert "store.blob_corrupt" in caplog.text
        assert "mailstead verify" in caplog.text
        assert await store.read_blob(good) == b"Subject: a\r\n\r\ngood\r\n"

    run_with(opener, tmp_path, body)


def test_verify_bodies_names_the_damaged_and_the_missing(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_domain("example.test")
        alice = (await store.add_account("alice@example.test", "h")).id
        assert await store.verify_bodies() == (0, [], [])
        blobs = [(await store.accept_message(_message(b"Subject: %d\r\n\r\nx\r\n" % n, alice)
                                             )).blob for n in range(3)]
        assert await store.verify_bodies() == (3, [], [])
        await _overwrite(store, blobs[1], b"Subject: 1\r\n\r\ny\r\n")
        assert await store.verify_bodies() == (3, [], [blobs[1]])

    run_with(opener, tmp_path, body)
