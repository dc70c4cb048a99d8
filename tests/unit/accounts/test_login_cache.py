"""The login cache (``[security] login_cache_ttl``) against the real SQLite store: argon2 runs
once per TTL for a user who keeps logging in, and never at the expense of the password-change,
two-factor, removal, block or audit rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyotp
import pytest
from argon2 import PasswordHasher

from mailstead.accounts.keys import SecurityKeys
from mailstead.accounts.login import LoginCache, LoginFailure, SecuritySettings
from mailstead.accounts.passwords import hash_password, make_hasher
from mailstead.accounts.service import AccountService
from mailstead.accounts.throttle import network_key
from mailstead.config.loader import parse_config
from mailstead.core.errors import MailsteadError
from mailstead.core.secret import Secret
from mailstead.storage import open_store
from mailstead.storage.interfaces import Account, Store

T = TypeVar("T")
USER = "alice@example.test"
PASSWORD = "alice-Secret-1"
OWNER = "198.51.100.7"
ATTACKER = "203.0.113.5"
TTL = 300.0


class CountingHasher(PasswordHasher):
    """A cheap argon2id hasher that counts its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifications += 1
        return super().verify(hash, password)


class World:
    """A store, a service with a hand-driven clock and a counting hasher."""

    def __init__(self, tmp: Path, runner: asyncio.Runner, **settings: Any) -> None:
        self.runner = runner
        self.now = 1_800_000_000.0
        self.hasher = CountingHasher()
        self.store: Store = self.run(open_store(tmp))
        self.keys = SecurityKeys.load_or_create(tmp)

        async def sleep(seconds: float) -> None:
            return None

        self.svc = AccountService(
            self.store, self.hasher, clock=lambda: self.now, keys=self.keys,
            security=SecuritySettings(**{"login_cache_ttl": TTL, **settings}), sleep=sleep,
        )
        self.run(self.svc.add_domain("example.test"))
        self.account = self.run(self.svc.add_user(USER, Secret(PASSWORD)))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def login(self, password: str = PASSWORD, ip: str = OWNER, user: str = USER) -> Any:
        return self.run(self.svc.login(user, Secret(password), protocol="imap",
                                       client_ip=ip, mechanism="PLAIN"))

    @property
    def verifications(self) -> int:
        return self.hasher.verifications


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with asyncio.Runner() as runner:
        w = World(tmp_path, runner)
        try:
            yield w
        finally:
            w.run(w.svc.close())
            w.run(w.store.close())


def test_repeated_logins_verify_once_and_are_all_audited(world: World) -> None:
    for _ in range(5):
        result = world.login()
        assert result.ok
        assert result.account is not None
        assert result.account.id == world.account.id
    # Another spelling of the same account shares the entry (the store matches it).
    assert world.login(user="ALICE@example.test").ok
    assert world.verifications == 1
    assert world.svc.guard.stats.cache_hits == 5
    assert world.svc.guard.stats.password_checks == 6
    rows = world.run(world.svc.security.logins(USER))
    assert [(r.success, r.reason) for r in rows] == [(True, "ok")] * 6


def test_failed_logins_are_never_cached(world: World) -> None:
    assert world.login().ok
    for _ in range(3):
        result = world.login("wrong-password-1")
        assert not result.ok
        assert result.reason is LoginFailure.BAD_CREDENTIALS
    assert world.verifications == 4  # one success, then argon2 for every wrong guess
    # A wrong guess does not evict the owner's entry either.
    assert world.login().ok
    assert world.verifications == 4


def test_unknown_users_still_cost_one_argon2_each(world: World) -> None:
    for _ in range(3):
        assert not world.login(user="nobody@example.test").ok
    assert world.verifications == 3
    assert len(world.svc.login_cache) == 0


def test_password_change_invalidates_at_once(world: World) -> None:
    assert world.login().ok
    world.run(world.svc.set_password(USER, Secret("brand-New-pass-2")))
    old = world.login()
    assert not old.ok
    assert old.reason is LoginFailure.BAD_CREDENTIALS
    assert world.login("brand-New-pass-2").ok
    assert world.login("brand-New-pass-2").ok
    assert world.verifications == 3  # first login, the refused old one, the first new one


def test_password_change_by_another_process_invalidates(world: World) -> None:
    """The CLI changes the row directly: the comparison with the stored hash catches it."""
    assert world.login().ok
    # Even the *same* password, rehashed with a fresh salt, must be verified again.
    new_hash = hash_password(Secret(PASSWORD), world.hasher)
    world.run(world.store.set_password(USER, new_hash))
    assert world.login().ok
    assert world.verifications == 2
    world.run(world.store.set_password(USER, hash_password(Secret("other-Pass-word-3"))))
    assert not world.login().ok


def test_enabling_two_factor_applies_to_the_next_login(world: World) -> None:
    assert world.login().ok
    setup = world.run(world.svc.security.begin_two_factor(USER))
    code = pyotp.TOTP(setup.secret).at(world.now)
    world.run(world.svc.security.confirm_two_factor(setup, code))
    result = world.login()
    assert not result.ok
    assert result.reason is LoginFailure.APP_PASSWORD_REQUIRED
    assert len(world.svc.login_cache) == 0
    world.run(world.svc.security.disable_two_factor(USER))
    assert world.login().ok
    # The refusal dropped the entry: the login after 2FA is off verifies with argon2 again.
    assert world.verifications == 2
    assert world.login().ok
    assert world.verifications == 2


def test_removed_account_cannot_log_in(world: World) -> None:
    assert world.login().ok
    world.run(world.svc.remove_user(USER))
    result = world.login()
    assert not result.ok
    assert result.reason is LoginFailure.BAD_CREDENTIALS


def test_blocked_network_is_refused_before_the_cache(world: World) -> None:
    assert world.login(ip=ATTACKER).ok
    world.run(world.svc.guard.block(network_key(ATTACKER), 10))
    hits = world.svc.guard.stats.cache_hits
    result = world.login(ip=ATTACKER)
    assert result.reason is LoginFailure.BLOCKED
    assert world.svc.guard.stats.cache_hits == hits
    assert world.login(ip=OWNER).ok  # the owner elsewhere still gets the fast path
    assert world.svc.guard.stats.cache_hits == hits + 1
    reasons = [r.reason for r in world.run(world.svc.security.logins(USER))]
    assert reasons == ["ok", "blocked", "ok"]


def test_entries_expire_after_the_ttl_and_are_not_refreshed(world: World) -> None:
    assert world.login().ok
    world.now += TTL - 1
    assert world.login().ok
    assert world.verifications == 1
    world.now += 2  # TTL after the verification, although used a second ago
    assert world.login().ok
    assert world.verifications == 2
    assert world.login().ok
    assert world.verifications == 2


def test_ttl_zero_turns_the_cache_off(tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        w = World(tmp_path, runner, login_cache_ttl=0)
        try:
            for _ in range(3):
                assert w.login().ok
            assert w.verifications == 3
            assert len(w.svc.login_cache) == 0
        finally:
            w.run(w.svc.close())
            w.run(w.store.close())


def test_concurrent_logins_share_one_verification(world: World) -> None:
    async def burst() -> list[bool]:
        results = await asyncio.gather(*(
            world.svc.login(USER, Secret(PASSWORD), protocol="imap", client_ip=OWNER,
                            mechanism="PLAIN")
            for _ in range(5)
        ))
        return [r.ok for r in results]

    assert world.run(burst()) == [True] * 5
    assert world.verifications == 1


def test_a_cancelled_waiter_does_not_cancel_the_shared_check() -> None:
    account = Account(1, USER, "$argon2id$fake", 0.0)
    cache = LoginCache(None, TTL, time.time)
    release = asyncio.Event()
    runs = 0

    async def check() -> bool:
        nonlocal runs
        runs += 1
        await release.wait()
        return True

    async def scenario() -> tuple[bool, bool]:
        first = asyncio.ensure_future(cache.verify(account, Secret(PASSWORD), check))
        second = asyncio.ensure_future(cache.verify(account, Secret(PASSWORD), check))
        await asyncio.sleep(0)
        first.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(scenario()) == (True, False)
    assert runs == 1


def test_cache_is_bounded_lru_and_keyed() -> None:
    now = 1000.0
    cache = LoginCache(None, TTL, lambda: now, max_entries=2)
    accounts = [Account(i, f"u{i}@example.test", f"hash-{i}", 0.0) for i in range(3)]
    for account in accounts[:2]:
        cache.remember(account, Secret(PASSWORD))

    async def verify(account: Account, password: str = PASSWORD) -> tuple[bool, bool]:
        async def check() -> bool:
            return False

        return await cache.verify(account, Secret(password), check)

    assert asyncio.run(verify(accounts[0])) == (True, True)  # u0 is now the most recent
    cache.remember(accounts[2], Secret(PASSWORD))  # evicts u1, the least recently used
    assert len(cache) == 2
    assert asyncio.run(verify(accounts[1])) == (False, False)
    assert asyncio.run(verify(accounts[0])) == (True, True)
    assert asyncio.run(verify(accounts[2], "another-password")) == (False, False)
    # The digest binds the address: the same id under another address does not match.
    renamed = Account(0, "mallory@example.test", "hash-0", 0.0)
    assert asyncio.run(verify(renamed)) == (False, False)
    # No password is kept in memory, only a keyed digest.
    assert all(PASSWORD.encode() not in repr(e).encode() for e in cache._entries.values())


def test_real_cost_twenty_logins_take_about_one_argon2(tmp_path: Path) -> None:
    """With the default argon2id cost (RFC 9106's second option), 20 sequential logins of one
    user cost one verification, not twenty."""
    real = make_hasher(3, 65536, 4)
    with asyncio.Runner() as runner:
        store: Store = runner.run(open_store(tmp_path))
        svc = AccountService(store, real, keys=SecurityKeys.load_or_create(tmp_path))
        try:
            runner.run(svc.add_domain("example.test"))
            runner.run(svc.add_user(USER, Secret(PASSWORD)))
            started = time.perf_counter()
            assert runner.run(svc.authenticate(USER, Secret("not-the-password"))) is None
            one = time.perf_counter() - started

            async def twenty() -> list[bool]:
                return [
                    (await svc.login(USER, Secret(PASSWORD), protocol="imap",
                                     client_ip=OWNER, mechanism="PLAIN")).ok
                    for _ in range(20)
                ]

            started = time.perf_counter()
            assert runner.run(twenty()) == [True] * 20
            elapsed = time.perf_counter() - started
            assert svc.guard.stats.cache_hits == 19
            # One argon2 plus 19 cheap checks (indexed reads); far below 20 argon2 runs.
            assert elapsed < 3 * one + 0.5, (elapsed, one)
        finally:
            runner.run(svc.close())
            runner.run(store.close())


def test_config_key(tmp_path: Path) -> None:
    def load(extra: str) -> Any:
        text = f'hostname = "mail.example.test"\n[security]\n{extra}\n'
        return parse_config(text, tmp_path / "mailstead.toml", tmp_path)

    assert load("").security.login_cache_ttl == 300.0
    assert load("login_cache_ttl = 0").security.login_cache_ttl == 0.0
    assert load("login_cache_ttl = 60.5").security.login_cache_ttl == 60.5
    for bad in ("login_cache_ttl = -1", 'login_cache_ttl = "2m"', "login_cache_ttl = 1e9"):
        with pytest.raises(MailsteadError, match="login_cache_ttl"):
            load(bad)
