"""Which Mailstead folder each folder of another IMAP server becomes: LIST lines parsed,
modified UTF-7 decoded, the source's delimiter translated to "/", and the provider's
special-use folders (by RFC 6154 attribute, else by their well-known and localised names)
mapped onto ours (Sent, Drafts, Trash, Junk, Archive).

Pure functions over the server's words, so hostile listings are unit-tested without a server.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from mailstead.proto.imap import mutf7

# Our special-use folders, by RFC 6154 attribute (storage's DEFAULT_MAILBOXES names).
OUR_NAMES: dict[str, str] = {
    "\\sent": "Sent",
    "\\drafts": "Drafts",
    "\\trash": "Trash",
    "\\junk": "Junk",
    "\\archive": "Archive",
}
# RFC 6154 section 2: \All holds every message (Gmail's "All Mail", a copy of every label),
# \Flagged and Gmail's \Important are views of messages kept elsewhere; copying them would
# duplicate every message they show.
DUPLICATING = {"\\all": "it holds a copy of every message of the other folders (labels)",
               "\\flagged": "it shows the flagged messages of the other folders",
               "\\important": "it shows the important messages of the other folders"}

# Well-known and localised names of the special folders, compared case-insensitively and
# NFC-normalised, for servers without SPECIAL-USE (iCloud, Outlook, older Dovecot/Courier).
WELL_KNOWN: dict[str, tuple[str, ...]] = {
    "\\sent": (
        "sent", "sent messages", "sent items", "sent mail", "sent-mail", "outbox sent",
        "gesendet", "gesendete objekte", "gesendete elemente", "gesendete nachrichten",
        "envoyés", "éléments envoyés", "messages envoyés", "enviados", "elementos enviados",
        "correo enviado", "posta inviata", "inviati", "verzonden", "verzonden items",
        "skickat", "skickade objekt", "sendt", "sendte elementer", "lähetetyt", "wysłane",
        "odeslané", "enviadas", "itens enviados", "отправленные",
    ),
    "\\trash": (
        "trash", "deleted messages", "deleted items", "deleted", "bin", "papierkorb",
        "gelöschte elemente", "gelöschte objekte", "corbeille", "éléments supprimés",
        "papelera", "elementos eliminados", "cestino", "posta eliminata", "prullenbak",
        "verwijderde items", "papperskorgen", "borttagna objekt", "papirkurv", "kosz",
        "koš", "lixeira", "lixo", "itens excluídos", "roskakori", "корзина",
    ),
    "\\junk": (
        "junk", "spam", "junk email", "junk e-mail", "junk mail", "bulk mail", "spamverdacht",
        "junk-e-mail", "courrier indésirable", "indésirables", "correo no deseado",
        "posta indesiderata", "ongewenste e-mail", "skräppost", "uønsket e-post", "спам",
    ),
    "\\drafts": (
        "drafts", "draft", "entwürfe", "brouillons", "borradores", "bozze", "concepten",
        "utkast", "kladder", "rascunhos", "luonnokset", "wersje robocze", "черновики",
    ),
    "\\archive": ("archive", "archives", "archiv", "archivo", "archivio", "archief", "arkiv"),
}
_BY_NAME = {
    unicodedata.normalize("NFC", name): role for role, names in WELL_KNOWN.items()
    for name in names
}
# Gmail's system folders live under "[Gmail]" ("[Google Mail]" in Germany and the UK).
GMAIL_ROOTS = ("[gmail]", "[google mail]")
GMAIL_DUPLICATES = {"all mail", "important", "starred", "alle nachrichten", "wichtig",
                    "markiert", "tous les messages", "suivis", "importants"}
# A "/" inside a source level cannot stay (it is our delimiter): DIVISION SLASH looks the same.
SLASH_STANDIN = "\u2215"


class ListingError(ValueError):
    """A LIST response line that is not what RFC 3501 section 7.2.2 describes."""


@dataclass(frozen=True, slots=True)
class SourceFolder:
    """One folder of the source as LIST shows it: attributes (lower-cased), the hierarchy
    delimiter (None for a flat server), the name as sent and as Unicode."""

    attributes: frozenset[str]
    delimiter: str | None
    wire: bytes
    name: str

    @property
    def selectable(self) -> bool:
        # RFC 3501 section 7.2.2 \Noselect; RFC 5258 section 3 \NonExistent implies it.
        return not ({"\\noselect", "\\nonexistent"} & self.attributes)


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """What to do with one source folder: ``target`` (None: skipped for ``reason``) and the
    special-use attribute to create it with."""

    source: SourceFolder
    target: str | None
    special_use: str | None = None
    reason: str = ""


_ATOM = re.compile(rb"[^\x00-\x20(){%*\"\\\]\x7f]+")


def _quoted(data: bytes, pos: int) -> tuple[bytes, int]:
    """A quoted string starting at ``data[pos] == '"'`` (RFC 3501 section 4.3)."""
    out = bytearray()
    pos += 1
    while pos < len(data):
        ch = data[pos]
        if ch == 0x5C:  # backslash quotes " and \ only
            if pos + 1 >= len(data) or data[pos + 1] not in b'"\\':
                raise ListingError("a bad escape in a quoted string")
            out.append(data[pos + 1])
            pos += 2
            continue
        if ch == 0x22:
            return bytes(out), pos + 1
        if ch in b"\r\n":
            raise ListingError("a line break in a quoted string")
        out.append(ch)
        pos += 1
    raise ListingError("an unterminated quoted string")


def decode_name(wire: bytes) -> str:
    """The Unicode name: modified UTF-7 (RFC 3501 section 5.1.3); a server that sends UTF-8
    or a non-canonical form anyway is read as UTF-8 rather than refused."""
    try:
        text = wire.decode("ascii")
    except UnicodeDecodeError:
        return wire.decode("utf-8", "replace")
    try:
        return mutf7.decode(text)
    except ValueError:
        return text


def parse_list(head: bytes, literal: bytes | None = None) -> SourceFolder:
    """One LIST (or XLIST) response without the ``* LIST`` prefix, as imaplib gives it:
    ``(\\HasNoChildren) "/" "INBOX"``; ``literal`` is the name when it came as a literal."""
    data = head.strip()
    match = re.match(rb"\(([^()]*)\)\s+", data)
    if not match:
        raise ListingError("no attribute list")
    attributes = frozenset(a.decode("ascii", "replace").lower() for a in match.group(1).split())
    pos = match.end()
    delimiter: str | None
    if data[pos:pos + 1] == b'"':
        raw, pos = _quoted(data, pos)
        if len(raw) != 1:
            raise ListingError("the hierarchy delimiter is not one character")
        delimiter = raw.decode("latin-1")
    elif data[pos:pos + 3].upper() == b"NIL":
        delimiter = None
        pos += 3
    else:
        raise ListingError("no hierarchy delimiter")
    rest = data[pos:].strip()
    if literal is not None:
        if not re.fullmatch(rb"\{\d+\}", rest):
            raise ListingError("a literal name without its size")
        wire = literal
    elif rest.startswith(b'"'):
        wire, end = _quoted(rest, 0)
        if rest[end:].strip():
            raise ListingError("text after the mailbox name")
    elif _ATOM.fullmatch(rest.replace(b"]", b"")) or _ATOM.fullmatch(rest):
        wire = rest
    else:
        raise ListingError("no mailbox name")
    if not wire:
        raise ListingError("an empty mailbox name")
    return SourceFolder(attributes, delimiter, wire, decode_name(wire))


def levels(folder: SourceFolder) -> list[str]:
    """The name's hierarchy levels; empty levels (a trailing delimiter) dropped, "/" inside
    a level replaced, and control characters (no folder of ours may hold them) made visible."""
    parts = folder.name.split(folder.delimiter) if folder.delimiter else [folder.name]
    out: list[str] = []
    for part in parts:
        part = part.replace("/", SLASH_STANDIN)
        part = "".join(ch if ch.isprintable() else "\ufffd" for ch in part)
        part = part.replace("*", "\u2217").replace("%", "\u2030").strip()
        if part in ("", ".", ".."):
            continue
        out.append(unicodedata.normalize("NFC", part))
    return out


def _role_by_name(path: list[str]) -> str | None:
    """The special-use role a well-known name implies: at the top, under INBOX (Courier and
    Dovecot's "INBOX." namespace) or under Gmail's "[Gmail]"."""
    if len(path) == 1:
        return _BY_NAME.get(path[0].casefold())
    if len(path) == 2 and (path[0].upper() == "INBOX" or path[0].casefold() in GMAIL_ROOTS):
        return _BY_NAME.get(path[1].casefold())
    return None


def plan_folders(
    folders: Iterable[SourceFolder],
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[FolderPlan]:
    """The target of every source folder. A role goes to one source folder only (the one
    carrying its RFC 6154 attribute, else the first well-known name), so two source folders
    never merge into one and their UIDs never collide; a name clash gets " (2)"."""
    folders = list(folders)
    include = list(include)
    exclude = list(exclude)
    with_attribute = {a for f in folders for a in f.attributes if a in OUR_NAMES}
    plans: list[FolderPlan | None] = [None] * len(folders)
    taken: set[str] = set()
    roles: dict[int, str] = {}
    claimed: set[str] = set()
    for index, folder in enumerate(folders):
        path = levels(folder)
        role = next((a for a in sorted(folder.attributes) if a in OUR_NAMES), None)
        if role is None and path:
            by_name = _role_by_name(path)
            if by_name is not None and by_name not in with_attribute:
                role = by_name
        if role is not None and role not in claimed and folder.selectable:
            claimed.add(role)
            roles[index] = role
    for index, folder in enumerate(folders):
        path = levels(folder)
        if include and not any(_matches(folder.name, p) for p in include):
            plans[index] = FolderPlan(folder, None, reason="not named by --folder")
            continue
        if any(_matches(folder.name, p) for p in exclude):
            plans[index] = FolderPlan(folder, None, reason="excluded by --exclude")
            continue
        duplicate = next((DUPLICATING[a] for a in sorted(folder.attributes)
                          if a in DUPLICATING), None)
        if duplicate is None and len(path) == 2 and path[0].casefold() in GMAIL_ROOTS \
                and path[1].casefold() in GMAIL_DUPLICATES:
            duplicate = "Gmail shows the messages of the other folders (labels) there again"
        if duplicate is not None:
            plans[index] = FolderPlan(folder, None, reason=f"skipped: {duplicate}")
            continue
        if not path:
            plans[index] = FolderPlan(folder, None, reason="a name with no usable level")
            continue
        if index in roles:
            target = OUR_NAMES[roles[index]]
            plans[index] = FolderPlan(folder, target, special_use=_attribute(roles[index]))
            taken.add(target.casefold())
            continue
        if path[0].upper() == "INBOX":
            path[0] = "INBOX"
        elif path[0].casefold() in GMAIL_ROOTS and len(path) > 1:
            path = path[1:]  # Gmail's container is no folder of its own for the user
        plans[index] = FolderPlan(folder, "/".join(path))
    out: list[FolderPlan] = []
    for plan in plans:
        assert plan is not None
        if plan.target is not None and plan.special_use is None:
            target = plan.target
            if target.casefold() in taken and target != "INBOX":
                n = 2
                while f"{plan.target} ({n})".casefold() in taken:
                    n += 1
                target = f"{plan.target} ({n})"
            elif target == "INBOX" and "inbox" in taken:
                target = "INBOX (2)"
            taken.add(target.casefold())
            plan = FolderPlan(plan.source, target)
        out.append(plan)
    return out


def _attribute(role: str) -> str:
    return "\\" + role[1:].capitalize()


def _matches(name: str, pattern: str) -> bool:
    """--folder/--exclude: the source name, "*" for any text, case-insensitive for INBOX;
    a pattern also names the folder's subfolders ("Work" covers "Work/2024")."""
    regex = "".join(".*" if ch == "*" else re.escape(ch) for ch in pattern)
    flags = re.IGNORECASE if pattern.upper().startswith("INBOX") else 0
    return re.fullmatch(regex, name, flags) is not None or re.match(
        regex + r"[./\\]", name, flags) is not None
