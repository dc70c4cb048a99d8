"""Role addresses (core.roles) in recipient resolution: the first administrator takes them
unless an account, alias or catch-all of that name exists; with no account at all they are
a temporary failure, never an unknown user."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.address import parse_address
from mailstead.core.roles import ROLE_LOCALS, is_role_local
from mailstead.delivery.recipients import RecipientResolver, Verdict
from mailstead.storage.sqlite.store import SQLiteStore


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture
def store(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[SQLiteStore]:
    async def setup() -> SQLiteStore:
        s = await SQLiteStore.open(tmp_path)
        await s.add_domain("example.test")
        await s.add_domain("other.test")
        return s

    s = loop.run_until_complete(setup())
    yield s
    loop.run_until_complete(s.close())


def _resolve(loop: asyncio.AbstractEventLoop, store: SQLiteStore, address: str,
             hostname: str = "mail.example.test") -> tuple[Verdict, list[str]]:
    res = loop.run_until_complete(
        RecipientResolver(store, hostname).resolve(parse_address(address)))
    return res.verdict, sorted(res.accounts.values())


def test_no_account_at_all_is_a_temporary_no_mailbox(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    assert _resolve(loop, store, "postmaster@example.test")[0] is Verdict.NO_MAILBOX
    assert _resolve(loop, store, "nobody@example.test")[0] is Verdict.UNKNOWN_USER


def test_first_admin_then_oldest_account(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    loop.run_until_complete(store.add_account("zed@other.test", "x"))
    loop.run_until_complete(store.add_account("amy@example.test", "x"))
    # No administrator: the domain's oldest account, else the oldest of all.
    assert _resolve(loop, store, "abuse@example.test") == (Verdict.LOCAL, ["amy@example.test"])
    assert _resolve(loop, store, "postmaster@mail.example.test") == (
        Verdict.LOCAL, ["zed@other.test"])
    loop.run_until_complete(store.add_account("bob@example.test", "x"))
    loop.run_until_complete(store.set_admin("bob@example.test", True))
    for address in ("Postmaster@example.test", "ABUSE@other.test", "tls-reports@example.test",
                    "postmaster+x@example.test", "postmaster@MAIL.example.test"):
        assert _resolve(loop, store, address) == (Verdict.LOCAL, ["bob@example.test"]), address
    # The host name is no mail domain: only its role addresses are ours.
    assert _resolve(loop, store, "bob@mail.example.test")[0] is Verdict.NOT_LOCAL


def test_account_alias_and_catch_all_win(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    loop.run_until_complete(store.add_account("bob@example.test", "x"))
    loop.run_until_complete(store.set_admin("bob@example.test", True))
    loop.run_until_complete(store.add_account("abuse@example.test", "x"))
    loop.run_until_complete(store.add_alias("postmaster@example.test", ["ops@remote.test"]))
    loop.run_until_complete(store.add_account("cat@other.test", "x"))
    loop.run_until_complete(store.add_alias("@other.test", ["cat@other.test"]))
    assert _resolve(loop, store, "abuse@example.test") == (Verdict.LOCAL,
                                                           ["abuse@example.test"])
    res = loop.run_until_complete(RecipientResolver(store).resolve(
        parse_address("postmaster@example.test")))
    assert res.remote == ["ops@remote.test"]
    assert not res.accounts
    assert _resolve(loop, store, "postmaster@other.test") == (Verdict.LOCAL, ["cat@other.test"])


@given(st.text(min_size=1, max_size=30))
def test_is_role_local_only_for_the_roles(local: str) -> None:
    assert is_role_local(local) == (local.partition("+")[0].lower() in ROLE_LOCALS)


def test_is_role_local_cases() -> None:
    assert is_role_local("PostMaster")
    assert is_role_local("abuse+spam")
    assert not is_role_local("postmasters")
    assert not is_role_local("+postmaster")
