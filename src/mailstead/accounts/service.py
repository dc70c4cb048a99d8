"""The accounts service: domains, users, aliases and password checks over the Store.

The CLI, the web admin and the protocol servers all go through here, so every name is
validated and normalised the same way before it reaches storage, and every login costs the
same time whether or not the account exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from argon2 import PasswordHasher

from mailstead.accounts.names import DomainNameError, normalise_domain
from mailstead.accounts.passwords import (
    DEFAULT_HASHER,
    MAX_LENGTH,
    check_password_rules,
    hash_password,
    needs_rehash,
    verify_password,
)
from mailstead.core.address import AddressError, parse_address
from mailstead.core.errors import MailsteadError, NotFound
from mailstead.core.secret import Secret
from mailstead.mailauth.dkim import generate_dkim_keys
from mailstead.storage.interfaces import Account, Alias, Store, address_key

# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets with its angle brackets.
MAX_ADDRESS = 254
MAX_ALIAS_TARGETS = 1000


class AccountError(MailsteadError, ValueError):
    """A name or request the accounts service refuses; the message says what to fix."""


def _domain(text: str) -> str:
    try:
        return normalise_domain(text)
    except DomainNameError as exc:
        raise AccountError(str(exc)) from None


def normalise_address(text: str) -> str:
    """``local@domain`` with the domain lower-case Unicode; the local part is kept as written
    (the store compares it case-insensitively). Raises AccountError."""
    raw = text.strip()
    try:
        address = parse_address(raw)
    except AddressError as exc:
        raise AccountError(f"{raw!r} is not a valid address: {exc.detail}") from None
    if address.is_address_literal:
        raise AccountError(f"{raw!r}: use a domain name, not an address literal")
    return f"{str(address).rpartition('@')[0]}@{_domain(address.domain)}"


class AccountService:
    """Validated administration and authentication on top of one Store."""

    def __init__(
        self,
        store: Store,
        hasher: PasswordHasher = DEFAULT_HASHER,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._dummy_hash: str | None = None

    # Domains

    async def add_domain(self, name: str) -> str:
        """Make ``name`` a local domain with its DKIM keys (RSA and Ed25519, active at once);
        returns its normalised form. Raises AlreadyExists.

        Either the domain and both keys exist afterwards, or (when storing a key fails) the
        domain is removed again, so no domain ever sends mail unsigned by accident.
        """
        domain = _domain(name)
        keys = await asyncio.to_thread(generate_dkim_keys, domain, self._clock())
        await self._store.add_domain(domain)
        try:
            stale = [k.selector for k in await self._store.dkim_keys(domain)]
            if stale:  # left by an earlier domain of the same name: keep them, inactive
                keys = await asyncio.to_thread(
                    generate_dkim_keys, domain, self._clock(), existing=stale
                )
            for key in keys:
                await self._store.add_dkim_key(key)
            await self._store.set_dkim_active(domain, [k.selector for k in keys])
        except BaseException:
            try:
                await self._store.remove_domain(domain)
            except Exception as exc:  # keep the original error; this one only adds context
                raise AccountError(
                    f"{domain} was added but its DKIM keys could not be stored ({exc}); "
                    f"create them with: mailstead dkim rotate {domain}"
                ) from None
            raise
        return domain

    async def remove_domain(self, name: str) -> None:
        """Raises NotFound, or InUse while the domain has accounts or aliases."""
        await self._store.remove_domain(_domain(name))

    async def list_domains(self) -> list[str]:
        return sorted(await self._store.list_domains())

    # Users

    async def _local_address(self, text: str) -> str:
        address = normalise_address(text)
        domain = address.rpartition("@")[2]
        if not await self._store.is_local_domain(domain):
            raise AccountError(
                f"{domain} is not a local domain (add it first: mailstead domain add {domain})"
            )
        return address

    async def add_user(self, address: str, password: Secret) -> Account:
        """Create an account with its default mailboxes. Raises AccountError (bad address,
        foreign domain, weak password) or AlreadyExists."""
        normalised = await self._local_address(address)
        check_password_rules(password)
        password_hash = await asyncio.to_thread(hash_password, password, self._hasher)
        return await self._store.add_account(normalised, password_hash)

    async def set_password(self, address: str, password: Secret) -> None:
        """Replace the password of an account. Raises AccountError or NotFound."""
        normalised = normalise_address(address)
        check_password_rules(password)
        password_hash = await asyncio.to_thread(hash_password, password, self._hasher)
        await self._store.set_password(normalised, password_hash)

    async def remove_user(self, address: str) -> None:
        """Delete an account with all its mail. Raises NotFound."""
        await self._store.remove_account(normalise_address(address))

    async def get_user(self, address: str) -> Account | None:
        """The account of ``address``, or None. Raises AccountError for a malformed address."""
        return await self._store.get_account(normalise_address(address))

    async def list_users(self, domain: str | None = None) -> list[Account]:
        """All accounts, or those of ``domain``, sorted by address."""
        wanted = None if domain is None else _domain(domain)
        accounts = await self._store.list_accounts(wanted)
        return sorted(accounts, key=lambda a: address_key(a.address))

    # Aliases

    async def _alias_source(self, source: str) -> str:
        text = source.strip()
        if text.startswith("@"):
            domain = _domain(text[1:])
            if not await self._store.is_local_domain(domain):
                raise AccountError(f"{domain} is not a local domain")
            return "@" + domain
        return await self._local_address(text)

    async def add_alias(self, source: str, targets: Sequence[str]) -> Alias:
        """Forward mail for ``source`` (``local@domain``, or ``@domain`` for every address of
        the domain without an account) to ``targets``, which may be remote. Returns the alias
        with all its targets after the change."""
        if not targets:
            raise AccountError("an alias needs at least one target address")
        if len(targets) > MAX_ALIAS_TARGETS:
            raise AccountError(f"an alias has at most {MAX_ALIAS_TARGETS} targets")
        src = await self._alias_source(source)
        wanted: list[str] = []
        for target in targets:
            normalised = normalise_address(target)
            if address_key(normalised) == address_key(src):
                raise AccountError(f"{src} cannot be an alias of itself")
            if address_key(normalised) not in map(address_key, wanted):
                wanted.append(normalised)
        await self._store.add_alias(src, wanted)
        return Alias(src, await self._store.get_alias(src) or tuple(wanted))

    async def list_aliases(self) -> list[Alias]:
        return sorted(await self._store.list_aliases(), key=lambda a: address_key(a.source))

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        """Remove some targets of an alias, or the whole alias when none are given."""
        text = source.strip()
        src = "@" + _domain(text[1:]) if text.startswith("@") else normalise_address(text)
        await self._store.remove_alias(src, [normalise_address(t) for t in targets])

    # Authentication

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(
                hash_password, Secret("mailstead-dummy-password"), self._hasher
            )
        return self._dummy_hash

    async def authenticate(self, username: str, password: Secret) -> Account | None:
        """The account when ``username`` (a full address) and ``password`` match, else None.

        An unknown or malformed username is checked against a dummy hash so the answer takes
        as long as for a real account: timing must not reveal which accounts exist.
        """
        account: Account | None = None
        if len(username) <= MAX_ADDRESS:
            try:
                account = await self._store.get_account(normalise_address(username))
            except AccountError:
                account = None
        if account is None or len(password.reveal()) > MAX_LENGTH:
            await asyncio.to_thread(verify_password, await self._dummy(), password, self._hasher)
            return None
        ok = await asyncio.to_thread(verify_password, account.password_hash, password, self._hasher)
        if not ok:
            return None
        if needs_rehash(account.password_hash, self._hasher):
            try:
                new_hash = await asyncio.to_thread(hash_password, password, self._hasher)
                await self._store.set_password(account.address, new_hash)
            except NotFound:
                return None  # removed while we were checking
        return account
