"""Who a submitted message says wrote it: every address a reader may take as its author.

RFC 6409 section 6.1 lets the submission server refuse a message whose author the user is not;
DMARC (RFC 7489 section 6.6.1) judges a message by its From: domain, and mail clients show
the display name first. So the check covers what a reader sees, not only the From: addr-spec:
``From:``, ``Sender:`` and every ``Resent-From:`` / ``Resent-Sender:`` (RFC 5322 sections
3.6.2 and 3.6.6), the addresses written inside their display names and comments (also once
RFC 2047 encoded-words are decoded), and a header whose shape readers disagree on is refused.
The header is the one parse of ``core.message`` (the same line split as the IMAP view), so
the fields checked are the fields stored and relayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header

from mailstead.core.address import Address, AddressError, parse_address
from mailstead.core.message import ParsedHeader, parse_address_list
from mailstead.core.reply import Reply

# RFC 5322 section 3.6: at most one From: and one Sender: field.
_SINGLE = ("from", "sender")
# Resent blocks (RFC 5322 section 3.6.6) name the author of the resending; any number.
_RESENT = ("resent-from", "resent-sender")
# What a reader takes for an address: local@domain with a dotted domain. Loose on purpose:
# "carol @ b.test" or a full-width at sign is no real address, but it reads as one. Linear in
# the text (a display name is as long as the sender likes): a match starts only where a
# token starts (the lookbehind), and the possessive quantifiers never give back, so no start
# position rescans what the one before it read.
_DELIMS = r"\s<>()\[\]\"',;:@\uff20"
_LOOKS_LIKE_ADDRESS = re.compile(
    rf"(?<![^{_DELIMS}])[^{_DELIMS}]++\s*+[@\uff20]\s*+[\w-]+(?:\.[\w-]+)+")

R_NO_FROM = Reply(550, "5.6.0", "Message has no valid From: header (RFC 5322 section 3.6)")
R_SEVERAL = Reply(550, "5.6.0", "Message has more than one {name}: field; RFC 5322 section 3.6 "
                  "allows one")
R_STRAY_LINE = Reply(550, "5.6.0", "Message header has a line that is neither a field nor a "
                     "folded continuation, such as a first line starting with a space "
                     "(RFC 5322 section 2.2)")
R_BAD_ADDRESS = Reply(550, "5.6.0", "The {name}: field has an address that cannot be parsed "
                      "(RFC 5322 section 3.4)")


@dataclass(frozen=True, slots=True)
class Authors:
    """The addresses the account must own for the message to go out: each with the field
    that names it and whether it was found in a display name or comment."""

    named: tuple[tuple[str, Address, bool], ...]


def authors(header: ParsedHeader) -> Authors | Reply:
    """The author addresses of ``header``, or the 550 reply for a header that cannot be
    judged (no From:, several From:/Sender:, a stray line, an unparseable address)."""
    if header.stray_lines:
        return R_STRAY_LINE
    for name in _SINGLE:
        if len(header.values(name)) > 1:
            # RFC 7489 section 6.6.1: several From: fields must not be guessed at.
            return naming(R_SEVERAL, name)
    if not header.values("from"):
        return R_NO_FROM
    named: list[tuple[str, Address, bool]] = []
    for field in header.fields:
        if field.name not in _SINGLE and field.name not in _RESENT:
            continue
        found = _field_authors(field.name, field.value)
        if isinstance(found, Reply):
            return found
        named += found
    if not any(name == "from" and not shown for name, _a, shown in named):
        return R_NO_FROM
    return Authors(tuple(named))


def _field_authors(name: str, value: str) -> list[tuple[str, Address, bool]] | Reply:
    out: list[tuple[str, Address, bool]] = []
    # A display name without an address is refused as a bad address, not overlooked.
    for display, _route, local, host in parse_address_list(value, strays=True):
        if host is None:
            continue  # a group's start or end marker (RFC 5322 section 3.4)
        if local is None or local == "MISSING_MAILBOX" or host == "MISSING_DOMAIN":
            return naming(R_BAD_ADDRESS, name)
        try:
            out.append((name, parse_address(f"{local}@{host}"), False))
        except AddressError:
            return naming(R_BAD_ADDRESS, name)
        if display:
            out += [(name, a, True) for a in shown_addresses(display)]
    return out


def shown_addresses(display: str) -> list[Address]:
    """The addresses written in a display name or comment, raw and with its RFC 2047
    encoded-words decoded, that a reader would take for the sender."""
    texts = {display, _decoded(display)}
    found: list[Address] = []
    for text in texts:
        for match in _LOOKS_LIKE_ADDRESS.finditer(text):
            candidate = re.sub(r"\s+", "", match.group()).replace("\uff20", "@")
            try:
                found.append(parse_address(candidate))
            except AddressError:
                # Not an address we can own (odd characters): name it as written, so the
                # check refuses it rather than letting it through.
                local, _, domain = candidate.rpartition("@")
                found.append(Address(local or "?", domain.lower()))
    return found


def _decoded(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, ValueError, LookupError, UnicodeError):
        return text


def naming(reply: Reply, name: str) -> Reply:
    """``reply`` with its ``{name}`` filled in with field ``name`` as it is usually written
    ("resent-from" -> "Resent-From")."""
    title = "-".join(part.capitalize() for part in name.split("-"))
    return Reply(reply.code, reply.enhanced, reply.text.format(name=title))
