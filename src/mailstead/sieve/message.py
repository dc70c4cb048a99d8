"""The view of one message a Sieve script tests: decoded header fields, addresses, body text.

Everything is computed lazily and never raises on malformed mail: undecodable octets become
U+FFFD, broken encoded-words stay as written, and a broken MIME structure yields the text
that could be found (RFC 5228 section 2.7.2 asks comparisons on the decoded value).
"""

from __future__ import annotations

import email.errors
import email.header
import email.parser
import email.policy
import email.utils
from collections.abc import Sequence
from email.message import Message

from mailstead.delivery.headers import plain_address

# RFC 5322 section 3.6.8: ftext, the octets of a field name (printable ASCII but the colon).
_FTEXT = bytes(range(0x21, 0x3A)) + bytes(range(0x3B, 0x7F))


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """Header block (with its final blank line) and body."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = data.find(sep)
        if end >= 0:
            cut = end + len(sep)
            # A bare-LF blank line before the CRLF one ends the header there. Searched only
            # up to that point: in a CRLF message the search would step through every line.
            lf = data.find(b"\n\n", 0, end) if sep == b"\r\n\r\n" else -1
            if lf >= 0:
                return data[:lf + 2], data[lf + 2:]
            return data[:cut], data[cut:]
    return data, b""


def decode_words(raw: str) -> str:
    """RFC 2047 encoded-words decoded (RFC 5228 section 2.7.2); left as is when broken."""
    if "=?" not in raw:
        return raw
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return raw


class MessageView:
    """One message as the interpreter sees it."""

    def __init__(self, data: bytes, max_body_scan: int = 1 << 20, *,
                 fields: Sequence[tuple[bytes, bytes]] | None = None) -> None:
        """``fields``: data's header fields as ``filters.parse_fields`` gives them (lower-case
        name, raw field; b"" names a malformed line), when they are at hand already."""
        self.data = data
        self.size = len(data)
        header, self._body = split_message(data)
        # (lower-case name, raw value after the colon, line breaks included): decoded only
        # for the names a script asks for, once (_values).
        self._fields: list[tuple[bytes, bytes]] = []
        self._values: dict[str, list[str]] = {}
        self._by_name: dict[bytes, list[bytes]] | None = None
        self._max_body = max_body_scan
        # Decoded body text by content-type selection: parsed once per message, however many
        # body tests a script has.
        self._text: dict[tuple[str, ...] | None, list[str]] = {}
        # Parsed addresses by field name: scripts test From: in several rules, and each
        # account's script runs over the same view.
        self._addresses: dict[str, tuple[str, ...]] = {}
        if fields is not None:
            # Usable when they make up this header block (less its blank line, if any).
            size = sum([len(raw) for _, raw in fields])
            if size <= len(header) and header[size:] in (b"", b"\r\n", b"\n"):
                self._fields = [(name, raw[raw.index(b":") + 1:]) for name, raw in fields
                                if name]
                return
        current: list[bytes] | None = None
        name = b""
        out = self._fields
        for line in header.splitlines():
            if line[:1] in (b" ", b"\t") and current is not None:
                current.append(line)
                continue
            if current is not None:
                out.append((name, b"".join(current)))
                current = None
            # RFC 5322 section 3.6.8 field-name (ftext), then optional WSP and the colon.
            colon = line.find(b":")
            if colon > 0:
                field_name = line[:colon].rstrip(b" \t")
                if field_name and not field_name.translate(None, _FTEXT):
                    name = field_name.lower()
                    current = [line[colon + 1:]]
        if current is not None:
            out.append((name, b"".join(current)))

    @staticmethod
    def _unfold(value: bytes) -> str:
        # RFC 5322 section 2.2.3: unfolding removes the CRLF before the whitespace.
        return b"".join(value.splitlines()).decode("utf-8", "replace").strip(" \t")

    def raw_headers(self, name: str) -> list[str]:
        """Unfolded values (encoded-words as written) of every field called ``name``."""
        key = name.lower()
        found = self._values.get(key)
        if found is None:
            if self._by_name is None:  # the fields by name, once per message
                self._by_name = {}
                for n, v in self._fields:
                    self._by_name.setdefault(n, []).append(v)
            # Field names are ASCII (ftext): another name matches none.
            raw = self._by_name.get(key.encode("ascii"), []) if key.isascii() else []
            found = self._values[key] = [self._unfold(v) for v in raw]
        return list(found)

    def headers(self, name: str) -> list[str]:
        """Decoded values of every field called ``name`` (case-insensitive), in order."""
        return [decode_words(v) for v in self.raw_headers(name)]

    def addresses(self, name: str) -> list[str]:
        """The addr-specs of an address header field (RFC 5228 section 5.1); group names
        and display names are left out."""
        key = name.lower()
        found = self._addresses.get(key)
        if found is None:
            out: list[str] = []
            for value in self.raw_headers(key):
                simple = plain_address(value)
                if simple is not None:  # the common shapes, without the full parse
                    out.append(simple)
                    continue
                try:
                    pairs = email.utils.getaddresses([value])
                except (ValueError, IndexError, TypeError):
                    continue
                out.extend(addr for _, addr in pairs if addr)
            found = self._addresses[key] = tuple(out)
        return list(found)

    def body_raw(self) -> str:
        return self._body[: self._max_body].decode("utf-8", "replace")

    def body_text(self, types: tuple[str, ...] | None = None) -> list[str]:
        """The decoded text of the MIME parts (RFC 5173 section 5.2 :text = text/*, and
        :content with the given types), at most ``max_body_scan`` characters in all."""
        if types not in self._text:
            self._text[types] = self._body_text(types)
        return self._text[types]

    def _body_text(self, types: tuple[str, ...] | None) -> list[str]:
        try:
            msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(self.data)
        except Exception:  # the stdlib parser is lenient; belt and braces on hostile input
            return [self.body_raw()]
        out: list[str] = []
        budget = self._max_body
        try:
            parts = list(msg.walk())
        except RecursionError:
            return [self.body_raw()]
        for part in parts[:1000]:
            if part.is_multipart() or budget <= 0:
                continue
            if not self._wanted(part, types):
                continue
            text = self._decode(part)[:budget]
            budget -= len(text)
            out.append(text)
        return out

    @staticmethod
    def _wanted(part: Message, types: tuple[str, ...] | None) -> bool:
        ctype = part.get_content_type().lower()
        if types is None:
            return ctype.startswith("text/")
        for t in types:
            t = t.lower()
            # RFC 5173 section 5.2: "" matches everything, "type" a main type, "type/sub".
            if t == "" or t == ctype or ("/" not in t and ctype.split("/")[0] == t):
                return True
        return False

    @staticmethod
    def _decode(part: Message) -> str:
        try:
            payload = part.get_payload(decode=True)
        except Exception:
            payload = None
        if not isinstance(payload, bytes):
            return ""
        charset = part.get_content_charset() or "us-ascii"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
