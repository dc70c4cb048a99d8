"""DNS blocklist lookups of the client address (RFC 5782) through the injected resolver.

An address is listed in a zone when the reversed address under the zone has an A record in
127.0.0.0/8 (RFC 5782 section 2.1); other answers (Spamhaus' 127.255.255.x "query refused",
or a hijacking resolver's ad server) mean "unknown", never "listed". Lookups of all zones run
in parallel and a slow or failing zone only drops that zone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mailstead.dns.resolver import DnsError, DnsNotFound, Resolver
from mailstead.mailauth.deadline import bounded
from mailstead.mailauth.parsecache import ParseCache

log = logging.getLogger("mailstead.filters.dnsbl")

LOOKUP_TIMEOUT = 5.0
# RFC 5782 section 2.1: listings are A records in 127.0.0.0/8. 127.255.255.0/24 is what
# Spamhaus answers to public resolvers and to malformed queries: an error, not a listing.
_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERRORS = ipaddress.ip_network("127.255.255.0/24")


def reversed_name(ip: str, zone: str) -> str | None:
    """The query name of ``ip`` in ``zone``: reversed octets for IPv4 (RFC 5782 section
    2.1), reversed nibbles for IPv6 (section 2.4); None for something that is not an IP."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        labels = str(addr).split(".")[::-1]
    else:
        labels = list(addr.exploded.replace(":", ""))[::-1]
    return ".".join(labels) + "." + zone.strip(".").lower()


@dataclass(frozen=True, slots=True)
class Listing:
    """One zone that lists the client, with the codes it answered (e.g. 127.0.0.2)."""

    zone: str
    codes: tuple[str, ...]


class DnsblChecker:
    """Looks the client up in every configured zone."""

    def __init__(
        self, resolver: Resolver, zones: Sequence[str], *, timeout: float = LOOKUP_TIMEOUT,
        cache_size: int = 1024,
    ) -> None:
        self._resolver = resolver
        self._zones = tuple(z.strip(".").lower() for z in zones if z.strip("."))
        self._timeout = timeout
        # The query names of the clients seen last, one per zone: a pure function of the
        # address text (the answers themselves are cached, with their TTL, by the resolver).
        self._names: ParseCache[str, tuple[str | None, ...]] = ParseCache(cache_size)

    def _query_names(self, ip: str) -> tuple[str | None, ...]:
        return tuple(reversed_name(ip, zone) for zone in self._zones)

    @property
    def zones(self) -> tuple[str, ...]:
        return self._zones

    async def _one(self, name: str | None, zone: str) -> Listing | None:
        if name is None:
            return None
        try:
            answers = await bounded(self._resolver.addresses(name), self._timeout)
        except DnsNotFound:
            return None
        except (DnsError, TimeoutError) as exc:
            log.info("dnsbl %s unusable: %s", zone, exc)
            return None
        codes: list[str] = []
        for a in answers:
            try:
                addr = ipaddress.ip_address(a)
            except ValueError:
                continue
            if addr.version == 4 and addr in _LISTED and addr not in _ERRORS:
                codes.append(str(addr))
        if not codes:
            if answers:
                log.info("dnsbl %s answered outside 127.0.0.0/8 or an error code: %s",
                         zone, answers)
            return None
        return Listing(zone, tuple(sorted(codes)))

    async def lookup(self, ip: str) -> list[Listing]:
        """The zones listing ``ip``, in configuration order. Never raises for DNS trouble."""
        if not self._zones:
            return []
        names = self._names.get(ip, self._query_names)
        if len(names) == 1:  # one zone: no tasks to gather
            one = await self._one(names[0], self._zones[0])
            return [one] if one is not None else []
        found = await asyncio.gather(*(self._one(n, z) for n, z in zip(names, self._zones,
                                                                      strict=True)))
        return [f for f in found if f is not None]
