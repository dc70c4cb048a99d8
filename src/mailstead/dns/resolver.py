"""The ``Resolver`` protocol, its dnspython implementation and a static fake for tests.

Answers are reduced to what mail needs: MX pairs, address strings and joined TXT strings.
Failures are split the way an MTA must act on them: ``DnsNotFound`` means the answer is
"none" (RFC 2308 NXDOMAIN or NODATA), ``DnsTemporary`` means "ask again later" (SERVFAIL,
timeouts, refused, truncated garbage). Names are returned lower-case without the trailing
dot, except the root, which is ``"."`` (the null MX of RFC 7505).

``DnsPythonResolver`` keeps its own small TTL-bound cache of the converted answers, negative
ones included, in front of dnspython: a busy MX asks the same few names for every message,
and dnspython's own path costs tens of microseconds even on a cache hit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

_T = TypeVar("_T")

# RFC 2181 section 8 allows TTLs up to 2^31 - 1 seconds; we keep answers at most a day, so a
# record fixed by its owner is seen again within a day whatever TTL it had.
MAX_POSITIVE_TTL = 86400.0
# RFC 2308 section 5: negative answers are cached for min(SOA TTL, SOA MINIMUM) and only when
# the SOA is there; "values of one to three hours have been found to work well", longer ones
# to be problematic, so three hours is our ceiling.
MAX_NEGATIVE_TTL = 3 * 3600.0


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


# One cached result of a query: the converted records, or the error class and its message.
_Value = tuple[object, ...]
_Entry = tuple[float, _Value | None, type[DnsError], str]


class DnsPythonResolver:
    """A ``Resolver`` over dnspython's asynchronous stub resolver, with a TTL-bound cache.

    ``nameservers`` are (ip, port) pairs; None uses the system configuration
    (/etc/resolv.conf). Search domains are never applied: mail names are always absolute.
    The cache holds up to ``cache_size`` converted answers (positive for their TTL, negative
    for the SOA's negative TTL, never temporary failures); identical lookups in flight at the
    same time share one query. ``clock`` is monotonic seconds, injected for tests.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        *,
        timeout: float = 5.0,
        lifetime: float = 15.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
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
        # Our cache below replaces dnspython's: one copy of each answer, already converted.
        self._resolver.cache = None
        self._cache_size = max(0, cache_size)
        self._clock = clock
        self._cache: dict[tuple[str, int], _Entry] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[_Entry]] = {}

    # The cache ------------------------------------------------------------------------

    def _cached(self, key: tuple[str, int]) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[key]
            return None
        return entry

    def _store(self, key: tuple[str, int], entry: _Entry, ttl: float) -> None:
        if ttl <= 0 or not self._cache_size:
            return
        if len(self._cache) >= self._cache_size:
            now = self._clock()
            for k in [k for k, e in self._cache.items() if e[0] <= now]:
                del self._cache[k]
            while len(self._cache) >= self._cache_size:
                # Still full of live answers: drop the oldest insertions (dicts keep order).
                del self._cache[next(iter(self._cache))]
        self._cache[key] = entry

    @staticmethod
    def _unpack(entry: _Entry) -> _Value:
        _expires, value, error, message = entry
        if value is None:
            raise error(message)
        return value

    # Queries --------------------------------------------------------------------------

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Value:
        """The converted records of ``name``/``rdtype`` from the cache or the network.
        Raises ``DnsError`` subclasses."""
        key = (name.lower().rstrip("."), int(rdtype))
        entry = self._cached(key)
        if entry is not None:
            return self._unpack(entry)
        task = self._pending.get(key)
        if task is None:
            # One query per question, whoever asks meanwhile: its own task, so that a caller
            # giving up (a timeout, a closed connection) never cancels it for the others.
            task = asyncio.get_running_loop().create_task(self._fetch(name, rdtype))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return self._unpack(await asyncio.shield(task))

    def _done(self, key: tuple[str, int], task: asyncio.Task[_Entry]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved, even when every caller went away

    async def _fetch(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Entry:
        """One query through dnspython, converted, cached when cacheable; temporary failures
        come back as entries too (never cached)."""
        what = f"{name} {rdtype.name}"
        key = (name.lower().rstrip("."), int(rdtype))
        now = self._clock()
        entry: _Entry
        try:
            answer = await self._resolver.resolve(_absolute(name), rdtype, search=False)
        except DnsError as exc:  # _absolute: not a name at all
            return (now, None, type(exc), str(exc))
        except dns.resolver.NXDOMAIN as exc:
            entry = (0.0, None, DnsNoDomain, f"{what}: no such domain")
            responses = list((exc.kwargs.get("responses") or {}).values())
            ttl = _negative_ttl(responses[0] if responses else None)
        except dns.resolver.NoAnswer as exc:
            entry = (0.0, None, DnsNotFound, f"{what}: no records")
            ttl = _negative_ttl(exc.kwargs.get("response"))
        except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
            return (now, None, DnsNotFound, f"{what}: not a valid domain name")
        except dns.resolver.NoNameservers:
            return (now, None, DnsTemporary, f"{what}: no nameserver answered (SERVFAIL)")
        except dns.exception.Timeout:
            return (now, None, DnsTemporary, f"{what}: timed out")
        except dns.exception.DNSException as exc:
            return (now, None, DnsTemporary, f"{what}: {type(exc).__name__}")
        else:
            value = _convert(answer, rdtype)
            # Answer.expiration is wall-clock time: now plus the smallest TTL of the chain.
            ttl = max(0.0, min(MAX_POSITIVE_TTL, answer.expiration - time.time()))
            entry = (now + ttl, value, DnsError, "")
            self._store(key, entry, ttl)
            return entry
        ttl = min(MAX_NEGATIVE_TTL, ttl)
        entry = (now + ttl, None, entry[2], entry[3])
        self._store(key, entry, ttl)
        return entry

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        return list(await self._lookup(domain, dns.rdatatype.MX))  # type: ignore[arg-type]

    async def addresses(self, host: str) -> list[str]:
        literal = _literal(host)
        if literal is not None:
            return [literal]  # a literal needs no lookup
        key = host.lower().rstrip(".")
        six = self._cached((key, int(dns.rdatatype.AAAA)))
        four = self._cached((key, int(dns.rdatatype.A)))
        if six is not None and four is not None:
            results: list[_Value | BaseException] = []
            for entry in (six, four):
                results.append(entry[1] if entry[1] is not None else entry[2](entry[3]))
        else:
            results = list(await asyncio.gather(
                self._lookup(host, dns.rdatatype.AAAA),
                self._lookup(host, dns.rdatatype.A),
                return_exceptions=True,
            ))
        found: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, DnsError):
                    raise result
                errors.append(result)
            else:
                found.extend(result)  # type: ignore[arg-type]
        if found:
            # One family answered: use it (the other failing only narrows the choice).
            return found
        if any(isinstance(e, DnsTemporary) for e in errors):
            raise next(e for e in errors if isinstance(e, DnsTemporary))
        if all(isinstance(e, DnsNoDomain) for e in errors):
            raise DnsNoDomain(f"{host}: no such domain")
        raise DnsNotFound(f"{host}: no A or AAAA records")

    async def txt(self, name: str) -> list[str]:
        return list(await self._lookup(name, dns.rdatatype.TXT))  # type: ignore[arg-type]


def _literal(host: str) -> str | None:
    """``host`` as a normalised IP address, or None for a name. Names are told apart
    without an exception first: a top-level label is never all digits (RFC 3696 section
    2), so only an IPv6 literal or a name ending in a digit can be an address."""
    if not host or (":" not in host and not host[-1].isdigit()):
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _convert(answer: dns.resolver.Answer, rdtype: dns.rdatatype.RdataType) -> _Value:
    """What callers get: (preference, host) pairs, address strings or joined TXT strings."""
    if rdtype == dns.rdatatype.MX:
        return tuple((int(r.preference), _host(r.exchange)) for r in answer)
    if rdtype == dns.rdatatype.TXT:
        return tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
    return tuple(str(r.address) for r in answer)


def _negative_ttl(response: object) -> float:
    """RFC 2308 section 5: a negative answer is cached for min(SOA TTL, SOA MINIMUM) of the
    SOA in its authority section, and not at all without one (0)."""
    if not isinstance(response, dns.message.Message):
        return 0.0
    ttls = [min(rrset.ttl, rrset[0].minimum) for rrset in response.authority
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset)]
    return float(min(ttls)) if ttls else 0.0


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
