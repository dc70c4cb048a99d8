"""FETCH responses: ``* n FETCH (...)`` for one message, rendered from the stored IMAP view.

ENVELOPE, BODY and BODYSTRUCTURE come from the JSON computed at delivery (core/message.py)
without touching the message; only section, BINARY and RFC822* items need its bytes, which
the caller passes lazily. Message text goes out in CRLF form (a stored bare LF as CRLF), so
BODY[] is exactly RFC822.SIZE octets, the stored ``wire_size``. Grammar: RFC 9051 section
7.5.2 and section 9 (msg-att). RFC 3501 renders every item identically, except that
IMAP4rev2 adds message/global (rendered like message/rfc822) and the FONT media type, which
only change what a rev1 client may see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mailstead.proto.imap import sections
from mailstead.proto.imap.ast import FetchAtt, Section
from mailstead.proto.imap.preview import preview
from mailstead.proto.imap.response import (
    MAX_QUOTED,
    NIL,
    astring,
    internal_date,
    literal,
    number,
    string,
)
from mailstead.proto.imap.response import flags as encode_flags

# BODY[] and BINARY share the CRLF form; kept importable from here for existing callers.
from mailstead.proto.imap.sections import crlf_text as crlf_text

# Same as response.py: 7-bit text that can go out quoted after escaping '"' and '\'.
_SAFE_ASCII = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
# The names of items that need the message bytes.
_BODY_ITEMS = frozenset({"BODY[]", "BINARY[]", "BINARY.SIZE", "RFC822", "RFC822.HEADER",
                         "RFC822.TEXT", "PREVIEW"})
# RFC 9051 section 6.4.5: these set \Seen unless PEEK (RFC822.HEADER never does).
_SEEN_ITEMS = frozenset({"BODY[]", "BINARY[]", "RFC822", "RFC822.TEXT"})


class MessageLike(Protocol):
    """What rendering reads of a message; storage.interfaces.MessageInfo fits."""

    @property
    def uid(self) -> int: ...
    @property
    def modseq(self) -> int: ...
    @property
    def flags(self) -> tuple[str, ...]: ...
    @property
    def internal_date(self) -> float: ...
    @property
    def size(self) -> int: ...
    @property
    def wire_size(self) -> int: ...
    @property
    def blob(self) -> str: ...
    @property
    def envelope(self) -> str: ...
    @property
    def bodystructure(self) -> str: ...
    @property
    def saved_at(self) -> float: ...
    @property
    def thread_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The rendered response, and what the caller must do about it.

    ``set_seen``: a non-PEEK body item was fetched and the message lacks ``\\Seen``; the
    caller sets it (RFC 9051 section 6.4.5) and, when FLAGS was not fetched, reports the new
    flags with an unsolicited FETCH. ``unknown_cte``: a BINARY item met a transfer encoding
    we cannot decode; ``data`` is empty and the caller answers ``NO [UNKNOWN-CTE]``
    (RFC 3516 section 4.2).
    """

    data: bytes
    set_seen: bool = False
    unknown_cte: bool = False


def needs_body(atts: Sequence[FetchAtt]) -> bool:
    """Whether any attribute needs the message bytes (so the caller loads the blob)."""
    return any(att.name in _BODY_ITEMS for att in atts)


# Items rendered without the stored BODYSTRUCTURE JSON (ENVELOPE has its own column, RFC822
# is the whole message); every other item reads it to find sections or describe the body.
_NO_STRUCTURE_ITEMS = frozenset({
    "UID", "FLAGS", "ENVELOPE", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "SAVEDATE",
    "EMAILID", "THREADID", "RFC822",
})


def needs_envelope(atts: Sequence[FetchAtt]) -> bool:
    """Whether ``render_fetch`` reads ``msg.envelope`` (so the caller loads that column)."""
    return any(att.name == "ENVELOPE" for att in atts)


def needs_bodystructure(atts: Sequence[FetchAtt]) -> bool:
    """Whether ``render_fetch`` reads ``msg.bodystructure`` (so the caller loads it)."""
    return any(att.name not in _NO_STRUCTURE_ITEMS for att in atts)


def sets_seen(atts: Sequence[FetchAtt]) -> bool:
    """Whether fetching ``atts`` implicitly sets ``\\Seen`` (RFC 9051 section 6.4.5)."""
    return any(att.name in _SEEN_ITEMS and not att.peek for att in atts)


# ---------------------------------------------------------------- ENVELOPE and BODYSTRUCTURE


def _nstr(value: Any, utf8: bool) -> bytes:
    """nstring of a JSON value, with the common 7-bit case inlined for speed."""
    if value is None or not isinstance(value, str):
        return NIL
    if len(value) <= MAX_QUOTED and value.isascii():
        data = value.encode("ascii")
        if _SAFE_ASCII.fullmatch(data):
            if b'"' in data or b"\\" in data:
                data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            return b'"' + data + b'"'
    return string(value, utf8=utf8)


def _addresses(value: Any, utf8: bool) -> bytes:
    if not isinstance(value, list) or not value:
        return NIL
    out = []
    for address in value:
        if isinstance(address, list) and len(address) == 4:
            out.append(b"(" + b" ".join(_nstr(v, utf8) for v in address) + b")")
    return b"(" + b"".join(out) + b")" if out else NIL


def render_envelope(envelope: Mapping[str, Any] | str, *, utf8: bool = False) -> bytes:
    """``(date subject from sender reply-to to cc bcc in-reply-to message-id)``
    (RFC 9051 section 7.5.2, ENVELOPE). Address lists are NIL when empty."""
    env: Any = _loads(envelope) if isinstance(envelope, str) else envelope
    if not isinstance(env, Mapping):
        env = {}
    get = env.get
    return b"".join((
        b"(", _nstr(get("date"), utf8), b" ", _nstr(get("subject"), utf8), b" ",
        _addresses(get("from"), utf8), b" ", _addresses(get("sender"), utf8), b" ",
        _addresses(get("reply_to"), utf8), b" ", _addresses(get("to"), utf8), b" ",
        _addresses(get("cc"), utf8), b" ", _addresses(get("bcc"), utf8), b" ",
        _nstr(get("in_reply_to"), utf8), b" ", _nstr(get("message_id"), utf8), b")",
    ))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # a damaged row renders as an empty structure, never a crash
        return None


def _params(value: Any, utf8: bool) -> bytes:
    """body-fld-param: ``("NAME" "value" ...)`` or NIL; names upper-cased (RFC 2045 section
    5.1: attribute names are case-insensitive), values as sent."""
    if not isinstance(value, list):
        return NIL
    out = [
        string(p[0].upper(), utf8=utf8) + b" " + string(p[1], utf8=utf8)
        for p in value
        if isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
        and isinstance(p[1], str)
    ]
    return b"(" + b" ".join(out) + b")" if out else NIL


def _disposition(value: Any, utf8: bool) -> bytes:
    """body-fld-dsp: ``("ATTACHMENT" ("FILENAME" "x"))`` or NIL."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return b"(" + string(value[0].upper(), utf8=utf8) + b" " + _params(value[1], utf8) + b")"
    return NIL


def _language(value: Any, utf8: bool) -> bytes:
    """body-fld-lang: NIL or a list of strings."""
    if isinstance(value, list):
        items = [string(v, utf8=utf8) for v in value if isinstance(v, str)]
        if items:
            return b"(" + b" ".join(items) + b")"
    return NIL


def _count(value: Any) -> bytes:
    return number(value) if isinstance(value, int) and value >= 0 else b"0"


def _structure(node: Any, extended: bool, utf8: bool, depth: int) -> bytes:
    if not isinstance(node, Mapping):
        node = {}
    parts = node.get("parts")
    kind = node.get("type") if isinstance(node.get("type"), str) else "application"
    subtype = node.get("subtype") if isinstance(node.get("subtype"), str) else "octet-stream"
    if isinstance(parts, list) and parts and depth < 64:
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        out = b"".join(_structure(p, extended, utf8, depth + 1) for p in parts)
        out += b" " + string(subtype.upper(), utf8=utf8)
        if extended:
            out += b" " + b" ".join((
                _params(node.get("params"), utf8), _disposition(node.get("disposition"), utf8),
                _language(node.get("language"), utf8), _nstr(node.get("location"), utf8),
            ))
        return b"(" + out + b")"
    is_msg = (kind == "message" and isinstance(node.get("body"), Mapping)
              and isinstance(node.get("envelope"), Mapping) and depth < 64)
    if kind == "multipart" or (kind == "message" and subtype in ("rfc822", "global")
                               and not is_msg):
        # Never claim a multipart or message/rfc822 without its parts: that breaks the grammar.
        kind, subtype = "application", "octet-stream"
    encoding = node.get("encoding") if isinstance(node.get("encoding"), str) else "7BIT"
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP octets
    fields = [
        string(kind.upper(), utf8=utf8), string(subtype.upper(), utf8=utf8),
        _params(node.get("params"), utf8), _nstr(node.get("id"), utf8),
        _nstr(node.get("description"), utf8), string(encoding or "7BIT", utf8=utf8),
        _count(node.get("size")),
    ]
    if is_msg:  # body-type-msg: ... SP envelope SP body SP body-fld-lines
        fields += [
            render_envelope(node["envelope"], utf8=utf8),
            _structure(node["body"], extended, utf8, depth + 1),
            _count(node.get("lines")),
        ]
    elif kind == "text":  # body-type-text: ... SP body-fld-lines
        fields.append(_count(node.get("lines")))
    if extended:  # body-ext-1part = md5 SP dsp SP lang SP loc
        fields += [
            _nstr(node.get("md5"), utf8), _disposition(node.get("disposition"), utf8),
            _language(node.get("language"), utf8), _nstr(node.get("location"), utf8),
        ]
    return b"(" + b" ".join(fields) + b")"


def render_bodystructure(
    structure: Mapping[str, Any] | str, *, extended: bool = True, utf8: bool = False
) -> bytes:
    """BODYSTRUCTURE (``extended``, with extension data) or BODY (without), RFC 9051
    section 7.5.2; types, subtypes and parameter names upper-cased as in its examples."""
    node = _loads(structure) if isinstance(structure, str) else structure
    return _structure(node, extended, utf8, 0)


# ---------------------------------------------------------------- section items


def section_spec(section: Section | None) -> bytes:
    """The section text as echoed in the response: ``1.2.HEADER.FIELDS (DATE FROM)``."""
    if section is None:
        return b""
    spec = ".".join(str(n) for n in section.part).encode("ascii")
    if section.text:
        spec += (b"." if spec else b"") + section.text.encode("ascii")
    if section.text.startswith("HEADER.FIELDS"):
        spec += b" (" + b" ".join(astring(f) for f in section.fields) + b")"
    return spec


def _item_name(att: FetchAtt, base: str) -> bytes:
    name = base.encode("ascii") + b"[" + section_spec(att.section) + b"]"
    if att.partial is not None:  # RFC 9051 section 7.5.2: only the origin octet is echoed
        name += b"<%d>" % att.partial.start
    return name


def _loader(body: Callable[[], bytes] | bytes | None) -> Callable[[], bytes]:
    cached: list[bytes] = []

    def load() -> bytes:
        if not cached:
            if body is None:
                raise ValueError("a FETCH item needs the message body but none was given")
            cached.append(body if isinstance(body, bytes) else body())
        return cached[0]

    return load


def render_fetch(
    msg: MessageLike,
    seq: int,
    atts: Sequence[FetchAtt],
    *,
    body: Callable[[], bytes] | bytes | None = None,
    utf8: bool = False,
    uid: bool = False,
    recent: bool = False,
    flags: Sequence[str] | None = None,
    tz_offset_minutes: int = 0,
    uidfetch: bool = False,
) -> FetchResult:
    """``* seq FETCH (...)`` CRLF for ``atts``, in the order asked, each item once.

    ``uid``: the command was UID FETCH, so UID is included even if not asked (RFC 9051
    section 6.4.9). ``recent``: add ``\\Recent`` to FLAGS (IMAP4rev1 sessions). ``flags``
    overrides the message's flags (e.g. after the caller set \\Seen). ``body`` is only
    called when an item needs the message bytes. ``uidfetch``: ``* uid UIDFETCH (...)``, the
    form of a UIDONLY session (RFC 9586 section 3.3), where the UID item is only sent when
    asked for since the response names the UID already.
    """
    load = _loader(body)
    current = tuple(msg.flags if flags is None else flags)
    items: list[bytes] = []
    seen_names: set[bytes] = set()

    def add(name: bytes, value: bytes) -> None:
        if name not in seen_names:
            seen_names.add(name)
            items.append(name + b" " + value)

    if uid and not uidfetch:
        add(b"UID", number(msg.uid))
    structure: Any = None
    for att in atts:
        name = att.name
        if name == "UID":
            add(b"UID", number(msg.uid))
        elif name == "FLAGS":
            shown = (*current, "\\Recent") if recent and "\\Recent" not in current else current
            add(b"FLAGS", encode_flags(shown))
        elif name == "ENVELOPE":
            add(b"ENVELOPE", render_envelope(msg.envelope, utf8=utf8))
        elif name == "INTERNALDATE":
            add(b"INTERNALDATE", internal_date(msg.internal_date, tz_offset_minutes))
        elif name == "RFC822.SIZE":
            # RFC 9051 section 7.5.2: the size in RFC 5322 (CRLF) form, what BODY[] sends.
            add(b"RFC822.SIZE", number(msg.wire_size))
        elif name in ("BODYSTRUCTURE", "BODY"):
            if structure is None:
                structure = _loads(msg.bodystructure)
            add(name.encode("ascii"),
                render_bodystructure(structure, extended=name == "BODYSTRUCTURE", utf8=utf8))
        elif name == "MODSEQ":  # RFC 7162 section 3.1.4.1
            add(b"MODSEQ", b"(" + number(msg.modseq) + b")")
        elif name == "SAVEDATE":  # RFC 8514 section 4.2: a date-time, like INTERNALDATE
            add(b"SAVEDATE", internal_date(msg.saved_at, tz_offset_minutes))
        elif name == "EMAILID":  # RFC 8474 section 5.1 (imap/objectid.py says why)
            add(b"EMAILID", b"(M" + msg.blob[:24].encode("ascii", "replace") + b")")
        elif name == "THREADID":  # RFC 8474 section 5.2, assigned at delivery
            add(b"THREADID", b"(" + msg.thread_id.encode("ascii", "replace") + b")")
        elif name == "PREVIEW":  # RFC 8970 section 3: nstring, NIL only without text
            if structure is None:
                structure = _loads(msg.bodystructure)
            text = preview(load(), structure)
            add(b"PREVIEW", NIL if text is None else string(text, utf8=utf8))
        elif name == "RFC822":
            add(b"RFC822", literal(crlf_text(load())))
        elif name == "RFC822.HEADER":
            if structure is None:
                structure = _loads(msg.bodystructure)
            add(b"RFC822.HEADER",
                literal(crlf_text(
                    sections.extract(load(), _node(structure), Section(text="HEADER")))))
        elif name == "RFC822.TEXT":
            if structure is None:
                structure = _loads(msg.bodystructure)
            add(b"RFC822.TEXT",
                literal(crlf_text(
                    sections.extract(load(), _node(structure), Section(text="TEXT")))))
        elif name == "BODY[]":
            if structure is None:
                structure = _loads(msg.bodystructure)
            section = att.section or Section()
            # Sections are cut from the stored bytes (the offsets recorded at delivery refer
            # to them), then sent in CRLF form; a partial range counts octets as sent.
            data = crlf_text(sections.extract(load(), _node(structure), section))
            add(_item_name(att, "BODY"), literal(sections.apply_partial(data, att.partial)))
        elif name in ("BINARY[]", "BINARY.SIZE"):
            if structure is None:
                structure = _loads(msg.bodystructure)
            part = att.section.part if att.section is not None else ()
            decoded = sections.binary(load(), _node(structure), part)
            if decoded is None:
                return FetchResult(b"", unknown_cte=True)
            if name == "BINARY.SIZE":  # RFC 3516 section 4.3: the decoded size
                add(b"BINARY.SIZE[" + section_spec(att.section) + b"]", number(len(decoded)))
            else:
                add(_item_name(att, "BINARY"),
                    literal(sections.apply_partial(decoded, att.partial), binary=True))
        else:
            raise ValueError(f"unknown FETCH attribute {name!r}")
    head = b"* %d UIDFETCH (" % msg.uid if uidfetch else b"* %d FETCH (" % seq
    data = head + b" ".join(items) + b")\r\n"
    return FetchResult(data, set_seen=sets_seen(atts) and "\\Seen" not in current)


def _node(structure: Any) -> Mapping[str, Any]:
    return structure if isinstance(structure, Mapping) else {}
