"""Who a recipient address really is: a local account, forwarding targets, or nobody.

Aliases expand (to local and remote targets), ``@domain`` is a catch-all, and ``alice+tag@``
reaches ``alice@``. Local parts that smuggle a second destination (``%``, ``!``, a quoted ``@``)
are the classic open-relay tricks: they are refused, never interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple, Protocol, runtime_checkable

from mailstead.core.address import Address, AddressError, parse_address
from mailstead.core.roles import is_role_local
from mailstead.mailauth.srs import Srs, SrsError, is_srs
from mailstead.storage.interfaces import Account, Store, address_key

# Alias chains deeper than this are a configuration loop; RFC 5321 section 6.3 asks servers to
# detect loops, and a bounded depth is how we do it for local expansion.
MAX_ALIAS_DEPTH = 10
# One recipient must not fan out without bound (an alias of aliases of aliases...).
MAX_EXPANSION = 1000

_RELAY_CHARS = ("%", "!", "@")


class Verdict(Enum):
    LOCAL = "local"  # resolved: see Resolution.accounts / .remote
    UNKNOWN_USER = "unknown"  # local domain, nobody by that name: 550 5.1.1
    NOT_LOCAL = "not_local"  # a domain we don't serve: relay for authenticated users only
    RELAY_TRICK = "relay_trick"  # local domain with a routing local part: always refused
    LOOP = "loop"  # alias expansion failed: 550 5.4.6 (RFC 3463 routing loop)
    NO_MAILBOX = "no_mailbox"  # a role address with no account at all to take it: 451 4.3.0
    SRS_FORGED = "srs_forged"  # an SRS0 address we did not make, or too old: 550


class AccountState(NamedTuple):
    """What the store said about an account along with finding it (``RecipientLookup``)."""

    room: int | None  # octets left under its quota (0 or less: full), None when unlimited
    script: str | None  # the text of its active Sieve script, None without one

    @property
    def full(self) -> bool:
        """At or over its quota (RFC 9208 section 5.1)."""
        return self.room is not None and self.room <= 0


@runtime_checkable
class RecipientLookup(Protocol):
    """A store that answers everything RCPT needs about one address in one read (the SQLite
    store does): whether ``domain`` is local, the account of the exact ``address``, and that
    account's ``AccountState`` (room under the quota, active script). Optional: with a store
    without it, the resolver asks ``is_local_domain`` and ``get_account``, and delivery reads
    the quota and script itself."""

    async def lookup_recipient(
        self, domain: str, address: str
    ) -> tuple[bool, Account | None, int | None, str | None]: ...


@dataclass(slots=True)
class Resolution:
    verdict: Verdict
    accounts: dict[int, str] = field(default_factory=dict)  # account id -> address
    remote: list[str] = field(default_factory=list)
    # The accounts whose state came with the lookup; the others' is unknown.
    states: dict[int, AccountState] = field(default_factory=dict)


def is_relay_trick(address: Address) -> bool:
    """True for local parts that name another destination (RFC 5321 section 3.6.1 and
    appendix C: ``%``-hack, UUCP bang paths, a quoted ``@``) or an address literal."""
    return address.is_address_literal or any(c in address.local for c in _RELAY_CHARS)


def strip_plus(local: str) -> str | None:
    """``alice+tag`` -> ``alice``; None when there is no tag to strip."""
    base, sep, _tag = local.partition("+")
    return base if sep and base else None


async def account_owns(store: Store, account_address: str, address: Address) -> bool:
    """Whether ``address`` is the account's own (with or without a +tag) or an alias that
    reaches it: what an account may send as (submission, and Sieve's vacation :from)."""
    own = address_key(account_address)
    names = {address_key(f"{address.local}@{address.domain}")}
    base = strip_plus(address.local)
    if base is not None:
        names.add(address_key(f"{base}@{address.domain}"))
    if own in names:
        return True
    for name in names:
        targets = await store.get_alias(name)
        if targets and own in {address_key(t) for t in targets}:
            return True
    return False


class RecipientResolver:
    """Resolves addresses against the store on every RCPT; nothing is cached, so changes made
    with the CLI while the server runs apply to the next RCPT. With a ``RecipientLookup``
    store, an address that is an account costs one read.

    Role addresses (``core.roles``: postmaster, abuse, tls-reports) of every local domain, and
    of ``hostname`` (the "<Postmaster>" of RFC 5321 section 4.1.1.3), reach the first
    administrator when no account, alias or catch-all says otherwise. With ``srs``, SRS0
    addresses in a local domain reach the sender they stand for (the bounce of mail we
    forwarded), or nobody when forged."""

    def __init__(self, store: Store, hostname: str | None = None,
                 srs: Srs | None = None) -> None:
        self._store = store
        self._srs = srs
        self._lookup = store if isinstance(store, RecipientLookup) else None
        self._hostname = hostname.lower().rstrip(".") if hostname else None

    async def _role(self, address: Address) -> Resolution:
        """The role address's mailbox: the first administrator (the oldest account with the
        admin flag), else the domain's oldest account, else the oldest of all."""
        account: Account | None = None
        for account_id in await self._store.list_admin_ids():
            account = await self._store.get_account_by_id(account_id)
            if account is not None:
                break
        if account is None:
            accounts = (await self._store.list_accounts(address.domain)
                        or await self._store.list_accounts())
            account = min(accounts, key=lambda a: a.id, default=None)
        if account is None:
            return Resolution(Verdict.NO_MAILBOX)
        return Resolution(Verdict.LOCAL, accounts={account.id: account.address})

    async def _probe(self, address: Address, out: Resolution) -> tuple[bool, bool]:
        """(the domain is local, the exact address is an account, now in ``out``): one store
        read with a ``RecipientLookup``, else a domain check only (the account is then looked
        up by ``_expand_local``)."""
        if self._lookup is None:
            return await self._store.is_local_domain(address.domain), False
        local, account, room, script = await self._lookup.lookup_recipient(
            address.domain, f"{address.local}@{address.domain}"
        )
        if account is None or not local:
            return local, False
        out.accounts[account.id] = account.address
        out.states[account.id] = AccountState(room, script)
        return True, True

    async def resolve(self, address: Address) -> Resolution:
        if address.is_address_literal:
            return Resolution(Verdict.NOT_LOCAL, remote=[str(address)])
        result = Resolution(Verdict.LOCAL)
        local, found = await self._probe(address, result)
        if not local:
            if address.domain.lower() == self._hostname and is_role_local(address.local):
                # RFC 5321 section 4.5.1: the server's own postmaster, even when its host
                # name is not one of the mail domains.
                return await self._role(address)
            return Resolution(Verdict.NOT_LOCAL, remote=[str(address)])
        if self._srs is not None and is_srs(address.local):
            try:
                return Resolution(Verdict.LOCAL, remote=[self._srs.reverse(address.local)])
            except SrsError:
                return Resolution(Verdict.SRS_FORGED)
        if is_relay_trick(address):  # refused even when such an account exists
            return Resolution(Verdict.RELAY_TRICK)
        if found:
            return result
        ok = await self._expand_local(address, result, depth=0, seen=set())
        if not ok:
            return Resolution(Verdict.LOOP)
        if not result.accounts and not result.remote:
            if is_role_local(address.local):
                # RFC 5321 section 4.5.1 and RFC 2142: accepted from the start; an account
                # or alias of that name (tried above) wins.
                return await self._role(address)
            return Resolution(Verdict.UNKNOWN_USER)
        return result

    async def _expand(self, addr: str, out: Resolution, depth: int, seen: set[str]) -> bool:
        """Adds what ``addr`` reaches to ``out``; False on a loop or runaway expansion."""
        key = address_key(addr)
        if key in seen:
            return True  # the same target reached twice gets one copy
        if depth > MAX_ALIAS_DEPTH or len(seen) > MAX_EXPANSION:
            return False
        seen.add(key)
        try:
            parsed = parse_address(addr)
        except AddressError:
            return True  # an unusable alias target is skipped, not fatal for the rest
        if parsed.is_address_literal:
            out.remote.append(addr)
            return True
        local, found = await self._probe(parsed, out)
        if not local:
            out.remote.append(addr)
            return True
        if found:
            seen.add(address_key(f"{parsed.local}@{parsed.domain}"))
            return True
        return await self._expand_local(parsed, out, depth, seen)

    async def _expand_local(
        self, parsed: Address, out: Resolution, depth: int, seen: set[str]
    ) -> bool:
        """Like ``_expand`` for an address already known to be in a local domain."""
        seen.add(address_key(f"{parsed.local}@{parsed.domain}"))
        for n, candidate in enumerate(self._candidates(parsed)):
            # The exact address was already looked up by ``_probe`` with a RecipientLookup.
            if n > 0 or self._lookup is None:
                account = await self._store.get_account(candidate)
                if account is not None:
                    out.accounts[account.id] = account.address
                    return True
            targets = await self._store.get_alias(candidate)
            if targets is not None:
                return await self._expand_all(targets, out, depth, seen)
        catch_all = await self._store.get_alias("@" + parsed.domain)
        if catch_all is not None:
            return await self._expand_all(catch_all, out, depth, seen)
        return True

    async def _expand_all(
        self, targets: tuple[str, ...], out: Resolution, depth: int, seen: set[str]
    ) -> bool:
        for target in targets:
            if not await self._expand(target, out, depth + 1, seen):
                return False
        return True

    @staticmethod
    def _candidates(address: Address) -> list[str]:
        """The exact address first, then the one without a ``+tag``."""
        names = [f"{address.local}@{address.domain}"]
        base = strip_plus(address.local)
        if base is not None:
            names.append(f"{base}@{address.domain}")
        return names
