"""The configuration model: frozen dataclasses whose field metadata documents every TOML key.

The metadata (``doc``, ``type``, ``default``) is the single source of the key list the loader
accepts and of docs/config.md, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _doc(doc: str, type_name: str, default: str) -> dict[str, str]:
    """Field metadata: what the key does, its TOML type and its default, as shown in the docs."""
    return {"doc": doc, "type": type_name, "default": default}


@dataclass(frozen=True, slots=True)
class HostPort:
    """A network endpoint; ``host`` is an IP address or a DNS name, never bracketed."""

    host: str
    port: int

    def __str__(self) -> str:
        try:
            is_v6 = ipaddress.ip_address(self.host).version == 6
        except ValueError:
            is_v6 = False
        return f"[{self.host}]:{self.port}" if is_v6 else f"{self.host}:{self.port}"


_HP = 'string "host:port"'


def _listener(doc: str) -> dict[str, str]:
    return _doc(doc, _HP, "off")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where each protocol listens; None (key absent) turns that listener off."""

    smtp: HostPort | None = field(
        default=None,
        metadata=_listener("MX: mail from other servers (SMTP, RFC 5321). Standard port 25."),
    )
    submission: HostPort | None = field(
        default=None,
        metadata=_listener(
            "Mail submission by your users' mail clients: STARTTLS, then AUTH (RFC 6409). "
            "Standard port 587."
        ),
    )
    submissions: HostPort | None = field(
        default=None,
        metadata=_listener("Mail submission over implicit TLS (RFC 8314). Standard port 465."),
    )
    imap: HostPort | None = field(
        default=None, metadata=_listener("IMAP with STARTTLS (RFC 9051). Standard port 143.")
    )
    imaps: HostPort | None = field(
        default=None, metadata=_listener("IMAP over implicit TLS (RFC 8314). Standard port 993.")
    )
    pop3: HostPort | None = field(
        default=None, metadata=_listener("POP3 with STLS (RFC 1939, RFC 2595). Standard port 110.")
    )
    pop3s: HostPort | None = field(
        default=None, metadata=_listener("POP3 over implicit TLS (RFC 8314). Standard port 995.")
    )
    http: HostPort | None = field(
        default=None,
        metadata=_listener("HTTP: mail client autoconfiguration and web pages. Standard port 80."),
    )
    https: HostPort | None = field(
        default=None, metadata=_listener("HTTPS: the same over TLS. Standard port 443.")
    )

    def items(self) -> list[tuple[str, HostPort]]:
        """The enabled listeners as (name, endpoint), in declaration order."""
        out: list[tuple[str, HostPort]] = []
        for name in LISTENER_NAMES:
            value = getattr(self, name)
            if value is not None:
                out.append((name, value))
        return out


LISTENER_NAMES: tuple[str, ...] = (
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "http",
    "https",
)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The certificate and key every TLS listener presents; paths are absolute once loaded."""

    cert: Path = field(
        metadata=_doc(
            "PEM certificate chain (leaf first), e.g. /etc/letsencrypt/live/HOST/fullchain.pem. "
            "A relative path is relative to the data directory. Give both cert and key, or "
            "neither.",
            "string (path)",
            "DATA/tls/cert.pem (the self-signed certificate made by `mailstead init`)",
        )
    )
    key: Path = field(
        metadata=_doc(
            "PEM private key of the certificate, e.g. /etc/letsencrypt/live/HOST/privkey.pem.",
            "string (path)",
            "DATA/tls/key.pem",
        )
    )


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """How the server resolves names (MX, SPF, DKIM, DMARC lookups)."""

    nameservers: tuple[HostPort, ...] = field(
        default=(),
        metadata=_doc(
            "Recursive resolvers to ask, as IP addresses with an optional port (53 when left "
            "out). Use a validating resolver you trust.",
            'array of strings "ip:port"',
            "the system resolver (/etc/resolv.conf)",
        ),
    )


@dataclass(frozen=True, slots=True)
class SMTPConfig:
    """Limits of the SMTP and submission listeners."""

    max_message_size: int = field(
        default=50 * MIB,
        metadata=_doc(
            "Largest message accepted, in bytes, announced with SIZE (RFC 1870). At least "
            "65536 (RFC 5321 section 4.5.3.1.7), at most 1 GiB.",
            "integer",
            "52428800 (50 MiB)",
        ),
    )
    max_recipients: int = field(
        default=100,
        metadata=_doc(
            "Recipients per message; more get 452 (RFC 5321 section 4.5.3.1.8 asks for at "
            "least 100).",
            "integer",
            "100",
        ),
    )
    max_errors: int = field(
        default=10,
        metadata=_doc(
            "Bad commands per connection before the server answers 421 and closes.",
            "integer",
            "10",
        ),
    )
    idle_timeout: float = field(
        default=300.0,
        metadata=_doc(
            "Seconds a client may stay silent before the connection is closed (RFC 5321 "
            "section 4.5.3.2.7: at least 5 minutes).",
            "number (seconds)",
            "300",
        ),
    )
    max_connections: int = field(
        default=1000,
        metadata=_doc(
            "Simultaneous SMTP connections over all clients; more are refused.", "integer", "1000"
        ),
    )
    max_connections_per_ip: int = field(
        default=20,
        metadata=_doc("Simultaneous SMTP connections from one IP address.", "integer", "20"),
    )


LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """What the server writes to standard error."""

    level: str = field(
        default="info",
        metadata=_doc(
            "Least severe events written: " + ", ".join(LOG_LEVELS) + ".", "string", '"info"'
        ),
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration of one installation, loaded once and passed down from app.py."""

    hostname: str = field(
        metadata=_doc(
            "The name this server greets with (SMTP banner, EHLO) and has a certificate for; "
            "its A/AAAA records and the PTR of its address should match it.",
            "string (domain name)",
            "required",
        )
    )
    data_dir: Path = field(metadata={"toml": "no"})
    config_path: Path = field(metadata={"toml": "no"})
    listen: ListenConfig
    tls: TLSConfig
    dns: DNSConfig = field(default_factory=DNSConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    log: LogConfig = field(default_factory=LogConfig)


# The TOML tables and the dataclass behind each, in the order the docs list them.
SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("listen", ListenConfig),
    ("tls", TLSConfig),
    ("dns", DNSConfig),
    ("smtp", SMTPConfig),
    ("log", LogConfig),
)
CONFIG_FILE_NAME = "mailstead.toml"
