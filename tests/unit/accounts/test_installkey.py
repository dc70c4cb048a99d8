"""The installation key's rules (accounts/installkey.py) on the embedded store: a key is made
only for a store that records none and holds no keyed secret, a missing or different key is
refused, and the passphrase seal opens only with its passphrase (hostile sealed values give
a SecurityKeyError, never another exception)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.accounts import installkey
from mailstead.accounts.keys import KEY_FILE, SecurityKeyError, write_key_file
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import Store
from storebackends import open_backend

Body = Callable[[Store, Path], Awaitable[None]]

PASS = Secret("a passphrase long enough")


def run_on_store(tmp: Path, body: Body) -> None:
    async def main() -> None:
        store = await open_backend("sqlite", tmp)
        try:
            await body(store, tmp)
        finally:
            await store.close()

    asyncio.run(main())


def test_a_new_store_gets_a_key_and_keeps_it(tmp_path: Path) -> None:
    async def body(store: Store, tmp: Path) -> None:
        keys = await installkey.open_keys(store, tmp)
        assert (tmp / KEY_FILE).exists()
        again = await installkey.open_keys(store, tmp)
        assert again.check_value == keys.check_value
        assert await store.security_key_record() == (keys.check_value, None)
        # Gone after it was recorded: refused, and no new key is made.
        (tmp / KEY_FILE).unlink()
        with pytest.raises(SecurityKeyError, match="is missing"):
            await installkey.open_keys(store, tmp)
        assert not (tmp / KEY_FILE).exists()
        # Another key in its place: refused.
        write_key_file(tmp, secrets.token_bytes(32))
        with pytest.raises(SecurityKeyError, match="not this installation's"):
            await installkey.open_keys(store, tmp)

    run_on_store(tmp_path, body)


def test_no_key_is_made_for_a_store_with_keyed_secrets(tmp_path: Path) -> None:
    """A store from before check values, with app passwords but no key file here: the
    secrets were made with a key elsewhere, so a new one would break them."""

    async def body(store: Store, tmp: Path) -> None:
        await store.add_domain("example.test")
        aid = (await store.add_account("a@example.test", "h")).id
        await store.add_app_password(aid, "phone", "digest", [], 0.0)
        with pytest.raises(SecurityKeyError, match="is missing"):
            await installkey.open_keys(store, tmp)
        assert not (tmp / KEY_FILE).exists()

    run_on_store(tmp_path, body)


def test_share_and_fetch(tmp_path: Path) -> None:
    async def body(store: Store, tmp: Path) -> None:
        keys = await installkey.open_keys(store, tmp)
        with pytest.raises(SecurityKeyError, match="at least 12"):
            await installkey.share_key(store, tmp, Secret("short"))
        await installkey.share_key(store, tmp, PASS)
        master = (tmp / KEY_FILE).read_bytes()
        (tmp / KEY_FILE).unlink()
        with pytest.raises(SecurityKeyError, match="passphrase does not open"):
            await installkey.fetch_key(store, tmp, Secret("a wrong passphrase!"))
        got = await installkey.fetch_key(store, tmp, PASS)
        assert got.check_value == keys.check_value
        assert (tmp / KEY_FILE).read_bytes() == master

    run_on_store(tmp_path, body)


def test_seal_round_trip_and_tamper() -> None:
    master = secrets.token_bytes(32)
    sealed = installkey.seal(master, PASS)
    assert master.hex() not in sealed
    assert installkey.unseal(sealed, PASS) == master
    head, _, body = sealed.rpartition(":")
    flipped = body[:-6] + ("A" if body[-6] != "A" else "B") + body[-5:]
    with pytest.raises(SecurityKeyError):
        installkey.unseal(f"{head}:{flipped}", PASS)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120))
def test_hostile_sealed_values_give_a_clear_error(text: str) -> None:
    with pytest.raises(SecurityKeyError):
        installkey.unseal(text, PASS)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=-5, max_value=2**40), st.integers(-2, 100),
       st.integers(-2, 100))
def test_hostile_scrypt_parameters_are_bounded(n: int, r: int, p: int) -> None:
    body = "A" * 80
    with pytest.raises(SecurityKeyError):
        installkey.unseal(f"scrypt1:{n}:{r}:{p}:{body}", PASS)
