"""The network a client address counts as: every per-client limit (connection slots, login
failures, blocks) counts the same unit, so an IPv6 client cannot escape one by moving to
another of its 2**64 addresses."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress | None:
    """The address of a peer as the listener reports it: a zone index (``%eth0``) is
    ignored and an IPv4-mapped IPv6 address is the IPv4 address; None when unparsable."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def network_key(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """``192.0.2.7`` (or its ``ipv4_prefix`` network) or ``2001:db8:1:2::/64`` (one site gets
    a whole /64); an unparsable peer (a Unix socket...) counts as itself, cut to 64
    characters."""
    addr = parse_ip(ip)
    if addr is None:
        return ip[:64] or "unknown"
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    if prefix >= addr.max_prefixlen:
        return str(addr)
    return str(ipaddress.ip_network((addr, prefix), strict=False))


def secure_for_auth(peer_ip: str, local_ip: str, trusted: tuple[IPNetwork, ...]) -> bool:
    """A password may come in the clear on this connection: the client runs on this host
    (its address is the one it connected to, e.g. 127.0.0.1 to 127.0.0.1: the bytes never
    leave the machine), or it is in a network the administrator trusts (a webmail host, a
    proxy that did the TLS). The rule of Dovecot's ``login_trusted_networks``; every other
    connection must use TLS first (RFC 8314 section 3)."""
    peer, local = parse_ip(peer_ip), parse_ip(local_ip)
    if peer is None:
        return False
    return peer == local or any(peer in network for network in trusted)
