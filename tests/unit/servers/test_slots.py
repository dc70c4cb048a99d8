"""Who counts as one client, and whom a newcomer sheds (servers/slots.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from mailstead.servers.slots import SHED_MIN_IDLE, SlotPolicy, Tier, address_key, pick_victim


def test_ipv4_counts_by_address() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")


def test_ipv6_counts_by_64() -> None:
    a = address_key("2001:db8:1:2:aaaa::1")
    assert a == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == a
    assert address_key("2001:db8:1:3::1") != a


def test_mapped_and_zoned_addresses() -> None:
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("::1") == "::/64"
    assert address_key("not-an-address") == "not-an-address"


def test_prefix_knobs() -> None:
    assert address_key("192.0.2.7", ipv4_prefix=24) == "192.0.2.0/24"
    assert address_key("2001:db8::1", ipv6_prefix=128) == "2001:db8::1"
    assert address_key("2001:db8:0:0:1::1", ipv6_prefix=48) == "2001:db8::/48"


@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_any_host_of_a_64_shares_its_key(addr: ipaddress.IPv6Address, host: int) -> None:
    if addr.ipv4_mapped is not None:
        return
    other = ipaddress.IPv6Address((int(addr) >> 64 << 64) | host)
    assert address_key(str(addr)) == address_key(str(other))


@given(st.text(max_size=60))
def test_hostile_text_never_raises(text: str) -> None:
    assert isinstance(address_key(text), str)


def test_shed_threshold() -> None:
    assert SlotPolicy().shed_threshold(1000) == 900
    assert SlotPolicy(shed_above=100).shed_threshold(50) == 50
    assert SlotPolicy().shed_threshold(1) == 1


@dataclass
class Occ:
    sheddable: Tier | None
    accepted_at: float
    progress_at: float
    progress_bytes: int


NOW = 1000.0


def test_slowest_anonymous_goes_first() -> None:
    fast = Occ(Tier.ANONYMOUS, 900.0, 990.0, 50_000)
    slow = Occ(Tier.ANONYMOUS, 900.0, 990.0, 10)
    logged_in_idle = Occ(Tier.AUTHENTICATED, 100.0, 100.0, 0)
    assert pick_victim([fast, logged_in_idle, slow], NOW) is slow


def test_equal_progress_oldest_idle_first() -> None:
    older = Occ(Tier.ANONYMOUS, 900.0, 900.0, 0)
    newer = Occ(Tier.ANONYMOUS, 990.0, 990.0, 0)
    assert pick_victim([newer, older], NOW) is older


def test_never_shed_busy_idle_or_fresh() -> None:
    busy = Occ(None, 0.0, 0.0, 0)  # carrying out a command, or in IMAP IDLE
    fresh = Occ(Tier.ANONYMOUS, NOW - SHED_MIN_IDLE / 2, NOW - SHED_MIN_IDLE / 2, 0)
    assert pick_victim([busy, fresh], NOW) is None
    authenticated = Occ(Tier.AUTHENTICATED, 0.0, 0.0, 0)
    assert pick_victim([busy, fresh, authenticated], NOW) is authenticated


@given(st.lists(st.tuples(st.sampled_from([None, Tier.ANONYMOUS, Tier.AUTHENTICATED]),
                          st.floats(0, 999), st.floats(0, 1), st.integers(0, 10**9)),
                max_size=30))
def test_victim_is_minimal(rows: list[tuple[Tier | None, float, float, int]]) -> None:
    occs = [Occ(t, acc, acc + frac * (NOW - acc), b) for t, acc, frac, b in rows]
    victim = pick_victim(occs, NOW)
    eligible = [o for o in occs if o.sheddable is not None
                and NOW - o.progress_at >= SHED_MIN_IDLE]
    if not eligible:
        assert victim is None
        return
    assert victim in eligible
    assert victim.sheddable == min(o.sheddable for o in eligible if o.sheddable is not None)
