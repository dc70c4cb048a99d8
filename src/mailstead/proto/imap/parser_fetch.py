"""FETCH arguments: attributes, sections, partials and modifiers (RFC 9051 section 6.4.5,
RFC 3501 section 6.4.5 for the RFC822.* forms, RFC 3516 BINARY, RFC 7162 CHANGEDSINCE and
VANISHED, RFC 8474 EMAILID/THREADID, RFC 8514 SAVEDATE, RFC 8970 PREVIEW, RFC 9394 PARTIAL)."""

from __future__ import annotations

import re

from mailstead.proto.imap.ast import FetchArgs, FetchAtt, Partial, Section
from mailstead.proto.imap.parser_lex import MAX_NUMBER, MAX_NUMBER64, Reader
from mailstead.proto.imap.parser_search import partial_range

# RFC 9051 section 6.4.5: the macros, expanded here so nobody downstream sees them.
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = frozenset({
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "UID", "BODYSTRUCTURE", "MODSEQ",
    "RFC822", "RFC822.HEADER", "RFC822.TEXT", "SAVEDATE", "EMAILID", "THREADID", "BODY",
})
_ATT_NAME = re.compile(rb"[A-Za-z0-9.]+")
_PART = re.compile(rb"[0-9]+(?:\.[0-9]+)*")
_SECTION_TEXT = re.compile(rb"HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME", re.I)
# RFC 5322 section 3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def _part(r: Reader) -> tuple[int, ...]:
    """section-part = nz-number *("." nz-number)."""
    m = _PART.match(r.line, r.pos)
    if m is None:
        return ()
    parts = []
    for piece in m.group().split(b"."):
        if len(piece) > 10 or not 0 < int(piece) <= MAX_NUMBER:
            raise r.error("invalid section part number")
        parts.append(int(piece))
    r.pos = m.end()
    return tuple(parts)


def _header_list(r: Reader) -> tuple[str, ...]:
    """header-list = "(" header-fld-name *(SP header-fld-name) ")"; names upper-cased, in the
    order given and repeats kept: matching ignores both (RFC 9051 section 6.4.5), but the
    response names the section as asked, so ``(FROM)`` and ``(FROM FROM)`` in one FETCH are
    two items a client waits for (RFC 9051 section 7.5.2)."""
    r.sp()
    r.expect(b"(")
    names: list[str] = []
    while True:
        raw = r.astring()
        if not _FIELD_NAME.fullmatch(raw):
            raise r.error("invalid header field name")
        names.append(raw.decode("ascii").upper())
        if r.take(b")"):
            return tuple(names)
        r.sp()


def _section(r: Reader) -> Section:
    """section = "[" [section-spec] "]" (RFC 9051 section 9)."""
    r.expect(b"[")
    if r.take(b"]"):
        return Section()
    part = _part(r)
    text = ""
    fields: tuple[str, ...] = ()
    if not part or r.take(b"."):
        m = _SECTION_TEXT.match(r.line, r.pos)
        if m is None:
            raise r.error("invalid section")
        r.pos = m.end()
        text = m.group().decode("ascii").upper()
        if text == "MIME" and not part:
            # RFC 9051 section 6.4.5: MIME needs a part number.
            raise r.error("MIME section needs a part number")
        if text.startswith("HEADER.FIELDS"):
            fields = _header_list(r)
    r.expect(b"]")
    return Section(part, text, fields)


def _partial(r: Reader) -> Partial | None:
    """partial = "<" number64 "." nz-number64 ">" (RFC 9051 section 9)."""
    if not r.take(b"<"):
        return None
    start = r.number(limit=MAX_NUMBER64)
    r.expect(b".")
    length = r.number(limit=MAX_NUMBER64, nonzero=True)
    r.expect(b">")
    return Partial(start, length)


def fetch_att(r: Reader) -> FetchAtt:
    """One fetch-att (RFC 9051 section 9)."""
    m = _ATT_NAME.match(r.line, r.pos)
    if m is None:
        raise r.error("expected a fetch attribute")
    r.pos = m.end()
    name = m.group().decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == 0x5B:
        section = _section(r)
        return FetchAtt("BODY[]", section, _partial(r), peek=name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        # section-binary = "[" [section-part] "]" (RFC 3516 section 4.2).
        r.expect(b"[")
        part = _part(r)
        r.expect(b"]")
        if name == "BINARY.SIZE":
            return FetchAtt(name, Section(part))
        return FetchAtt("BINARY[]", Section(part), _partial(r), peek=name == "BINARY.PEEK")
    if name in _SIMPLE:
        return FetchAtt(name)
    if name == "PREVIEW":
        # RFC 8970 section 4: "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"], where
        # preview-mod = "LAZY"; only "(LAZY" starts one (a FETCH modifier list can follow).
        if r.line[r.pos : r.pos + 6].upper() == b" (LAZY":
            r.pos += 6
            while r.line[r.pos : r.pos + 5].upper() == b" LAZY":
                r.pos += 5
            r.expect(b")")
        return FetchAtt("PREVIEW")
    raise r.error(f"unknown fetch attribute {name[:40]}")


def fetch_args(r: Reader, *, uid: bool) -> FetchArgs:
    """``sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP
    fetch-att) ")") [fetch-modifiers]``."""
    seqset = r.sequence_set()
    r.sp()
    atts: list[FetchAtt] = []
    if r.take(b"("):
        while True:
            atts.append(fetch_att(r))
            if r.take(b")"):
                break
            r.sp()
    else:
        word = r.word(_ATT_NAME)
        macro = _MACROS.get(word.decode("ascii").upper()) if word else None
        if macro is not None:
            r.pos += len(word or b"")
            atts.extend(FetchAtt(n) for n in macro)
        else:
            atts.append(fetch_att(r))
    changed_since: int | None = None
    vanished = False
    partial: tuple[int, int] | None = None
    if r.maybe_sp():
        # fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")" (RFC 4466).
        r.expect(b"(")
        while True:
            mod = r.keyword()
            if mod == "CHANGEDSINCE" and changed_since is None:
                r.sp()
                # RFC 7162 section 3.1.4.1: mod-sequence-value, a positive 63-bit number.
                changed_since = r.number(limit=MAX_NUMBER64, nonzero=True)
            elif mod == "VANISHED" and not vanished:
                vanished = True
            elif mod == "PARTIAL" and partial is None:
                r.sp()
                partial = partial_range(r)
            else:
                raise r.error(f"unknown or repeated FETCH modifier {mod[:40]}")
            if r.take(b")"):
                break
            r.sp()
        if vanished and (not uid or changed_since is None):
            # RFC 7162 section 3.2.6: VANISHED only in UID FETCH, and only with CHANGEDSINCE.
            raise r.error("VANISHED needs UID FETCH and CHANGEDSINCE")
    return FetchArgs(seqset, tuple(dict.fromkeys(atts)), changed_since, vanished, partial)
