"""Header work done at delivery: our trace header, and the fix-ups a submission server makes."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Collection
from email.header import decode_header, make_header

from mailstead.core.address import Address, AddressError, parse_address

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)
# The common shapes of an address field value: ``local@domain``, ``<local@domain>`` or
# ``Display Name <local@domain>`` with a dot-atom local part, an LDH domain and a display name
# of plain atoms (RFC 5322 sections 3.2.3 and 3.4). For these the addr-spec is what
# email.utils.getaddresses gives, without its character-by-character parse.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM_ADDR = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(
    rf"(?:{_ATEXT}+(?: {_ATEXT}+)* )?<({_DOT_ATOM_ADDR})>|({_DOT_ATOM_ADDR})")


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """The header section (with its final CRLF) and the rest (the blank line and body)."""
    # What the first match of "CRLF CRLF or a CRLF at the start" gives, with a plain find
    # (the regex alternation cannot use a literal search and stepped through every octet).
    end = data.find(b"\r\n\r\n")
    if end == 0:
        return data[:2], data[2:]
    if data.startswith(b"\r\n"):
        return b"", data
    if end < 0:
        return data, b""
    return data[:end + 2], data[end + 2:]


def plain_address(value: str) -> str | None:
    """The addr-spec of an address field value of one of the common simple shapes (see
    ``_PLAIN_ADDRESS``; ``value`` stripped), None for anything else (parse it in full)."""
    m = _PLAIN_ADDRESS.fullmatch(value)
    if m is None:
        return None
    return m.group(1) or m.group(2)


def field_value(raw: bytes) -> str:
    """The unfolded value of one raw field (name, colon and final CRLF removed), exactly as
    ``header_values`` gives it."""
    lines = raw.removesuffix(b"\r\n").split(b"\r\n")
    m = _FIELD_NAME.match(lines[0])
    value = lines[0][m.end():] if m is not None else lines[0]
    for line in lines[1:]:
        value += b" " + line.lstrip()
    return value.decode("utf-8", "replace").strip()


def header_values(header: bytes, name: str) -> list[str]:
    """Every unfolded value of field ``name`` (RFC 5322 section 2.2.3 unfolding)."""
    wanted = name.lower().encode()
    values: list[str] = []
    lines = header.split(b"\r\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FIELD_NAME.match(line)
        i += 1
        if m is None or m.group(1).lower() != wanted:
            continue
        value = line[m.end():]
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            value += b" " + lines[i].lstrip()
            i += 1
        values.append(value.decode("utf-8", "replace").strip())
    return values


def from_addresses(header: bytes) -> list[Address] | None:
    """The mailboxes of the From: field(s), or None when a From: address is unparseable."""
    return mailboxes(header_values(header, "From"))


def mailboxes(values: list[str]) -> list[Address] | None:
    """The mailboxes of address field values (From:), or None when one is unparseable."""
    found: list[Address] = []
    plain = [plain_address(v) for v in values]
    pairs = ([("", a) for a in plain if a is not None] if None not in plain
             else email.utils.getaddresses(values))
    for _name, addr in pairs:
        if not addr:
            return None
        try:
            found.append(parse_address(addr))
        except AddressError:
            return None
    return found


def display_text(value: str) -> str:
    """A header value with RFC 2047 encoded-words decoded, for logs."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


def received_header(
    *,
    helo: str | None,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    tls: str | None,
    auth_user: str | None,
    recipients: list[str],
    now: float,
) -> bytes:
    """Our Received: trace field (RFC 5321 section 4.4), with the TLS details (as Postfix
    writes them) and the RFC 3848 protocol keyword; ``for`` only names a single recipient so
    the trace doesn't reveal Bcc recipients to each other."""
    ip = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    parts = [f"Received: from {_safe(helo) if helo else 'unknown'} ([{ip}])"]
    if tls:
        parts.append(f"\t(using {tls})")
    if auth_user:
        parts.append(f"\t(authenticated as {_safe(auth_user)})")
    by = f"\tby {hostname} (Mailstead) with {protocol} id {queue_id}"
    if len(recipients) == 1:
        by += f"\r\n\tfor <{_safe(recipients[0])}>"
    parts.append(by + ";")
    parts.append("\t" + _rfc5322_date(now))
    return ("\r\n".join(parts) + "\r\n").encode("utf-8")


_UNSAFE = re.compile(r"[\x00-\x1f\x7f()<>\\]")


def _safe(text: str) -> str:
    """No CR, LF or parentheses games from a client-chosen name inside our header."""
    return _UNSAFE.sub("?", text)[:255]


def protocol_keyword(*, esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """RFC 3848 section 2 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 section 3.7.3 (UTF8)."""
    if not esmtp:
        return "SMTP"
    kw = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")
    return kw


def submission_fixups(
    present: Collection[str], *, hostname: str, queue_id: str, now: float
) -> bytes:
    """Date: and Message-ID: a submission server adds when missing (RFC 6409 section 8.2, 8.3);
    ``present`` holds the lower-case names of the message's header fields."""
    extra = b""
    if "date" not in present:
        extra += f"Date: {_rfc5322_date(now)}\r\n".encode()
    if "message-id" not in present:
        extra += f"Message-ID: <{queue_id}.{int(now)}@{hostname}>\r\n".encode()
    return extra


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _rfc5322_date(now: float) -> str:
    """RFC 5322 section 3.3 date-time in UTC as "+0000" ("-0000" would mean an unknown zone).

    The text of ``email.utils.format_datetime`` for a UTC datetime, from ``time.gmtime``
    (English names whatever the locale, as section 3.3 requires), at a third of its cost."""
    t = time.gmtime(now)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
