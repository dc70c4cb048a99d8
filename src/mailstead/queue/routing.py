"""Where a recipient domain's mail goes: MX hosts, the implicit MX, null MX, smarthosts and
the MTA-STS restrictions, as an ordered list of (host, address, port) targets.

RFC 5321 section 5.1 and RFC 7505. Choices where the RFCs leave room, following Postfix:
- MX names that are IP addresses are not host names (RFC 5321 section 5.1: the MX RDATA is a
  domain name); such records are skipped with a warning, as Postfix does ("numeric domain name
  in resource data of MX record").
- MX names that are CNAMEs are followed (RFC 5321 section 5.1 says they SHOULD NOT be used,
  but Postfix, Exim and Sendmail all accept them); the certificate is still checked against
  the MX name, which is what MTA-STS (RFC 8461 section 4.2) asks.
- MX hosts whose addresses all fail to resolve make a temporary failure, not a bounce: a DNS
  mistake on the other side is usually fixed within the 5-day queue lifetime.
"""

from __future__ import annotations

import asyncio
import encodings.idna
import ipaddress
import logging
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mailstead.core.secret import Secret
from mailstead.dns.resolver import DnsError, DnsNoDomain, DnsNotFound, DnsTemporary, Resolver
from mailstead.queue.mtasts import MtaStsCache, MtaStsPolicy

log = logging.getLogger(__name__)

SMTP_PORT = 25  # RFC 5321 section 4.5.4.2 (relay between MTAs)
# Postfix's smtp_mx_address_limit is 5; RFC 5321 section 5.1 asks for at least two.
DEFAULT_MAX_TARGETS = 10

RouteKind = Literal["mx", "smarthost", "null_mx", "no_domain"]
TlsMode = Literal["starttls", "implicit", "none"]


@dataclass(frozen=True, slots=True)
class Smarthost:
    """A relay that takes all mail of a domain (e.g. the provider's, when port 25 is blocked).
    ``tls``: "starttls" (required, verified), "implicit" (TLS from the first byte, port 465,
    RFC 8314) or "none"."""

    host: str
    port: int = 587
    tls: TlsMode = "starttls"
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tls not in ("starttls", "implicit", "none"):
            raise ValueError(f"smarthost tls must be starttls, implicit or none, not {self.tls}")
        if (self.username is None) != (self.password is None):
            raise ValueError("smarthost username and password go together")
        if self.username is not None and self.tls == "none":
            # Credentials never travel in the clear (RFC 4954 section 4, RFC 8314 section 3).
            raise ValueError("smarthost credentials require tls = starttls or implicit")


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try; ``host`` is the name to greet, verify and log (the MX name)."""

    host: str
    address: str
    port: int = SMTP_PORT


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach a domain. ``null_mx`` and ``no_domain`` mean: bounce at once, ``reason``
    says why. ``tls_required``: no delivery without TLS and a certificate valid for the
    target's host; ``tls_names`` are the MTA-STS mx patterns (or the smarthost's name)."""

    kind: RouteKind
    targets: list[Target]
    tls_required: bool = False
    tls_names: tuple[str, ...] = ()
    reason: str = ""
    smarthost: Smarthost | None = None  # for kind "smarthost": TLS mode and credentials
    policy_domain: str | None = None  # the MTA-STS policy domain, for TLS-RPT counts
    mta_sts_mode: str | None = None  # "enforce" | "testing" | None
    policy_lines: tuple[str, ...] = ()  # the MTA-STS policy applied, for TLS-RPT


class RouteTemporary(Exception):
    """The route cannot be known now (SERVFAIL, timeouts, no usable MX host): defer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _dns_name(domain: str) -> str | None:
    """The A-label form to query (RFC 5890), or None when the name cannot be one."""
    try:
        labels = [encodings.idna.ToASCII(label).decode("ascii") if label else ""
                  for label in domain.split(".")]
    except UnicodeError:
        return None
    name = ".".join(labels).lower()
    if not name or len(name) > 253 or any(not label for label in labels):
        return None
    return name


class Router:
    """Computes the ``Route`` of a recipient domain (see the module docstring).

    ``smarthosts`` maps a domain (or ``"*"`` for every domain) to its relay. ``own_names``
    are this server's host names: an MX list naming us keeps only the MX hosts preferred to
    us (RFC 5321 section 5.1), and none means a mail loop. ``rng`` shuffles MX hosts of equal
    preference and the addresses of one host (RFC 5321 section 5.1, load spreading). ``port``
    is where MX hosts listen (25; other values only for tests).
    """

    def __init__(
        self,
        resolver: Resolver,
        smarthosts: Mapping[str, Smarthost] | None = None,
        mta_sts: MtaStsCache | None = None,
        *,
        rng: random.Random | None = None,
        own_names: Collection[str] = (),
        max_targets: int = DEFAULT_MAX_TARGETS,
        port: int = SMTP_PORT,
    ) -> None:
        self._resolver = resolver
        self._smarthosts = {k.lower(): v for k, v in (smarthosts or {}).items()}
        self._mta_sts = mta_sts
        self._rng = rng or random.Random()
        self._own = {n.lower().rstrip(".") for n in own_names}
        self._max_targets = max_targets
        self._port = port  # 25 in production; tests run peers on other ports

    async def route(self, domain: str) -> Route:
        """Raises RouteTemporary when the answer must wait."""
        domain = domain.lower().rstrip(".")
        smarthost = self._smarthosts.get(domain) or self._smarthosts.get("*")
        if smarthost is not None:
            return await self._smarthost(smarthost)
        if domain.startswith("[") and domain.endswith("]"):
            return self._literal(domain)
        name = _dns_name(domain)
        if name is None:
            return Route("no_domain", [], reason=f"{domain} is not a valid domain name")
        policy = await self._mta_sts.policy(name) if self._mta_sts is not None else None
        try:
            records = await self._resolver.mx(name)
        except DnsNoDomain:
            return Route("no_domain", [], reason=f"domain {domain} does not exist (NXDOMAIN)")
        except DnsNotFound:
            records = []
        except DnsTemporary as exc:
            raise RouteTemporary(f"MX lookup for {domain} failed: {exc}") from exc
        if records:
            nulls = [r for r in records if r[1] == "."]
            if nulls and len(records) == 1:
                # RFC 7505 section 3: a single "0 ." record: the domain accepts no mail.
                return Route("null_mx", [], reason=f"{domain} does not accept mail (null MX, "
                             "RFC 7505)")
            hosts = self._order([r for r in records if r[1] != "."])
            implicit = False
        else:
            # RFC 5321 section 5.1: no MX records: the domain itself is the implicit MX.
            hosts = [name]
            implicit = True
        hosts = self._below_self(domain, hosts)
        if policy is not None and policy.mode == "enforce":
            allowed = [h for h in hosts if policy.matches(h)]
            if not allowed:
                # RFC 8461 section 4.1: in enforce mode, never deliver to a non-matching MX.
                raise RouteTemporary(f"no MX host of {domain} matches its MTA-STS policy "
                                     f"({', '.join(policy.mx)})")
            hosts = allowed
        targets = await self._targets(domain, hosts, implicit)
        if isinstance(targets, Route):
            return targets
        return self._with_policy(domain, targets, policy)

    def _with_policy(self, domain: str, targets: list[Target],
                     policy: MtaStsPolicy | None) -> Route:
        if policy is None or policy.mode == "none":
            return Route("mx", targets, reason=f"MX of {domain}")
        return Route("mx", targets, tls_required=policy.mode == "enforce", tls_names=policy.mx,
                     reason=f"MX of {domain}, MTA-STS {policy.mode}",
                     policy_domain=domain, mta_sts_mode=policy.mode,
                     policy_lines=policy.lines())

    def _order(self, records: list[tuple[int, str]]) -> list[str]:
        """Hosts by ascending preference, equal preferences shuffled, duplicates and numeric
        names dropped."""
        shuffled = list(records)
        self._rng.shuffle(shuffled)
        shuffled.sort(key=lambda r: r[0])  # stable: the shuffle survives within a preference
        hosts: list[str] = []
        for _, host in shuffled:
            host = host.lower().rstrip(".")
            if _ip(host) is not None:
                log.warning("ignoring MX record naming an IP address: %s", host)
                continue
            if host and host not in hosts:
                hosts.append(host)
        return hosts

    def _below_self(self, domain: str, hosts: list[str]) -> list[str]:
        """RFC 5321 section 5.1: when we are one of the MX hosts, only the hosts preferred to
        us may be used; the rest would send the mail back to us."""
        for i, host in enumerate(hosts):
            if host in self._own:
                if i == 0:
                    raise RouteTemporary(f"mail for {domain} loops back to myself ({host} is "
                                         "its best MX)")
                return hosts[:i]
        return hosts

    async def _targets(self, domain: str, hosts: list[str], implicit: bool
                       ) -> list[Target] | Route:
        results = await asyncio.gather(
            *(self._resolver.addresses(h) for h in hosts), return_exceptions=True
        )
        targets: list[Target] = []
        problems: list[str] = []
        for host, result in zip(hosts, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, DnsError):
                    raise result
                if implicit and isinstance(result, DnsNotFound):
                    return Route("no_domain", [], reason=f"{domain} has no MX and no A/AAAA "
                                 "records (RFC 5321 section 5.1)")
                problems.append(str(result))
                continue
            targets += [Target(host, a, self._port) for a in self._spread(result)]
        if not targets:
            raise RouteTemporary(f"no address for any MX host of {domain}: "
                                 + "; ".join(problems))
        return targets[: self._max_targets]

    def _spread(self, addresses: list[str]) -> list[str]:
        """IPv6 before IPv4, each family shuffled (the addresses of one host are equals)."""
        v6 = [a for a in addresses if ":" in a]
        v4 = [a for a in addresses if ":" not in a]
        self._rng.shuffle(v6)
        self._rng.shuffle(v4)
        return v6 + v4

    async def _smarthost(self, smarthost: Smarthost) -> Route:
        try:
            addresses = await self._resolver.addresses(smarthost.host)
        except DnsError as exc:
            # A configuration problem on our side: defer (and log), never bounce.
            raise RouteTemporary(f"smarthost {smarthost.host}: {exc}") from exc
        targets = [Target(smarthost.host, a, smarthost.port) for a in addresses]
        return Route("smarthost", targets[: self._max_targets],
                     tls_required=smarthost.tls != "none", tls_names=(smarthost.host,),
                     reason=f"smarthost {smarthost.host}:{smarthost.port}", smarthost=smarthost)

    def _literal(self, domain: str) -> Route:
        """RFC 5321 section 4.1.3: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` names the host."""
        inner = domain[1:-1]
        if inner.lower().startswith("ipv6:"):
            inner = inner[5:]
        address = _ip(inner)
        if address is None:
            return Route("no_domain", [], reason=f"bad address literal {domain}")
        return Route("mx", [Target(address, address, self._port)],
                     reason=f"address literal {domain}")
