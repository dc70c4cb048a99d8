"""Sessions (ids, expiry, bounds, fixation) and the form reader (media type, limits, CSRF)."""

from __future__ import annotations

import pytest

from mailstead.web.security import FormRefused, csrf_matches, parse_form
from mailstead.web.sessions import SessionStore

FORM = "application/x-www-form-urlencoded"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_ids_are_random_and_looked_up_by_hash() -> None:
    store = SessionStore(Clock())
    a, b = store.new(), store.new()
    assert a.id != b.id
    assert a.csrf != b.csrf
    assert len(a.id) >= 43  # 256 bits in base64url
    assert store.get(a.id) is a
    assert store.get(a.id + "x") is None
    assert store.get("") is None
    assert store.get("x" * 1000) is None
    assert a.id not in repr(a)
    assert a.csrf not in repr(a)


def test_idle_and_absolute_expiry() -> None:
    clock = Clock()
    store = SessionStore(clock, idle=100, absolute=250)
    s = store.new(account_id=1, address="a@example.test")
    clock.now += 99
    assert store.get(s.id) is s
    clock.now += 99
    assert store.get(s.id) is s
    clock.now += 99  # 297 s after creation: past the absolute limit although never idle
    assert store.get(s.id) is None
    t = store.new()
    clock.now += 101
    assert store.get(t.id) is None
    assert len(store) == 0


def test_sign_in_replaces_the_id_and_anonymous_floods_cannot_evict_users() -> None:
    store = SessionStore(Clock(), max_signed_in=3, max_anonymous=2)
    anon = store.new()
    user = store.sign_in(anon, 7, "a@example.test", "$argon2id$stored-hash")
    assert user.password_unchanged("$argon2id$stored-hash")
    assert not user.password_unchanged("$argon2id$another-hash")
    assert store.get(anon.id) is None
    assert user.id != anon.id
    assert user.csrf != anon.csrf
    for _ in range(50):
        store.new()
    assert store.get(user.id) is user
    assert len(store) == 3
    others = [store.new(account_id=7) for _ in range(2)]
    assert store.drop_account(7, keep=others[0]) == 2
    assert store.get(others[0].id) is others[0]
    assert store.get(user.id) is None


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
