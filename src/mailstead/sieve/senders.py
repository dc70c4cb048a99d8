"""Who a vacation reply may claim to come from and whom it may go to.

RFC 5230 section 4.2: ":from" and ":addresses" SHOULD be addresses the user owns, so a
script cannot send as another domain (the reply would be DKIM-signed for it); the same rule
as submission applies (``account_owns``), at upload and again at each run, since an alias
can be removed after the script was stored. A ``:mime`` reason may only set the Content-*
fields of its entity, never From, Reply-To or other fields the reply's header owns.
RFC 3834 section 2 asks responders not to be turned against third parties: a reply goes only
to an envelope sender that SPF or an aligned DKIM signature vouches for.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mailstead.core.address import Address, AddressError, parse_address
from mailstead.delivery.recipients import account_owns
from mailstead.mailauth.dmarc import DmarcResult
from mailstead.mailauth.spf import SpfResult
from mailstead.sieve.compile import Node, Script
from mailstead.sieve.parser import StringList
from mailstead.storage.interfaces import Store

if TYPE_CHECKING:
    from mailstead.mailauth.verify import AuthResults

# RFC 2045 section 3 and RFC 5230 section 4.4: the MIME fields of an entity.
_MIME_FIELD = re.compile(r"(?i)content-[!-9;-~]+|mime-version")
_FIELD_NAME = re.compile(r"([!-9;-~]+)[ \t]*:")


def _vacations(nodes: list[Node]) -> Iterator[Node]:
    for node in nodes:
        if node.name == "vacation":
            yield node
        yield from _vacations(node.block)
        for _test, body in node.branches:
            yield from _vacations(body)


def _items(arg: object) -> tuple[str, ...]:
    return arg.items if isinstance(arg, StringList) else ()


def _fixed(value: str, script: Script) -> bool:
    # With "variables" a "${...}" is only known at run time (checked then).
    return "variables" not in script.extensions or "${" not in value


def mime_problem(reason: str) -> str | None:
    """Why a ``:mime`` reason may not be sent (None: it may): its header block may only hold
    Content-* fields and MIME-Version."""
    text = reason.replace("\r\n", "\n")
    if "\r" in text:
        # A bare CR ends a line for some readers: a field could hide behind it.
        return "vacation :mime: a bare CR is not allowed in the MIME entity"
    head, sep, _body = text.partition("\n\n")
    if not sep:
        return "vacation :mime needs a MIME entity: header fields, an empty line, the body"
    for line in head.split("\n"):
        if not line or line[0] in " \t":
            continue  # a continuation line
        m = _FIELD_NAME.match(line)
        if m is None:
            return f"vacation :mime: not a header field: {line[:60]!r}"
        if not _MIME_FIELD.fullmatch(m.group(1)):
            return (f"vacation :mime may set only Content-* header fields, not "
                    f"{m.group(1)[:60]} (the reply's own header says who it is from)")
    return None


def sender_address(value: str) -> Address | None:
    """The one address of a :from value such as "Payroll <payroll@example.org>"; None when
    it holds none or several ("me@example.org, them@example.net" would put both in From)."""
    found = email.utils.getaddresses([value])
    if len(found) != 1 or not found[0][1]:
        return None
    try:
        return parse_address(found[0][1])
    except AddressError:
        return None


async def unowned(store: Store, account_address: str, values: tuple[str, ...]) -> str | None:
    """The first of ``values`` (":from" or ":addresses" items) that is not an address of
    the account, or None when all are."""
    for value in values:
        address = sender_address(value)
        if address is None or not await account_owns(store, account_address, address):
            return value
    return None


async def upload_problem(store: Store, account_address: str, script: Script) -> str | None:
    """What is wrong with the vacation actions of ``script`` for this account (None: all
    fine), as the text of a ManageSieve NO: :from or :addresses the account does not own, a
    :mime reason that sets other header fields."""
    for node in _vacations(script.commands):
        line = f"line {node.line}: "
        values = tuple(v for v in _items(node.tags.get("from")) if _fixed(v, script))
        bad = await unowned(store, account_address, values)
        if bad is not None:
            return (f"{line}vacation :from {bad[:80]!r} is not an address of this account; "
                    "use your own address or one of your aliases (RFC 5230 section 4.2)")
        values = tuple(v for v in _items(node.tags.get("addresses")) if _fixed(v, script))
        bad = await unowned(store, account_address, values)
        if bad is not None:
            return (f"{line}vacation :addresses {bad[:80]!r} is not an address of this "
                    "account (RFC 5230 section 4.2)")
        reasons = _items(node.pos[0]) if node.pos else ()
        if "mime" in node.tags and reasons and _fixed(reasons[0], script):
            problem = mime_problem(reasons[0])
            if problem is not None:
                return line + problem
    return None


def sender_unverified(auth: AuthResults | None, mail_from: str) -> str | None:
    """Why the envelope sender may be forged (None: it is vouched for, or no sender checks
    ran). SPF must pass for its domain, or a DKIM signature of that domain (or a parent or
    child of it) must; a DMARC failure is never answered."""
    if auth is None:
        return None
    if auth.dmarc.result is DmarcResult.FAIL:
        return "DMARC fails"
    domain = mail_from.rpartition("@")[2].lower().rstrip(".")
    if auth.spf.result is SpfResult.PASS and auth.spf.domain.lower().rstrip(".") == domain:
        return None
    for sig in auth.dkim:
        d = sig.domain.lower().rstrip(".")
        if sig.result == "pass" and not sig.weak and "." in d and (
                d == domain or domain.endswith("." + d) or d.endswith("." + domain)):
            return None
    return f"envelope sender not verified (SPF {auth.spf.result}, no aligned DKIM pass)"
