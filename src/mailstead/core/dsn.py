"""Delivery Status Notification requests (RFC 3461): the values MAIL and RCPT carry and the
queue keeps per recipient, with the xtext encoding they travel in (RFC 3461 section 4).

Shared by the SMTP core (parsing), delivery and the queue (storing, relaying, honouring them),
so it lives here, below all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstead.core.errors import MailsteadError

# RFC 3461 section 4: xtext = *( xchar / hexchar ); xchar is "!" to "~" except "+" and "=";
# hexchar = "+" 2(%x30-39 / %x41-46), upper-case hex only.
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
# RFC 3461 section 4.4: ENVID is at most 100 characters (of xtext); section 4.2: an ORCPT
# address (decoded) fits the 500-octet limit of a path.
MAX_ENVID = 100
MAX_ORCPT = 500
# RFC 3461 section 4.2: addr-type is an atom (RFC 5322 section 3.2.3); "rfc822" and
# "utf-8" (RFC 6533 section 3) are the registered ones.
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,40}")
NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")


class DsnParameterError(MailsteadError):
    """A DSN parameter value is malformed; the message says which and why."""


def xtext_decode(text: str) -> str:
    """The string an xtext encodes (RFC 3461 section 4); raises DsnParameterError."""
    if not text.isascii() or _XTEXT.fullmatch(text) is None:
        raise DsnParameterError("not xtext (RFC 3461 section 4)")
    raw = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)
    if any(ord(c) > 0x7E or ord(c) < 0x20 for c in raw):
        raise DsnParameterError("xtext encodes a control or non-ASCII character")
    return raw


def xtext_encode(text: str) -> str:
    """``text`` as xtext: "+", "=" and characters outside "!".."~" become ``+XX``; UTF-8
    octets too, so any string can travel."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class RecipientDsn:
    """One recipient's request: ``notify`` is None when NOTIFY was not given (the default,
    RFC 3461 section 4.1: FAILURE and maybe DELAY), ("NEVER",) or a subset of
    SUCCESS/FAILURE/DELAY; ``orcpt`` is ``addr-type;address`` decoded, or None."""

    notify: tuple[str, ...] | None = None
    orcpt: str | None = None

    def wants(self, kind: str) -> bool:
        """Whether a DSN of ``kind`` (SUCCESS, FAILURE or DELAY) is asked for: without NOTIFY,
        failures and delays are reported (RFC 3461 section 4.1), successes are not."""
        if self.notify is None:
            return kind in ("FAILURE", "DELAY")
        return kind in self.notify

    @property
    def notify_text(self) -> str | None:
        return None if self.notify is None else ",".join(self.notify)

    def parameters(self) -> tuple[str, ...]:
        """The RCPT parameters that pass this request on to a DSN-capable server."""
        out: list[str] = []
        if self.notify is not None:
            out.append("NOTIFY=" + ",".join(self.notify))
        if self.orcpt is not None:
            addr_type, _, address = self.orcpt.partition(";")
            out.append(f"ORCPT={addr_type};{xtext_encode(address)}")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class MessageDsn:
    """The message's request (RFC 3461 sections 4.3, 4.4): ``ret`` "FULL" | "HDRS" | None,
    ``envid`` decoded or None."""

    ret: str | None = None
    envid: str | None = None

    def parameters(self) -> tuple[str, ...]:
        """The MAIL parameters that pass this request on."""
        out: list[str] = []
        if self.ret is not None:
            out.append(f"RET={self.ret}")
        if self.envid is not None:
            out.append(f"ENVID={xtext_encode(self.envid)}")
        return tuple(out)


def parse_notify(value: str | None) -> tuple[str, ...]:
    """RFC 3461 section 4.1: "NEVER" alone, or a comma list of SUCCESS, FAILURE, DELAY."""
    if not value or not value.isascii():
        raise DsnParameterError("NOTIFY=NEVER or a list of SUCCESS,FAILURE,DELAY")
    items = [v.upper() for v in value.split(",")]
    if items == ["NEVER"]:
        return ("NEVER",)
    if any(v not in NOTIFY_VALUES for v in items) or len(set(items)) != len(items):
        raise DsnParameterError("NOTIFY=NEVER or a list of SUCCESS,FAILURE,DELAY")
    return tuple(v for v in NOTIFY_VALUES if v in items)


def parse_orcpt(value: str | None) -> str:
    """RFC 3461 section 4.2: ``addr-type ";" xtext`` -> ``addr-type;address`` decoded."""
    if not value:
        raise DsnParameterError("ORCPT=addr-type;xtext (RFC 3461 section 4.2)")
    addr_type, sep, encoded = value.partition(";")
    if not sep or _ADDR_TYPE.fullmatch(addr_type) is None or not encoded:
        raise DsnParameterError("ORCPT=addr-type;xtext (RFC 3461 section 4.2)")
    if addr_type.lower() == "utf-8":
        # RFC 6533 section 3: utf-8-addr-xtext; taken as the address it names.
        address = encoded if not encoded.isascii() else xtext_decode(encoded)
    else:
        address = xtext_decode(encoded)
    if len(address) > MAX_ORCPT:
        raise DsnParameterError("ORCPT address too long")
    return f"{addr_type.lower()};{address}"


def parse_ret(value: str | None) -> str:
    """RFC 3461 section 4.3: RET=FULL or RET=HDRS."""
    upper = value.upper() if value and value.isascii() else ""
    if upper not in ("FULL", "HDRS"):
        raise DsnParameterError("RET=FULL or RET=HDRS (RFC 3461 section 4.3)")
    return upper


def parse_envid(value: str | None) -> str:
    """RFC 3461 section 4.4: ENVID=xtext, at most 100 characters."""
    if not value or len(value) > MAX_ENVID:
        raise DsnParameterError("ENVID=xtext of at most 100 characters (RFC 3461 section 4.4)")
    return xtext_decode(value)
