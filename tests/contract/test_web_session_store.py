"""The WebSessionStore contract (the web pages' sessions, migration 0011), run against every
backend: upsert and read, updates that never bring back an ended session, ending sessions one
by one and per account, pruning by idle and absolute time and by the caps (anonymous ones
never pushing out signed-in ones), and removal with the account."""

from __future__ import annotations

from pathlib import Path

from mailstead.storage.interfaces import Store, WebSessionRow
from storebackends import Opener
from storebackends import run_with as run
from storebackends import two_accounts as accounts


def test_put_get_update_touch_and_drop(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, _ = await accounts(store)
        assert await store.get_web_session("k1") is None
        await store.put_web_session("k1", None, '{"csrf": "a"}', 100.0, 100.0)
        assert await store.get_web_session("k1") == WebSessionRow(None, '{"csrf": "a"}',
                                                                  100.0, 100.0)
        # Upsert: the same key again replaces the row.
        await store.put_web_session("k1", alice, '{"csrf": "b"}', 110.0, 110.5)
        assert await store.get_web_session("k1") == WebSessionRow(alice, '{"csrf": "b"}',
                                                                  110.0, 110.5)
        assert await store.update_web_session("k1", '{"csrf": "c"}', 120.0)
        row = await store.get_web_session("k1")
        assert row is not None
        assert (row.data, row.last_seen, row.created) == ('{"csrf": "c"}', 120.0, 110.0)
        # The idle clock never goes back, by an update or a touch.
        assert await store.update_web_session("k1", '{"csrf": "d"}', 115.0)
        await store.touch_web_session("k1", 118.0)
        row = await store.get_web_session("k1")
        assert row is not None
        assert (row.data, row.last_seen) == ('{"csrf": "d"}', 120.0)
        await store.touch_web_session("k1", 130.0)
        row = await store.get_web_session("k1")
        assert row is not None
        assert row.last_seen == 130.0
        await store.put_web_session("k2", None, "{}", 100.0, 100.0)
        assert await store.count_web_sessions() == (1, 1)
        await store.drop_web_sessions(["k1", "k2", "unknown"])
        assert await store.get_web_session("k1") is None
        assert await store.count_web_sessions() == (0, 0)
        # An update of an ended session stores nothing (it stays ended).
        assert not await store.update_web_session("k1", "{}", 140.0)
        await store.touch_web_session("k1", 140.0)
        assert await store.get_web_session("k1") is None
        await store.drop_web_sessions([])

    run(opener, tmp_path, body)


def test_drop_account_sessions_except_one(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        for key, account in (("a1", alice), ("a2", alice), ("a3", alice), ("b1", bob),
                             ("n1", None)):
            await store.put_web_session(key, account, "{}", 100.0, 100.0)
        assert await store.drop_account_web_sessions(alice, "a2") == 2
        assert await store.get_web_session("a2") is not None
        assert await store.get_web_session("a1") is None
        assert await store.get_web_session("b1") is not None
        assert await store.get_web_session("n1") is not None
        assert await store.drop_account_web_sessions(alice, None) == 1
        assert await store.drop_account_web_sessions(alice, None) == 0
        assert await store.count_web_sessions() == (1, 1)

    run(opener, tmp_path, body)


def test_prune_by_idle_and_absolute_time(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, _ = await accounts(store)
        await store.put_web_session("idle", alice, "{}", 900.0, 949.0)
        await store.put_web_session("old", alice, "{}", 499.0, 999.0)
        await store.put_web_session("live", alice, "{}", 500.0, 950.0)
        await store.put_web_session("anon-idle", None, "{}", 940.0, 940.0)
        await store.put_web_session("anon-live", None, "{}", 990.0, 990.0)
        # Idle before 950, created before 500: the boundaries themselves stay.
        assert await store.prune_web_sessions(950.0, 500.0, 100, 100) == 3
        assert await store.get_web_session("live") is not None
        assert await store.get_web_session("anon-live") is not None
        assert await store.count_web_sessions() == (1, 1)
        assert await store.prune_web_sessions(950.0, 500.0, 100, 100) == 0

    run(opener, tmp_path, body)


def test_prune_by_caps_removes_the_least_recently_seen_of_each_kind(
    opener: Opener, tmp_path: Path
) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        for n in range(3):  # signed in, seen long ago
            await store.put_web_session(f"user{n}", alice if n else bob, "{}", 0.0, 10.0 + n)
        for n in range(6):  # anonymous, all seen after every signed-in one
            await store.put_web_session(f"anon{n}", None, "{}", 0.0, 100.0 + n)
        assert await store.count_web_sessions() == (6, 3)
        # The anonymous cap leaves every signed-in row alone, however old.
        assert await store.prune_web_sessions(0.0, 0.0, 2, 100) == 4
        assert await store.count_web_sessions() == (2, 3)
        for n in range(3):
            assert await store.get_web_session(f"user{n}") is not None
        assert await store.get_web_session("anon5") is not None
        assert await store.get_web_session("anon4") is not None
        assert await store.get_web_session("anon3") is None
        # The signed-in cap, in turn, leaves the anonymous ones alone.
        assert await store.prune_web_sessions(0.0, 0.0, 100, 1) == 2
        assert await store.count_web_sessions() == (2, 1)
        assert await store.get_web_session("user2") is not None

    run(opener, tmp_path, body)


def test_sessions_go_with_their_account(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        await store.put_web_session("a", alice, "{}", 1.0, 1.0)
        await store.put_web_session("b", bob, "{}", 1.0, 1.0)
        await store.remove_account("alice@example.test")
        assert await store.get_web_session("a") is None
        assert await store.get_web_session("b") is not None
        assert await store.count_web_sessions() == (0, 1)

    run(opener, tmp_path, body)
