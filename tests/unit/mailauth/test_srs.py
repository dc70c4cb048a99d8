"""SRS0 addresses (mailauth/srs.py): what is made reverses to the sender, whatever the case
an MTA gives it back in, for 21 days; anything altered, foreign or older is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.mailauth.srs import Srs, SrsError, is_srs

KEY = bytes(range(32))
NOW = 1_765_000_000.0
_LOCAL = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABC0123456789.-_+="), min_size=1,
                 max_size=30)
_DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}\.test", fullmatch=True)


@given(_LOCAL, _DOMAIN)
def test_forward_then_reverse(local: str, domain: str) -> None:
    srs = Srs(KEY, lambda: NOW)
    address = srs.forward(f"{local}@{domain}", "fwd.test")
    rewritten, _, ours = address.rpartition("@")
    assert ours == "fwd.test"
    assert is_srs(rewritten)
    assert srs.reverse(rewritten) == f"{local}@{domain}"
    assert srs.reverse(rewritten.lower()).lower() == f"{local}@{domain}".lower()


@given(st.text(max_size=80))
def test_hostile_local_parts_are_refused_not_crashing(local: str) -> None:
    srs = Srs(KEY, lambda: NOW)
    try:
        srs.reverse(local)
    except SrsError:
        return
    raise AssertionError(f"accepted {local!r}")  # the hash cannot match by chance here


def test_tampering_another_key_and_age() -> None:
    srs = Srs(KEY, lambda: NOW)
    local = srs.forward("alice@example.test", "fwd.test").rpartition("@")[0]
    with pytest.raises(SrsError, match="hash"):
        srs.reverse(local.replace("alice", "mallory"))
    with pytest.raises(SrsError, match="hash"):
        Srs(b"x" * 32, lambda: NOW).reverse(local)
    assert Srs(KEY, lambda: NOW + 21 * 86400).reverse(local) == "alice@example.test"
    with pytest.raises(SrsError, match="too old"):
        Srs(KEY, lambda: NOW + 22 * 86400).reverse(local)
    with pytest.raises(SrsError):
        srs.forward("no-domain", "fwd.test")
    with pytest.raises(ValueError, match="16 bytes"):
        Srs(b"short", lambda: NOW)
