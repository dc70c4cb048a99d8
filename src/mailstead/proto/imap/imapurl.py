"""IMAP URLs naming a message or a part of one (RFC 5092), as CATENATE takes them (RFC 4469
section 5): ``/mailbox;UIDVALIDITY=n/;UID=n[/;SECTION=x]`` (absolute path, this server and
user), or ``;UID=n[/;SECTION=x]`` relative to the selected mailbox. A URL naming another
server (``imap://...``), a partial range, or anything else is refused: the caller answers
``NO [BADURL url]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mailstead.proto.imap.ast import Section

# RFC 5092 section 11: nz-number, the section text (enc-section) of a URL.
_URL = re.compile(
    rb"(?:/(?P<mailbox>[^;/?#]*(?:/[^;/?#]+)*)(?:;UIDVALIDITY=(?P<validity>[1-9][0-9]{0,9}))?)?"
    rb"/?;UID=(?P<uid>[1-9][0-9]{0,9})"
    rb"(?:/;SECTION=(?P<section>[0-9A-Za-z.]{1,200}))?",
    re.IGNORECASE,
)
_NUMBER = re.compile(rb"[1-9][0-9]{0,8}")
_TEXTS = frozenset({"HEADER", "TEXT", "MIME"})
MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class MessageUrl:
    """The message and part a URL names; ``mailbox`` None: the selected mailbox."""

    mailbox: str | None
    uidvalidity: int | None
    uid: int
    section: Section


def parse_section(text: bytes) -> Section | None:
    """``1.2``, ``1.2.MIME``, ``HEADER``, ``TEXT``, ``2.HEADER`` as a BODY[] section."""
    pieces = text.split(b".")
    part: list[int] = []
    while pieces and _NUMBER.fullmatch(pieces[0]) and len(part) < 64:
        part.append(int(pieces.pop(0)))
    kind = pieces.pop(0).upper().decode("ascii", "replace") if pieces else ""
    if pieces or (kind and kind not in _TEXTS) or (kind == "MIME" and not part):
        return None  # RFC 9051 section 6.4.5: MIME needs a part number
    if not part and not kind:
        return None
    return Section(tuple(part), kind)


def parse_url(url: bytes) -> MessageUrl | None:
    """The message ``url`` names, or None for a URL we do not serve."""
    if len(url) > MAX_URL:
        return None
    m = _URL.fullmatch(url)
    if m is None:
        return None
    section = Section()
    if m.group("section") is not None:
        found = parse_section(m.group("section"))
        if found is None:
            return None
        section = found
    mailbox: str | None = None
    if m.group("mailbox") is not None:
        if m.group("validity") is None:
            # RFC 5092 section 6: an absolute URL names the UIDVALIDITY it was made for;
            # RFC 4469 section 5 lets the server refuse one without it.
            return None
        try:
            mailbox = unquote_to_bytes(m.group("mailbox")).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not mailbox:
            return None
    validity = int(m.group("validity")) if m.group("validity") else None
    uid = int(m.group("uid"))
    if uid > 0xFFFFFFFF or (validity is not None and validity > 0xFFFFFFFF):
        return None
    return MessageUrl(mailbox, validity, uid, section)
