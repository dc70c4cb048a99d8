"""The SieveStore contract (scripts, the active script, the log of automatic sends) and the
fileinto probe, run against every backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.interfaces import SieveScript, Store
from storebackends import Opener, opened
from storebackends import run_with as run
from storebackends import two_accounts as accounts


def test_scripts(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        with pytest.raises(NotFound):
            await store.put_sieve_script(alice + bob + 1000, "main", "keep;")
        assert await store.list_sieve_scripts(alice) == []
        assert await store.active_sieve_script(alice) is None
        await store.put_sieve_script(alice, "main", "keep;")
        await store.put_sieve_script(alice, "Zed", "discard;")
        await store.put_sieve_script(alice, "other", "discard;")
        await store.put_sieve_script(bob, "main", "stop;")
        main = await store.get_sieve_script(alice, "main")
        assert main is not None
        assert (main.name, main.content, main.active) == ("main", "keep;", False)
        assert await store.get_sieve_script(alice, "MAIN") is None  # names compare exactly
        # By name, in code point order (upper case first), as RFC 5804 names compare.
        assert [s.name for s in await store.list_sieve_scripts(alice)] == [
            "Zed", "main", "other"]
        await store.set_active_sieve_script(alice, "main")
        await store.put_sieve_script(alice, "main", "keep; stop;")  # keeps its active state
        active = await store.active_sieve_script(alice)
        assert active is not None
        assert (active.name, active.content, active.active) == ("main", "keep; stop;", True)
        assert await store.active_sieve_script(bob) is None  # per account
        with pytest.raises(InUse):  # RFC 5804 section 2.10
            await store.delete_sieve_script(alice, "main")
        with pytest.raises(NotFound):
            await store.delete_sieve_script(alice, "gone")
        with pytest.raises(AlreadyExists):
            await store.rename_sieve_script(alice, "other", "main")
        with pytest.raises(NotFound):
            await store.rename_sieve_script(alice, "gone", "new")
        await store.rename_sieve_script(alice, "main", "main")  # to itself: nothing changes
        await store.rename_sieve_script(alice, "main", "renamed")  # keeps the active state
        active = await store.active_sieve_script(alice)
        assert active is not None
        assert active.name == "renamed"
        await store.set_active_sieve_script(alice, "other")  # the only active one
        assert [(s.name, s.active) for s in await store.list_sieve_scripts(alice)] == [
            ("Zed", False), ("other", True), ("renamed", False)]
        await store.delete_sieve_script(alice, "renamed")
        with pytest.raises(NotFound):
            await store.set_active_sieve_script(alice, "gone")
        assert (await store.active_sieve_script(alice)) == await store.get_sieve_script(
            alice, "other")  # a failed activation changes nothing
        await store.set_active_sieve_script(alice, None)
        assert await store.active_sieve_script(alice) is None
        await store.delete_sieve_script(alice, "other")
        assert [s.name for s in await store.list_sieve_scripts(alice)] == ["Zed"]
        assert [s.name for s in await store.list_sieve_scripts(bob)] == ["main"]

    run(opener, tmp_path, body)


def test_activation_on_two_stores_at_once(opener: Opener, tmp_path: Path) -> None:
    """Two processes activating different scripts at once: one script ends up active, and
    neither call fails."""

    async def main() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            alice, _ = await accounts(one)
            names = [f"s{i}" for i in range(6)]
            for name in names:
                await one.put_sieve_script(alice, name, "keep;")
            for _ in range(5):
                await asyncio.gather(
                    *((one, two)[i % 2].set_active_sieve_script(alice, name)
                      for i, name in enumerate(names))
                )
                scripts = await two.list_sieve_scripts(alice)
                assert sum(s.active for s in scripts) == 1

    asyncio.run(main())


def test_sieve_log(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        await store.add_sieve_event(alice, "vacation", "a@remote.test", 10.0)
        await store.add_sieve_event(alice, "vacation", "a@remote.test", 20.0)
        await store.add_sieve_event(alice, "vacation", "b@remote.test", 30.0)
        await store.add_sieve_event(alice, "redirect", "c@remote.test", 30.0)
        await store.add_sieve_event(bob, "vacation", "a@remote.test", 30.0)
        assert await store.count_sieve_events(alice, "vacation", "a@remote.test", 10.0) == 2
        assert await store.count_sieve_events(alice, "vacation", "a@remote.test", 10.5) == 1
        assert await store.count_sieve_events(alice, "vacation", None, 0.0) == 3
        assert await store.count_sieve_events(alice, "redirect", None, 30.0) == 1
        assert await store.count_sieve_events(bob, "redirect", None, 0.0) == 0
        assert await store.prune_sieve_events(20.0) == 1
        assert await store.count_sieve_events(alice, "vacation", None, 0.0) == 2
        assert await store.prune_sieve_events(100.0) == 4
        with pytest.raises(StoreError):  # the log belongs to an account
            await store.add_sieve_event(alice + bob + 1000, "vacation", "k", 1.0)

    run(opener, tmp_path, body)


def test_fileinto_probe(opener: Opener, tmp_path: Path) -> None:
    """``sieve_mailbox_exists`` (SieveRunner's cheap check for fileinto targets), where the
    backend offers it, agrees with ``get_mailbox``."""

    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        await store.create_mailbox(alice, "Reports")
        probe = getattr(store, "sieve_mailbox_exists", None)
        assert probe is not None  # both backends have it
        assert await probe(alice, "Reports")
        assert await probe(alice, "inbox")  # RFC 3501 section 5.1
        assert not await probe(alice, "reports")  # other names compare exactly
        assert not await probe(bob, "Reports")  # per account
        assert not await probe(alice, "Missing")
        for name in ("Reports", "inbox", "reports", "Missing"):
            assert await probe(alice, name) == (await store.get_mailbox(alice, name) is not None)

    run(opener, tmp_path, body)


def test_script_values(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, _ = await accounts(store)
        text = 'require "vacation";\r\nvacation "Ünïcode — ok";\r\n'
        await store.put_sieve_script(alice, "ünï", text)
        got = await store.get_sieve_script(alice, "ünï")
        assert isinstance(got, SieveScript)
        assert got.content == text
        assert isinstance(got.updated_at, float)
        assert got.updated_at > 1_600_000_000

    run(opener, tmp_path, body)


def test_hostile_text_over_managesieve(opener: Opener, tmp_path: Path) -> None:
    """Names and scripts come from the network: NUL never makes an operation fail (PostgreSQL
    keeps it as U+FFFD), and the same name finds the same script."""

    async def body(store: Store) -> None:
        alice, _ = await accounts(store)
        await store.put_sieve_script(alice, "a\x00b", "keep;\x00")
        got = await store.get_sieve_script(alice, "a\x00b")
        assert got is not None
        assert got.content.replace("\ufffd", "\x00") == "keep;\x00"
        await store.set_active_sieve_script(alice, "a\x00b")
        await store.rename_sieve_script(alice, "a\x00b", "c\x00d")
        active = await store.active_sieve_script(alice)
        assert active is not None
        assert active.name.replace("\ufffd", "\x00") == "c\x00d"
        await store.set_active_sieve_script(alice, None)
        await store.delete_sieve_script(alice, "c\x00d")
        assert await store.list_sieve_scripts(alice) == []
        await store.add_sieve_event(alice, "vacation", "x\x00@remote.test", 5.0)
        assert await store.count_sieve_events(alice, "vacation", "x\x00@remote.test", 0.0) == 1
        probe = getattr(store, "sieve_mailbox_exists", None)
        assert probe is not None
        assert not await probe(alice, "Re\x00ports")

    run(opener, tmp_path, body)
