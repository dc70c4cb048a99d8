"""What the queue workers need to know about one attempt: the shapes of the router, client and
signer they drive, the outcome recorded per queue row, and the small pure checks made before
any attempt (hop count, SMTPUTF8 need, the recipient's domain).

Split from ``workers.py`` so the manager keeps to the loop and its bounds (DESIGN rule 11).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mailstead.core.reply import Reply
from mailstead.delivery.headers import split_header
from mailstead.queue.dsn import one_line
from mailstead.storage.interfaces import QueueEntry

# RFC 5321 section 6.3: counting Received: fields detects loops; Postfix's hopcount_limit (50)
# is the threshold the issue asks for. Such a message is bounced without any attempt.
MAX_HOPS = 50
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)

# Replies for outcomes decided here rather than by a remote server (RFC 3463 codes).
R_LOOP = Reply(554, "5.4.6", "Routing loop detected: the message passed more than 50 servers")
R_NULL_MX = Reply(556, "5.1.10", "The recipient's domain accepts no mail (null MX, RFC 7505)")
R_NO_DOMAIN = Reply(550, "5.1.2", "The recipient's domain does not exist in the DNS")
R_UNKNOWN_LOCAL = Reply(550, "5.1.1", "No such user here")
R_LOCAL_LOOP = Reply(550, "5.4.6", "Alias expansion loop for this recipient")
R_LOCAL_TRICK = Reply(550, "5.7.1", "Routing characters in the local part are not accepted")
R_BAD_ADDRESS = Reply(550, "5.1.3", "The recipient address is not valid")


class Target(Protocol):
    host: str
    address: str
    port: int


class Route(Protocol):
    """What the worker uses of ``queue.routing.Route``."""

    @property
    def kind(self) -> str: ...  # "mx" | "smarthost" | "null_mx" | "no_domain"

    @property
    def reason(self) -> str: ...


class Router(Protocol):
    async def route(self, domain: str) -> Any: ...


class RcptResult(Protocol):
    @property
    def rcpt(self) -> str: ...

    @property
    def reply(self) -> Reply: ...

    @property
    def permanent(self) -> bool: ...


class Client(Protocol):
    """What the workers use of ``queue.client.OutboundClient``; a client may also have an
    ``async close()`` (idle sessions to end at shutdown), which the workers call when present."""

    async def deliver(
        self,
        route: Any,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool,
        eight_bit: bool,
        dsn: Any = None,
    ) -> Any: ...


class Signer(Protocol):
    async def sign(self, data: bytes, domain: str) -> bytes: ...


class Sealer(Protocol):
    """``mailauth.arc.ArcSealer``: the ARC set for forwarded mail, b"" for other mail."""

    async def seal(self, message: bytes, domain: str) -> bytes: ...


@dataclass(slots=True)
class Outcome:
    """The result of one attempt for one row, before it is recorded."""

    entry: QueueEntry
    state: str  # delivered | deferred | bounced
    reply: Reply | None = None
    reason: str | None = None
    remote_mta: str | None = None
    next_attempt: float | None = None
    warn: bool = False
    # RFC 3461 section 5.2: the next hop took the DSN request (it offers DSN), so a success
    # notice is its to send; ``local``: delivered here, so "delivered" rather than "relayed".
    dsn_passed: bool = False
    local: bool = False

    @property
    def error_text(self) -> str | None:
        if self.reply is not None:
            return one_line(str(self.reply), 500)
        return one_line(self.reason, 500) if self.reason else None


def received_count(data: bytes) -> int:
    """How many Received: fields the header section has (RFC 5321 section 6.3)."""
    header, _ = split_header(data)
    return len(_RECEIVED.findall(header))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def needs_smtputf8(mail_from: str, rcpts: Iterable[str], data: bytes) -> bool:
    """RFC 6531 section 3.4: UTF-8 in an envelope address or in the header section."""
    header, _ = split_header(data)
    return not mail_from.isascii() or any(not r.isascii() for r in rcpts) or not header.isascii()


def rcpt_results(result: Any) -> list[RcptResult]:
    """The per-recipient results of an ``AttemptResult``."""
    for name in ("rcpts", "results", "recipients"):
        value = getattr(result, name, None)
        if value is not None:
            return list(value)
    return []
