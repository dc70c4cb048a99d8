from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from mailstead.accounts.passwords import (
    PasswordRuleError,
    check_password_rules,
    hash_password,
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
    check_password_rules(Secret("12345678"))
    check_password_rules(Secret("pässwörd ünicode"))
