"""Which connections may send a password before TLS (core.network.secure_for_auth)."""

from __future__ import annotations

import ipaddress

import pytest

from mailstead.core.network import secure_for_auth

TRUSTED = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/48"))


@pytest.mark.parametrize(("peer", "local", "secure"), [
    ("127.0.0.1", "127.0.0.1", True),  # a tool on the server itself
    ("::1", "::1", True),
    ("198.51.100.7", "198.51.100.7", True),  # the host's own public address, from the host
    ("::ffff:127.0.0.1", "127.0.0.1", True),  # an IPv4-mapped peer is its IPv4 address
    ("127.0.0.2", "127.0.0.1", False),  # another address, even on loopback: not this host
    ("203.0.113.9", "198.51.100.7", False),
    ("192.0.2.44", "198.51.100.7", True),  # a trusted network (a webmail host)
    ("2001:db8:0:1::5", "2001:db8:1::1", True),
    ("2001:db9::5", "2001:db8:1::1", False),
    ("", "", False),  # unknown peer (no address): never
    ("not-an-ip", "not-an-ip", False),
])
def test_secure_for_auth(peer: str, local: str, secure: bool) -> None:
    assert secure_for_auth(peer, local, TRUSTED) is secure
