"""The Authentication-Results header field (RFC 8601): rendering ours, spotting forged ones.

Values from the network (addresses, domains, reasons) are quoted or cleaned so that nothing a
sender controls can end the field, open a comment or add a result of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

FIELD_NAME = "Authentication-Results"
# RFC 5322 section 2.1.1: lines SHOULD stay within 78 characters; we fold at 76.
_FOLD_AT = 76
# RFC 5322 section 2.1.1: a line MUST NOT exceed 998 characters; one value stays well below.
_MAX_VALUE = 512
# RFC 2045 section 5.1: token = 1*<any CHAR except SPACE, CTLs, or tspecials>.
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
# RFC 8601 section 2.2 pvalue: [ [ local-part ] "@" ] domain-name, with a dot-atom local part.
_ADDRESS = re.compile(
    r"^(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+(?:\.[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+)*)?"
    r"@[0-9A-Za-z](?:[0-9A-Za-z\-.]*[0-9A-Za-z])?$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_METHOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_]*$")
# The methods and results of RFC 8601 section 2.7 (and ARC's, RFC 8617), all matching _METHOD.
_KNOWN_WORDS = frozenset((
    "spf", "dkim", "dmarc", "arc", "none", "pass", "fail", "softfail", "neutral", "policy",
    "temperror", "permerror",
))


@dataclass(frozen=True, slots=True)
class ResultItem:
    """One resinfo (RFC 8601 section 2.2): ``method=result (comment) reason="..." ptype.prop=v``.

    ``properties`` are (``ptype.property``, value) pairs, e.g. ("smtp.mailfrom", "a@b.test").
    """

    method: str
    result: str
    comment: str = ""
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()


def _clean(text: str) -> str:
    # Printable ASCII (the usual case) has no control character to replace.
    if not (text.isascii() and text.isprintable()):
        text = _CONTROL.sub("?", text)
    return text[:_MAX_VALUE]


def quote_value(text: str) -> str:
    """A ``value`` (RFC 2045 token or RFC 5322 quoted-string), control characters replaced."""
    return _quoted(_clean(text))


def _quoted(text: str) -> str:
    """``quote_value`` of text ``_clean`` has been through already."""
    if _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pvalue(text: str) -> str:
    """RFC 8601 section 2.2 pvalue: an address or domain as is, anything else as a value."""
    cleaned = _clean(text)
    if "@" in cleaned and _ADDRESS.match(cleaned):  # an address has its "@"
        return cleaned
    return _quoted(cleaned)


def _comment(text: str) -> str:
    """A comment (RFC 5322 section 3.2.2) whose text can never close or nest."""
    cleaned = _clean(text).replace("\\", "/").replace("(", "[").replace(")", "]")
    return f"({cleaned})"


def _word(text: str) -> bool:
    """A valid method or result name (the ones we write all day are known to be)."""
    return text in _KNOWN_WORDS or _METHOD.match(text) is not None


class Resinfo(NamedTuple):
    """The fields of a ``ResultItem`` as a tuple: what ``AuthResults`` builds for every
    message (a frozen dataclass costs a call per field to make)."""

    method: str
    result: str
    comment: str = ""
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()


def _tokens(item: ResultItem | Resinfo) -> list[str]:
    if not _word(item.method) or not _word(item.result):
        raise ValueError(f"invalid method or result: {item.method}={item.result}")
    out = [f"{item.method}={item.result}"]
    if item.comment:
        out.append(_comment(item.comment))
    if item.reason:
        out.append(f"reason={quote_value(item.reason)}")
    for name, value in item.properties:
        out.append(f"{name}={pvalue(value)}")
    return out


def render(authserv_id: str, items: Sequence[ResultItem | Resinfo]) -> bytes:
    """The whole field, CRLF-terminated: one resinfo per line, folded between its parts.

    With no items the field says ``none`` (RFC 8601 section 2.2 no-result).
    """
    head = f"{FIELD_NAME}: {quote_value(authserv_id)}"
    if not items:
        return (head + "; none\r\n").encode("utf-8")
    lines = [head + ";"]
    last = len(items) - 1
    for n, item in enumerate(items):
        first, *rest = _tokens(item)
        current = "\t" + first  # a resinfo starts its own line; tokens are never blank
        for token in rest:
            if len(current) + 1 + len(token) > _FOLD_AT:
                lines.append(current)
                current = "\t " + token
            else:
                current = current + " " + token
        lines.append(current + (";" if n < last else ""))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _skip_cfws(text: str, i: int) -> int:
    """Index of the first character after whitespace and (nested) comments."""
    depth = 0
    while i < len(text):
        ch = text[i]
        if depth:
            if ch == "\\":
                i += 1
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
        elif ch == "(":
            depth = 1
        elif ch not in " \t\r\n":
            return i
        i += 1
    return i


def authserv_id(value: str) -> str | None:
    """The authserv-id at the start of a field value (RFC 8601 section 2.2), lower-case, or
    None when there is none."""
    i = _skip_cfws(value, 0)
    if i >= len(value):
        return None
    if value[i] == '"':
        out: list[str] = []
        i += 1
        while i < len(value) and value[i] != '"':
            if value[i] == "\\" and i + 1 < len(value):
                i += 1
            out.append(value[i])
            i += 1
        return "".join(out).strip().lower() or None
    m = re.match(r"[^\s;()\"]+", value[i:])
    return m.group(0).lower() if m else None


def forged_indexes(fields: Sequence[tuple[bytes, bytes]], our_id: str) -> list[int]:
    """Indexes of the Authentication-Results fields that claim ``our_id`` (RFC 8601 section
    5: an MTA MUST remove such fields arriving from outside, or readers would trust them).

    ``fields`` are (lower-case name, raw field) pairs as ``dkim.split_message`` gives them.
    """
    wanted = our_id.lower().rstrip(".")
    out: list[int] = []
    for n, (name, raw) in enumerate(fields):
        if name != b"authentication-results":
            continue
        value = raw.split(b":", 1)[1].decode("utf-8", "replace") if b":" in raw else ""
        found = authserv_id(value)
        if found is not None and found.rstrip(".") == wanted:
            out.append(n)
    return out


def parse_results(value: str) -> dict[str, str]:
    """method -> result for the resinfos of one field value (after the authserv-id), the
    first result of each method; comments are skipped. Enough to read back our own field."""
    out: dict[str, str] = {}
    text = re.sub(r"\([^()]*\)", " ", value)
    for part in text.split(";")[1:]:
        m = re.match(r"\s*([A-Za-z0-9\-_]+)\s*=\s*([A-Za-z0-9\-_]+)", part)
        if m is not None:
            out.setdefault(m.group(1).lower(), m.group(2).lower())
    return out
