"""Folder names between files on disk and Mailstead mailboxes.

On disk (Maildir++ directory names, mbox file names) a name component is modified UTF-7 as
Dovecot writes it (RFC 3501 section 5.1.3) and a "." inside a component is ``\\2e`` (Dovecot's
listescape convention), because "." separates Maildir++ levels. In Mailstead, names are
UTF-8 with "/" between levels.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailstead.proto.imap import mutf7
from mailstead.storage.interfaces import DEFAULT_MAILBOXES

# Other programs' names for our special-use folders (Dovecot, Courier, Apple Mail,
# Thunderbird, Outlook), compared case-insensitively; only at the top level.
_ALIASES: dict[str, str] = {
    "sent": "Sent",
    "sent messages": "Sent",
    "sent items": "Sent",
    "sent mail": "Sent",
    "drafts": "Drafts",
    "draft": "Drafts",
    "trash": "Trash",
    "deleted messages": "Trash",
    "deleted items": "Trash",
    "junk": "Junk",
    "spam": "Junk",
    "junk e-mail": "Junk",
    "junk email": "Junk",
    "archive": "Archive",
    "archives": "Archive",
    "inbox": "INBOX",
}
_SPECIAL_USE: dict[str, str | None] = dict(DEFAULT_MAILBOXES)


def decode_component(raw: str) -> str:
    """One on-disk name component as text: modified UTF-7 decoded when it is valid (a name
    that is not stays as written), then ``\\2e`` back to "."."""
    text = raw
    if "&" in raw:
        try:
            text = mutf7.decode(raw)
        except ValueError:
            text = raw
    return text.replace("\\2e", ".")


def encode_component(text: str) -> str:
    """The on-disk form of one component, the inverse of ``decode_component``."""
    return mutf7.encode(text.replace(".", "\\2e"))


def folder_from_parts(parts: Sequence[str]) -> str:
    """The Mailstead name of the on-disk components ``parts``, the top level mapped onto our
    special-use folders when it is another program's name for one."""
    names = [decode_component(p) for p in parts]
    if names:
        names[0] = _ALIASES.get(names[0].lower(), names[0])
    return "/".join(names)


def parts_for_folder(folder: str) -> list[str]:
    """The on-disk components of a Mailstead name."""
    return [encode_component(p) for p in folder.split("/")]


def special_use_of(folder: str) -> str | None:
    """Our special-use attribute (RFC 6154) for a folder name we create by default."""
    return _SPECIAL_USE.get(folder)
