"""The body check of ``storage.integrity`` and ``BlobStore.read``: any change of a body's bytes
is caught, the intact bytes pass, and every failure is counted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.errors import CorruptData, NotFound, StoreError
from mailstead.storage.blobs import BlobStore, blob_hash
from mailstead.storage.integrity import Integrity


@given(st.binary(max_size=4096), st.binary(max_size=4096))
def test_check_blob_passes_only_the_named_bytes(stored: bytes, named: bytes) -> None:
    integrity = Integrity()
    name = hashlib.sha256(named).hexdigest()
    if stored == named:
        assert integrity.check_blob(name, stored) is stored
        assert integrity.corrupt_blobs == 0
    else:
        assert not integrity.intact(name, stored)
        with pytest.raises(CorruptData):
            integrity.check_blob(name, stored)
        assert integrity.corrupt_blobs == 1


def test_corrupt_data_is_a_store_error() -> None:
    # Callers that know only StoreError still refuse the message rather than serve it.
    assert issubclass(CorruptData, StoreError)
    assert not issubclass(CorruptData, NotFound)


def test_blobstore_read_verifies_every_read(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", sync="fsync")
    data = b"Subject: x\r\n\r\n" + bytes(range(256)) * 400
    name = blob_hash(data)
    blobs.write(name, data)
    assert blobs.read(name) == data
    damaged = bytearray(data)
    damaged[50_000] ^= 0x01  # one bit, in the middle
    blobs.path(name).write_bytes(bytes(damaged))
    with pytest.raises(CorruptData):
        blobs.read(name)
    assert blobs.read_quiet(name) is None
    assert blobs.integrity.corrupt_blobs == 1
    blobs.path(name).unlink()
    with pytest.raises(NotFound):
        blobs.read(name)
    assert blobs.read_quiet(name) is None
