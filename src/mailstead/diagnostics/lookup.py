"""The DNS questions the diagnostics ask: the ``Resolver`` ones (MX, addresses, TXT) through
``DnsPythonResolver`` with the configured nameservers, plus SRV, PTR and plain A lookups that
only the diagnostics need, asked of the same nameservers."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailstead.dns.resolver import DnsNoDomain, DnsNotFound, DnsPythonResolver, DnsTemporary


class Lookup:
    """DNS for the diagnostics; ``nameservers`` None means the system's (/etc/resolv.conf)."""

    def __init__(self, nameservers: Sequence[tuple[str, int]] | None, *,
                 timeout: float = 3.0, lifetime: float = 8.0) -> None:
        self.resolver = DnsPythonResolver(nameservers, timeout=timeout, lifetime=lifetime)
        if nameservers is None:
            self._extra = dns.asyncresolver.Resolver(configure=True)
        else:
            self._extra = dns.asyncresolver.Resolver(configure=False)
            self._extra.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
            ]
        self._extra.timeout = timeout
        self._extra.lifetime = lifetime

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        what = f"{name} {rdtype.name}"
        try:
            return await self._extra.resolve(name if name.endswith(".") else name + ".",
                                             rdtype, search=False)
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
        return await self.resolver.mx(domain)

    async def addresses(self, host: str) -> list[str]:
        return await self.resolver.addresses(host)

    async def txt(self, name: str) -> list[str]:
        return await self.resolver.txt(name)

    async def srv(self, name: str) -> list[tuple[int, int, int, str]]:
        """(priority, weight, port, target) of the SRV records (RFC 2782), target lower-case
        without the final dot ("." for "service not offered")."""
        answer = await self._query(name, dns.rdatatype.SRV)
        out = []
        for r in answer:
            target = r.target.to_text(omit_final_dot=True).lower() or "."
            out.append((int(r.priority), int(r.weight), int(r.port), target))
        return sorted(out, key=lambda item: (item[0], -item[1]))

    async def ptr(self, address: str) -> list[str]:
        """The PTR names of ``address`` (RFC 1035 section 3.5 / RFC 3596 section 2.5)."""
        name = dns.reversename.from_address(str(ipaddress.ip_address(address))).to_text()
        answer = await self._query(name, dns.rdatatype.PTR)
        return [r.target.to_text(omit_final_dot=True).lower() for r in answer]

    async def a(self, name: str) -> list[str]:
        """The A records of ``name`` (a DNS blocklist answers with 127.0.0.x addresses)."""
        answer = await self._query(name, dns.rdatatype.A)
        return [r.address for r in answer]
