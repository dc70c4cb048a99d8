"""Mail addresses as SMTP carries them: the RFC 5321 section 4.1.2 grammar, strictly parsed.

The parser yields exactly what the client wrote (a local part with ``%``, ``!`` or a quoted
``@`` is kept as is: refusing relay tricks is the delivery policy's job); only the domain is
normalised (lower case, IDNA A-labels decoded to U-labels) so that comparisons are meaningful.
IDNA uses the standard library codec (IDNA 2003 nameprep), the only one available without an
extra dependency; every A-label must round-trip exactly or it is refused.
"""

from __future__ import annotations

import encodings.idna
import ipaddress
import re
from dataclasses import dataclass, field

from mailstead.core.reply import Reply

# RFC 5321 section 4.5.3.1.1: local part at most 64 octets.
MAX_LOCAL_PART = 64
# RFC 5321 section 4.5.3.1.2: domain at most 255 octets.
MAX_DOMAIN = 255
# RFC 1035 section 2.3.4 (and RFC 5890 for A-labels): a label is at most 63 octets.
MAX_LABEL = 63
# RFC 5321 section 4.5.3.1.3: a reverse- or forward-path at most 256 octets, punctuation included.
MAX_PATH = 256

# RFC 5322 section 3.2.3 atext, as used by the Dot-string of RFC 5321 section 4.1.2.
_LETDIG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ATEXT = _LETDIG | frozenset("!#$%&'*+-/=?^_`{|}~")
_LDH = _LETDIG | {"-"}
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF:.")


class AddressError(ValueError):
    """A path or address that does not follow the grammar; ``reply`` is the RCPT-style answer
    (501 5.1.3) and ``detail`` the reason, so MAIL can answer 501 5.1.7 with the same text."""

    def __init__(self, detail: str, *, code: int = 501, enhanced: str = "5.1.3") -> None:
        super().__init__(detail)
        self.detail = detail
        self.reply = Reply(code, enhanced, f"Bad address syntax: {detail}")


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox ``local@domain``; ``local`` is decoded (no quotes, no quoted-pairs), ``domain``
    is lower case with U-labels, or an address literal such as ``[192.0.2.1]``.

    ``quoted`` records how the client wrote the local part; it does not take part in equality
    because ``"abc"@x`` and ``abc@x`` name the same mailbox (RFC 5321 section 4.1.2).
    """

    local: str
    domain: str
    quoted: bool = field(default=False, compare=False)

    @property
    def is_address_literal(self) -> bool:
        return self.domain.startswith("[")

    def __str__(self) -> str:
        return f"{quote_local_part(self.local)}@{self.domain}"


def quote_local_part(local: str) -> str:
    """The shortest RFC 5321 form of a decoded local part: a Dot-string when it is one, else
    a Quoted-string escaping only backslash and double quote (RFC 5321 section 4.1.2)."""
    if _is_dot_string(local):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_atext(ch: str) -> bool:
    # RFC 6531 section 3.3 extends atext with UTF8-non-ascii; surrogates are never text.
    return ch in _ATEXT or (ord(ch) >= 0x80 and not 0xD800 <= ord(ch) <= 0xDFFF)


def _is_dot_string(local: str) -> bool:
    if not local:
        return False
    return all(atom and all(_is_atext(ch) for ch in atom) for atom in local.split("."))


def _check_text(text: str, smtputf8: bool) -> None:
    if not text.isascii():
        if not smtputf8:
            # RFC 6531 section 3.4: non-ASCII addresses only in an SMTPUTF8 transaction.
            raise AddressError("non-ASCII address requires SMTPUTF8", code=553, enhanced="5.6.7")
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
            raise AddressError("invalid character")


def _parse_local(text: str, smtputf8: bool) -> tuple[str, bool, int]:
    """Parse the Local-part at the start of ``text``; return (decoded, quoted, end index)."""
    if text.startswith('"'):
        # RFC 5321 section 4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE, with
        # qtextSMTP = %d32-33 / %d35-91 / %d93-126 and quoted-pairSMTP = "\" %d32-126.
        out: list[str] = []
        i = 1
        n = len(text)
        while i < n:
            ch = text[i]
            if ch == '"':
                return "".join(out), True, i + 1
            if ch == "\\":
                if i + 1 >= n:
                    break
                nxt = text[i + 1]
                if not (32 <= ord(nxt) <= 126 or (smtputf8 and ord(nxt) >= 0x80)):
                    raise AddressError("invalid quoted-pair in local part")
                out.append(nxt)
                i += 2
                continue
            if not (32 <= ord(ch) <= 126 or (smtputf8 and ord(ch) >= 0x80)):
                raise AddressError("invalid character in quoted local part")
            out.append(ch)
            i += 1
        raise AddressError("unterminated quoted local part")
    end = text.find("@")
    if end < 0:
        raise AddressError("missing @domain")
    local = text[:end]
    if not _is_dot_string(local):
        raise AddressError("invalid local part")
    return local, False, end


def _parse_ipv4(text: str) -> str | None:
    # RFC 5321 section 4.1.3: IPv4-address-literal = Snum 3("." Snum), Snum = 1*3DIGIT (0-255).
    parts = text.split(".")
    if len(parts) != 4:
        return None
    values = []
    for part in parts:
        if not 1 <= len(part) <= 3 or not set(part) <= _DIGITS or int(part) > 255:
            return None
        values.append(str(int(part)))
    return ".".join(values)


def _parse_literal(text: str) -> str:
    """Validate an address-literal (with brackets) and return its canonical form."""
    inner = text[1:-1]
    v4 = _parse_ipv4(inner)
    if v4 is not None:
        return f"[{v4}]"
    tag, sep, rest = inner.partition(":")
    if sep and tag.lower() == "ipv6":
        # RFC 5321 section 4.1.3: IPv6-address-literal = "IPv6:" IPv6-addr (no zone index).
        if not rest or not set(rest) <= _HEX:
            raise AddressError("invalid IPv6 address literal")
        try:
            addr = ipaddress.IPv6Address(rest)
        except ValueError:
            raise AddressError("invalid IPv6 address literal") from None
        return f"[IPv6:{addr.compressed}]"
    # RFC 5321 section 4.1.3: a General-address-literal needs a tag registered with IANA,
    # and none but IPv6 exists.
    raise AddressError("invalid address literal")


def _parse_label(label: str) -> str:
    """Validate one label (A-label, LDH label, or U-label) and return its U-label form."""
    if not label:
        raise AddressError("empty label in domain")
    if label.isascii():
        if len(label) > MAX_LABEL:
            raise AddressError("domain label longer than 63 octets")
        # RFC 5321 section 4.1.2: sub-domain = Let-dig [Ldh-str], Ldh-str ending in Let-dig.
        if (
            not set(label) <= _LDH
            or label[0] not in _LETDIG
            or label[-1] not in _LETDIG
        ):
            raise AddressError("invalid domain label")
        lower = label.lower()
        if not lower.startswith("xn--"):
            return lower
        # RFC 5890 section 2.3.2.1: an A-label must decode, and re-encode to itself.
        try:
            ulabel = lower[4:].encode("ascii").decode("punycode")
            back = encodings.idna.ToASCII(ulabel).decode("ascii").lower()
        except (UnicodeError, ValueError):
            raise AddressError("invalid IDNA A-label") from None
        if back != lower or ulabel.isascii():
            raise AddressError("invalid IDNA A-label")
        return ulabel
    # RFC 6531 section 3.3: sub-domain =/ U-label; nameprep it and check the A-label form.
    try:
        alabel = encodings.idna.ToASCII(label).decode("ascii")
        ulabel = encodings.idna.ToUnicode(alabel)
    except (UnicodeError, ValueError):
        raise AddressError("invalid internationalised domain label") from None
    if (
        not alabel.lower().startswith("xn--")
        or len(alabel) > MAX_LABEL
        or not set(alabel) <= _LDH
        or alabel[0] not in _LETDIG
        or alabel[-1] not in _LETDIG
        or ulabel.isascii()
    ):
        raise AddressError("invalid internationalised domain label")
    return ulabel


def parse_domain(text: str, *, smtputf8: bool = True) -> str:
    """Validate a Domain or address-literal and return its normalised form."""
    _check_text(text, smtputf8)
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 3:
            raise AddressError("invalid address literal")
        return _parse_literal(text)
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("domain longer than 255 octets")
    if text.endswith("."):
        raise AddressError("trailing dot in domain")
    return ".".join(_parse_label(label) for label in text.split("."))


# The common case, ASCII Dot-string @ LDH labels (RFC 5321 section 4.1.2), checked in one regex
# match; anything else (quoted strings, literals, IDNA, errors) takes the careful path below.
_SIMPLE_MAILBOX = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
)


def _parse_mailbox(text: str, smtputf8: bool) -> Address:
    m = _SIMPLE_MAILBOX.fullmatch(text)
    if (
        m is not None
        and len(m.group(1)) <= MAX_LOCAL_PART
        and len(m.group(2)) <= MAX_DOMAIN
        and "xn--" not in m.group(2).lower()
    ):
        return Address(local=m.group(1), domain=m.group(2).lower(), quoted=False)
    _check_text(text, smtputf8)
    local, quoted, end = _parse_local(text, smtputf8)
    if len(text[:end].encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part longer than 64 octets")
    if text[end : end + 1] != "@":
        raise AddressError("missing @domain")
    domain_text = text[end + 1 :]
    if not domain_text:
        raise AddressError("missing domain")
    return Address(local=local, domain=parse_domain(domain_text, smtputf8=smtputf8), quoted=quoted)


def _strip_route(text: str, smtputf8: bool) -> str:
    """Drop an A-d-l source route ``@a,@b:`` (RFC 5321 section 4.1.2 and appendix C: MUST be
    accepted, SHOULD be ignored), checking its syntax."""
    if not text.startswith("@"):
        return text
    colon = text.find(":")
    if colon < 0:
        raise AddressError("invalid source route")
    for hop in text[:colon].split(","):
        if not hop.startswith("@") or len(hop) < 2:
            raise AddressError("invalid source route")
        parse_domain(hop[1:], smtputf8=smtputf8)
    return text[colon + 1 :]


def parse_path(text: str, *, null_allowed: bool, smtputf8: bool) -> Address | None:
    """Parse the argument of MAIL FROM:/RCPT TO:, brackets included; ``<>`` gives None.

    Angle brackets are required (RFC 5321 section 4.1.2 Path): every real client sends them,
    and accepting a bare address would make the end of the path ambiguous when ESMTP
    parameters follow. Raises AddressError.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise AddressError("path longer than 256 octets", enhanced="5.5.4")
    if len(text) < 2 or not text.startswith("<") or not text.endswith(">"):
        raise AddressError("address must be enclosed in <>", enhanced="5.5.4")
    inner = text[1:-1]
    if not inner:
        if null_allowed:
            return None
        raise AddressError("null path not allowed here")
    return _parse_mailbox(_strip_route(inner, smtputf8), smtputf8)


def parse_address(text: str, *, smtputf8: bool = True) -> Address:
    """Parse a bare ``local@domain`` (configuration, command line). Raises AddressError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH - 2:
        raise AddressError("address longer than 254 octets")
    return _parse_mailbox(text, smtputf8)
