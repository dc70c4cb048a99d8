"""SPF (RFC 7208): does the client's IP address send for the MAIL FROM (or HELO) domain?

Our own evaluator over the injected async ``Resolver`` (DESIGN rule 8), rather than pyspf,
which is synchronous and does its own DNS. The whole record is parsed before any mechanism is
evaluated (section 4.6: a syntax error anywhere is a permerror), and the DNS lookup and void
lookup limits of section 4.6.4 are shared across include and redirect. Never raises on
hostile records: every outcome is one of the seven results of section 2.6.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from mailstead.dns.resolver import DnsError, DnsNoDomain, DnsTemporary, Resolver
from mailstead.mailauth.deadline import bounded
from mailstead.mailauth.parsecache import DEFAULT_SIZE, ParseCache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_T = TypeVar("_T")

# RFC 7208 section 4.6.4: at most 10 terms that cause DNS lookups per check_host(), shared by
# include and redirect recursion; at most 2 "void" lookups (NXDOMAIN or no answers).
MAX_DNS_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
# RFC 7208 section 4.6.4: at most 10 MX names (mx) and 10 PTR names (ptr) per mechanism.
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
# RFC 7208 section 4.6.4: an overall time limit of at least 20 seconds is suggested.
DEFAULT_TIMEOUT = 20.0
# RFC 7208 section 7.3 / RFC 1035 section 2.3.4: a domain-spec longer than 253 octets is
# shortened by removing labels from the left.
_MAX_NAME = 253

_TERM_SPLIT = re.compile(r" +")
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.DOTALL)
_DIRECTIVE = re.compile(r"^([+\-~?]?)([A-Za-z][A-Za-z0-9\-_.]*)(.*)$", re.DOTALL)
_IP4_CIDR = r"(?:/(0|[1-9][0-9]?))"
_IP6_CIDR = r"(?://(0|[1-9][0-9]?[0-9]?))"
_DUAL_CIDR = re.compile(rf"^{_IP4_CIDR}?{_IP6_CIDR}?$")
_SPEC_CIDR = re.compile(rf"^(.*?)({_IP4_CIDR}?{_IP6_CIDR}?)$", re.DOTALL)
_MACRO = re.compile(r"%\{([slodiphcrtvSLODIPHCRTV])([0-9]*)(r?)([.\-+,/_=]*)\}|%%|%_|%-|%", re.I)
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?$")
# RFC 7208 section 4.5: the record starts with exactly "v=spf1", then SP or the end.
_VERSION = re.compile(r"^v=spf1(?: |$)", re.IGNORECASE)


class SpfResult(StrEnum):
    """The results of RFC 7208 section 2.6, spelled as in Authentication-Results."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"  # noqa: S105 (a result name, not a password)
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


_QUALIFIERS = {
    "+": SpfResult.PASS,
    "": SpfResult.PASS,
    "-": SpfResult.FAIL,
    "~": SpfResult.SOFTFAIL,
    "?": SpfResult.NEUTRAL,
}


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """One check: the result, the domain that was checked, and why (for logs and comments)."""

    result: SpfResult
    domain: str
    reason: str


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Term:
    qualifier: str  # "" for modifiers
    name: str  # lower-case mechanism or modifier name
    arg: str  # domain-spec / network, "" when absent
    cidr4: int | None = None
    cidr6: int | None = None
    # ip4/ip6: the network, built once when the record is parsed rather than per check.
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    directives: tuple[_Term, ...]
    redirect: str | None


def valid_domain(name: str) -> bool:
    """RFC 7208 section 4.3: a multi-label name, each label 1-63 octets, at most 253 in all
    (a trailing dot allowed). Underscore labels occur in real records and are let through."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > _MAX_NAME:
        return False
    labels = name.split(".")
    if len(labels) < 2:
        return False
    # Each label printable ASCII without spaces: the same check on the whole name.
    return (name.isascii() and name.isprintable() and " " not in name
            and "" not in labels and max(map(len, labels)) <= 63)


def _cidr(text: str) -> tuple[int | None, int | None]:
    m = _DUAL_CIDR.match(text)
    if m is None:
        raise _PermError(f"invalid CIDR length {text!r}")
    c4 = int(m.group(1)) if m.group(1) is not None else None
    c6 = int(m.group(2)) if m.group(2) is not None else None
    if (c4 is not None and c4 > 32) or (c6 is not None and c6 > 128):
        raise _PermError(f"CIDR length out of range {text!r}")
    return c4, c6


def _check_macro_string(text: str, *, explanation: bool = False) -> None:
    """Syntax check of a macro-string (RFC 7208 section 7.1) without expanding it."""
    for m in _MACRO.finditer(text):
        if m.group(0) == "%":
            raise _PermError(f"invalid macro in {text!r}")
        letter = m.group(1)
        if letter is not None and letter.lower() in "crt" and not explanation:
            # RFC 7208 section 7.2: c, r and t are only allowed in "exp" text.
            raise _PermError(f"macro %{{{letter}}} only allowed in exp")
    for ch in _MACRO.sub("", text):
        if not 0x21 <= ord(ch) <= 0x7E:
            raise _PermError(f"invalid character in {text!r}")


def _check_domain_spec(spec: str) -> None:
    """RFC 7208 section 7.1: domain-spec = macro-string domain-end; domain-end is a
    top label (not all digits) or a macro-expand."""
    _check_macro_string(spec)
    if spec.endswith("}") and _MACRO.search(spec):
        return
    top = spec.rstrip(".").rsplit(".", 1)[-1]
    if "." not in spec.rstrip(".") or not _LABEL.match(top) or top.isdigit():
        raise _PermError(f"invalid domain-spec {spec!r}")


def parse_record(text: str) -> _Record:
    """Parses a whole SPF record; raises _PermError on any syntax error (section 4.6)."""
    terms = [t for t in _TERM_SPLIT.split(text.strip(" ")) if t][1:]  # drop "v=spf1"
    directives: list[_Term] = []
    redirect: str | None = None
    exp_seen = False
    for term in terms:
        mod = _MODIFIER.match(term)
        if mod is not None and (":" not in mod.group(1) and "/" not in mod.group(1)):
            name, value = mod.group(1).lower(), mod.group(2)
            if name == "redirect":
                # RFC 7208 section 6: redirect and exp at most once each.
                if redirect is not None:
                    raise _PermError("more than one redirect modifier")
                _check_domain_spec(value)
                redirect = value
            elif name == "exp":
                if exp_seen:
                    raise _PermError("more than one exp modifier")
                _check_domain_spec(value)
                exp_seen = True
            else:
                _check_macro_string(value)  # section 6: unknown modifiers are ignored
            continue
        m = _DIRECTIVE.match(term)
        if m is None:
            raise _PermError(f"invalid term {term!r}")
        qualifier, name, rest = m.group(1), m.group(2).lower(), m.group(3)
        directives.append(_mechanism(qualifier, name, rest))
    return _Record(tuple(directives), redirect)


def _parse_or_reason(text: str) -> _Record | str:
    try:
        return parse_record(text)
    except _PermError as exc:
        return str(exc)


class SpfCache:
    """Parsed records by their text and parsed client addresses by theirs, kept by one
    verifier (DESIGN rule 9) across its checks: both are pure functions of the text, so a
    hit is exactly what parsing again would give; the DNS answers themselves are the
    resolver's (and expire with their TTL there)."""

    def __init__(self, maxsize: int = DEFAULT_SIZE) -> None:
        self._records: ParseCache[str, _Record | str] = ParseCache(maxsize)
        self._ips: ParseCache[str, IPAddress | None] = ParseCache(maxsize)

    def record(self, text: str) -> _Record:
        """``parse_record(text)``; raises _PermError as it would."""
        found = self._records.get(text, _parse_or_reason)
        if isinstance(found, str):
            raise _PermError(found)  # a new exception each time: no traceback piles up
        return found

    def client_ip(self, text: str) -> IPAddress | None:
        return self._ips.get(text, _client_ip)


def _mechanism(qualifier: str, name: str, rest: str) -> _Term:
    if name == "all":
        if rest:
            raise _PermError(f"all takes no argument: {rest!r}")
        return _Term(qualifier, name, "")
    if name in ("include", "exists"):
        if not rest.startswith(":") or len(rest) < 2:
            raise _PermError(f"{name} needs a domain")
        _check_domain_spec(rest[1:])
        return _Term(qualifier, name, rest[1:])
    if name in ("a", "mx"):
        spec, cidr = "", rest
        if rest.startswith(":"):
            m = _SPEC_CIDR.match(rest[1:])
            assert m is not None  # the pattern matches every string
            spec, cidr = m.group(1), m.group(2)
            _check_domain_spec(spec)
        c4, c6 = _cidr(cidr)
        return _Term(qualifier, name, spec, c4, c6)
    if name == "ptr":
        if rest and not rest.startswith(":"):
            raise _PermError(f"invalid ptr {rest!r}")
        if rest:
            _check_domain_spec(rest[1:])
        return _Term(qualifier, name, rest[1:])
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise _PermError(f"{name} needs a network")
        net, _, length = rest[1:].partition("/")
        try:
            addr = ipaddress.ip_address(net)
        except ValueError:
            raise _PermError(f"invalid {name} address {net!r}") from None
        if (name == "ip4") != (addr.version == 4):
            raise _PermError(f"wrong address family in {name}:{net}")
        bits = 32 if name == "ip4" else 128
        if length:
            if not length.isdigit() or (len(length) > 1 and length[0] == "0"):
                raise _PermError(f"invalid prefix length {length!r}")
            if int(length) > bits:
                raise _PermError(f"prefix length {length} out of range")
        prefix = int(length) if length else bits
        return _Term(qualifier, name, net, prefix if name == "ip4" else None,
                     prefix if name == "ip6" else None,
                     ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
    raise _PermError(f"unknown mechanism {name!r}")


def _split_sender(sender: str, helo: str) -> tuple[str, str]:
    """RFC 7208 section 4.3: the local part defaults to "postmaster"; a null sender is
    postmaster@HELO (section 2.4)."""
    if not sender:
        return "postmaster", helo
    local, at, domain = sender.rpartition("@")
    if not at:
        return "postmaster", sender
    return local or "postmaster", domain


def _ip_macro(ip: IPAddress) -> str:
    if ip.version == 4:
        return str(ip)
    # RFC 7208 section 7.3: IPv6 "i" is the dot-separated nibbles.
    return ".".join(ip.exploded.replace(":", ""))


class _Evaluator:
    """One check_host() with its shared counters (RFC 7208 section 4.6.4)."""

    def __init__(self, resolver: Resolver, ip: IPAddress, sender: str, helo: str,
                 cache: SpfCache | None = None) -> None:
        self._resolver = resolver
        self._cache = cache
        self._ip = ip
        self._local, self._sender_domain = _split_sender(sender, helo)
        self._helo = helo
        self._lookups = 0
        self._voids = 0

    def _count(self) -> None:
        self._lookups += 1
        if self._lookups > MAX_DNS_LOOKUPS:
            raise _PermError(f"more than {MAX_DNS_LOOKUPS} DNS lookups")

    def _void(self) -> None:
        self._voids += 1
        if self._voids > MAX_VOID_LOOKUPS:
            raise _PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")

    async def _dns(self, call: Callable[[str], Awaitable[list[_T]]], name: str) -> list[_T]:
        """A lookup where NXDOMAIN/NODATA is an empty (void) answer and failures temperror."""
        try:
            found = await call(name)
        except DnsTemporary as exc:
            raise _TempError(str(exc)) from None
        except DnsError:
            found = []
        if not found:
            self._void()
        return found

    def expand(self, spec: str, domain: str) -> str:
        """RFC 7208 section 7: macro expansion of a domain-spec, shortened to 253 octets."""
        sender = f"{self._local}@{self._sender_domain}"
        values = {
            "s": sender,
            "l": self._local,
            "o": self._sender_domain,
            "d": domain,
            "i": _ip_macro(self._ip),
            # RFC 7208 section 7.3: "p" SHOULD NOT be used; "unknown" when not validated.
            "p": "unknown",
            "h": self._helo,
            "v": "in-addr" if self._ip.version == 4 else "ip6",
        }

        def one(m: re.Match[str]) -> str:
            whole = m.group(0)
            if whole == "%%":
                return "%"
            if whole == "%_":
                return " "
            if whole == "%-":
                return "%20"
            letter = m.group(1)
            if letter is None or letter.lower() not in values:
                raise _PermError(f"invalid macro {whole!r}")
            value = values[letter.lower()]
            delims = m.group(4) or "."
            parts = re.split("[" + re.escape(delims) + "]", value)
            if m.group(3):
                parts.reverse()
            if m.group(2):
                keep = int(m.group(2))
                if keep == 0:
                    raise _PermError("macro transformer of zero")
                parts = parts[-keep:]
            out = ".".join(parts)
            if letter.isupper():
                out = urllib.parse.quote(out, safe="")
            return out

        result = _MACRO.sub(one, spec)
        while len(result.rstrip(".")) > _MAX_NAME and "." in result:
            result = result.split(".", 1)[1]
        return result.rstrip(".")

    async def check_host(self, domain: str, depth: int = 0) -> tuple[SpfResult, str]:
        """RFC 7208 section 4: the result for ``domain`` and a short reason."""
        if not valid_domain(domain):
            return SpfResult.NONE, f"{domain!r} is not a valid domain"
        try:
            records = await self._resolver.txt(domain)
        except DnsTemporary as exc:
            return SpfResult.TEMPERROR, str(exc)
        except DnsNoDomain:
            return SpfResult.NONE, f"{domain}: no such domain"
        except DnsError:
            records = []
        spf = [r for r in records if _VERSION.match(r)]
        if not spf:
            return SpfResult.NONE, f"{domain}: no SPF record"
        if len(spf) > 1:
            return SpfResult.PERMERROR, f"{domain}: more than one SPF record"
        try:
            record = (self._cache.record(spf[0]) if self._cache is not None
                      else parse_record(spf[0]))
            return await self._evaluate(record, domain, depth)
        except _PermError as exc:
            return SpfResult.PERMERROR, f"{domain}: {exc}"
        except _TempError as exc:
            return SpfResult.TEMPERROR, f"{domain}: {exc}"

    async def _evaluate(self, record: _Record, domain: str, depth: int) -> tuple[SpfResult, str]:
        for term in record.directives:
            # all, ip4 and ip6 need no DNS: decided here, without a coroutine per term.
            matched = self._local_match(term)
            if matched is None:
                matched = await self._matches(term, domain, depth)
            if matched:
                q = term.qualifier
                return _QUALIFIERS[q], f"{domain}: matched {q}{term.name}"
        # RFC 7208 section 6.1: redirect is ignored when the record has "all".
        if record.redirect is not None and not any(t.name == "all" for t in record.directives):
            self._count()
            target = self.expand(record.redirect, domain)
            result, reason = await self.check_host(target, depth + 1)
            if result is SpfResult.NONE:
                # RFC 7208 section 6.1: a redirect to a domain without a record is permerror.
                return SpfResult.PERMERROR, f"redirect to {target}: no SPF record"
            return result, reason
        # RFC 7208 section 4.7: no match and no redirect is neutral.
        return SpfResult.NEUTRAL, f"{domain}: no mechanism matched"

    def _in(self, addresses: list[str], c4: int | None, c6: int | None) -> bool:
        for text in addresses:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            if addr.version != self._ip.version:
                continue
            bits = (c4 if c4 is not None else 32) if addr.version == 4 else (
                c6 if c6 is not None else 128)
            net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
            if self._ip in net:
                return True
        return False

    async def _family(self, host: str) -> list[str]:
        """Addresses of ``host`` in the client's family; an empty answer is a void lookup."""
        found = await self._dns(self._resolver.addresses, host)
        addrs = [a for a in found if ipaddress.ip_address(a).version == self._ip.version]
        if found and not addrs:
            # RFC 7208 section 4.6.4: NODATA for the asked type (A or AAAA) is void too.
            self._void()
        return addrs

    def _local_match(self, term: _Term) -> bool | None:
        """Whether all, ip4 or ip6 matches; None for the mechanisms that need DNS."""
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            net = term.network
            if net is None:  # a _Term built by hand: the network from its parts
                bits = term.cidr4 if name == "ip4" else term.cidr6
                net = ipaddress.ip_network(f"{term.arg}/{bits}", strict=False)
            return net.version == self._ip.version and self._ip in net
        return None

    async def _matches(self, term: _Term, domain: str, depth: int) -> bool:
        local = self._local_match(term)
        if local is not None:
            return local
        name = term.name
        self._count()  # every other mechanism costs a lookup (section 4.6.4)
        target = self.expand(term.arg, domain) if term.arg else domain
        if name == "include":
            result, why = await self.check_host(target, depth + 1)
            # RFC 7208 section 5.2: the include results table.
            if result is SpfResult.PASS:
                return True
            if result is SpfResult.TEMPERROR:
                raise _TempError(f"include:{target}: {why}")
            if result in (SpfResult.PERMERROR, SpfResult.NONE):
                raise _PermError(f"include:{target} {result}: {why}")
            return False
        if name == "a":
            return self._in(await self._family(target), term.cidr4, term.cidr6)
        if name == "mx":
            return await self._mx(target, term)
        if name == "exists":
            # RFC 7208 section 5.7: an A lookup, even for IPv6 clients.
            found = await self._dns(self._resolver.addresses, target)
            return any(ipaddress.ip_address(a).version == 4 for a in found)
        if name == "ptr":
            return await self._ptr(target)
        raise _PermError(f"unknown mechanism {name!r}")  # parse_record rejects these

    async def _mx(self, target: str, term: _Term) -> bool:
        exchanges = [h for _, h in await self._dns(self._resolver.mx, target) if h != "."]
        if len(exchanges) > MAX_MX_NAMES:
            raise _PermError(f"mx:{target} has more than {MAX_MX_NAMES} exchanges")
        temporary = False
        for host in exchanges:
            try:
                addrs = await self._resolver.addresses(host)
            except DnsTemporary:
                temporary = True
                continue
            except DnsError:
                continue
            if self._in(addrs, term.cidr4, term.cidr6):
                return True
        if temporary:
            raise _TempError(f"mx:{target} address lookup failed")
        return False

    async def _ptr(self, target: str) -> bool:
        """RFC 7208 section 5.5 (ptr SHOULD NOT be used): only with a resolver that offers
        ``ptr(ip) -> list[str]``; without one the mechanism never matches."""
        ptr = getattr(self._resolver, "ptr", None)
        if ptr is None:
            return False
        try:
            names: list[str] = list(await ptr(str(self._ip)))
        except DnsTemporary:
            return False  # section 5.5: lookup errors mean no match
        except DnsError:
            return False
        target = target.lower().rstrip(".")
        for host in names[:MAX_PTR_NAMES]:
            host = host.lower().rstrip(".")
            if host != target and not host.endswith("." + target):
                continue
            try:
                if str(self._ip) in {str(ipaddress.ip_address(a))
                                     for a in await self._resolver.addresses(host)}:
                    return True
            except DnsError:
                continue
        return False


def _client_ip(ip: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    # RFC 7208 section 5 (and 4.1): an IPv4-mapped IPv6 client is an IPv4 client.
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


async def check_host(
    resolver: Resolver,
    ip: str,
    domain: str,
    sender: str,
    helo: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cache: SpfCache | None = None,
) -> SpfOutcome:
    """RFC 7208 check_host(<ip>, <domain>, <sender>): the result for ``domain``.

    ``sender`` is the MAIL FROM address ("" for the null path), ``helo`` the HELO name;
    ``cache`` keeps parsed records and addresses across checks. Never raises: a timeout is
    temperror, a client address that is not an IP is permerror.
    """
    addr = cache.client_ip(ip) if cache is not None else _client_ip(ip)
    domain = domain.lower().rstrip(".")
    if addr is None:
        return SpfOutcome(SpfResult.PERMERROR, domain, f"client address {ip!r} is not an IP")
    evaluator = _Evaluator(resolver, addr, sender, helo or "unknown", cache)
    try:
        result, reason = await bounded(evaluator.check_host(domain), timeout)
    except TimeoutError:
        return SpfOutcome(SpfResult.TEMPERROR, domain, f"{domain}: SPF evaluation timed out")
    return SpfOutcome(result, domain, reason)


async def check_mailfrom(
    resolver: Resolver, ip: str, sender: str, helo: str | None, *,
    timeout: float = DEFAULT_TIMEOUT, cache: SpfCache | None = None,
) -> SpfOutcome:
    """The "MAIL FROM" identity (RFC 7208 section 2.4): the sender's domain, or for the null
    sender the HELO name as postmaster@HELO."""
    helo_name = helo or ""
    _, domain = _split_sender(sender, helo_name)
    if not domain:
        return SpfOutcome(SpfResult.NONE, "", "null sender and no HELO name")
    return await check_host(resolver, ip, domain, sender, helo_name, timeout=timeout,
                            cache=cache)


async def check_helo(
    resolver: Resolver, ip: str, helo: str | None, *, timeout: float = DEFAULT_TIMEOUT,
    cache: SpfCache | None = None,
) -> SpfOutcome:
    """The "HELO" identity (RFC 7208 section 2.3), none when HELO is an address literal or
    not a domain name."""
    name = (helo or "").lower().rstrip(".")
    if not name or name.startswith("[") or not valid_domain(name):
        return SpfOutcome(SpfResult.NONE, name, "HELO is not a domain name")
    return await check_host(resolver, ip, name, f"postmaster@{name}", name, timeout=timeout,
                            cache=cache)
