"""SORT (RFC 5256, with DISPLAYFROM/DISPLAYTO of RFC 5957) and the helpers THREAD shares:
encoded-word decoding, base-subject extraction and the sent date.

Input is the stored envelope JSON (core/message.py); nothing reads the message bytes.
Strings compare with the default collation i;ascii-casemap (RFC 5256 section 2.2): ASCII
letters fold to upper case, every other octet compares as itself.
"""

from __future__ import annotations

import binascii
import codecs
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_tz
from typing import Any, Protocol

# RFC 2047 section 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_ENCODED_GAP = re.compile(r"(=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=)[ \t\r\n]+(?==\?[^?\s]+\?[BbQq]\?)")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_SPACES = re.compile(r"[ \t\r\n]+")
# RFC 5256 section 5: subj-blob = "[" *BLOBCHAR "]" *WSP;
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":";
# subj-leader = (*subj-blob subj-refwd) / WSP
_BLOB = r"\[[^\[\]]*\] *"
_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?) *(?:{_BLOB})?:", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)

SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


class Sortable(Protocol):
    """What SORT and THREAD read of a message; storage.interfaces.MessageInfo fits."""

    @property
    def uid(self) -> int: ...
    @property
    def internal_date(self) -> float: ...
    @property
    def wire_size(self) -> int:
        """RFC822.SIZE: the size in CRLF form, which LARGER/SMALLER and SORT SIZE compare
        (RFC 9051 section 6.4.4, RFC 5256 section 3)."""
        ...
    @property
    def envelope(self) -> str: ...


def load_envelope(text: str) -> dict[str, Any]:
    """The envelope JSON as a dict; an unreadable row counts as an empty envelope."""
    try:
        env = json.loads(text)
    except ValueError:
        return {}
    return env if isinstance(env, dict) else {}


def _decode_word(charset: str, encoding: str, text: str) -> str | None:
    charset = charset.split("*", 1)[0]  # RFC 2231 section 5: charset*language
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        return None
    raw = text.encode("ascii", "replace")
    if encoding in "Bb":
        raw = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
        raw = raw[: len(raw) - len(raw) % 4] if len(raw) % 4 == 1 else raw
        raw += b"=" * (-len(raw) % 4)
        try:
            data = binascii.a2b_base64(raw)
        except binascii.Error:
            return None
    else:  # Q: "_" is space, =XX an octet (RFC 2047 section 4.2)
        data = _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw.replace(b"_", b" "))
    return data.decode(codec, "replace")


def decode_header(value: str | None) -> str:
    """A header value with RFC 2047 encoded-words decoded and 8-bit text read as UTF-8
    (RFC 6532); whitespace between adjacent encoded-words is dropped (RFC 2047 section 6.2).
    Words in an unknown charset are left as they are. Never raises."""
    if not value:
        return ""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" not in text:
        return text
    text = _ENCODED_GAP.sub(r"\1", text)

    def word(match: re.Match[str]) -> str:
        decoded = _decode_word(match.group(1), match.group(2), match.group(3))
        return match.group() if decoded is None else decoded

    return _ENCODED_WORD.sub(word, text)


def base_subject(subject: str | None) -> tuple[str, bool]:
    """The RFC 5256 section 2.1 base subject, and whether the subject marks a reply or a
    forward (a subj-refwd, a "(fwd)" trailer or a "[fwd: ...]" wrapper was removed; used by
    THREAD=REFERENCES step 5)."""
    # (1) Decode encoded-words to UTF-8; tabs and continuations to space; runs to one space.
    text = _SPACES.sub(" ", decode_header(subject))
    reply = False
    while True:
        # (2) Remove trailing subj-trailer ("(fwd)" / WSP) until none is left.
        while True:
            if text.endswith(" "):
                text = text[:-1]
            elif text[-5:].lower() == "(fwd)":
                text, reply = text[:-5], True
            else:
                break
        # (3) remove subj-leader prefixes, (4) a subj-blob prefix if something remains,
        # (5) repeat (3) and (4) until neither matches.
        while True:
            changed = False
            while True:
                if text.startswith(" "):
                    text, changed = text[1:], True
                    continue
                match = _LEADER.match(text)
                if match is None:
                    break
                text, reply, changed = text[match.end() :], True, True
            match = _BLOB_PREFIX.match(text)
            if match is not None and match.end() < len(text):
                text, changed = text[match.end() :], True
            if not changed:
                break
        # (6) "[fwd:" ... "]" around the whole text: unwrap and start again from (2).
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text, reply = text[5:-1], True
            continue
        return text, reply


def casemap(text: str) -> bytes:
    """The i;ascii-casemap comparison key (RFC 4790 section 9.2)."""
    return text.encode("utf-8", "surrogateescape").upper()


def sent_date(env: Mapping[str, Any], internal_date: float) -> float:
    """The sent date as Unix time (so in UTC), from the Date header; the internal date when
    it is missing or cannot be parsed (RFC 5256 section 2.2)."""
    value = env.get("date")
    if isinstance(value, str):
        parsed = parse_date(value)
        if parsed is not None:
            return parsed.timestamp()
    return internal_date


def parse_date(value: str) -> datetime | None:
    """An RFC 5322 date-time as an aware datetime in its own zone, or None."""
    try:
        parts = parsedate_tz(value)
        if parts is None:
            return None
        offset = parts[9] or 0
        zone = timezone(timedelta(seconds=offset)) if abs(offset) < 86400 else UTC
        return datetime(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], tzinfo=zone)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _first(env: Mapping[str, Any], field: str) -> list[Any] | None:
    value = env.get(field)
    if isinstance(value, list) and value and isinstance(value[0], list) and len(value[0]) == 4:
        return value[0]
    return None


def _mailbox_key(env: Mapping[str, Any], field: str) -> bytes:
    """addr-mailbox of the first address (RFC 5256 section 3, CC/FROM/TO)."""
    first = _first(env, field)
    return casemap(first[2]) if first and isinstance(first[2], str) else b""


def _display_key(env: Mapping[str, Any], field: str) -> bytes:
    """RFC 5957 section 3: the decoded display name of the first address, or its addr-spec
    when it has none."""
    first = _first(env, field)
    if not first:
        return b""
    name = decode_header(first[0]) if isinstance(first[0], str) else ""
    if name.strip():
        return casemap(name.strip())
    local = first[2] if isinstance(first[2], str) else ""
    host = first[3] if isinstance(first[3], str) else ""
    return casemap(f"{local}@{host}" if host else local)


def _key_function(name: str) -> Callable[[Sortable, dict[str, Any]], Any]:
    if name == "ARRIVAL":
        return lambda m, env: m.internal_date
    if name == "SIZE":
        return lambda m, env: m.wire_size
    if name == "DATE":
        return lambda m, env: sent_date(env, m.internal_date)
    if name == "SUBJECT":
        return lambda m, env: casemap(base_subject(env.get("subject"))[0])
    if name in ("CC", "FROM", "TO"):
        field = name.lower()
        return lambda m, env: _mailbox_key(env, field)
    if name in ("DISPLAYFROM", "DISPLAYTO"):
        field = name[7:].lower()
        return lambda m, env: _display_key(env, field)
    raise ValueError(f"unknown sort criterion {name!r}")


def parse_criteria(criteria: Sequence[str]) -> list[tuple[str, bool]]:
    """``("REVERSE DATE", "SUBJECT")`` or ``("REVERSE", "DATE", ...)`` as [(key, reverse)].
    Raises ValueError for an unknown key or a dangling REVERSE (the caller answers BAD)."""
    out: list[tuple[str, bool]] = []
    reverse = False
    for item in criteria:
        for word in item.upper().split():
            if word == "REVERSE":
                reverse = True
                continue
            if word not in SORT_KEYS:
                raise ValueError(f"unknown sort criterion {word!r}")
            out.append((word, reverse))
            reverse = False
    if reverse or not out:
        raise ValueError("incomplete sort criteria")
    return out


def sort_messages(
    items: Sequence[tuple[int, Sortable]], criteria: Sequence[str]
) -> list[int]:
    """The numbers of ``items`` (sequence numbers or UIDs, as the caller chose), ordered by
    ``criteria``. ``items`` must be in sequence-number order: equal messages keep it, which
    is the final tie-breaker of RFC 5256 section 3. REVERSE applies to one key only."""
    keys = parse_criteria(criteria)
    envs = [load_envelope(m.envelope) for _, m in items]
    order = list(range(len(items)))
    # Stable sorts from the least to the most significant key give the lexicographic order;
    # reverse=True keeps the stability of equal elements, as REVERSE requires.
    for name, reverse in reversed(keys):
        func = _key_function(name)
        values = [func(m, env) for (_, m), env in zip(items, envs, strict=True)]
        order.sort(key=values.__getitem__, reverse=reverse)
    return [items[i][0] for i in order]
