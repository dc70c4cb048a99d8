"""The IMAP view of a message, computed once at delivery: ENVELOPE and BODYSTRUCTURE as JSON.

IMAP never re-parses a stored message: it renders RFC 3501/9051 ENVELOPE and BODYSTRUCTURE
from these summaries and serves ``BODY[1.2]`` from the recorded byte offsets. The parser is
our own (a single pass over bytes, no ``email`` object tree) because it runs on the delivery
hot path, and it never raises: hostile MIME degrades to a plausible, bounded structure.

Strings are the header bytes decoded as UTF-8 with ``surrogateescape``: ``s.encode("utf-8",
"surrogateescape")`` gives back the exact bytes (JSON keeps lone surrogates as ``\\udcXX``).
Header values are unfolded and stripped; encoded-words are kept raw, as IMAP sends them.

Envelope JSON: ``{"date", "subject", "from", "sender", "reply_to", "to", "cc", "bcc",
"in_reply_to", "message_id"}``; each address list is null or a list of ``[name, route,
mailbox, host]`` (RFC 3501 section 7.4.2 order); a group is ``[null, null, "group name",
null]`` ... members ... ``[null, null, null, null]``, exactly as IMAP encodes it; a display
name without an address is left out. Sender and Reply-To default to From when absent or
empty (RFC 3501 section 7.4.2).

Bodystructure JSON, one node per part: ``type``, ``subtype`` (lower-case), ``params`` (list
of ``[name, value]``), ``id``, ``description``, ``encoding`` (upper-case), ``size`` (body
octets), ``lines`` (text/* and message/rfc822), ``md5`` (always null), ``disposition`` (null
or ``[type, params]``), ``language`` (null or list), ``location``, and the offsets
``header_offset``, ``body_offset``, ``end`` within the whole message; multiparts add
``parts``, message/rfc822 and message/global add ``envelope`` and ``body``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mailstead.core.msgids import thread_keys

# Nesting deeper than this (multipart in multipart, or message/rfc822 in ...) is not parsed:
# the part becomes an opaque application/octet-stream leaf. Dovecot caps at 100; real mail
# rarely exceeds 5, hostile mail goes to thousands to exhaust stacks.
MAX_DEPTH = 32
# At most this many parts in one message, so the summary stays proportional to real needs.
MAX_PARTS = 1000
# At most this many addresses kept per address header.
MAX_ADDRESSES = 1000
# Mailbox and host of a display name that came without an address (parse_address_list), as
# Dovecot fills them.
STRAY = ("MISSING_MAILBOX", "MISSING_DOMAIN")

_ENVELOPE_FIELDS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)
_ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})
_CONTENT_FIELDS = frozenset(
    {
        "content-type",
        "content-transfer-encoding",
        "content-id",
        "content-description",
        "content-disposition",
        "content-language",
        "content-location",
    }
)
# An empty line after the first: LF, then CRLF or LF (the first LF ends the previous line).
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# RFC 2045 section 5.1 token characters.
_TOKEN = re.compile(r"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")
_PARAM_NAME = re.compile(r"\s*([^=;\s]+)\s*=\s*")
_PARAM_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
_PARAM_TOKEN = re.compile(r"[^;]*")
# A comment, or a quoted string that must survive comment removal intact.
_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|\((?:[^()\\]|\\.)*\)', re.DOTALL)


# One encoder for every summary (json.dumps with options builds a new one per call); it
# holds no state between calls.
_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """ENVELOPE and BODYSTRUCTURE of one message, both JSON text (see the module docstring)."""

    envelope: str
    bodystructure: str
    # The Message-IDs that place the message in a thread (core/msgids.py), for the store.
    thread_keys: tuple[str, ...] = ()


def summarize(data: bytes) -> MessageSummary:
    """Parses ``data`` once; never raises on any input."""
    budget = [MAX_PARTS]
    try:
        headers, body_offset = _parse_headers(data, 0, len(data))
        envelope = _envelope(headers)
        structure = _part(data, 0, len(data), headers, body_offset, 0, None, budget)
    except RecursionError:  # cannot happen with MAX_DEPTH, kept as a last line of defence
        headers, envelope, structure = {}, _envelope({}), _leaf_fallback(data)
    keys = thread_keys(headers.get("message-id"), headers.get("in-reply-to"),
                       headers.get("references"))
    return MessageSummary(_JSON.encode(envelope), _JSON.encode(structure), keys)


# Headers ------------------------------------------------------------------------------------


def _header_lines(data: bytes, start: int, end: int) -> tuple[list[bytes], int]:
    """The header lines of ``data[start:end]`` (each without its LF; a CR before it is kept)
    and the offset where the body starts: the one place that decides where a header line ends.

    A bare LF ends a line here as it does for IMAP clients and the outbound peer; the SMTP
    framing refuses bare LF in new mail (RFC 5321 section 2.3.8), so for mail we accepted
    this is the same split as CRLF's.
    """
    if data.startswith(b"\n", start, end) or data.startswith(b"\r\n", start, end):
        return [], start + (1 if data[start] == 0x0A else 2)
    match = _EMPTY_LINE.search(data, start, end)
    if match is None:
        return data[start:end].split(b"\n"), end
    return data[start : match.start()].split(b"\n"), match.end()


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field of the top-level header: its name (lower-case), its raw span in the
    message (the final line end included) and its unfolded, stripped value."""

    name: str
    start: int
    end: int
    value: str


@dataclass(frozen=True, slots=True)
class ParsedHeader:
    """Every field of a message's header in order, where its body starts, and the header
    lines that are neither a field nor the continuation of one (a first line starting with
    white space is one: it continues nothing, and readers disagree on what it is)."""

    fields: tuple[HeaderField, ...]
    body_offset: int
    stray_lines: int

    def values(self, name: str) -> list[str]:
        """The values of every field called ``name`` (any case), in order."""
        wanted = name.lower()
        return [f.value for f in self.fields if f.name == wanted]


def parse_header(data: bytes) -> ParsedHeader:
    """The top-level header of ``data``, split into lines exactly as ``summarize`` splits it
    (RFC 5322 section 2.2: ``name ":" value``, folded lines start with WSP). Never raises."""
    lines, body = _header_lines(data, 0, len(data))
    fields: list[HeaderField] = []
    stray = 0
    pos = 0
    name: str | None = None
    begin = 0
    chunks: list[bytes] = []

    def close(stop: int) -> None:
        if name is not None:
            value = b"".join(chunks).decode("utf-8", "surrogateescape").strip()
            fields.append(HeaderField(name, begin, stop, value))

    for line in lines:
        at, pos = pos, pos + len(line) + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            if name is None:
                stray += 1
            else:
                chunks.append(line)
            continue
        close(at)
        colon = line.find(b":")
        candidate = line[:colon].strip().lower() if colon > 0 else b""
        if candidate and not any(c <= 0x20 or c >= 0x7F for c in candidate):
            # RFC 5322 section 3.6.8: a field name is printable US-ASCII without spaces.
            name, begin, chunks = candidate.decode("ascii"), at, [line[colon + 1 :]]
        else:
            name = None
            stray += 1
    close(min(pos, body))
    return ParsedHeader(tuple(fields), body, stray)


def _parse_headers(data: bytes, start: int, end: int) -> tuple[dict[str, str], int]:
    """The header fields we need (first occurrence wins) and the offset where the body starts.

    The header ends at the first empty line (RFC 5322 section 2.1); a part without one is all
    header and an empty body. Lines end in CRLF or a bare LF; lines that are neither
    ``name: value`` nor continuations are skipped. The end is found and the lines are split
    at C speed, so the Python loop only visits header lines (this runs on every delivery).
    """
    lines, body = _header_lines(data, start, end)
    fields: dict[str, str] = {}
    name: str | None = None
    chunks: list[bytes] = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]  # the CR of a CRLF; one more CR is line content
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                chunks.append(line)
            continue
        if name is not None:
            _store(fields, name, chunks)
        colon = line.find(b":")
        candidate = line[:colon].strip().lower() if colon > 0 else b""
        name = candidate.decode("ascii", "replace") if candidate else None
        if name is not None and (name in _CONTENT_FIELDS or name in _ENVELOPE_FIELDS
                                 or name == "references"):
            chunks = [line[colon + 1 :]]
        else:
            name = None
    if name is not None:
        _store(fields, name, chunks)
    return fields, body


def _store(fields: dict[str, str], name: str | None, chunks: list[bytes]) -> None:
    if name is None or name in fields:
        return
    # Unfolding: a CRLF followed by WSP is removed (RFC 5322 section 2.2.3).
    fields[name] = b"".join(chunks).decode("utf-8", "surrogateescape").strip()


# Envelope -----------------------------------------------------------------------------------


def _envelope(headers: dict[str, str]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for field in _ENVELOPE_FIELDS:
        value = headers.get(field)
        key = field.replace("-", "_")
        if field in _ADDRESS_FIELDS:
            addresses = parse_address_list(value) if value else []
            env[key] = addresses or None
        else:
            env[key] = value if value else None
    for field in ("sender", "reply_to"):
        if env[field] is None:  # RFC 3501 section 7.4.2: default to From
            env[field] = env["from"]
    return env


_ADDR_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"?'  # quoted-string (an unterminated one runs to the end)
    r"|\[(?:[^\]\\]|\\.)*\]?"  # domain-literal
    r"|[<>@,:;.]"  # specials we act on
    r"|[^\s\"\[\]<>@,:;.()]+"  # atom text
    r"|\(",  # a comment starts; handled by hand for nesting
    re.DOTALL,
)


def _tokenize(value: str) -> list[tuple[str, str]]:
    """RFC 5322 section 3.2 lexical tokens: ("q", quoted), ("c", comment), ("s", special),
    ("a", atom/literal); whitespace is dropped, an unbalanced comment runs to the end."""
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(value)
    while pos < end:
        char = value[pos]
        if char in " \t\r\n":
            pos += 1
            continue
        if char == "(":
            depth, i = 0, pos
            while i < end:
                c = value[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            tokens.append(("c", value[pos + 1 : min(i, end)]))
            pos = i + 1
            continue
        match = _ADDR_TOKEN.match(value, pos)
        if match is None:  # a stray ")" or similar: skip it
            pos += 1
            continue
        text = match.group()
        kind = "q" if text.startswith('"') else "s" if text in "<>@,:;." else "a"
        tokens.append((kind, text))
        pos = match.end()
    return tokens


def _unquote(text: str) -> str:
    inner = text[1:-1] if len(text) >= 2 and text.endswith('"') else text[1:]
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


def _phrase(tokens: list[tuple[str, str]]) -> str | None:
    words = [_unquote(t) if k == "q" else t for k, t in tokens if k != "c"]
    text = " ".join(words).replace(" . ", ".").strip()
    return text or None


def _mailbox(tokens: list[tuple[str, str]]) -> list[str | None] | None:
    """One mailbox from its tokens: ``name <route:local@host>`` or ``local@host (comment)``."""
    if not tokens:
        return None
    kinds = [k == "s" and t == "<" for k, t in tokens]
    route: str | None = None
    if any(kinds):
        lt = kinds.index(True)
        name = _phrase(tokens[:lt])
        inner = tokens[lt + 1 :]
        close = next((i for i, (k, t) in enumerate(inner) if k == "s" and t == ">"), len(inner))
        spec = [tok for tok in inner[:close] if tok[0] != "c"]
        colon = max((i for i, (k, t) in enumerate(spec) if k == "s" and t == ":"), default=-1)
        if colon >= 0:
            route = "".join(t for _, t in spec[:colon]) or None
            spec = spec[colon + 1 :]
    else:
        comments = [t for k, t in tokens if k == "c"]
        name = comments[-1].strip() or None if comments else None
        spec = [tok for tok in tokens if tok[0] != "c"]
        if not any(k == "s" and t == "@" for k, t in spec) and not _is_local_part(spec):
            # A display name, quoted or of several words, with no address.
            return [_phrase(tokens) or name, None, *STRAY] if spec or name else None
    at = max((i for i, (k, t) in enumerate(spec) if k == "s" and t == "@"), default=-1)
    local_tokens, host_tokens = (spec[:at], spec[at + 1 :]) if at >= 0 else (spec, [])
    local = "".join(t for _, t in local_tokens)
    host = "".join(t for _, t in host_tokens)
    if not local and not host:
        # A name with no address (``"foo" <>``, a lone comment) is no mailbox.
        return [name, None, *STRAY] if name is not None else None
    # A missing half is filled like Dovecot does, so a null host never fakes group syntax.
    return [name, route, local or "MISSING_MAILBOX", host or "MISSING_DOMAIN"]


def _is_local_part(spec: list[tuple[str, str]]) -> bool:
    """Whether tokens without "@" could be a bare local part: one dot-atom (``postmaster``,
    ``first.last``), as RFC 822 allowed for local mail; a quoted string or several words is a
    display name (RFC 5322 section 3.4, ``display-name``) that lost its address."""
    if len(spec) % 2 == 0:  # atoms and dots alternate, starting and ending with an atom
        return False
    return all(k == "a" if i % 2 == 0 else (k, t) == ("s", ".") for i, (k, t) in enumerate(spec))


# The common shapes of one mailbox, ``local@host``, ``<local@host>`` and ``Word Word
# <local@host>`` with plain atoms (RFC 5322 section 3.2.3, dots allowed only in the addr-spec),
# parse to the same result as the general tokenizer below at a fraction of its cost; anything
# else (quotes, comments, lists, groups, routes) takes the general path.
_ATOMS = r"[^\s\"\[\]<>@,:;()\\]+"
_SIMPLE_MAILBOX = re.compile(
    r"[ \t]*(?:((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+[ \t]+)*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)?"
    rf"[ \t]*<({_ATOMS})@({_ATOMS})>|({_ATOMS})@({_ATOMS}))[ \t]*"
)


def parse_address_list(value: str, *, strays: bool = False) -> list[list[str | None]]:
    """RFC 5322 section 3.4 address-list, tolerant of real-world breakage, in IMAP form.

    A display name with no address (``"foo" , x@y.test``, ``"n" <>``) has no form in RFC 3501
    section 7.4.2, and an invented mailbox would be read as an address, so it is left out;
    ``strays`` keeps it as ``[name, None, *STRAY]`` for checks that must see it.
    """
    simple = _SIMPLE_MAILBOX.fullmatch(value)
    if simple is not None:
        if simple.group(2) is not None:
            name = " ".join(simple.group(1).split()) if simple.group(1) else None
            return [[name, None, simple.group(2), simple.group(3)]]
        return [[None, None, simple.group(4), simple.group(5)]]
    out: list[list[str | None]] = []
    current: list[tuple[str, str]] = []
    in_group = False
    in_angle = False

    def flush() -> None:
        address = _mailbox(current)
        if address is not None and not strays and tuple(address[2:]) == STRAY:
            address = None
        if address is not None and len(out) < MAX_ADDRESSES:
            out.append(address)
        current.clear()

    for kind, text in _tokenize(value):
        if kind == "s" and text == "<":
            in_angle = True
        elif kind == "s" and text == ">":
            in_angle = False
        elif kind == "s" and not in_angle:
            if text == ":" and not in_group:
                out.append([None, None, _phrase(current) or "", None])  # group start
                current.clear()
                in_group = True
                continue
            if text == ";" and in_group:
                flush()
                out.append([None, None, None, None])  # group end
                in_group = False
                continue
            if text in ",;":
                flush()
                continue
        current.append((kind, text))
    flush()
    if in_group:
        out.append([None, None, None, None])
    return out


# MIME structure -----------------------------------------------------------------------------


def _mime_params(value: str) -> tuple[str | None, list[list[str]]]:
    """``token[/token] *(; attribute=value)`` as (lower-cased head, [[name, value], ...]).

    RFC 2045 section 5.1 grammar; comments are dropped, RFC 2231 parameters kept raw.
    """
    text = _COMMENT.sub(lambda m: m.group(1) or " ", value)
    head, _, rest = text.partition(";")
    params: list[list[str]] = []
    pos, end = 0, len(rest)
    while pos < end and len(params) < 100:
        match = _PARAM_NAME.match(rest, pos)
        if match is None:
            semi = rest.find(";", pos)
            if semi < 0:
                break
            pos = semi + 1
            continue
        name, pos = match.group(1).lower(), match.end()
        if pos < end and rest[pos] == '"':
            quoted = _PARAM_QUOTED.match(rest, pos)
            assert quoted is not None
            val = re.sub(r"\\(.)", r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            token = _PARAM_TOKEN.match(rest, pos)
            assert token is not None
            val = token.group().strip()
            pos = token.end()
        params.append([name, val])
        semi = rest.find(";", pos)
        pos = end if semi < 0 else semi + 1
    head = head.strip().lower()
    return (head or None), params


def _content_type(headers: dict[str, str], default: str) -> tuple[str, str, list[list[str]]]:
    raw = headers.get("content-type")
    if raw:
        head, params = _mime_params(raw)
        if head:
            main, slash, sub = head.partition("/")
            main, sub = main.strip(), sub.strip()
            if slash and _TOKEN.fullmatch(main) and _TOKEN.fullmatch(sub):
                return main, sub, params
    # RFC 2045 section 5.2: missing or invalid means the default (text/plain; us-ascii).
    main, _, sub = default.partition("/")
    return main, sub, [["charset", "us-ascii"]] if main == "text" else []


def _count_lines(data: bytes, start: int, end: int) -> int:
    lines = data.count(b"\n", start, end)
    return lines + 1 if end > start and data[end - 1 : end] != b"\n" else lines


def _part(
    data: bytes,
    start: int,
    end: int,
    headers: dict[str, str],
    body: int,
    depth: int,
    parent: str | None,
    budget: list[int],
) -> dict[str, Any]:
    """The structure node of the part occupying ``data[start:end]``, its body at ``body``."""
    budget[0] -= 1
    default = "message/rfc822" if parent == "digest" else "text/plain"  # RFC 2046 5.1.5
    main, sub, params = _content_type(headers, default)
    encoding = (headers.get("content-transfer-encoding") or "7BIT").split("(")[0].strip().upper()
    disposition = None
    if headers.get("content-disposition"):
        kind, dparams = _mime_params(headers["content-disposition"])
        if kind:
            disposition = [kind, dparams]
    language = None
    if headers.get("content-language"):
        language = [t.strip() for t in headers["content-language"].split(",") if t.strip()] or None
    node: dict[str, Any] = {
        "type": main,
        "subtype": sub,
        "params": params,
        "id": headers.get("content-id") or None,
        "description": headers.get("content-description") or None,
        "encoding": encoding or "7BIT",
        "size": end - body,
        "lines": None,
        "md5": None,
        "disposition": disposition,
        "language": language,
        "location": headers.get("content-location") or None,
        "header_offset": start,
        "body_offset": body,
        "end": end,
    }
    if main == "multipart":
        boundary = next((v for k, v in params if k == "boundary"), "")
        parts = (
            _split_multipart(data, body, end, boundary.encode("utf-8", "surrogateescape"))
            if boundary and depth < MAX_DEPTH and budget[0] > 0
            else []
        )
        if not parts:  # no usable boundary or too deep: an opaque leaf, never an empty multipart
            node.update(type="application", subtype="octet-stream", params=[])
            return node
        children = []
        for part_start, part_end in parts:
            if budget[0] <= 0:
                break
            child_headers, child_body = _parse_headers(data, part_start, part_end)
            children.append(
                _part(data, part_start, part_end, child_headers, child_body, depth + 1, sub, budget)
            )
        node["parts"] = children
        return node
    if main == "text":
        node["lines"] = _count_lines(data, body, end)
    elif main == "message" and sub in ("rfc822", "global"):  # RFC 9051 section 7.5.2
        node["lines"] = _count_lines(data, body, end)
        if depth < MAX_DEPTH and budget[0] > 0:
            inner_headers, inner_body = _parse_headers(data, body, end)
            node["envelope"] = _envelope(inner_headers)
            node["body"] = _part(
                data, body, end, inner_headers, inner_body, depth + 1, None, budget
            )
        else:
            node.update(type="application", subtype="octet-stream", lines=None)
    return node


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each body part between ``--boundary`` delimiter lines.

    RFC 2046 section 5.1.1: a delimiter is CRLF "--" boundary at the start of a line; the CRLF
    before it belongs to the delimiter; "--" after the boundary closes. An unterminated
    multipart ends at the end of its body; preamble and epilogue are not parts.
    """
    delimiter = b"--" + boundary
    parts: list[tuple[int, int]] = []
    pos = start
    part_start: int | None = None
    while pos < end:
        hit = data.find(delimiter, pos, end)
        if hit < 0:
            break
        at_line_start = hit == start or data[hit - 1 : hit] == b"\n"
        after = hit + len(delimiter)
        closing = data[after : after + 2] == b"--"
        tail = after + 2 if closing else after
        line_end = data.find(b"\n", tail, end)
        rest = data[tail : end if line_end < 0 else line_end].rstrip(b"\r")
        if not at_line_start or rest.strip(b" \t"):
            pos = after  # "--boundary" inside text, or a longer boundary: not a delimiter
            continue
        if part_start is not None:
            part_end = hit
            if part_end > part_start and data[part_end - 1 : part_end] == b"\n":
                part_end -= 1
                if part_end > part_start and data[part_end - 1 : part_end] == b"\r":
                    part_end -= 1
            parts.append((part_start, part_end))
            if len(parts) >= MAX_PARTS:
                return parts
        next_line = end if line_end < 0 else line_end + 1
        if closing:
            return parts
        part_start = next_line
        pos = next_line
    if part_start is not None:
        parts.append((part_start, end))
    return parts


def _leaf_fallback(data: bytes) -> dict[str, Any]:
    return {
        "type": "application",
        "subtype": "octet-stream",
        "params": [],
        "id": None,
        "description": None,
        "encoding": "7BIT",
        "size": len(data),
        "lines": None,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_offset": 0,
        "body_offset": 0,
        "end": len(data),
    }
