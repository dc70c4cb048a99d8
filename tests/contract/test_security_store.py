"""The SecurityStore contract (two-factor secrets, app passwords, the login audit, IP blocks),
run against every backend; single-use codes stay single-use with two stores at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.errors import AlreadyExists, NotFound
from mailstead.storage.interfaces import IpBlock, LoginRecord, Store
from storebackends import Opener, opened
from storebackends import run_with as run

NOW = 1_800_000_000.0


async def alice(store: Store) -> int:
    await store.add_domain("example.test")
    return (await store.add_account("alice@example.test", "hash")).id


def record(account_id: int | None, at: float, success: bool = True, **more: Any) -> LoginRecord:
    fields: dict[str, Any] = {
        "at": at, "account_id": account_id, "username": "alice@example.test",
        "protocol": "imap", "client_ip": "192.0.2.1", "mechanism": "PLAIN",
        "success": success, "reason": "ok" if success else "bad_credentials",
    }
    fields.update(more)
    return LoginRecord(**fields)


def test_second_factor_lifecycle(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        aid = await alice(store)
        assert await store.get_second_factor(aid) is None
        assert not await store.use_totp_counter(aid, 5)  # 2FA off: nothing to use
        with pytest.raises(NotFound):
            await store.set_second_factor(aid + 1000, "sealed", ["d1"], NOW)
        await store.set_second_factor(aid, "sealed", ["d1", "d2", "d2", "d3"], NOW)
        state = await store.get_second_factor(aid)
        assert state is not None
        assert (state.account_id, state.secret, state.last_counter, state.created_at,
                state.recovery_codes_left) == (aid, "sealed", -1, NOW, 3)
        # RFC 6238 section 5.2: a time step is accepted once, and never an older one.
        assert await store.use_totp_counter(aid, 100)
        assert not await store.use_totp_counter(aid, 100)
        assert not await store.use_totp_counter(aid, 99)
        assert await store.use_totp_counter(aid, 101)
        assert await store.use_recovery_code(aid, "d2")
        assert not await store.use_recovery_code(aid, "d2")
        assert not await store.use_recovery_code(aid, "unknown")
        state = await store.get_second_factor(aid)
        assert state is not None
        assert (state.last_counter, state.recovery_codes_left) == (101, 2)
        # Enrolling again replaces the secret, the codes and the counter.
        await store.set_second_factor(aid, "sealed2", ["e1"], NOW + 1)
        state = await store.get_second_factor(aid)
        assert state is not None
        assert (state.secret, state.last_counter, state.created_at,
                state.recovery_codes_left) == ("sealed2", -1, NOW + 1, 1)
        assert not await store.use_recovery_code(aid, "d1")
        assert await store.remove_second_factor(aid)
        assert not await store.remove_second_factor(aid)
        assert await store.get_second_factor(aid) is None
        assert not await store.use_recovery_code(aid, "e1")  # dropped with the secret

    run(opener, tmp_path, body)


def test_single_use_codes_hold_across_two_stores(opener: Opener, tmp_path: Path) -> None:
    """Two processes (or nodes) trying one code at the same moment: exactly one wins."""

    async def main() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            aid = await alice(one)
            codes = [f"code{i}" for i in range(10)]
            await one.set_second_factor(aid, "sealed", codes, NOW)
            for step in range(1, 6):
                wins = await asyncio.gather(
                    *(s.use_totp_counter(aid, step) for s in (one, two) for _ in range(4))
                )
                assert wins.count(True) == 1, step
            for code in codes[:5]:
                wins = await asyncio.gather(
                    *(s.use_recovery_code(aid, code) for s in (one, two) for _ in range(4))
                )
                assert wins.count(True) == 1, code
            state = await two.get_second_factor(aid)
            assert state is not None
            assert (state.last_counter, state.recovery_codes_left) == (5, 5)

    asyncio.run(main())


def test_app_passwords(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        aid = await alice(store)
        phone = await store.add_app_password(aid, "iPhone", "dig1", ["imap", "smtp"], NOW)
        assert (phone.account_id, phone.name, phone.digest, phone.protocols, phone.created_at,
                phone.last_used, phone.last_ip) == (aid, "iPhone", "dig1", ("imap", "smtp"),
                                                    NOW, None, None)
        laptop = await store.add_app_password(aid, "Laptop", "dig2", [], NOW + 1)
        with pytest.raises(AlreadyExists):
            await store.add_app_password(aid, "IPHONE", "dig3", [], NOW)  # case-insensitive
        with pytest.raises(NotFound):
            await store.add_app_password(aid + 1000, "x", "dig", [], NOW)
        assert await store.list_app_passwords(aid) == [phone, laptop]  # oldest first
        assert await store.list_app_passwords(aid + 1000) == []
        # A successful login with it records when and from where; a failed one does not, and
        # an older batch arriving late never moves last_used backwards.
        await store.add_login_records([
            record(aid, NOW + 10, app_password="iPhone", app_password_id=phone.id),
            record(aid, NOW + 20, success=False, app_password_id=laptop.id,
                   client_ip="203.0.113.9"),
        ])
        await store.add_login_records([
            record(aid, NOW + 5, app_password="iPhone", app_password_id=phone.id,
                   client_ip="198.51.100.1"),
        ])
        listed = {a.name: a for a in await store.list_app_passwords(aid)}
        assert (listed["iPhone"].last_used, listed["iPhone"].last_ip) == (NOW + 10, "192.0.2.1")
        assert listed["Laptop"].last_used is None
        await store.revoke_app_password(aid, "IPHONE")
        with pytest.raises(NotFound):
            await store.revoke_app_password(aid, "iPhone")
        assert [a.name for a in await store.list_app_passwords(aid)] == ["Laptop"]

    run(opener, tmp_path, body)


def test_login_audit(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        aid = await alice(store)
        bob = (await store.add_account("bob@example.test", "hash")).id
        await store.add_login_records([])  # nothing to write is fine
        await store.add_login_records([
            record(aid, NOW + 1),
            record(aid, NOW + 3, success=False, protocol="pop3", mechanism="USER"),
            record(aid, NOW + 2, app_password="Phone"),
            record(None, NOW + 4, success=False, username="nobody@example.test"),
            record(bob, NOW + 5),
        ])
        rows = await store.list_logins(aid, 10)
        assert [(r.at, r.success, r.reason, r.protocol, r.app_password) for r in rows] == [
            (NOW + 3, False, "bad_credentials", "pop3", None),
            (NOW + 2, True, "ok", "imap", "Phone"),
            (NOW + 1, True, "ok", "imap", None),
        ]
        assert rows[0] == record(aid, NOW + 3, success=False, protocol="pop3",
                                 mechanism="USER")
        assert [r.at for r in await store.list_logins(aid, 2)] == [NOW + 3, NOW + 2]
        # An account removed before its batch is written is audited without it.
        await store.remove_account("bob@example.test")
        await store.add_login_records([
            record(bob, NOW + 6, success=False, username="bob@example.test")])
        failures = await store.recent_login_failures(10)
        assert [(r.account_id, r.username) for r in failures] == [
            (None, "bob@example.test"), (None, "nobody@example.test"),
            (aid, "alice@example.test")]
        assert await store.prune_logins(NOW + 2.5) == 2
        assert [r.at for r in await store.list_logins(aid, 10)] == [NOW + 3]

    run(opener, tmp_path, body)


def test_ip_blocks(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_block(IpBlock("192.0.2.1", NOW + 900, 10, NOW, "failures"))
        await store.add_block(IpBlock("2001:db8:1:2::/64", NOW + 300, 12, NOW, "failures"))
        await store.add_block(IpBlock("198.51.100.7", NOW - 1, 10, NOW - 901, "old"))
        assert [b.network for b in await store.active_blocks(NOW)] == [
            "2001:db8:1:2::/64", "192.0.2.1"]  # soonest to end first, expired left out
        # A new block of the same network replaces the old one.
        await store.add_block(IpBlock("192.0.2.1", NOW + 100, 20, NOW + 5, "again"))
        assert await store.active_blocks(NOW) == [
            IpBlock("192.0.2.1", NOW + 100, 20, NOW + 5, "again"),
            IpBlock("2001:db8:1:2::/64", NOW + 300, 12, NOW, "failures"),
        ]
        assert await store.remove_block("192.0.2.1")
        assert not await store.remove_block("192.0.2.1")
        # Pruning the audit also drops blocks that ended before the cutoff (counting only the
        # audit rows).
        assert [b.network for b in await store.active_blocks(0.0)] == [
            "198.51.100.7", "2001:db8:1:2::/64"]
        assert await store.prune_logins(NOW) == 0
        assert [b.network for b in await store.active_blocks(0.0)] == ["2001:db8:1:2::/64"]

    run(opener, tmp_path, body)


def test_hostile_text_from_clients_is_audited(opener: Opener, tmp_path: Path) -> None:
    """A user name is whatever the client sent, NUL included (PostgreSQL text cannot hold NUL:
    it is kept as U+FFFD there); the audit never fails for it."""

    async def body(store: Store) -> None:
        aid = await alice(store)
        await store.add_login_records([
            record(aid, NOW, success=False, username="alice\x00@example.test",
                   mechanism="PL\x00AIN"),
        ])
        [row] = await store.list_logins(aid, 5)
        assert row.username.replace("\ufffd", "\x00") == "alice\x00@example.test"
        assert row.mechanism.replace("\ufffd", "\x00") == "PL\x00AIN"
        app = await store.add_app_password(aid, "Tab\x00let", "dig", [], NOW)
        await store.revoke_app_password(aid, "tab\x00LET")
        assert app.name == "Tab\x00let" or app.name == "Tab\ufffdlet"
        assert await store.list_app_passwords(aid) == []

    run(opener, tmp_path, body)


def test_security_key_record(opener: Opener, tmp_path: Path) -> None:
    """The installation key's check value is recorded once (the first writer wins, also
    across two stores at once); the sealed copy can be set, replaced and dropped; the count of
    keyed secrets covers second factors and app passwords."""

    async def main() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            assert await one.security_key_record() == (None, None)
            assert await one.count_keyed_secrets() == 0
            wins = await asyncio.gather(
                *(s.record_security_key(f"v1:{n}") for n, s in enumerate((one, two) * 3))
            )
            assert len(set(wins)) == 1  # everyone learns the one winner
            assert await two.record_security_key("v1:later") == wins[0]
            assert await two.security_key_record() == (wins[0], None)
            await one.set_sealed_security_key("sealed-a")
            await one.set_sealed_security_key("sealed-b")
            assert await two.security_key_record() == (wins[0], "sealed-b")
            await two.set_sealed_security_key(None)
            await two.set_sealed_security_key(None)  # dropping twice is fine
            assert await one.security_key_record() == (wins[0], None)
            aid = await alice(one)
            await one.set_second_factor(aid, "sealed", ["d1"], NOW)
            await one.add_app_password(aid, "phone", "dig", [], NOW)
            await one.add_app_password(aid, "laptop", "dig2", [], NOW)
            assert await two.count_keyed_secrets() == 3

    asyncio.run(main())
