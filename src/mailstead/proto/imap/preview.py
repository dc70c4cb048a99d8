"""FETCH PREVIEW (RFC 8970): up to 256 characters of plain text from the message's first
text part, computed on demand from the stored body structure (core/message.py's one parse)
and the message bytes; HTML is reduced to its text. None when there is no text to show."""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from html import unescape
from typing import Any

from mailstead.proto.imap.sections import decode_transfer_encoding

# RFC 8970 section 3.1: the preview is no more than 256 characters.
MAX_PREVIEW = 256
# Only the start of a part is decoded: 256 characters never need more, even of HTML.
_READ = 32 * 1024
_DEPTH = 32
_SPACE = re.compile(r"\s+")

Node = Mapping[str, Any]


# What a reader does not see: scripts, styles, the head, comments; then every tag. Linear
# regular expressions over at most _READ characters.
_HIDDEN = re.compile(r"<(script|style|head|title)\b[^>]*>.*?</\1\s*>|<!--.*?(?:-->|$)",
                     re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<(?:br|p|div|li|tr|td|h[1-6])\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>?")


def html_text(html: str) -> str:
    """The visible text of ``html``: scripts, styles and markup removed, entities decoded."""
    text = _HIDDEN.sub(" ", html)
    text = _BREAK.sub(" ", text)
    return unescape(_TAG.sub("", text))


def _first_text(node: Node, depth: int) -> Node | None:
    """The first inline text/plain or text/html leaf, preferring text/plain among the
    alternatives of a multipart/alternative; attached messages are not looked into."""
    parts = node.get("parts")
    if isinstance(parts, list):
        if depth >= _DEPTH:
            return None
        found = [p for p in (_first_text(p, depth + 1) for p in parts if isinstance(p, Mapping))
                 if p is not None]
        if node.get("subtype") == "alternative":
            plain = [p for p in found if p.get("subtype") == "plain"]
            found = plain or found
        return found[0] if found else None
    disposition = node.get("disposition")
    if (isinstance(disposition, list) and disposition
            and str(disposition[0]).lower() == "attachment"):
        return None
    if node.get("type") == "text" and node.get("subtype") in ("plain", "html"):
        return node
    return None


def _charset(node: Node) -> str:
    for param in node.get("params") or ():
        if isinstance(param, list) and len(param) == 2 and str(param[0]).lower() == "charset":
            try:
                return codecs.lookup(str(param[1])).name
            except LookupError:
                break
    return "utf-8"


def preview(data: bytes, structure: Any) -> str | None:
    """The preview text of the message ``data`` with the stored ``structure`` (JSON)."""
    if not isinstance(structure, Mapping):
        return None
    node = _first_text(structure, 0)
    if node is None:
        return None
    start, end = node.get("body_offset"), node.get("end")
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end:
        return None
    encoding = node.get("encoding")
    raw = decode_transfer_encoding(data[start : min(end, start + _READ)],
                                   encoding if isinstance(encoding, str) else "")
    if raw is None:
        return None
    text = raw.decode(_charset(node), "replace")
    if node.get("subtype") == "html":
        text = html_text(text)
    text = _SPACE.sub(" ", text).strip()
    return text[:MAX_PREVIEW] or None
