"""Account security (issue 6) against the real store of each backend: login outcomes,
two-factor, app passwords, brute-force blocks, the audit log and the key file."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from unittest.mock import patch

import pyotp
import pytest
from argon2 import PasswordHasher

from mailstead.accounts import apppasswords, twofactor
from mailstead.accounts.hashpool import Lane
from mailstead.accounts.keys import SecurityKeyError, SecurityKeys
from mailstead.accounts.login import LoginFailure, SecuritySettings
from mailstead.accounts.security import SecurityError
from mailstead.accounts.service import AccountService
from mailstead.accounts.throttle import Throttle, network_key, parse_network
from mailstead.accounts.twofactor import CodeCheck
from mailstead.core.errors import AlreadyExists, NotFound
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import Store
from storebackends import BACKENDS, open_backend

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
USER = "alice@example.test"
PASSWORD = "alice-Secret-1"
ATTACKER = "203.0.113.5"
OWNER = "198.51.100.7"


class World:
    """A store, a service with a hand-driven clock, and the delays it asked to sleep."""

    def __init__(self, tmp: Path, runner: asyncio.Runner, backend: str, **settings: Any) -> None:
        self.runner = runner
        self.now = 1_800_000_000.0
        self.slept: list[float] = []
        self.store: Store = self.run(open_backend(backend, tmp))
        self.keys = SecurityKeys.load_or_create(tmp)
        self.settings = SecuritySettings(**settings)
        self.svc = self.service()
        self.run(self.svc.add_domain("example.test"))
        self.account = self.run(self.svc.add_user(USER, Secret(PASSWORD)))

    def service(self, hasher: PasswordHasher = FAST) -> AccountService:
        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        return AccountService(self.store, hasher, clock=lambda: self.now, keys=self.keys,
                              security=self.settings, sleep=sleep)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def login(self, password: str, ip: str = OWNER, protocol: str = "imap",
              user: str = USER) -> Any:
        return self.run(self.svc.login(user, Secret(password), protocol=protocol,
                                       client_ip=ip, mechanism="PLAIN"))

    def totp(self, offset_steps: int = 0) -> str:
        state = self.run(self.store.get_second_factor(self.account.id))
        assert state is not None
        secret = self.keys.decrypt(state.secret, str(self.account.id))
        return pyotp.TOTP(secret).at(self.now + offset_steps * 30)

    def enable_2fa(self) -> list[str]:
        setup = self.run(self.svc.security.begin_two_factor(USER))
        code = pyotp.TOTP(setup.secret).at(self.now)
        return self.run(self.svc.security.confirm_two_factor(setup, code))


@pytest.fixture(params=BACKENDS)
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    with asyncio.Runner() as runner:
        w = World(tmp_path, runner, request.param, failure_delay=0.5, max_failure_delay=8.0)
        try:
            yield w
        finally:
            w.run(w.svc.close())
            w.run(w.store.close())


def test_password_works_with_2fa_off_and_is_audited(world: World) -> None:
    result = world.login(PASSWORD, protocol="smtp")
    assert result.ok
    assert result.account == world.account
    assert result.reason is None
    assert not world.login("wrong password").ok
    rows = world.run(world.svc.security.logins(USER))
    assert [(r.success, r.reason, r.protocol, r.client_ip) for r in rows] == [
        (False, "bad_credentials", "imap", OWNER),
        (True, "ok", "smtp", OWNER),
    ]


def test_2fa_refuses_the_account_password_and_accepts_app_passwords(world: World) -> None:
    codes = world.enable_2fa()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    result = world.login(PASSWORD)
    assert not result.ok
    assert result.reason is LoginFailure.APP_PASSWORD_REQUIRED
    assert world.login("wrong password").reason is LoginFailure.BAD_CREDENTIALS
    _app, text = world.run(world.svc.security.add_app_password(USER, "iPhone"))
    assert len(text) == 19
    assert text.count(" ") == 3
    for typed in (text, text.replace(" ", ""), text.upper(), text.replace(" ", "-")):
        result = world.login(typed, protocol="pop3")
        assert result.ok, typed
        assert result.app_password_name == "iPhone", typed
    # Only a keyed digest is stored, never the password.
    stored = world.run(world.svc.security.list_app_passwords(USER))
    assert text.replace(" ", "") not in repr(stored)
    world.run(world.svc.guard.flush())
    listed = world.run(world.svc.security.list_app_passwords(USER))[0]
    assert listed.last_used == world.now
    assert listed.last_ip == OWNER
    rows = world.run(world.svc.security.logins(USER, 3))
    assert rows[0].app_password == "iPhone"
    assert rows[0].success


def test_app_password_protocols_and_revocation(world: World) -> None:
    _, text = world.run(world.svc.security.add_app_password(USER, "Laptop", "imap,smtp"))
    assert world.login(text, protocol="imap").ok
    assert world.login(text, protocol="smtp").ok
    refused = world.login(text, protocol="pop3")
    assert refused.reason is LoginFailure.APP_PASSWORD_WRONG_PROTOCOL
    assert refused.detail == "this app password is for IMAP, SMTP only"
    with pytest.raises(AlreadyExists):
        world.run(world.svc.security.add_app_password(USER, "laptop"))
    world.run(world.svc.security.revoke_app_password(USER, "LAPTOP"))
    assert world.login(text, protocol="imap").reason is LoginFailure.BAD_CREDENTIALS
    with pytest.raises(NotFound):
        world.run(world.svc.security.revoke_app_password(USER, "Laptop"))
    with pytest.raises(SecurityError, match="unknown protocol"):
        world.run(world.svc.security.add_app_password(USER, "x", "imap,ftp"))
    with pytest.raises(SecurityError, match="needs a name"):
        world.run(world.svc.security.add_app_password(USER, "  "))


def test_totp_window_replay_and_recovery_codes(world: World) -> None:
    codes = world.enable_2fa()
    verify = world.svc.verify_second_factor
    # The enrolment code is spent; the next step's code (one step of drift) works once.
    world.now += 30
    assert world.run(verify(world.account, world.totp(0)))
    assert not world.run(verify(world.account, world.totp(0)))  # RFC 6238 5.2: no replay
    check = world.svc.check_second_factor
    assert world.run(check(world.account, world.totp(0))) is CodeCheck.REUSED
    assert world.run(check(world.account, "000000" if world.totp(0) != "000000" else "1"
                           )) is CodeCheck.WRONG
    assert world.run(verify(world.account, world.totp(1)))  # +1 step: clock drift
    assert not world.run(verify(world.account, world.totp(3)))  # too far ahead
    assert not world.run(verify(world.account, "12345"))
    assert not world.run(verify(world.account, "x" * 10_000))
    assert world.run(verify(world.account, codes[0].upper()))
    assert not world.run(verify(world.account, codes[0]))  # single use
    assert world.run(world.svc.security.two_factor_status(USER)) == (True, 9)
    assert world.run(world.svc.security.disable_two_factor(USER))
    assert not world.run(verify(world.account, codes[1]))
    assert world.login(PASSWORD).ok


def test_enrolment_needs_a_matching_code(world: World) -> None:
    setup = world.run(world.svc.security.begin_two_factor(USER))
    assert setup.secret not in repr(setup)
    assert setup.uri.startswith("otpauth://totp/")
    assert "secret=" in setup.uri
    wrong = f"{(int(pyotp.TOTP(setup.secret).at(world.now)) + 1) % 1_000_000:06d}"
    with pytest.raises(SecurityError, match="does not match"):
        world.run(world.svc.security.confirm_two_factor(setup, wrong))
    assert world.run(world.svc.security.two_factor_status(USER)) == (False, 0)
    assert world.login(PASSWORD).ok


def test_guessing_blocks_the_network_not_the_owner(world: World) -> None:
    checks_before = world.svc.guard.stats.password_checks
    outcomes = [world.login(f"guess number {i}", ip=ATTACKER).reason for i in range(10)]
    assert outcomes == [LoginFailure.BAD_CREDENTIALS] * 10
    # Growing delays before each attempt after the first failure, capped.
    assert world.slept == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    # Blocked: even the right password is not checked.
    blocked = world.login(PASSWORD, ip=ATTACKER, protocol="smtp")
    assert blocked.reason is LoginFailure.BLOCKED
    assert blocked.temporary
    assert world.svc.guard.stats.password_checks - checks_before == 10
    # The owner on a clean network: no delay, success every time.
    world.slept.clear()
    for _ in range(5):
        assert world.login(PASSWORD, ip=OWNER).ok
    assert world.slept == []
    blocks = world.run(world.svc.security.blocked())
    assert [b.network for b in blocks] == [ATTACKER]
    assert blocks[0].failures == 10
    # Another process (the CLI) lifts the block; this one sees it after its cache expires.
    other = world.service()
    assert world.run(other.security.unblock(ATTACKER)) == ATTACKER
    world.now += 3
    assert world.login(PASSWORD, ip=ATTACKER).ok
    with pytest.raises(NotFound):
        world.run(other.security.unblock(ATTACKER))
    with pytest.raises(SecurityError):
        world.run(other.security.unblock("not an ip"))


def test_block_expires(world: World) -> None:
    for i in range(10):
        world.login(f"guess {i}", ip=ATTACKER)
    assert world.login(PASSWORD, ip=ATTACKER).reason is LoginFailure.BLOCKED
    world.now += 901
    assert world.login(PASSWORD, ip=ATTACKER).ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv6_counts_per_64_and_trusted_networks_are_never_blocked(
        tmp_path: Path, backend: str) -> None:
    with asyncio.Runner() as runner:
        w = World(tmp_path, runner, backend, max_failures=3, failure_delay=0.0,
                  trusted_networks=("192.0.2.0/24",))
        try:
            for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"):
                assert w.login("nope nope", ip=host).reason is LoginFailure.BAD_CREDENTIALS
            assert w.login(PASSWORD, ip="2001:db8:1:2::77").reason is LoginFailure.BLOCKED
            assert w.login(PASSWORD, ip="2001:db8:1:3::1").ok  # the next /64
            for i in range(10):
                assert w.login(f"bad {i}", ip="192.0.2.9").reason is LoginFailure.BAD_CREDENTIALS
            assert w.login(PASSWORD, ip="192.0.2.9").ok
            assert w.login(PASSWORD, ip="::ffff:192.0.2.9").ok
        finally:
            w.run(w.svc.close())
            w.run(w.store.close())


def test_account_failures_slow_failing_networks_only() -> None:
    t = Throttle(max_failures=100, window=600, delay=1.0, max_delay=60)
    for i in range(6):
        t.record_failure(f"198.51.100.{i}", "alice@example.test", 1000.0)
    # A network that failed once waits for the account's six failures...
    assert t.delay_for("198.51.100.1", "alice@example.test", 1001.0) == 32.0
    # ...the owner's network, which never failed, does not wait at all.
    assert t.delay_for("192.0.2.1", "alice@example.test", 1001.0) == 0.0
    # Failures age out of the window.
    assert t.delay_for("198.51.100.1", "alice@example.test", 1601.0) == 0.0


def test_parallel_attempts_stop_at_the_threshold() -> None:
    t = Throttle(max_failures=10, window=600, delay=0, max_delay=0)
    # Attempts count from when they start: ten may be under way from a clean network...
    for _ in range(10):
        t.begin("n", "a")
    assert not t.over_limit("n", 0.0)
    assert t.account_in_flight("a") == 10
    # ...the eleventh could make eleven failures, and is refused unchecked.
    t.begin("n", "a")
    assert t.over_limit("n", 0.0)
    for _ in range(11):
        t.end("n", "a")
    assert t.in_flight("n") == 0
    assert t.account_in_flight("a") == 0
    t.record_failure("n", "a", 0.0)
    for _ in range(9):
        t.begin("n")
    assert not t.over_limit("n", 1.0)
    t.begin("n")
    assert t.over_limit("n", 1.0)


def test_throttle_memory_is_bounded() -> None:
    t = Throttle(max_failures=5, window=600, delay=1, max_delay=1, max_keys=100)
    for i in range(10_000):
        t.record_failure(f"10.0.{i // 256}.{i % 256}", f"u{i}", float(i))
    assert len(t._networks) <= 100
    assert len(t._accounts) <= 100


def test_network_keys() -> None:
    assert network_key("192.0.2.7") == "192.0.2.7"
    assert network_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert network_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert network_key("fe80::1%eth0") == "fe80::/64"
    assert network_key("") == "unknown"
    assert parse_network("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert parse_network("192.0.2.7/32") == "192.0.2.7"
    with pytest.raises(ValueError, match="IPv6 /64"):
        parse_network("192.0.2.0/24")


def test_rate_limited_attempts_skip_the_password_check(world: World) -> None:
    for i in range(9):
        world.login(f"failure {i}", ip=ATTACKER)
    # Nine failures and one attempt under way reach the limit of ten: the next attempt waits
    # for a place, and is refused unchecked when none comes.
    guard = world.svc.guard
    guard.throttle.begin(network_key(ATTACKER))
    with patch("mailstead.accounts.service.SLOT_WAIT_SECONDS", 0.2):
        result = world.login(PASSWORD, ip=ATTACKER)
    assert result.reason is LoginFailure.RATE_LIMITED
    assert result.temporary
    assert guard.stats.password_checks == 9
    assert guard.stats.waited_for_place >= 1


def test_a_typo_then_many_correct_logins_at_once_all_get_in(world: World) -> None:
    """Attempts under way are not failures: a family behind one NAT (one typo, then every
    device logging in at once) is never refused, though at most the failures left before
    the block are checked at a time."""
    assert world.login("a typo", ip=OWNER).reason is LoginFailure.BAD_CREDENTIALS

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(
            world.svc.login(USER, Secret(PASSWORD), protocol="imap", client_ip=OWNER,
                            mechanism="PLAIN")
            for _ in range(20)
        )))

    results = world.run(together())
    assert [r.ok for r in results] == [True] * 20
    assert world.svc.guard.throttle.in_flight(network_key(OWNER)) == 0


def test_a_burst_is_counted_when_it_starts_and_never_delays_the_owner(world: World) -> None:
    async def burst() -> list[Any]:
        return list(await asyncio.gather(*(
            world.svc.login(USER, Secret(f"guess-{i:03d}"), protocol="imap",
                            client_ip=ATTACKER, mechanism="PLAIN")
            for i in range(200)
        )))

    results = world.run(burst())
    stats = world.svc.guard.stats
    # Ten guesses reached argon2; the other 190 waited for a place (attempts under way are
    # not failures) until the ten failures reached the limit, and were refused unchecked: by
    # the block, or (when they asked while it was being made) by the limit itself.
    assert stats.password_checks == 10
    assert sum(r.reason is LoginFailure.BAD_CREDENTIALS for r in results) == 10
    refused = [r for r in results
               if r.reason in (LoginFailure.BLOCKED, LoginFailure.RATE_LIMITED)]
    assert len(refused) == 190
    assert all(r.temporary for r in refused)
    assert stats.waited_for_place >= 190
    assert world.svc.guard.throttle.in_flight(network_key(ATTACKER)) == 0
    assert world.login(PASSWORD, ip=ATTACKER).reason is LoginFailure.BLOCKED
    # The owner, from another network, is neither refused nor delayed.
    world.slept.clear()
    assert world.login(PASSWORD, ip=OWNER).ok
    assert world.slept == []
    rows = world.run(world.svc.security.logins(USER, 300))
    assert sum(r.reason == "bad_credentials" for r in rows) == 10
    # The refused ones, and the attempt after the burst.
    assert sum(r.reason in ("blocked", "rate_limited") for r in rows) == 191


def test_the_same_guess_made_at_once_is_one_attempt(world: World) -> None:
    async def together(password: str, ip: str, n: int) -> list[Any]:
        return list(await asyncio.gather(*(
            world.svc.login(USER, Secret(password), protocol="imap", client_ip=ip,
                            mechanism="PLAIN")
            for _ in range(n)
        )))

    # A client opening 50 connections at once with the right password: one check, all in.
    assert all(r.ok for r in world.run(together(PASSWORD, OWNER, 50)))
    # One wrong password repeated 200 times at once: one check, one failure, 200 answers.
    repeated = world.run(together("the same guess", ATTACKER, 200))
    assert all(r.reason is LoginFailure.BAD_CREDENTIALS for r in repeated)
    assert world.svc.guard.stats.password_checks == 2
    assert world.svc.guard.throttle.network_failures(network_key(ATTACKER), world.now) == 1
    rows = world.run(world.svc.security.logins(USER, 500))
    assert len(rows) == 250  # every connection's attempt is audited


def test_a_network_that_logged_in_takes_the_first_hashing_lane(world: World) -> None:
    guard = world.svc.guard
    net, user = network_key(OWNER), USER.lower()

    async def lane() -> Lane:
        place = guard.throttle.begin(net, user)
        try:
            return (await guard.admit(net, user, place)).lane
        finally:
            guard.throttle.end(net, user)

    assert world.run(lane()) is Lane.CLEAN
    world.login("a typo", ip=OWNER)
    assert world.run(lane()) is Lane.SUSPECT  # its network (and the account) failed
    assert world.login(PASSWORD, ip=OWNER).ok
    assert world.run(lane()) is Lane.PROVEN
    # The pool served the owner's hashes in those lanes.
    hashed = world.svc.hash_pool.stats.hashed
    assert hashed[Lane.SUSPECT] >= 1
    assert hashed[Lane.CLEAN] >= 1


def test_rehash_when_the_argon2_parameters_change(world: World) -> None:
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    svc = world.service(stronger)
    try:
        result = world.run(svc.login(USER, Secret(PASSWORD), protocol="imap", client_ip=OWNER,
                                     mechanism="LOGIN"))
        assert result.ok
        account = world.run(world.store.get_account(USER))
        assert account is not None
        assert "m=16,t=2,p=1" in account.password_hash
    finally:
        world.run(svc.close())


def test_audit_is_pruned_after_the_retention(world: World) -> None:
    world.login(PASSWORD)
    world.run(world.svc.guard.flush())  # the first flush also prunes (nothing old yet)
    assert len(world.run(world.svc.security.logins(USER))) == 1
    world.now += 91 * 86400
    svc = world.service()  # a fresh process prunes at its first flush
    try:
        world.run(svc.login(USER, Secret(PASSWORD), protocol="pop3", client_ip=OWNER,
                            mechanism="USER"))
        rows = world.run(svc.security.logins(USER))
        assert [r.protocol for r in rows] == ["pop3"]
    finally:
        world.run(svc.close())


def test_unknown_users_are_audited_without_an_account(world: World) -> None:
    assert world.login("whatever pw", user="nobody@example.test").reason is (
        LoginFailure.BAD_CREDENTIALS)
    assert world.login("whatever pw", user="x" * 5000).reason is LoginFailure.BAD_CREDENTIALS
    world.run(world.svc.guard.flush())
    assert world.svc.guard.stats.by_reason["bad_credentials"] == 2


def test_key_file_is_private_and_binds_ciphertexts(tmp_path: Path) -> None:
    keys = SecurityKeys.load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / "security.key").stat().st_mode)
    assert mode == 0o600
    again = SecurityKeys.load_or_create(tmp_path)
    assert keys.digest("app", "abc") == again.digest("app", "abc")
    assert keys.digest("app", "abc") != keys.digest("recovery", "abc")
    sealed = keys.encrypt("JBSWY3DPEHPK3PXP", "7")
    assert "JBSWY3DP" not in sealed
    assert "***" in repr(keys)
    assert again.decrypt(sealed, "7") == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SecurityKeyError):
        again.decrypt(sealed, "8")  # copied to another account
    with pytest.raises(SecurityKeyError):
        again.decrypt("v1:!!!", "7")
    (tmp_path / "other").mkdir()
    with pytest.raises(SecurityKeyError):
        SecurityKeys.load_or_create(tmp_path / "other").decrypt(sealed, "7")


def test_app_password_format() -> None:
    text = apppasswords.generate()
    assert len(text) == 19
    assert apppasswords.normalise(text) == text.replace(" ", "")
    assert apppasswords.normalise("short") is None
    assert apppasswords.normalise("abcd efgh ijkl mnoé") is None
    assert apppasswords.parse_protocols(None) == ()
    assert apppasswords.parse_protocols("IMAP, smtp,imap") == ("imap", "smtp")
    codes = twofactor.new_recovery_codes()
    assert all(twofactor.looks_like_recovery_code(c) for c in codes)
