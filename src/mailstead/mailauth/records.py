"""The DNS records a mail domain must publish, rendered as zone-file text (RFC 1035 section 5).

``mailstead dns DOMAIN`` prints them; the web front end can show the same ``Record`` list.
Everything here is pure: the caller passes the keys, the listeners and the addresses it knows.
Names are absolute and in ASCII (A-labels), as zone files need them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from mailstead.core.roles import DMARC, TLSRPT
from mailstead.mailauth.dkim import ED25519, RSA
from mailstead.storage.interfaces import DkimKey

TTL = 3600
# RFC 1035 section 3.3.14: a TXT record is a sequence of <character-string>s, each at most 255
# octets (section 3.3); longer values (2048-bit DKIM keys) are split, and DKIM (RFC 6376
# section 3.6.2.2) and SPF (RFC 7208 section 3.3) concatenate the strings without spaces.
MAX_TXT_STRING = 255
# RFC 8461 section 3.2: max_age is at most 31557600 s; a week is the common choice and what
# the RFC's examples use, long enough to resist a downgrade, short enough to change course.
MTA_STS_MAX_AGE = 604800
MTA_STS_MODES = ("enforce", "testing", "none")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``value`` is the RDATA in zone-file syntax."""

    name: str  # absolute, with the trailing dot
    type: str
    value: str
    comment: str = ""

    def line(self) -> str:
        text = f"{self.name}\t{TTL}\tIN\t{self.type}\t{self.value}"
        return f"{text}\t; {self.comment}" if self.comment else text


@dataclass(frozen=True, slots=True)
class Services:
    """The client-facing ports this installation listens on; None: the service is off."""

    submission: int | None = 587
    submissions: int | None = 465
    imap: int | None = 143
    imaps: int | None = 993
    pop3: int | None = 110
    pop3s: int | None = 995
    https: int | None = 443


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def txt_strings(value: str) -> list[str]:
    """``value`` cut into character-strings of at most 255 octets (ASCII values only)."""
    data = value.encode("ascii")
    return [
        data[i : i + MAX_TXT_STRING].decode("ascii")
        for i in range(0, max(len(data), 1), MAX_TXT_STRING)
    ]


def txt_rdata(value: str) -> str:
    """The TXT RDATA of ``value``: quoted strings, with '"' and '\\' escaped (RFC 1035
    section 5.1)."""
    parts = []
    for chunk in txt_strings(value):
        escaped = chunk.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'"{escaped}"')
    return " ".join(parts)


def dkim_record_value(key: DkimKey) -> str:
    """The DKIM key record (RFC 6376 section 3.6.1; k=ed25519 from RFC 8463 section 4)."""
    kind = {RSA: "rsa", ED25519: "ed25519"}.get(key.algorithm, "rsa")
    return f"v=DKIM1; k={kind}; p={key.public_key}"


def mta_sts_policy(mx: str | Sequence[str], mode: str = "enforce",
                   max_age: int = MTA_STS_MAX_AGE) -> str:
    """The policy file to serve at https://mta-sts.DOMAIN/.well-known/mta-sts.txt
    (RFC 8461 section 3.2: one mx line per MX host or pattern), CRLF-separated as the RFC's
    grammar shows it."""
    if mode not in MTA_STS_MODES:
        raise ValueError(f"MTA-STS mode must be one of {', '.join(MTA_STS_MODES)}")
    hosts = [mx] if isinstance(mx, str) else list(mx)
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host.lower().rstrip('.')}" for host in hosts]
    lines.append(f"max_age: {max_age}")
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(policy: str) -> str:
    """The id= of the _mta-sts TXT record (RFC 8461 section 3.1: 1 to 32 letters and digits);
    derived from the policy so it changes exactly when the policy does."""
    return hashlib.sha256(policy.encode("utf-8")).hexdigest()[:20]


def _srv(name: str, priority: int, port: int | None, hostname: str, what: str) -> Record:
    if port is None:
        # RFC 6186 section 4 / RFC 2782: target "." says the service is decidedly not offered.
        return Record(name, "SRV", "0 0 0 .", f"{what}: not offered")
    return Record(name, "SRV", f"{priority} 1 {port} {hostname}", what)


@dataclass(frozen=True, slots=True)
class ZoneSection:
    """A titled group of records with explanatory comment lines."""

    title: str
    records: tuple[Record, ...]
    notes: tuple[str, ...] = ()


def domain_records(
    domain: str,
    hostname: str,
    keys: Sequence[DkimKey],
    *,
    services: Services,
    addresses: Sequence[IPAddress] = (),
    mta_sts_mode: str = "enforce",
    mta_sts_policy_text: str | None = None,
) -> list[ZoneSection]:
    """Every record ``domain`` (ASCII form) needs for mail served by ``hostname``.

    ``keys`` are all stored DKIM keys of the domain: inactive ones stay published so mail
    signed before a rotation still verifies. ``addresses`` are the server's public IPs; when
    empty, the A/AAAA and PTR records are shown as comments to fill in.
    ``mta_sts_policy_text`` is the policy the web server serves (default: ``hostname`` as the
    one mx, in ``mta_sts_mode``); the TXT id is derived from it.
    """
    d = _absolute(domain.lower())
    host = _absolute(hostname.lower())
    sections: list[ZoneSection] = []

    # RFC 5321 section 5.1: mail for the domain goes to its MX hosts.
    sections.append(ZoneSection("Mail exchanger", (Record(d, "MX", f"10 {host}"),)))

    addr = tuple(Record(host, "A" if ip.version == 4 else "AAAA", str(ip)) for ip in addresses)
    addr_notes: tuple[str, ...] = ()
    if not addr:
        addr_notes = (
            f"{host}\t{TTL}\tIN\tA\t<the public IPv4 address of this server>",
            f"{host}\t{TTL}\tIN\tAAAA\t<its public IPv6 address, if it has one>",
        )
    sections.append(ZoneSection(f"Addresses of {host} (in its own zone)", addr, addr_notes))

    # RFC 7208 section 3: one SPF record; "mx" authorises the MX hosts, "-all" nothing else.
    spf = [Record(d, "TXT", txt_rdata("v=spf1 mx -all"))]
    if host != d:
        # RFC 7208 section 2.3: the HELO identity is checked too (bounces have no sender).
        spf.append(Record(host, "TXT", txt_rdata("v=spf1 a -all"), "SPF for the HELO name"))
    sections.append(ZoneSection("SPF (RFC 7208)", tuple(spf)))

    dkim = tuple(
        Record(
            f"{k.selector}._domainkey.{d}",
            "TXT",
            txt_rdata(dkim_record_value(k)),
            f"{k.algorithm}, {'signing' if k.active else 'not signing'}",
        )
        for k in keys
    )
    dkim_notes = () if dkim else ("no DKIM keys: create them with mailstead dkim rotate",)
    sections.append(ZoneSection("DKIM (RFC 6376, RFC 8463)", dkim, dkim_notes))

    # RFC 7489 section 6.3: p= is the policy for failing mail; rua= where aggregate reports go.
    # The report addresses are role addresses (core.roles): they exist from the start.
    dmarc = f"v=DMARC1; p=quarantine; rua=mailto:{DMARC}@{domain.lower()}"
    sections.append(
        ZoneSection(
            "DMARC (RFC 7489)",
            (Record(f"_dmarc.{d}", "TXT", txt_rdata(dmarc)),),
            (f"reports go to {DMARC}@{domain.lower()}, which reaches the first administrator "
             "unless an alias says otherwise",),
        )
    )

    policy = mta_sts_policy_text or mta_sts_policy(hostname.lower().rstrip("."), mta_sts_mode)
    sts_notes = [
        f"this server serves the policy at https://mta-sts.{domain.lower()}/.well-known/"
        f"mta-sts.txt (point the name at it, and give its certificate the name "
        f"mta-sts.{domain.lower()}):",
        *(f"    {line}" for line in policy.splitlines()),
    ]
    if mta_sts_mode != "enforce":
        sts_notes.append(
            "mode is not enforce: switch to enforce ([mta_sts] mode, or a CA-issued certificate "
            f"for {host.rstrip('.')} with mode auto); the id below follows the policy"
        )
    sections.append(
        ZoneSection(
            "MTA-STS (RFC 8461)",
            (
                Record(f"_mta-sts.{d}", "TXT", txt_rdata(f"v=STSv1; id={mta_sts_id(policy)}")),
                Record(f"mta-sts.{d}", "CNAME", host),
            ),
            tuple(sts_notes),
        )
    )

    # RFC 8460 section 3: where senders report TLS failures when delivering to us.
    tlsrpt = f"v=TLSRPTv1; rua=mailto:{TLSRPT}@{domain.lower()}"
    sections.append(
        ZoneSection(
            "SMTP TLS reporting (RFC 8460)",
            (Record(f"_smtp._tls.{d}", "TXT", txt_rdata(tlsrpt)),),
            (f"reports mailed to {TLSRPT}@{domain.lower()} are kept (mailstead tlsrpt show) "
             "and reach the first administrator unless an alias says otherwise",),
        )
    )

    # RFC 6186 (and RFC 8314 section 5.1 for _submissions): lower priority is preferred, and
    # implicit TLS is preferred over STARTTLS.
    srv = (
        _srv(f"_submissions._tcp.{d}", 0, services.submissions, host, "submission, TLS"),
        _srv(f"_submission._tcp.{d}", 10, services.submission, host, "submission, STARTTLS"),
        _srv(f"_imaps._tcp.{d}", 0, services.imaps, host, "IMAP, TLS"),
        _srv(f"_imap._tcp.{d}", 10, services.imap, host, "IMAP, STARTTLS"),
        _srv(f"_pop3s._tcp.{d}", 20, services.pop3s, host, "POP3, TLS"),
        _srv(f"_pop3._tcp.{d}", 30, services.pop3, host, "POP3, STARTTLS"),
    )
    sections.append(ZoneSection("Mail client service discovery (RFC 6186)", srv))

    auto: list[Record] = [
        Record(f"autoconfig.{d}", "CNAME", host, "Thunderbird and others"),
        Record(f"autodiscover.{d}", "CNAME", host, "Outlook"),
    ]
    if services.https is not None:
        auto.append(Record(f"_autodiscover._tcp.{d}", "SRV", f"0 1 {services.https} {host}"))
    sections.append(ZoneSection("Mail client autoconfiguration", tuple(auto)))

    # RFC 1912 section 2.1 and every large receiver: the address's PTR names the host,
    # whose A/AAAA gives the address back (forward-confirmed reverse DNS). Shown as comments:
    # these names live in the address owner's zone, not in the domain's.
    ptr_notes = ["set by whoever owns the address (your hosting provider), not in your zone:"]
    ptr_notes += [f"{ip.reverse_pointer}.\tIN\tPTR\t{host}" for ip in addresses]
    if not addresses:
        ptr_notes.append(f"<reverse name of each public address>\tIN\tPTR\t{host}")
    sections.append(ZoneSection("Reverse DNS", (), tuple(ptr_notes)))
    return sections


def render_zone(domain: str, sections: Sequence[ZoneSection]) -> str:
    """The sections as zone-file text: comments start with ';', one record per line."""
    out = [f"; DNS records for {domain} (generated by mailstead dns)"]
    for section in sections:
        out.append("")
        out.append(f"; {section.title}")
        out.extend(f"; {note}" for note in section.notes)
        out.extend(record.line() for record in section.records)
    return "\n".join(out) + "\n"
