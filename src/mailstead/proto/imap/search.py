"""SEARCH evaluation over a mailbox snapshot, and the SEARCH / ESEARCH responses.

Keys are compiled once into predicates, then run over the messages. Full-text keys (BODY,
TEXT, HEADER) are answered by the store's index: the caller asks ``text_queries`` what to
look up, awaits ``MailStore.search_text`` for each, and passes the UID sets in; everything
else is decided here from the stored IMAP view. Semantics: RFC 9051 section 6.4.4 (and
RFC 3501 section 6.4.4 for NEW, OLD, RECENT), MODSEQ from RFC 7162 section 3.1.5, result
options from RFC 4731.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any, Protocol

from mailstead.proto.imap.ast import SearchKey
from mailstead.proto.imap.response import number, sequence_set, string
from mailstead.proto.imap.sort import decode_header, load_envelope, parse_date

# Nesting of NOT/OR/AND deeper than this is refused: evaluation recurses once per level, and
# no real client nests more than a handful (the parser is expected to cap it lower).
MAX_KEY_DEPTH = 200

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}
_ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc"}


class Searchable(Protocol):
    """What SEARCH reads of a message; storage.interfaces.MessageInfo fits."""

    @property
    def uid(self) -> int: ...
    @property
    def modseq(self) -> int: ...
    @property
    def flags(self) -> tuple[str, ...]: ...
    @property
    def internal_date(self) -> float: ...
    @property
    def wire_size(self) -> int:
        """RFC822.SIZE: the size in CRLF form, which LARGER/SMALLER and SORT SIZE compare
        (RFC 9051 section 6.4.4, RFC 5256 section 3)."""
        ...
    @property
    def envelope(self) -> str: ...
    @property
    def saved_at(self) -> float: ...
    @property
    def blob(self) -> str: ...
    @property
    def thread_id(self) -> str: ...


class SearchError(ValueError):
    """The key cannot be evaluated (too deep, unknown key, missing text result); the caller
    answers BAD (or NO for a missing index result) with this text."""


def text_queries(key: SearchKey) -> set[tuple[str, str]]:
    """The ``(part, text)`` lookups the key needs from ``MailStore.search_text``: part is
    "body", "text" or "header:NAME" (NAME upper-cased)."""
    out: set[tuple[str, str]] = set()
    stack = [key]
    while stack:
        current = stack.pop()
        query = _text_query(current)
        if query is not None:
            out.add(query)
        stack.extend(current.children)
    return out


def _text_query(key: SearchKey) -> tuple[str, str] | None:
    if key.name in ("BODY", "TEXT"):
        return key.name.lower(), key.text or ""
    if key.name == "HEADER":
        return f"header:{(key.header or '').upper()}", key.text or ""
    return None


def uses_modseq(key: SearchKey) -> bool:
    """Whether the MODSEQ key occurs, so the response carries the highest MODSEQ (RFC 7162
    section 3.1.5)."""
    stack = [key]
    while stack:
        current = stack.pop()
        if current.name == "MODSEQ":
            return True
        stack.extend(current.children)
    return False


# Keys that read the stored envelope (RFC 9051 section 6.4.4: the address fields, the
# subject and the Date: header of the SENT* keys); every other key needs only flags, dates,
# sizes and UIDs, so the caller may leave the envelope JSON unloaded.
_ENVELOPE_KEYS = frozenset({*_ADDRESS_KEYS, "SUBJECT", "SENTBEFORE", "SENTON", "SENTSINCE"})


def uses_envelope(key: SearchKey) -> bool:
    """Whether any key reads ``Searchable.envelope`` (else it may be left empty)."""
    stack = [key]
    while stack:
        current = stack.pop()
        if current.name in _ENVELOPE_KEYS:
            return True
        stack.extend(current.children)
    return False


class _Context:
    """Per-search state: lazily parsed envelopes, dates in the server's zone."""

    def __init__(self, messages: Sequence[Searchable], tz: tzinfo) -> None:
        self.messages = messages
        self.tz = tz
        self._envelopes: dict[int, dict[str, Any]] = {}

    def envelope(self, index: int) -> dict[str, Any]:
        env = self._envelopes.get(index)
        if env is None:
            env = self._envelopes[index] = load_envelope(self.messages[index].envelope)
        return env

    def internal_day(self, index: int) -> date:
        # RFC 9051 section 6.4.4: the date part of INTERNALDATE, in the server's zone
        return datetime.fromtimestamp(self.messages[index].internal_date, self.tz).date()

    def saved_day(self, index: int) -> date:
        # RFC 8514 section 4.3: the date part of SAVEDATE, in the server's zone
        return datetime.fromtimestamp(self.messages[index].saved_at, self.tz).date()

    def sent_day(self, index: int) -> date:
        # RFC 9051 section 6.4.4: the Date: header "disregarding time and timezone", i.e.
        # the day as written; without a usable Date: header the internal date stands in.
        value = self.envelope(index).get("date")
        parsed = parse_date(value) if isinstance(value, str) else None
        return parsed.date() if parsed is not None else self.internal_day(index)


Predicate = Callable[[int], bool]


def _depth(key: SearchKey) -> int:
    deepest, stack = 0, [(key, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_KEY_DEPTH:
            break
        stack.extend((child, level + 1) for child in current.children)
    return deepest


def _address_text(env: Mapping[str, Any], field: str) -> str:
    """The addresses of one envelope field as text to search: ``name <local@host>`` with
    the name both decoded and raw, so either form matches."""
    value = env.get(field)
    if not isinstance(value, list):
        return ""
    out = []
    for address in value:
        if not isinstance(address, list) or len(address) != 4:
            continue
        name, _, local, host = (v if isinstance(v, str) else "" for v in address)
        decoded = decode_header(name)
        raw = "" if decoded == name else " " + name
        spec = f"{local}@{host}" if host else local
        out.append(f"{decoded}{raw} <{decode_header(spec)}>")
    return ", ".join(out)


def _compile(
    key: SearchKey,
    ctx: _Context,
    largest_uid: int,
    texts: Mapping[tuple[str, str], Collection[int]],
    recent: Collection[int],
    saved: Collection[int],
) -> Predicate:
    msgs = ctx.messages
    name = key.name

    def sub(child: SearchKey) -> Predicate:
        return _compile(child, ctx, largest_uid, texts, recent, saved)

    if name == "ALL":
        return lambda i: True
    if name in _FLAG_KEYS:
        flag, wanted = _FLAG_KEYS[name]
        return lambda i: (flag in msgs[i].flags) == wanted
    if name in ("KEYWORD", "UNKEYWORD"):
        # Keywords compare case-insensitively, as flag names do (RFC 9051 section 2.3.2).
        keyword, wanted = (key.text or "").lower(), name == "KEYWORD"
        return lambda i: any(f.lower() == keyword for f in msgs[i].flags) == wanted
    if name == "RECENT":
        return lambda i: msgs[i].uid in recent
    if name == "OLD":
        return lambda i: msgs[i].uid not in recent
    if name == "NEW":  # RFC 3501 section 6.4.4: RECENT UNSEEN
        return lambda i: msgs[i].uid in recent and "\\Seen" not in msgs[i].flags
    if name in ("LARGER", "SMALLER"):
        limit = _required(key.number, name)
        if name == "LARGER":
            return lambda i: msgs[i].wire_size > limit
        return lambda i: msgs[i].wire_size < limit
    if name == "MODSEQ":  # RFC 7162 section 3.1.5: mod-sequence at least the value
        least = _required(key.number, name)
        return lambda i: msgs[i].modseq >= least
    if name == "SAVEDATESUPPORTED":  # RFC 8514 section 4.3: every mailbox keeps them
        return lambda i: True
    if name == "EMAILID":  # RFC 8474 section 6 (imap/objectid.py: M + the body's hash)
        wanted_id = key.text or ""
        return lambda i: "M" + msgs[i].blob[:24] == wanted_id
    if name == "THREADID":
        wanted_thread = key.text or ""
        return lambda i: msgs[i].thread_id == wanted_thread
    if name in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE",
                "SAVEDON", "SAVEDSINCE"):
        if key.date is None:
            raise SearchError(f"{name} needs a date")
        day = key.date.date()
        get = (ctx.sent_day if name.startswith("SENT")
               else ctx.saved_day if name.startswith("SAVED") else ctx.internal_day)
        if name.endswith("BEFORE"):
            return lambda i: get(i) < day
        if name.endswith("ON"):
            return lambda i: get(i) == day
        return lambda i: get(i) >= day
    if name in _ADDRESS_KEYS or name == "SUBJECT":
        # RFC 9051 section 6.4.4: substring, case-insensitive; encoded-words decoded so a
        # UTF-8 search string finds an RFC 2047 header.
        needle = (key.text or "").casefold()
        if name == "SUBJECT":
            def haystack(i: int) -> str:
                value = ctx.envelope(i).get("subject")
                return decode_header(value if isinstance(value, str) else None)
        else:
            field = _ADDRESS_KEYS[name]

            def haystack(i: int) -> str:
                return _address_text(ctx.envelope(i), field)
        return lambda i: needle in haystack(i).casefold()
    query = _text_query(key)
    if query is not None:
        if query not in texts:
            raise SearchError(f"no full-text result for {name}")
        uids = texts[query]
        return lambda i: msgs[i].uid in uids
    if name == "UID":
        uid_set = key.seqset
        if uid_set is None:
            raise SearchError("UID needs a set")
        if uid_set.saved:  # RFC 5182: $ is the saved result (UIDs)
            return lambda i: msgs[i].uid in saved
        return lambda i: uid_set.contains(msgs[i].uid, largest_uid)
    if name == "SEQSET":
        seq_set = key.seqset
        if seq_set is None:
            raise SearchError("missing sequence set")
        if seq_set.saved:
            return lambda i: msgs[i].uid in saved
        count = len(msgs)
        return lambda i: seq_set.contains(i + 1, count)
    if name == "NOT":
        if len(key.children) != 1:
            raise SearchError("NOT takes one key")
        inner = sub(key.children[0])
        return lambda i: not inner(i)
    if name == "OR":
        if len(key.children) != 2:
            raise SearchError("OR takes two keys")
        left, right = sub(key.children[0]), sub(key.children[1])
        return lambda i: left(i) or right(i)
    if name == "AND":
        parts = [sub(child) for child in key.children]
        return lambda i: all(p(i) for p in parts)
    raise SearchError(f"unknown search key {name}")


def _required(value: int | None, name: str) -> int:
    if value is None:
        raise SearchError(f"{name} needs a number")
    return value


def evaluate(
    key: SearchKey,
    messages: Sequence[Searchable],
    *,
    text_results: Mapping[tuple[str, str], Collection[int]] | None = None,
    recent: Collection[int] = frozenset(),
    saved: Collection[int] = frozenset(),
    largest_uid: int | None = None,
    tz: tzinfo = UTC,
) -> list[int]:
    """The sequence numbers (``messages[i]`` is number i + 1) matching ``key``, ascending.

    ``text_results`` answers each of ``text_queries(key)`` with UIDs; ``recent`` is the
    session's \\Recent UIDs; ``saved`` the SEARCHRES result (UIDs) for ``$``;
    ``largest_uid`` what ``*`` means in a UID set (default: the last message's UID);
    ``tz`` the server's zone for BEFORE/ON/SINCE. Raises SearchError only for a key the
    parser should not have produced.
    """
    if _depth(key) > MAX_KEY_DEPTH:
        raise SearchError("search key nested too deeply")
    if largest_uid is None:
        largest_uid = messages[-1].uid if messages else 0
    ctx = _Context(messages, tz)
    predicate = _compile(key, ctx, largest_uid, text_results or {}, recent, saved)
    return [i + 1 for i in range(len(messages)) if predicate(i)]


def highest_modseq(messages: Sequence[Searchable], numbers: Iterable[int]) -> int | None:
    """The highest MODSEQ among the matched sequence numbers, None when there are none."""
    return max((messages[n - 1].modseq for n in numbers), default=None)


def search_response(numbers: Sequence[int], *, modseq: int | None = None) -> bytes:
    """``* SEARCH 2 3 6`` CRLF, with ``(MODSEQ n)`` when the MODSEQ key was used and
    something matched (RFC 7162 section 3.1.5)."""
    out = b"* SEARCH"
    if numbers:
        out += b" " + b" ".join(number(n) for n in numbers)
        if modseq is not None:
            out += b" (MODSEQ " + number(modseq) + b")"
    return out + b"\r\n"


def esearch_response(
    numbers: Sequence[int],
    returns: Sequence[str],
    *,
    tag: str | None,
    uid: bool,
    modseqs: Sequence[int] | None = None,
) -> bytes:
    """``* ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set`` CRLF (RFC 4731 section 3.1).

    An empty ``returns`` means ALL; SAVE is the caller's business. With no match MIN, MAX
    and ALL are left out and COUNT is 0; options appear in the order asked. ``modseqs``
    (the MODSEQ of each of ``numbers``, when the MODSEQ key was used) adds the MODSEQ of
    what is returned (``esearch_modseq``).
    """
    options: list[str] = []
    for option in (r.upper() for r in returns):
        if option in ("MIN", "MAX", "COUNT", "ALL") and option not in options:
            options.append(option)
    if not returns:
        options = ["ALL"]
    out = b"* ESEARCH"
    if tag is not None:
        out += b" (TAG " + string(tag) + b")"
    if uid:
        out += b" UID"
    for option in options:
        if option == "COUNT":
            out += b" COUNT " + number(len(numbers))
        elif not numbers:
            continue
        elif option == "MIN":
            out += b" MIN " + number(min(numbers))
        elif option == "MAX":
            out += b" MAX " + number(max(numbers))
        else:
            out += b" ALL " + sequence_set(numbers).encode("ascii")
    modseq = esearch_modseq(numbers, modseqs, options) if modseqs is not None else None
    if modseq is not None:
        out += b" MODSEQ " + number(modseq)
    return out + b"\r\n"


def esearch_modseq(
    numbers: Sequence[int], modseqs: Sequence[int], options: Sequence[str]
) -> int | None:
    """The MODSEQ result option of an ESEARCH (RFC 4731 section 3.2, RFC 7162 section
    3.1.5): with MIN or MAX alone, the mod-sequence of that one message; with MIN and MAX
    (and neither ALL nor COUNT), the higher of those two; otherwise the highest of all
    matches. None when nothing matched (no MODSEQ is returned then)."""
    if not numbers:
        return None
    if len(modseqs) != len(numbers):
        raise ValueError("one MODSEQ per matched message")
    if "ALL" in options or "COUNT" in options or not {"MIN", "MAX"} & set(options):
        return max(modseqs)
    by_number = dict(zip(numbers, modseqs, strict=True))
    picked: list[int] = []
    if "MIN" in options:
        picked.append(by_number[min(numbers)])
    if "MAX" in options:
        picked.append(by_number[max(numbers)])
    return max(picked)
