"""DKIM key management: the ``domain add`` hook, rotation and activation on the real store
(each backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from argon2 import PasswordHasher

from mailstead.accounts.service import AccountService
from mailstead.core.errors import AlreadyExists, StoreError
from mailstead.mailauth.dkim import (
    ED25519,
    RSA,
    DkimError,
    DkimSigner,
    activate_dkim_keys,
    rotate_dkim_keys,
)
from mailstead.storage.interfaces import DkimKey, Store
from storebackends import BACKENDS, open_backend

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
NOW = 1_795_478_400.0  # 2026-11-24 00:00 UTC
MESSAGE = b"From: a@a.test\r\nTo: b@b.test\r\nSubject: s\r\n\r\nhello\r\n"


class Run(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture(params=BACKENDS)
def store(run: Run, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    opened = run(open_backend(request.param, tmp_path / "data"))
    yield opened
    run(opened.close())


def active(keys: list[DkimKey]) -> list[str]:
    return sorted(k.selector for k in keys if k.active)


def test_domain_add_keys_and_idn(run: Run, store: Store) -> None:
    svc = AccountService(store, FAST, clock=lambda: NOW)
    assert run(svc.add_domain("Bücher.TEST")) == "bücher.test"
    keys = run(store.dkim_keys("bücher.test"))
    assert active(keys) == ["ms20261124e", "ms20261124r"]
    with pytest.raises(AlreadyExists):  # no keys are added for a domain that exists
        run(svc.add_domain("bücher.test"))
    assert len(run(store.dkim_keys("bücher.test"))) == 2
    # d= carries the A-label form (RFC 5890), the one DNS serves the key under.
    signed = run(DkimSigner(store).sign(MESSAGE, "bücher.test"))
    assert b"d=xn--bcher-kva.test;" in signed


def test_domain_added_again_keeps_old_keys_inactive(run: Run, store: Store) -> None:
    svc = AccountService(store, FAST, clock=lambda: NOW)
    run(svc.add_domain("a.test"))
    run(svc.remove_domain("a.test"))
    run(svc.add_domain("a.test"))
    keys = run(store.dkim_keys("a.test"))
    if len(keys) == 2:  # the store removed the old keys with the domain
        assert active(keys) == ["ms20261124e", "ms20261124r"]
    else:
        assert active(keys) == ["ms20261124e2", "ms20261124r2"]


class FailingKeys:
    """A store whose DKIM key writes fail: the domain must not stay behind without keys."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def add_dkim_key(self, key: DkimKey) -> None:
        raise StoreError("disk full")


def test_domain_add_is_undone_when_keys_cannot_be_stored(run: Run, store: Store) -> None:
    svc = AccountService(FailingKeys(store), FAST)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="disk full"):
        run(svc.add_domain("a.test"))
    assert run(store.list_domains()) == []


def test_rotation_is_two_steps(run: Run, store: Store) -> None:
    run(AccountService(store, FAST, clock=lambda: NOW).add_domain("a.test"))
    keys = run(rotate_dkim_keys(store, "a.test", NOW + 86400, activate=False))
    assert len(keys) == 4
    assert active(keys) == ["ms20261124e", "ms20261124r"]  # new keys wait for DNS
    assert {k.selector for k in keys[:2]} == {"ms20261125r", "ms20261125e"}  # newest first
    assert sorted(run(activate_dkim_keys(store, "a.test"))) == ["ms20261125e", "ms20261125r"]
    assert active(run(store.dkim_keys("a.test"))) == ["ms20261125e", "ms20261125r"]
    # Back to an explicit choice; unknown selectors are refused without change.
    run(activate_dkim_keys(store, "a.test", ["ms20261124r"]))
    assert active(run(store.dkim_keys("a.test"))) == ["ms20261124r"]
    with pytest.raises(DkimError, match="no DKIM selector nope"):
        run(activate_dkim_keys(store, "a.test", ["ms20261124r", "nope"]))
    assert active(run(store.dkim_keys("a.test"))) == ["ms20261124r"]


def test_rotation_activates_when_nothing_signs(run: Run, store: Store) -> None:
    run(store.add_domain("old.test"))  # a domain from before DKIM: no keys at all
    with pytest.raises(DkimError, match="has no DKIM keys"):
        run(activate_dkim_keys(store, "old.test"))
    keys = run(rotate_dkim_keys(store, "old.test", NOW, activate=False))
    assert active(keys) == ["ms20261124e", "ms20261124r"]
    assert {k.algorithm for k in keys} == {RSA, ED25519}
    # Same-day rotation gets distinct selectors, and --activate switches at once.
    keys = run(rotate_dkim_keys(store, "old.test", NOW + 60, activate=True))
    assert active(keys) == ["ms20261124e2", "ms20261124r2"]
