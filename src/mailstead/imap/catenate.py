"""CATENATE (RFC 4469): an APPEND message built from TEXT literals and IMAP URLs naming
messages or parts of this user's mailboxes (proto/imap/imapurl.py). A URL we cannot serve is
``NO [BADURL url]`` (section 6); a result over APPENDLIMIT is ``NO [TOOBIG]``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mailstead.core.errors import NotFound
from mailstead.imap.base import CommandFailed
from mailstead.imap.spool import LiteralSpool
from mailstead.proto.imap import sections
from mailstead.proto.imap.ast import CatenatePart
from mailstead.proto.imap.fetch import crlf_text
from mailstead.proto.imap.imapurl import MessageUrl, parse_url

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

# RFC 4469 section 6: url-resp-text is any TEXT-CHAR but "]"; we also keep it short.
_UNSAFE = re.compile(rb"[^\x20-\x5c\x5e-\x7e]")


def badurl(url: bytes) -> CommandFailed:
    shown = _UNSAFE.sub(b"", url)[:200].decode("ascii") or "-"
    return CommandFailed("NO", "The URL names nothing this account can read", f"BADURL {shown}")


async def assemble(
    s: IMAPSession, parts: tuple[CatenatePart, ...], spools: Iterator[LiteralSpool]
) -> bytes:
    """The octets of the message the parts make, in order."""
    limit = s.settings.max_message_size
    out: list[bytes] = []
    size = 0
    for part in parts:
        if part.kind == "TEXT":
            if part.spooled_size is None:
                data = part.data
            else:
                spool = next(spools, None)
                if spool is None or spool.size != part.spooled_size:
                    raise CommandFailed("NO", "A part was not received whole", "SERVERBUG")
                data = await spool.read()
        else:
            data = await _fetch(s, part.data)
        size += len(data)
        if size > limit:
            # RFC 4469 section 5: the result may not exceed APPENDLIMIT either.
            raise CommandFailed("NO", "Message larger than APPENDLIMIT", "TOOBIG")
        out.append(data)
    if not size:
        raise CommandFailed("NO", "Empty message", "CANNOT")
    return b"".join(out)


async def _fetch(s: IMAPSession, url: bytes) -> bytes:
    """What ``BODY.PEEK[section]`` of the message the URL names returns (RFC 4469
    section 5): the octets in CRLF form."""
    ref = parse_url(url)
    if ref is None:
        raise badurl(url)
    mailbox_id = await _mailbox(s, ref, url)
    store = s.ctx.store
    try:
        found = await store.get_messages(mailbox_id, [ref.uid], envelope=False)
    except NotFound:
        raise badurl(url) from None
    if not found:
        raise badurl(url)
    msg = found[0]
    try:
        data = await store.read_blob(msg.blob)
    except NotFound:
        raise badurl(url) from None
    if ref.section.part or ref.section.text:
        try:
            structure = json.loads(msg.bodystructure)
        except ValueError:
            structure = {}
        node = structure if isinstance(structure, dict) else {}
        if ref.section.part and sections.find_part(node, ref.section.part) is None:
            raise badurl(url)  # RFC 4469 section 6: a part that does not exist
        data = sections.extract(data, node, ref.section)
    return crlf_text(data)


async def _mailbox(s: IMAPSession, ref: MessageUrl, url: bytes) -> int:
    """The id of the mailbox the URL names: the selected one for a relative URL; one of
    this account's with the UIDVALIDITY the URL was made for otherwise."""
    if ref.mailbox is None:
        if s.view is None:
            raise badurl(url)
        return s.view.mailbox_id
    assert s.account is not None
    info = await s.ctx.store.get_mailbox(s.account.id, ref.mailbox)
    if info is None or info.uidvalidity != ref.uidvalidity:
        raise badurl(url)
    return info.id
