"""Finds a mail domain's servers the way mail clients do: the Thunderbird autoconfig document,
then RFC 6186 SRV records, then the common names (mail.DOMAIN, imap.DOMAIN...)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from mailstead.diagnostics.lookup import Lookup
from mailstead.diagnostics.model import printable
from mailstead.diagnostics.probe import Protocol, Security, Target
from mailstead.dns.resolver import DnsError

MAX_DOCUMENT = 64 * 1024  # an autoconfig document is a few KiB; more is not one
_SOCKET_TYPES: dict[str, Security] = {"SSL": "ssl", "STARTTLS": "starttls", "PLAIN": "none"}
_XML_TYPES: dict[str, Protocol] = {"imap": "imap", "pop3": "pop3", "smtp": "smtp"}

# RFC 6186 section 3 (and RFC 8314 section 5.1 for _submissions): the service names.
SRV_NAMES: tuple[tuple[str, Protocol, Security], ...] = (
    ("_imaps._tcp", "imap", "ssl"),
    ("_imap._tcp", "imap", "starttls"),
    ("_pop3s._tcp", "pop3", "ssl"),
    ("_pop3._tcp", "pop3", "starttls"),
    ("_submissions._tcp", "smtp", "ssl"),
    ("_submission._tcp", "smtp", "starttls"),
)


@dataclass
class Discovered:
    """Settings found, in the order found, and notes on how (for the report)."""

    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def hosts(self, protocol: str) -> list[str]:
        return list(dict.fromkeys(t.host for t in self.targets if t.protocol == protocol))


def parse_autoconfig(document: bytes) -> list[Target]:
    """The incoming and outgoing servers of a clientConfig 1.1 document (Mozilla's
    "Thunderbird:Autoconfiguration:ConfigFileFormat"); malformed entries are skipped."""
    if len(document) > MAX_DOCUMENT:
        return []
    try:
        root = ET.fromstring(document)  # noqa: S314 - size-capped; expat expands no externals
    except ET.ParseError:
        return []
    out: list[Target] = []
    for tag in ("incomingServer", "outgoingServer"):
        for server in root.iter(tag):
            protocol = _XML_TYPES.get((server.get("type") or "").lower())
            host = (server.findtext("hostname") or "").strip().lower()
            port_text = (server.findtext("port") or "").strip()
            security = _SOCKET_TYPES.get((server.findtext("socketType") or "").strip().upper())
            if protocol is None or security is None or not host or not port_text.isdigit():
                continue
            port = int(port_text)
            if 0 < port < 65536 and len(host) <= 253:
                out.append(Target(protocol, host, port, security))
    return out


async def http_get(url: str, *, timeout: float, ssl_context: ssl.SSLContext | None,
                   address: str | None = None) -> bytes | None:
    """The body of a 200 answer to GET ``url`` (HTTP/1.0, no redirects), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            address or parts.hostname, port,
            ssl=(ssl_context or ssl.create_default_context()) if parts.scheme == "https"
            else None,
            server_hostname=parts.hostname if parts.scheme == "https" else None,
        ), timeout)
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    try:
        request = f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nUser-Agent: Mailstead\r\n\r\n"
        writer.write(request.encode("ascii", "replace"))
        raw = b""
        async with asyncio.timeout(timeout):
            while len(raw) <= MAX_DOCUMENT + 16384:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                raw += chunk
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or status[1] != b"200":
        return None
    return body


async def discover(email: str, lookup: Lookup, *, timeout: float,
                   ssl_context: ssl.SSLContext | None,
                   autoconfig_urls: tuple[str, ...] = ()) -> Discovered:
    """Every setting the domain of ``email`` advertises, from the first source that has any."""
    domain = email.rpartition("@")[2].lower().rstrip(".")
    found = Discovered()
    query = urllib.parse.urlencode({"emailaddress": email})
    urls = autoconfig_urls or (
        f"https://autoconfig.{domain}/mail/config-v1.1.xml?{query}",
        f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml?{query}",
        f"http://autoconfig.{domain}/mail/config-v1.1.xml?{query}",
    )
    for url in urls:
        body = await http_get(url, timeout=timeout, ssl_context=ssl_context)
        targets = parse_autoconfig(body) if body is not None else []
        if targets:
            found.targets.extend(targets)
            found.notes.append(f"autoconfig: {printable(url)}")
            return found
    for name, protocol, security in SRV_NAMES:
        try:
            records = await lookup.srv(f"{name}.{domain}")
        except DnsError:
            continue
        for _, _, port, target in records:
            if target != "." and port:  # RFC 6186 section 4: "." means not offered
                found.targets.append(Target(protocol, target, port, security))
    if found.targets:
        found.notes.append(f"SRV records of {domain} (RFC 6186)")
        return found
    common: tuple[tuple[Protocol, tuple[str, ...]], ...] = (
        ("imap", ("imap", "mail")), ("pop3", ("pop", "pop3", "mail")),
                            ("smtp", ("smtp", "mail")))
    for protocol, names in common:
        for candidate in (*(f"{n}.{domain}" for n in names), domain):
            try:
                await lookup.addresses(candidate)
            except DnsError:
                continue
            found.targets.append(Target(protocol, candidate, 0, "ssl"))
            found.notes.append(f"{protocol}: the common name {candidate}")
            break
    return found
