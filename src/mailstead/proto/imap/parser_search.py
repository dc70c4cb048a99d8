"""SEARCH, SORT and THREAD arguments: search keys (RFC 9051 section 6.4.4 and RFC 3501
section 6.4.4), CHARSET, ESEARCH return options (RFC 4731), "$" (RFC 5182), the MODSEQ key
(RFC 7162 section 3.1.5), SORT criteria and THREAD algorithms (RFC 5256)."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable

from mailstead.proto.imap.ast import SearchArgs, SearchKey
from mailstead.proto.imap.parser_lex import MAX_NUMBER64, ParseError, Reader

# Nested parentheses, NOT and OR recurse; a hostile client must not exhaust the stack.
MAX_DEPTH = 64
BADCHARSET = "BADCHARSET (US-ASCII UTF-8)"  # RFC 9051 section 7.1, the charsets we name

_FLAG_KEYS = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
    "SAVEDATESUPPORTED",  # RFC 8514 section 4.3
})
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
                        "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"})  # SAVED*: RFC 8514 4.3
# RFC 8474 section 4: objectid = 1*255(ALPHA / DIGIT / "_" / "-").
_OBJECTID = re.compile(rb"[A-Za-z0-9_-]{1,255}")
# RFC 4731 section 3.1 return options, with SAVE from RFC 5182 section 2.1, PARTIAL from
# RFC 9394 section 3 and CONTEXT and UPDATE from RFC 5267 section 4.1.
_RETURN_OPTIONS = frozenset({
    "MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "CONTEXT", "UPDATE",
})
# RFC 5256 section 3 sort keys, with DISPLAYFROM/DISPLAYTO from RFC 5957.
_SORT_KEYS = frozenset({
    "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO",
})
_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})
# Python codecs that are not character sets a client could mean.
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape",
                           "raw-unicode-escape", "unicode_escape", "raw_unicode_escape"})

Decoder = Callable[[bytes], str]


def _decoder(r: Reader, charset: str | None) -> Decoder:
    """How search strings are turned into text. Without CHARSET, US-ASCII (RFC 3501) or
    UTF-8 (RFC 9051 section 6.4.4) — UTF-8 covers both. An unknown charset is a NO
    [BADCHARSET], not a BAD (RFC 9051 section 6.4.4)."""
    name = "utf-8" if charset is None else charset
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = None
    if (info is None or not getattr(info, "_is_text_encoding", True)
            or info.name in _NOT_CHARSETS):
        raise ParseError(r.tag, f"charset {name[:40]} is not supported", status="NO",
                         code=BADCHARSET)

    def decode(raw: bytes) -> str:
        try:
            return raw.decode(info.name)
        except (UnicodeError, ValueError):
            raise r.error(f"search string is not valid {name[:40]}") from None

    return decode


def search_key(r: Reader, decode: Decoder, depth: int = 0) -> SearchKey:
    """One search-key (RFC 9051 section 9, with the RFC 3501 keys kept for IMAP4rev1)."""
    if depth >= MAX_DEPTH:
        raise r.error("search keys nested too deeply")
    char = r.peek()
    if char == 0x28:  # "(" search-key *(SP search-key) ")"
        r.pos += 1
        children = [search_key(r, decode, depth + 1)]
        while not r.take(b")"):
            r.sp()
            children.append(search_key(r, decode, depth + 1))
        return SearchKey("AND", children=tuple(children))
    if char is not None and (0x30 <= char <= 0x39 or char in (0x2A, 0x24)):
        return SearchKey("SEQSET", seqset=r.sequence_set())
    name = r.keyword()
    if name in _FLAG_KEYS:
        return SearchKey(name)
    r.sp()
    if name in _TEXT_KEYS:
        return SearchKey(name, text=decode(r.astring()))
    if name in _DATE_KEYS:
        return SearchKey(name, date=r.date())
    if name in ("KEYWORD", "UNKEYWORD"):
        return SearchKey(name, text=r.flag(keyword_only=True))
    if name == "HEADER":
        field = r.astring()
        r.sp()
        return SearchKey(name, header=decode(field), text=decode(r.astring()))
    if name in ("LARGER", "SMALLER"):
        return SearchKey(name, number=r.number(limit=MAX_NUMBER64))
    if name == "UID":
        return SearchKey(name, seqset=r.sequence_set())
    if name == "NOT":
        return SearchKey(name, children=(search_key(r, decode, depth + 1),))
    if name == "OR":
        first = search_key(r, decode, depth + 1)
        r.sp()
        return SearchKey(name, children=(first, search_key(r, decode, depth + 1)))
    if name == "MODSEQ":
        return SearchKey(name, number=_modseq(r))
    if name in ("EMAILID", "THREADID"):  # RFC 8474 section 6: SEARCH by object id
        found = r.word(_OBJECTID)
        if not found:
            raise r.error(f"{name} needs an object id")
        r.pos += len(found)
        return SearchKey(name, text=found.decode("ascii"))
    raise r.error(f"unknown search key {name[:40]}")


def _modseq(r: Reader) -> int:
    """``MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer`` (RFC 7162 section
    3.1.5). We keep one mod-sequence per message, so the entry is checked and then ignored,
    as that section requires of such servers."""
    if r.peek() == 0x22:
        entry = r.quoted()
        if not entry.lower().startswith(b"/flags/") or len(entry) == 7:
            raise r.error("MODSEQ entry name must be /flags/<flag>")
        r.sp()
        if r.keyword() not in _ENTRY_TYPES:
            raise r.error("MODSEQ entry type must be priv, shared or all")
        r.sp()
    return r.number(limit=MAX_NUMBER64)


def _program(r: Reader, decode: Decoder) -> SearchKey:
    """``search-key *(SP search-key)``; several keys are an implicit AND."""
    keys = [search_key(r, decode)]
    while r.maybe_sp():
        keys.append(search_key(r, decode))
    r.end()
    return keys[0] if len(keys) == 1 else SearchKey("AND", children=tuple(keys))


def _charset(r: Reader) -> str:
    """charset = atom / quoted."""
    raw = r.quoted() if r.peek() == 0x22 else r.atom().encode("ascii")
    return r.text_utf8(raw, "charset").upper()


def _partial_end(r: Reader) -> int:
    """One end of a partial-range: nz-number, or "-" nz-number counted from the end."""
    negative = r.take(b"-")
    value = r.number(nonzero=True)
    return -value if negative else value


def partial_range(r: Reader) -> tuple[int, int]:
    """RFC 9394 section 5: partial-range-first = nz-number ":" nz-number, partial-range-last
    = MINUS nz-number ":" MINUS nz-number; both ends have the same sign."""
    first = _partial_end(r)
    r.expect(b":")
    last = _partial_end(r)
    if (first < 0) != (last < 0):
        raise r.error("both ends of a PARTIAL range must have the same sign")
    return first, last


def _returns(r: Reader) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """``"RETURN" SP "(" [opts] ")"`` after the RETURN word: the options, and the PARTIAL
    range if one was asked for (RFC 4731 section 3.1, RFC 9394 section 3.1)."""
    r.atom()
    r.sp()
    r.expect(b"(")
    opts: list[str] = []
    partial: tuple[int, int] | None = None
    while not r.take(b")"):
        if opts:
            r.sp()
        opt = r.keyword()
        if opt not in _RETURN_OPTIONS:
            raise r.error(f"unknown SEARCH return option {opt[:40]}")
        if opt == "PARTIAL":
            if partial is not None:
                raise r.error("PARTIAL given twice")
            r.sp()
            partial = partial_range(r)
        opts.append(opt)
    if partial is not None and "ALL" in opts:
        # RFC 9394 section 3.1: PARTIAL and ALL must not be used together.
        raise r.error("PARTIAL and ALL cannot be combined")
    # RFC 4731 section 3.1: RETURN () is the same as RETURN (ALL).
    return tuple(dict.fromkeys(opts)) or ("ALL",), partial


def search_args(r: Reader) -> SearchArgs:
    """``[SP "RETURN" SP "(" [opts] ")"] SP ["CHARSET" SP charset SP] search-key *(SP
    search-key)`` (RFC 9051 section 6.4.4, RFC 4731 section 3)."""
    r.sp()
    returns: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    charset: str | None = None
    word = r.word()
    if word is not None and word.upper() == b"RETURN":
        returns, partial = _returns(r)
        r.sp()
        word = r.word()
    if word is not None and word.upper() == b"CHARSET":
        r.atom()
        r.sp()
        charset = _charset(r)
        r.sp()
    key = _program(r, _decoder(r, charset))
    return SearchArgs(key, charset, returns, partial=partial)


def sort_args(r: Reader) -> SearchArgs:
    """``[SP "RETURN" SP "(" [opts] ")"] SP "(" sort-criterion *(SP sort-criterion) ")" SP
    charset 1*(SP search-key)`` (RFC 5256 section 5, ESORT: RFC 5267 section 3); criteria
    kept as "DATE" or "REVERSE DATE"."""
    r.sp()
    returns: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    word = r.word()
    if word is not None and word.upper() == b"RETURN":
        returns, partial = _returns(r)
        r.sp()
    r.expect(b"(")
    criteria: list[str] = []
    while True:
        name = r.keyword()
        reverse = name == "REVERSE"
        if reverse:
            r.sp()
            name = r.keyword()
        if name not in _SORT_KEYS:
            raise r.error(f"unknown sort key {name[:40]}")
        criteria.append(f"REVERSE {name}" if reverse else name)
        if r.take(b")"):
            break
        r.sp()
    r.sp()
    charset = _charset(r)
    r.sp()
    key = _program(r, _decoder(r, charset))
    return SearchArgs(key, charset, returns, sort=tuple(criteria), partial=partial)


def thread_args(r: Reader) -> SearchArgs:
    """``SP thread-alg SP charset 1*(SP search-key)`` (RFC 5256 section 5)."""
    r.sp()
    algorithm = r.keyword()
    r.sp()
    charset = _charset(r)
    r.sp()
    key = _program(r, _decoder(r, charset))
    return SearchArgs(key, charset, algorithm=algorithm)
