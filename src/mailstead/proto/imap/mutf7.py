"""Modified UTF-7, the mailbox name encoding of IMAP4rev1 (RFC 3501 section 5.1.3).

IMAP4rev2 and UTF8=ACCEPT clients use UTF-8 names; the session converts with these two
functions for IMAP4rev1 clients only. Decoding is strict: every name has exactly one valid
encoding, so two spellings can never name the same mailbox.
"""

from __future__ import annotations

import base64
import binascii
import re

# RFC 3501 section 5.1.3: printable US-ASCII (0x20-0x7E) other than "&" stands for itself.
_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")
_SHIFTED = re.compile(r"[^\x20-\x7e]+")
_B64_CHARS = re.compile(r"[A-Za-z0-9+,]*")


def _encode_run(run: str) -> str:
    """``&`` + modified BASE64 of the UTF-16BE form + ``-``: "," replaces "/" and the
    padding "=" is omitted (RFC 3501 section 5.1.3)."""
    raw = run.encode("utf-16-be")  # raises UnicodeEncodeError for lone surrogates
    b64 = base64.b64encode(raw).rstrip(b"=").replace(b"/", b",")
    return "&" + b64.decode("ascii") + "-"


def encode(name: str) -> str:
    """The modified UTF-7 form of ``name``; ValueError for a string holding lone surrogates,
    which no mailbox name can contain."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        if name[pos] == "&":
            out.append("&-")  # RFC 3501 section 5.1.3: "&" is represented by "&-"
            pos += 1
            continue
        direct = _DIRECT.match(name, pos)
        if direct:
            out.append(direct.group())
            pos = direct.end()
            continue
        shifted = _SHIFTED.match(name, pos)
        assert shifted is not None  # every character is direct, "&" or not printable ASCII
        try:
            out.append(_encode_run(shifted.group()))
        except UnicodeEncodeError as exc:
            raise ValueError("the name holds an unpaired surrogate") from exc
        pos = shifted.end()
    return "".join(out)


def _decode_run(b64: str) -> str:
    if not _B64_CHARS.fullmatch(b64):
        raise ValueError("invalid character in modified BASE64")
    if len(b64) % 4 == 1:
        raise ValueError("truncated modified BASE64")
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError("invalid modified BASE64") from exc
    if len(raw) % 2:
        raise ValueError("modified BASE64 does not hold whole UTF-16 units")
    try:
        return raw.decode("utf-16-be")  # strict: unpaired surrogates raise
    except UnicodeDecodeError as exc:
        raise ValueError("invalid UTF-16 (unpaired surrogate)") from exc


def decode(wire: str) -> str:
    """The Unicode name for a modified UTF-7 ``wire`` name; ValueError when it is malformed
    or not in the one canonical form (printable ASCII encoded in BASE64, "&" not written
    "&-", adjacent or empty BASE64 runs, non-zero padding bits)."""
    out: list[str] = []
    pos = 0
    n = len(wire)
    while pos < n:
        amp = wire.find("&", pos)
        if amp < 0:
            amp = n
        direct = wire[pos:amp]
        if direct and not _DIRECT.fullmatch(direct):
            # RFC 3501 section 5.1.3: only printable US-ASCII appears outside BASE64.
            raise ValueError("character outside printable US-ASCII")
        out.append(direct)
        if amp == n:
            break
        dash = wire.find("-", amp + 1)
        if dash < 0:
            raise ValueError("unterminated modified BASE64 (no closing '-')")
        if dash == amp + 1:
            out.append("&")
        else:
            out.append(_decode_run(wire[amp + 1 : dash]))
        pos = dash + 1
    text = "".join(out)
    # The canonical check: there is exactly one encoding of every name (RFC 3501 section
    # 5.1.3 forbids encoding printable US-ASCII, and the BASE64 is fixed by its input).
    if encode(text) != wire:
        raise ValueError("modified UTF-7 not in canonical form")
    return text


def decode_pattern(wire: str) -> str:
    """A LIST pattern or reference as Unicode, never failing: every valid ``&...-`` run is
    decoded and anything else, such as ``&Jjo!``, stands for itself. RFC 9051 section
    6.3.9 lets a server interpret a pattern that is not valid modified UTF-7 literally; a
    pattern is not a name, so there is nothing to refuse. Linear in the length: no octet
    is looked at in more than one decode attempt."""
    out: list[str] = []
    pos = 0
    dash = -1  # the first "-" at or after the current "&", found once per run
    while True:
        amp = wire.find("&", pos)
        if amp < 0:
            out.append(wire[pos:])
            return "".join(out)
        out.append(wire[pos:amp])
        if dash <= amp:
            dash = wire.find("-", amp + 1)
        following = wire.find("&", amp + 1, dash if dash >= 0 else len(wire))
        if dash >= 0 and following < 0:
            try:
                out.append(decode(wire[amp : dash + 1]))
            except ValueError:
                pass
            else:
                pos = dash + 1
                continue
        out.append("&")
        pos = amp + 1
