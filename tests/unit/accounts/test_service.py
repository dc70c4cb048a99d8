from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from argon2 import PasswordHasher
from fake_store import FakeStore

from mailstead.accounts.passwords import PasswordRuleError, hash_password
from mailstead.accounts.service import AccountError, AccountService, normalise_address
from mailstead.core.errors import AlreadyExists, InUse, NotFound
from mailstead.core.secret import Secret

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def run(aw: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await aw

    return asyncio.run(wrap())


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def svc(store: FakeStore) -> AccountService:
    service = AccountService(store, FAST)  # type: ignore[arg-type]
    run(service.add_domain("Example.TEST"))
    return service


def test_domains_are_normalised(svc: AccountService, store: FakeStore) -> None:
    assert run(svc.add_domain("XN--BCHER-KVA.test")) == "bücher.test"
    assert run(svc.list_domains()) == ["bücher.test", "example.test"]
    with pytest.raises(AlreadyExists):
        run(svc.add_domain("Bücher.TEST."))
    run(svc.remove_domain("xn--bcher-kva.test"))
    assert store.domains == ["example.test"]


@pytest.mark.parametrize("bad", ["", "nodot", "a..b", "bad_name.test", "1.2.3.4"])
def test_bad_domains_refused(svc: AccountService, bad: str) -> None:
    with pytest.raises(AccountError):
        run(svc.add_domain(bad))


def test_add_user_and_authenticate(svc: AccountService) -> None:
    account = run(svc.add_user("Alice@EXAMPLE.test", Secret("long enough")))
    assert account.address == "Alice@example.test"
    assert account.password_hash.startswith("$argon2id$")
    assert run(svc.authenticate("alice@example.test", Secret("long enough"))) == account
    assert run(svc.authenticate("ALICE@Example.Test", Secret("long enough"))) == account
    assert run(svc.authenticate("alice@example.test", Secret("wrong pass"))) is None
    assert [a.address for a in run(svc.list_users())] == ["Alice@example.test"]
    assert run(svc.list_users("other.test")) == []


def test_add_user_refusals(svc: AccountService) -> None:
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


def test_set_password_and_remove(svc: AccountService) -> None:
    run(svc.add_user("carol@example.test", Secret("first password")))
    run(svc.set_password("carol@example.test", Secret("second password")))
    assert run(svc.authenticate("carol@example.test", Secret("first password"))) is None
    assert run(svc.authenticate("carol@example.test", Secret("second password"))) is not None
    with pytest.raises(PasswordRuleError):
        run(svc.set_password("carol@example.test", Secret("tiny")))
    with pytest.raises(NotFound):
        run(svc.set_password("nobody@example.test", Secret("long enough")))
    run(svc.remove_user("carol@example.test"))
    with pytest.raises(NotFound):
        run(svc.remove_user("carol@example.test"))


def test_unknown_user_spends_a_hash(svc: AccountService, store: FakeStore) -> None:
    slow = AccountService(store, PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1))  # type: ignore[arg-type]
    run(slow.add_user("dave@example.test", Secret("long enough")))
    run(slow.authenticate("warm@example.test", Secret("x")))  # builds the dummy hash once

    def timed(user: str) -> float:
        start = time.perf_counter()
        assert run(slow.authenticate(user, Secret("wrong password"))) is None
        return time.perf_counter() - start

    known = min(timed("dave@example.test") for _ in range(3))
    for unknown in ("ghost@example.test", "not an address", "x" * 5000):
        assert min(timed(unknown) for _ in range(3)) > known * 0.5


def test_rehash_on_login(svc: AccountService, store: FakeStore) -> None:
    run(svc.add_domain("old.test"))
    weak = hash_password(
        Secret("legacy password"), PasswordHasher(time_cost=1, memory_cost=16, parallelism=1)
    )
    account = run(store.add_account("eve@old.test", weak))
    assert run(svc.authenticate("eve@old.test", Secret("legacy password"))) == account
    new_hash = store.accounts["eve@old.test"].password_hash
    assert new_hash != weak
    assert run(svc.authenticate("eve@old.test", Secret("legacy password"))) is not None


def test_aliases(svc: AccountService, store: FakeStore) -> None:
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
    assert store.aliases["Postmaster@example.test"] == ["a@example.test"]
    run(svc.remove_alias("@example.test"))
    assert "@example.test" not in store.aliases
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
def test_alias_refusals(svc: AccountService, source: str, targets: list[str], why: str) -> None:
    with pytest.raises(AccountError, match=why):
        run(svc.add_alias(source, targets))


def test_normalise_address() -> None:
    assert normalise_address(" Joe@XN--BCHER-KVA.TEST ") == "Joe@bücher.test"
    assert normalise_address('"a b"@example.test') == '"a b"@example.test'
    for bad in ["", "@example.test", "joe@", "joe", "joe@@x.test", "a\r\nb@x.test"]:
        with pytest.raises(AccountError):
            normalise_address(bad)
