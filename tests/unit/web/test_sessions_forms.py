"""Sessions (ids, expiry, bounds, fixation) over a real store of each backend, and the form
reader (media type, limits, CSRF)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mailstead.accounts.keys import SecurityKeys
from mailstead.web.security import FormRefused, csrf_matches, parse_form
from mailstead.web.sessions import TOUCH_INTERVAL, PendingSignIn, SessionStore, _key
from storebackends import BACKENDS, open_backend

FORM = "application/x-www-form-urlencoded"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_sessions(
    tmp_path: Path, backend: str, body: Callable[[SessionStore], Awaitable[None]],
    clock: Clock | None = None, **limits: Any,
) -> None:
    """Runs ``body`` with a SessionStore over a fresh store of ``backend`` with accounts 1
    and 7 (signed-in rows reference their account)."""

    async def main() -> None:
        store = await open_backend(backend, tmp_path / "data")
        try:
            await store.add_domain("example.test")
            for n in range(1, 8):
                await store.add_account(f"u{n}@example.test", "hash")
            keys = SecurityKeys.load_or_create(tmp_path)
            await body(SessionStore(store, keys, clock or Clock(), **limits))
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_session_ids_are_random_and_looked_up_by_hash(tmp_path: Path, backend: str) -> None:
    async def body(store: SessionStore) -> None:
        a, b = await store.new(), await store.new()
        assert a.id != b.id
        assert a.csrf != b.csrf
        assert len(a.id) >= 43  # 256 bits in base64url
        found = await store.get(a.id)
        assert found is not None
        assert (found.id, found.csrf) == (a.id, a.csrf)
        assert await store.get(a.id + "x") is None
        assert await store.get("") is None
        assert await store.get("x" * 1000) is None
        assert a.id not in repr(a)
        assert a.csrf not in repr(a)

    run_sessions(tmp_path, backend, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_idle_and_absolute_expiry(tmp_path: Path, backend: str) -> None:
    clock = Clock()

    async def body(store: SessionStore) -> None:
        s = await store.new(account_id=1, address="a@example.test")
        clock.now += 99
        assert await store.get(s.id) is not None
        clock.now += 99
        assert await store.get(s.id) is not None
        clock.now += 99  # 297 s after creation: past the absolute limit although never idle
        assert await store.get(s.id) is None
        t = await store.new()
        clock.now += 101
        assert await store.get(t.id) is None
        assert await store.count() == 0

    run_sessions(tmp_path, backend, body, clock, idle=100, absolute=250)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sign_in_replaces_the_id_and_anonymous_floods_cannot_evict_users(
    tmp_path: Path, backend: str
) -> None:
    clock = Clock()

    async def body(store: SessionStore) -> None:
        anon = await store.new()
        user = await store.sign_in(anon, 7, "a@example.test", "$argon2id$stored-hash")
        assert user.password_unchanged("$argon2id$stored-hash")
        assert not user.password_unchanged("$argon2id$another-hash")
        before = await store.get(anon.id)  # the sign-in form's id signs nobody in (fixation)
        assert before is not None
        assert before.account_id is None
        assert user.id != anon.id
        assert user.csrf != anon.csrf
        for _ in range(50):  # sign-in forms: stored nowhere, so they push out nobody
            await store.new()
        assert await store.count() == 1
        waiting = []
        for _ in range(4):  # anonymous rows (a pending 2FA step): the newest two are kept
            clock.now += 0.01
            waiting.append(await store.new(
                pending=PendingSignIn(7, "a@example.test", clock.now + 300)))
        assert [await store.get(w.id) is not None for w in waiting] == [False, False, True, True]
        assert await store.get(user.id) is not None
        assert await store.count() == 3
        others = [await store.new(account_id=7) for _ in range(2)]
        assert await store.drop_account(7, keep=others[0]) == 2
        assert await store.get(others[0].id) is not None
        assert await store.get(user.id) is None

    run_sessions(tmp_path, backend, body, clock, max_signed_in=3, max_anonymous=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sign_in_form_sessions_are_not_stored_until_they_hold_something(
    tmp_path: Path, backend: str
) -> None:
    """A session that only shows the sign-in form costs no row: its cookie value proves
    itself (an HMAC under security.key) and gives the same form token on every node."""
    clock = Clock()

    async def body(store: SessionStore) -> None:
        form = await store.new()
        assert (form.stored, form.fresh, form.account_id) == (False, True, None)
        assert await store.count() == 0
        again = await store.get(form.id)
        assert again is not None
        assert (again.csrf, again.stored, again.fresh) == (form.csrf, False, False)
        head, _, tag = form.id.rpartition(".")
        other = "1" if tag[0] == "0" else "0"
        first = "B" if form.id[0] == "A" else "A"
        for forged in (f"{head}.{other}{tag[1:]}", first + form.id[1:], head, form.id + "0"):
            assert await store.get(forged) is None
        # Something to keep (a message for the next page): now a row, under the same cookie.
        again.flash = "hello"
        await store.save(again)
        assert await store.count() == 1
        kept = await store.get(form.id)
        assert kept is not None
        assert kept.stored
        assert kept.take_flash() == "hello"
        # A form shown longer ago than the idle timeout has expired with it.
        late = await store.new()
        clock.now += 101
        assert await store.get(late.id) is None

    run_sessions(tmp_path, backend, body, clock, idle=100, absolute=250)


@pytest.mark.parametrize("backend", BACKENDS)
def test_idle_clock_is_written_once_a_minute_and_changes_are_saved(
    tmp_path: Path, backend: str
) -> None:
    clock = Clock()

    async def main() -> None:
        store = await open_backend(backend, tmp_path / "data")
        try:
            await store.add_domain("example.test")
            account = await store.add_account("u1@example.test", "hash")
            sessions = SessionStore(store, SecurityKeys.load_or_create(tmp_path), clock)
            s = await sessions.new(account_id=account.id, address=account.address)
            key = _key(s.id)

            async def last_seen() -> float:
                row = await store.get_web_session(key)
                assert row is not None
                return row.last_seen

            clock.now += TOUCH_INTERVAL - 1
            assert await sessions.get(s.id) is not None
            assert await last_seen() == 1000.0  # not written on every request
            clock.now += 1
            assert await sessions.get(s.id) is not None
            assert await last_seen() == 1000.0 + TOUCH_INTERVAL
            # A change reaches the store (and another node) only when saved; the JSON holds
            # the state, never the cookie value.
            read = await sessions.get(s.id)
            assert read is not None
            read.flash = "hello"
            await sessions.save(read)
            again = await sessions.get(s.id)
            assert again is not None
            assert again.take_flash() == "hello"
            await sessions.save(again)
            third = await sessions.get(s.id)
            assert third is not None
            assert third.flash == ""
            row = await store.get_web_session(key)
            assert row is not None
            assert s.id not in row.data
            # A session ended meanwhile is not brought back by a save.
            await sessions.drop(third)
            again.flash = "late"
            await sessions.save(again)
            assert await sessions.get(s.id) is None
        finally:
            await store.close()

    asyncio.run(main())


def test_csrf_comparison() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches("abc", "")
    assert not csrf_matches("", "")
    assert not csrf_matches("abc", "abc\udcff")


def test_parse_form_accepts_a_plain_form() -> None:
    form = parse_form(f"{FORM}; charset=UTF-8", b"csrf=t&name=J%C3%BCrg+x&p=imap&p=smtp&e=",
                      multi=frozenset({"p"}))
    assert form.get("name") == "Jürg x"
    assert form.all("p") == ["imap", "smtp"]
    assert form.get("e") == ""
    assert "e" in form
    assert form.get("missing", "d") == "d"
    assert parse_form(FORM, b"").get("x") == ""


@pytest.mark.parametrize(("ctype", "body", "status"), [
    ("text/plain", b"a=b", 415),
    ("", b"a=b", 415),
    (FORM, b"\xc3(", 400),
    (FORM, b"a=1&a=2", 400),
    (FORM, b"a=%00", 400),
    (FORM, b"a=" + b"x" * 5000, 400),
    (FORM, b"&".join(b"f%d=1" % i for i in range(65)), 400),
    (FORM, b"novalue&&", 400),
])
def test_parse_form_refuses(ctype: str, body: bytes, status: int) -> None:
    with pytest.raises(FormRefused) as info:
        parse_form(ctype, body)
    assert info.value.status == status
