"""The accounts service against the real SQLite store in a temporary data directory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from argon2 import PasswordHasher

from mailstead.accounts.passwords import (
    PasswordRuleError,
    hash_password,
    needs_rehash,
    verify_password,
)
from mailstead.accounts.service import AccountError, AccountService, normalise_address
from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.core.secret import Secret
from mailstead.storage import open_store
from mailstead.storage.interfaces import DEFAULT_MAILBOXES, Store

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Run(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


@pytest.fixture
def run() -> Iterator[Run]:
    """One event loop for the whole test, closed (with its default executor) at the end."""
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def store(run: Run, tmp_path: Path) -> Iterator[Store]:
    opened = run(open_store(tmp_path / "data"))
    yield opened
    run(opened.close())
    with pytest.raises(StoreError, match="closed"):  # every connection and thread is gone
        run(opened.list_domains())


@pytest.fixture
def svc(run: Run, store: Store) -> AccountService:
    service = AccountService(store, FAST)
    run(service.add_domain("Example.TEST"))
    return service


def test_domains_are_normalised(run: Run, svc: AccountService, store: Store) -> None:
    assert run(svc.add_domain("XN--BCHER-KVA.test")) == "bücher.test"
    assert run(svc.list_domains()) == ["bücher.test", "example.test"]
    with pytest.raises(AlreadyExists):
        run(svc.add_domain("Bücher.TEST."))
    run(svc.remove_domain("xn--bcher-kva.test"))
    assert run(store.list_domains()) == ["example.test"]


@pytest.mark.parametrize("bad", ["", "nodot", "a..b", "bad_name.test", "1.2.3.4"])
def test_bad_domains_refused(run: Run, svc: AccountService, bad: str) -> None:
    with pytest.raises(AccountError):
        run(svc.add_domain(bad))


def test_add_user_and_authenticate(run: Run, svc: AccountService, store: Store) -> None:
    account = run(svc.add_user("Alice@EXAMPLE.test", Secret("long enough")))
    assert account.address == "Alice@example.test"
    assert account.password_hash.startswith("$argon2id$")
    assert run(svc.authenticate("alice@example.test", Secret("long enough"))) == account
    assert run(svc.authenticate("ALICE@Example.Test", Secret("long enough"))) == account
    assert run(svc.authenticate("alice@example.test", Secret("wrong pass"))) is None
    assert [a.address for a in run(svc.list_users())] == ["Alice@example.test"]
    assert run(svc.list_users("other.test")) == []
    assert run(svc.get_user("ALICE@example.TEST")) == account
    mailboxes = run(store.list_mailboxes(account.id))
    assert [(m.name, m.special_use) for m in mailboxes] == list(DEFAULT_MAILBOXES)


def test_add_user_refusals(run: Run, svc: AccountService) -> None:
    with pytest.raises(PasswordRuleError, match="at least 8"):
        run(svc.add_user("bob@example.test", Secret("short")))
    with pytest.raises(AccountError, match="not a local domain"):
        run(svc.add_user("bob@elsewhere.test", Secret("long enough")))
    with pytest.raises(AccountError, match="not a valid address"):
        run(svc.add_user("bob at example.test", Secret("long enough")))
    with pytest.raises(AccountError, match="address literal"):
        run(svc.add_user("bob@[127.0.0.1]", Secret("long enough")))
    run(svc.add_user("bob@example.test", Secret("long enough")))
    with pytest.raises(AlreadyExists):
        run(svc.add_user("BOB@example.test", Secret("long enough")))


def test_set_password_and_remove(run: Run, svc: AccountService, store: Store) -> None:
    carol = run(svc.add_user("carol@example.test", Secret("first password")))
    run(svc.set_password("carol@example.test", Secret("second password")))
    assert run(svc.authenticate("carol@example.test", Secret("first password"))) is None
    assert run(svc.authenticate("carol@example.test", Secret("second password"))) is not None
    with pytest.raises(PasswordRuleError):
        run(svc.set_password("carol@example.test", Secret("tiny")))
    with pytest.raises(NotFound):
        run(svc.set_password("nobody@example.test", Secret("long enough")))
    run(svc.remove_user("carol@example.test"))
    assert run(svc.get_user("carol@example.test")) is None
    assert run(store.list_mailboxes(carol.id)) == []  # the mailboxes went with the account
    with pytest.raises(NotFound):
        run(svc.remove_user("carol@example.test"))


def test_unknown_user_spends_a_hash(run: Run, svc: AccountService, store: Store) -> None:
    slow = AccountService(store, PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1))
    run(slow.add_user("dave@example.test", Secret("long enough")))
    run(slow.authenticate("warm@example.test", Secret("x")))  # builds the dummy hash once

    def timed(user: str) -> float:
        start = time.perf_counter()
        assert run(slow.authenticate(user, Secret("wrong password"))) is None
        return time.perf_counter() - start

    known = min(timed("dave@example.test") for _ in range(3))
    for unknown in ("ghost@example.test", "not an address", "x" * 5000):
        assert min(timed(unknown) for _ in range(3)) > known * 0.5


def test_rehash_on_login(run: Run, svc: AccountService, store: Store) -> None:
    run(svc.add_domain("old.test"))
    weak = hash_password(
        Secret("legacy password"), PasswordHasher(time_cost=1, memory_cost=16, parallelism=1)
    )
    account = run(store.add_account("eve@old.test", weak))
    assert run(svc.authenticate("eve@old.test", Secret("legacy password"))) == account
    stored = run(store.get_account("eve@old.test"))
    assert stored is not None
    new_hash = stored.password_hash
    assert new_hash != weak
    assert not needs_rehash(new_hash, FAST)
    assert verify_password(new_hash, Secret("legacy password"), FAST)
    assert run(svc.authenticate("eve@old.test", Secret("legacy password"))) is not None


def test_aliases(run: Run, svc: AccountService, store: Store) -> None:
    alias = run(
        svc.add_alias(
            "Postmaster@Example.test", ["a@example.test", "b@remote.test", "A@example.test"]
        )
    )
    assert alias.source == "Postmaster@example.test"
    assert alias.targets == ("a@example.test", "b@remote.test")
    catch = run(svc.add_alias("@EXAMPLE.test", ["a@example.test"]))
    assert catch.source == "@example.test"
    assert [a.source for a in run(svc.list_aliases())] == [
        "@example.test",
        "Postmaster@example.test",
    ]
    run(svc.remove_alias("Postmaster@example.test", ["b@remote.test"]))
    assert run(store.get_alias("Postmaster@example.test")) == ("a@example.test",)
    run(svc.remove_alias("@example.test"))
    assert run(store.get_alias("@example.test")) is None
    with pytest.raises(InUse):
        run(svc.remove_domain("example.test"))


@pytest.mark.parametrize(
    ("source", "targets", "why"),
    [
        ("x@elsewhere.test", ["a@example.test"], "not a local domain"),
        ("@elsewhere.test", ["a@example.test"], "not a local domain"),
        ("x@example.test", [], "at least one target"),
        ("x@example.test", ["not-an-address"], "not a valid address"),
        ("x@example.test", ["X@EXAMPLE.TEST"], "itself"),
        ("@", ["a@example.test"], "empty"),
    ],
)
def test_alias_refusals(
    run: Run, svc: AccountService, source: str, targets: list[str], why: str
) -> None:
    with pytest.raises(AccountError, match=why):
        run(svc.add_alias(source, targets))


def test_normalise_address() -> None:
    assert normalise_address(" Joe@XN--BCHER-KVA.TEST ") == "Joe@bücher.test"
    assert normalise_address('"a b"@example.test') == '"a b"@example.test'
    for bad in ["", "@example.test", "joe@", "joe", "joe@@x.test", "a\r\nb@x.test"]:
        with pytest.raises(AccountError):
            normalise_address(bad)
