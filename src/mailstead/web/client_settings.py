"""The settings a mail client needs for an account: one model behind the printed card, the card
page, Thunderbird autoconfig, Outlook autodiscover and the Apple profile.

Everything comes from the configured listeners and hostname (plus, inside the running server,
the ports actually bound), so the five front ends can never disagree about a port, a security
mode or the username.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from mailstead.config.model import Config, HostPort
from mailstead.core.address import AddressError, parse_address

Protocol = Literal["imap", "pop3", "smtp"]
Security = Literal["ssl", "starttls"]

# The listeners a mail client uses, best first within each protocol: implicit TLS is preferred
# over STARTTLS (RFC 8314 section 3: MUAs should use implicit TLS where available).
CLIENT_LISTENERS: tuple[tuple[str, Protocol, Security], ...] = (
    ("imaps", "imap", "ssl"),
    ("imap", "imap", "starttls"),
    ("pop3s", "pop3", "ssl"),
    ("pop3", "pop3", "starttls"),
    ("submissions", "smtp", "ssl"),
    ("submission", "smtp", "starttls"),
)
SECURITY_LABELS: dict[Security, str] = {"ssl": "SSL/TLS", "starttls": "STARTTLS"}
_WILDCARDS = ("0.0.0.0", "::")


class NotAnAddress(ValueError):
    """The text given as an e-mail address does not parse as ``local@domain``."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_wildcard(host: str) -> bool:
    return host in _WILDCARDS


def server_name(config: Config, endpoint: HostPort) -> str:
    """The name a client should connect to for ``endpoint``: the configured hostname, except
    for a loopback listener (a ``--dev`` install), whose .test hostname does not resolve."""
    if is_loopback(endpoint.host):
        return endpoint.host
    return config.hostname


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server a client connects to; ``port`` 0 means "any free port" (not bound yet)."""

    listener: str
    protocol: Protocol
    host: str
    port: int
    security: Security

    @property
    def security_label(self) -> str:
        return SECURITY_LABELS[self.security]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What a client needs for ``address``: the username (always the full address) and the
    enabled endpoints per protocol, best first."""

    address: str
    domain: str
    hostname: str
    imap: tuple[Endpoint, ...]
    pop3: tuple[Endpoint, ...]
    smtp: tuple[Endpoint, ...]

    @property
    def username(self) -> str:
        # Accounts log in with the full address on every protocol (the card says so too).
        return self.address

    def endpoints(self, protocol: Protocol) -> tuple[Endpoint, ...]:
        return {"imap": self.imap, "pop3": self.pop3, "smtp": self.smtp}[protocol]

    def preferred(self, protocol: Protocol) -> Endpoint | None:
        """The endpoint a one-choice format (autodiscover POX, the Apple profile) offers."""
        found = self.endpoints(protocol)
        return found[0] if found else None


def parse_client_address(text: str) -> tuple[str, str]:
    """``(address, domain)`` from an untrusted address (query string, XML body); the domain is
    lower case. Raises NotAnAddress for anything but a plain ``local@domain`` mailbox."""
    text = text.strip()
    if not text or len(text) > 254:  # RFC 5321 section 4.5.3.1.3: a path is at most 256 octets
        raise NotAnAddress("not an e-mail address")
    try:
        parsed = parse_address(text)
    except AddressError as exc:
        raise NotAnAddress(exc.detail) from None
    if parsed.is_address_literal:
        raise NotAnAddress("an address literal has no mail settings")
    return str(parsed), parsed.domain


def client_settings(
    config: Config,
    address: str,
    bound: Mapping[str, int] | None = None,
    *,
    domain: str | None = None,
) -> ClientSettings:
    """The settings of ``address`` (already validated) on this installation; ``bound`` maps a
    listener name to the port it really listens on, for listeners configured with port 0.
    ``domain`` defaults to the address's; autoconfig by host name gives it with address ""."""
    ports = bound or {}
    found: dict[Protocol, list[Endpoint]] = {"imap": [], "pop3": [], "smtp": []}
    for name, protocol, security in CLIENT_LISTENERS:
        endpoint: HostPort | None = getattr(config.listen, name)
        if endpoint is None:
            continue
        port = ports.get(name, endpoint.port) if endpoint.port == 0 else endpoint.port
        found[protocol].append(
            Endpoint(name, protocol, server_name(config, endpoint), port, security)
        )
    return ClientSettings(
        address=address,
        domain=domain if domain is not None else address.rpartition("@")[2].lower(),
        hostname=config.hostname,
        imap=tuple(found["imap"]),
        pop3=tuple(found["pop3"]),
        smtp=tuple(found["smtp"]),
    )


def web_base_url(config: Config, bound: Mapping[str, int] | None = None) -> str | None:
    """The base URL of this server's web service (HTTPS when it listens, else HTTP), or None
    when neither listens."""
    ports = bound or {}
    for name, scheme, default in (("https", "https", 443), ("http", "http", 80)):
        endpoint: HostPort | None = getattr(config.listen, name)
        if endpoint is None:
            continue
        port = ports.get(name, endpoint.port) if endpoint.port == 0 else endpoint.port
        host = server_name(config, endpoint)
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}" if port == default else f"{scheme}://{host}:{port}"
    return None


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the card says about the server certificate."""

    self_signed: bool
    fingerprint: str  # SHA-256, colon-separated upper-case hex, as clients show it


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when ``cert`` is its own issuer (subject equals issuer and its own key verifies
    the signature): clients cannot build a chain for it and will ask the user."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certificate_info(cert_path: Path) -> CertificateInfo:
    """Reads the leaf (first) certificate of a PEM chain; raises OSError or ValueError."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return CertificateInfo(
        self_signed=is_self_signed(cert),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


def notes(config: Config) -> list[str]:
    """Hints about where the listeners are, shown under every card."""
    out: list[str] = []
    endpoints = [ep for _, ep in config.listen.items()]
    if any(is_loopback(ep.host) for ep in endpoints):
        out.append(
            f"This server listens on loopback only: use 127.0.0.1 as the server name "
            f"({config.hostname} is not in public DNS)."
        )
    if any(is_wildcard(ep.host) for ep in endpoints):
        out.append(f"{config.hostname} must resolve to this server (DNS A/AAAA records).")
    return out
