"""The ``Resolver`` protocol, its dnspython implementation and a static fake for tests.

Answers are reduced to what mail needs: MX pairs, address strings and joined TXT strings.
Failures are split the way an MTA must act on them: ``DnsNotFound`` means the answer is
"none" (RFC 2308 NXDOMAIN or NODATA), ``DnsTemporary`` means "ask again later" (SERVFAIL,
timeouts, refused, truncated garbage). Names are returned lower-case without the trailing
dot, except the root, which is ``"."`` (the null MX of RFC 7505).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

_T = TypeVar("_T")


class DnsError(Exception):
    """Base of the resolver's errors; the message names the query."""


class DnsNotFound(DnsError):
    """The name has no records of the asked type (NODATA), or does not exist at all."""


class DnsNoDomain(DnsNotFound):
    """The name does not exist (NXDOMAIN, RFC 1035 section 4.1.1 RCODE 3); a ``DnsNotFound``
    so callers that do not care about the difference need not know about it."""


class DnsTemporary(DnsError):
    """SERVFAIL, a timeout or an unusable answer: the question must be asked again later."""


class Resolver(Protocol):
    """The lookups mail delivery and authentication need (DESIGN rule 8: always injected)."""

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs in DNS order; the exchange ``"."`` is a null MX."""

    async def addresses(self, host: str) -> list[str]:
        """IPv6 then IPv4 addresses of ``host`` (AAAA and A), CNAMEs followed."""

    async def txt(self, name: str) -> list[str]:
        """One string per TXT record, its character-strings joined (RFC 7208 section 3.3)."""


def _host(name: dns.name.Name) -> str:
    text = name.to_text(omit_final_dot=True).lower()
    return text or "."


def _absolute(name: str) -> str:
    if not name or len(name) > 253 + 1:
        raise DnsNotFound(f"{name!r}: not a valid domain name")
    return name if name.endswith(".") else name + "."


class DnsPythonResolver:
    """A ``Resolver`` over dnspython's asynchronous stub resolver, with its TTL-bound cache.

    ``nameservers`` are (ip, port) pairs; None uses the system configuration
    (/etc/resolv.conf). Search domains are never applied: mail names are always absolute.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        *,
        timeout: float = 5.0,
        lifetime: float = 15.0,
        cache_size: int = 10_000,
    ) -> None:
        if nameservers is None:
            self._resolver = dns.asyncresolver.Resolver(configure=True)
        else:
            if not nameservers:
                raise ValueError("at least one nameserver is needed")
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
            ]
        self._resolver.timeout = timeout  # per server try
        self._resolver.lifetime = lifetime  # whole query, all servers and retries
        self._resolver.cache = dns.resolver.LRUCache(cache_size)

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        what = f"{name} {rdtype.name}"
        try:
            return await self._resolver.resolve(_absolute(name), rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsNoDomain(f"{what}: no such domain") from exc
        except dns.resolver.NoAnswer as exc:
            raise DnsNotFound(f"{what}: no records") from exc
        except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong) as exc:
            raise DnsNotFound(f"{what}: not a valid domain name") from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsTemporary(f"{what}: no nameserver answered (SERVFAIL)") from exc
        except dns.exception.Timeout as exc:
            raise DnsTemporary(f"{what}: timed out") from exc
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"{what}: {type(exc).__name__}") from exc

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        answer = await self._query(domain, dns.rdatatype.MX)
        return [(int(r.preference), _host(r.exchange)) for r in answer]

    async def addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # a literal needs no lookup
        except ValueError:
            pass
        results = await asyncio.gather(
            self._query(host, dns.rdatatype.AAAA),
            self._query(host, dns.rdatatype.A),
            return_exceptions=True,
        )
        found: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, DnsError):
                    raise result
                errors.append(result)
            else:
                found.extend(r.address for r in result)
        if found:
            # One family answered: use it (the other failing only narrows the choice).
            return found
        if any(isinstance(e, DnsTemporary) for e in errors):
            raise next(e for e in errors if isinstance(e, DnsTemporary))
        if all(isinstance(e, DnsNoDomain) for e in errors):
            raise DnsNoDomain(f"{host}: no such domain")
        raise DnsNotFound(f"{host}: no A or AAAA records")

    async def txt(self, name: str) -> list[str]:
        answer = await self._query(name, dns.rdatatype.TXT)
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


class StaticResolver:
    """A ``Resolver`` answering from dictionaries, for tests and for ``--dry-run`` style tools.

    A name absent from every table is NXDOMAIN; present in some table but not the asked one
    is NODATA. Names in ``temporary`` raise ``DnsTemporary`` for every type.
    """

    def __init__(
        self,
        *,
        mx: Mapping[str, Sequence[tuple[int, str]]] | None = None,
        addresses: Mapping[str, Sequence[str]] | None = None,
        txt: Mapping[str, Sequence[str]] | None = None,
        temporary: Sequence[str] = (),
    ) -> None:
        self._mx = {k.lower(): list(v) for k, v in (mx or {}).items()}
        self._addresses = {k.lower(): list(v) for k, v in (addresses or {}).items()}
        self._txt = {k.lower(): list(v) for k, v in (txt or {}).items()}
        self._temporary = {t.lower() for t in temporary}
        self.queries: list[tuple[str, str]] = []  # (type, name), for assertions

    def _lookup(self, kind: str, table: Mapping[str, list[_T]], name: str) -> list[_T]:
        key = name.lower().rstrip(".")
        self.queries.append((kind, key))
        if key in self._temporary:
            raise DnsTemporary(f"{key} {kind}: SERVFAIL")
        if key in table:
            return table[key]
        if key in self._mx or key in self._addresses or key in self._txt:
            raise DnsNotFound(f"{key} {kind}: no records")
        raise DnsNoDomain(f"{key} {kind}: no such domain")

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        return list(self._lookup("MX", self._mx, domain))

    async def addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        return list(self._lookup("A", self._addresses, host))

    async def txt(self, name: str) -> list[str]:
        return list(self._lookup("TXT", self._txt, name))
