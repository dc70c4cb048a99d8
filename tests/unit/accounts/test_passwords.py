from __future__ import annotations

import contextlib

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from mailstead.accounts.passwords import (
    PasswordRuleError,
    check_password_rules,
    common_passwords,
    hash_password,
    make_hasher,
    needs_rehash,
    verify_password,
)
from mailstead.core.secret import Secret

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_hash_is_argon2id_and_verifies() -> None:
    h = hash_password(Secret("correct horse"))
    assert h.startswith("$argon2id$")
    assert verify_password(h, Secret("correct horse"))
    assert not verify_password(h, Secret("correct hors"))


def test_salt_is_random() -> None:
    assert hash_password(Secret("same pass"), FAST) != hash_password(Secret("same pass"), FAST)


@pytest.mark.parametrize("garbage", ["", "plain", "$argon2id$v=19$broken", "$2b$12$abc"])
def test_unreadable_hash_never_raises(garbage: str) -> None:
    assert verify_password(garbage, Secret("whatever1")) is False
    assert needs_rehash(garbage) is True


def test_needs_rehash_when_parameters_change() -> None:
    weak = hash_password(Secret("password1"), FAST)
    assert needs_rehash(weak)
    assert not needs_rehash(weak, FAST)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "too short"),
        ("1234567", "too short"),
        ("x" * 1025, "too long"),
        ("has\nnewline", "control character"),
        ("nul\x00inside", "control character"),
    ],
)
def test_rules_refuse(password: str, why: str) -> None:
    with pytest.raises(PasswordRuleError, match=why):
        check_password_rules(Secret(password))


def test_rules_accept_eight_characters_and_unicode() -> None:
    check_password_rules(Secret("tq7-vbn2"))
    check_password_rules(Secret("pässwörd ünicode"))


@pytest.mark.parametrize("password", ["12345678", "password1", "Password1", "qwertyuiop"])
def test_rules_refuse_common_passwords(password: str) -> None:
    # NIST SP 800-63B section 5.1.1.2: compare against lists of commonly used passwords.
    with pytest.raises(PasswordRuleError, match="most common"):
        check_password_rules(Secret(password))


def test_shipped_list_is_large_and_lower_case() -> None:
    words = common_passwords()
    assert len(words) > 8000
    assert all(w == w.lower() and len(w) >= 8 for w in words)


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("alice-Secret-1", True),  # "-Secret-1" alone is 9 characters
        ("Alice2024!", False),
        ("xalicex", False),  # too short anyway
        ("ALICE@example.test", False),
        ("bob and alice walk far", True),
        ("alice@example.test1", False),  # the whole address and one character
        ("example.test-1234", False),  # the domain
        ("Example-Alice-1", False),  # a label of the domain and the user name
        ("TEST-alice-2024", False),
        ("contest-winner-2024", True),  # "test" inside a word: "con-winner-2024" is left
        ("alicealicealice1", False),  # every occurrence counts
    ],
)
def test_rules_refuse_passwords_built_on_the_address(password: str, ok: bool) -> None:
    if ok:
        check_password_rules(Secret(password), "alice@example.test")
    else:
        refused = r"built on the address|not be the address|too short"
        with pytest.raises(PasswordRuleError, match=refused):
            check_password_rules(Secret(password), "alice@example.test")


@pytest.mark.parametrize(("address", "password", "ok"), [
    ("weak@a.test", "weak@a.test1", False),  # what let a weak password through before
    ("weak@a.test", "a-strong-passphrase", True),  # the one-letter label "a" is not a word
    ("john.smith@mail.example.test", "Smith-John-99", False),  # parts of the local part
    ("john.smith@mail.example.test", "mail-john-smith", False),
    ("al@b.test", "al@b.test12", False),  # short local part: the address still counts
    ("al@b.test", "al-b-rhubarb-pie", True),
    ("bücher@bücher.test", "BÜCHER-bücher1", False),  # Unicode, case-folded
])
def test_context_words_of_other_addresses(address: str, password: str, ok: bool) -> None:
    if ok:
        check_password_rules(Secret(password), address)
    else:
        with pytest.raises(PasswordRuleError, match="built on the address"):
            check_password_rules(Secret(password), address)


@given(st.text(min_size=1, max_size=20), st.text(min_size=8, max_size=40))
def test_rule_never_raises_anything_else(local: str, password: str) -> None:
    with contextlib.suppress(PasswordRuleError):
        check_password_rules(Secret(password), f"{local}@example.test")


def test_make_hasher_parameters_and_rehash() -> None:
    cheap = make_hasher(1, 8, 1)
    h = hash_password(Secret("correct horse"), cheap)
    assert "$argon2id$" in h
    assert "m=8,t=1,p=1" in h
    assert not needs_rehash(h, cheap)
    assert needs_rehash(h, make_hasher(2, 8, 1))
