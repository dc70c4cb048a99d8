"""The accounts service: domains, users, aliases and password checks over the Store.

The CLI, the web admin and the protocol servers all go through here, so every name is
validated and normalised the same way before it reaches storage, and every login costs the
same time whether or not the account exists.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from argon2 import PasswordHasher

from mailstead.accounts import apppasswords
from mailstead.accounts.hashpool import HashPool, Lane, PoolFull
from mailstead.accounts.keys import SecurityKeyError, SecurityKeys, equal
from mailstead.accounts.login import (
    SLOT_WAIT_SECONDS,
    Guard,
    LoginCache,
    LoginFailure,
    LoginResult,
    SecuritySettings,
)
from mailstead.accounts.names import DomainNameError, normalise_domain
from mailstead.accounts.passwords import (
    DEFAULT_HASHER,
    MAX_LENGTH,
    check_password_rules,
    hash_password,
    make_hasher,
    needs_rehash,
    verify_password,
)
from mailstead.accounts.throttle import network_key
from mailstead.accounts.twofactor import CodeCheck
from mailstead.core.address import AddressError, parse_address
from mailstead.core.errors import MailsteadError, NotFound
from mailstead.core.secret import Secret
from mailstead.core.sizes import MAX_SIZE
from mailstead.mailauth.dkim import generate_dkim_keys
from mailstead.observability.log import log_event_at
from mailstead.storage.interfaces import (
    Account,
    Alias,
    AppPassword,
    LoginRecord,
    Quota,
    Store,
    address_key,
)

if TYPE_CHECKING:
    from mailstead.accounts.security import SecurityAdmin
    from mailstead.config.model import Config

T = TypeVar("T")

log = logging.getLogger("mailstead.security")

# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets with its angle brackets.
MAX_ADDRESS = 254
MAX_ALIAS_TARGETS = 1000


class AccountError(MailsteadError, ValueError):
    """A name or request the accounts service refuses; the message says what to fix."""


class DefaultQuota:
    """The type of DEFAULT_QUOTA: "the configured default", distinct from None (no quota)."""


DEFAULT_QUOTA = DefaultQuota()


def _check_quota(limit: int | None) -> None:
    if limit is not None and not 0 < limit <= MAX_SIZE:
        raise AccountError("a quota must be more than 0 and at most 1 PiB (none for no quota)")


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


@dataclass(frozen=True, slots=True)
class _Checked:
    """The outcome of the credential check alone (before throttling and audit)."""

    account: Account | None
    reason: LoginFailure | None
    audit_reason: str
    app: AppPassword | None = None


class AccountService:
    """Validated administration and authentication on top of one Store.

    ``login`` is the one way every protocol (and later the web) checks a password: it applies
    the block list and failure delays, checks the account password or an app password,
    enforces two-factor rules and writes the audit log. Without ``keys`` (a process that has
    no data directory) app passwords and two-factor accounts cannot log in.
    """

    def __init__(
        self,
        store: Store,
        hasher: PasswordHasher = DEFAULT_HASHER,
        *,
        clock: Callable[[], float] = time.time,
        keys: SecurityKeys | None = None,
        security: SecuritySettings | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared_failures: bool | None = None,
        hash_workers: int = 0,
    ) -> None:
        """``shared_failures``: count failed logins in the store rather than in this process;
        by default exactly when other nodes share the store (``Store.networked``).
        ``hash_workers``: argon2 threads at once (0: one less than the CPUs, at least 1)."""
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._keys = keys
        self.default_quota: int | None = None  # [limits] default_quota, for add_user
        # Why there are no keys, said to whoever needs them (AccountService.open).
        self.key_problem: str | None = None
        self._sleep = sleep
        self._dummy_hash: str | None = None
        if shared_failures is None:
            shared_failures = store.networked
        self.guard = Guard(store, security or SecuritySettings(), clock,
                           shared=store if shared_failures else None)
        self.login_cache = LoginCache(keys, self.guard.settings.login_cache_ttl, clock)
        # argon2 runs in threads, off the event loop; at most this many at once, so a burst
        # of logins queues instead of oversubscribing the CPU (each hash already uses
        # ``parallelism`` lanes) and of holding many times memory_cost at once. Attempts
        # from failing networks get at most half of them (hashpool.py).
        self._flights: dict[tuple[str, str, str, bytes], asyncio.Future[_Checked]] = {}
        self.hash_pool = HashPool(hash_workers or max(1, (os.cpu_count() or 2) - 1))

    @classmethod
    async def open(
        cls, store: Store, config: Config, *, need_key: bool = True
    ) -> AccountService:
        """The service of a server or command: ``from_config`` with the data directory's key,
        checked against the store's record of the installation's key (accounts/installkey.py).
        Raises SecurityKeyError when this node lacks the right key, unless ``need_key`` is
        False (an admin command): then only what needs the key fails, with that reason."""
        from mailstead.accounts.installkey import open_keys

        try:
            keys = await open_keys(store, Path(config.data_dir))
        except SecurityKeyError as exc:
            if need_key:
                raise
            service = cls.from_config(store, config, None)
            service.key_problem = str(exc)
            return service
        return cls.from_config(store, config, keys)

    @classmethod
    def from_config(
        cls, store: Store, config: Config, keys: SecurityKeys | None
    ) -> AccountService:
        """The service as ``[security]`` configures it, with ``keys``."""
        sec = config.security
        service = cls(
            store,
            make_hasher(sec.argon2_time_cost, sec.argon2_memory_cost, sec.argon2_parallelism),
            keys=keys,
            security=SecuritySettings(
                max_failures=sec.max_failures,
                failure_window=sec.failure_window,
                block_duration=sec.block_duration,
                failure_delay=sec.failure_delay,
                max_failure_delay=sec.max_failure_delay,
                trusted_networks=sec.trusted_networks,
                audit_retention=sec.audit_retention,
                login_cache_ttl=sec.login_cache_ttl,
                issuer=config.hostname,
            ),
        )
        service.default_quota = config.limits.default_quota
        return service

    @property
    def keys(self) -> SecurityKeys | None:
        """The installation's security key, when this process has it."""
        return self._keys

    @property
    def security(self) -> SecurityAdmin:
        """Two-factor, app-password, audit and block administration (accounts/security.py)."""
        from mailstead.accounts.security import SecurityAdmin

        return SecurityAdmin(self, self._store, self._keys, self.guard, self._clock)

    async def close(self) -> None:
        """Write the queued audit rows; call before closing the store."""
        await self.guard.close()

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

    async def add_user(
        self, address: str, password: Secret, quota: int | DefaultQuota | None = DEFAULT_QUOTA
    ) -> Account:
        """Create an account with its default mailboxes and ``quota`` (octets, None for
        none; by default ``[limits] default_quota``). Raises AccountError (bad address,
        foreign domain, weak password, bad quota) or AlreadyExists."""
        normalised = await self._local_address(address)
        check_password_rules(password, normalised)
        limit = self.default_quota if isinstance(quota, DefaultQuota) else quota
        _check_quota(limit)
        password_hash = await self._hash(hash_password, password, self._hasher)
        account = await self._store.add_account(normalised, password_hash)
        if limit is not None:
            await self._store.set_quota(account.id, limit)
        return account

    async def set_quota(self, address: str, limit: int | None) -> Quota:
        """Set (None: remove) the storage quota of an account; returns the new state.
        Mail already stored stays even when it is over the new quota. Raises NotFound."""
        _check_quota(limit)
        account = await self._existing(address)
        await self._store.set_quota(account.id, limit)
        return await self._store.get_quota(account.id)

    async def quota(self, address: str) -> Quota:
        """The storage use and quota of an account. Raises NotFound."""
        return await self._store.get_quota((await self._existing(address)).id)

    async def _existing(self, address: str) -> Account:
        account = await self.get_user(address)
        if account is None:
            raise NotFound(f"no account {address.strip()[:254]}")
        return account

    async def set_password(self, address: str, password: Secret) -> None:
        """Replace the password of an account. Raises AccountError or NotFound."""
        normalised = normalise_address(address)
        check_password_rules(password, normalised)
        password_hash = await self._hash(hash_password, password, self._hasher)
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
            self._dummy_hash = await self._hash(
                hash_password, Secret("mailstead-dummy-password"), self._hasher
            )
        return self._dummy_hash

    async def authenticate(self, username: str, password: Secret) -> Account | None:
        """The account when ``username`` and ``password`` open it, else None: ``login`` for
        callers without a protocol or client address (kept for compatibility)."""
        result = await self.login(
            username, password, protocol="internal", client_ip="", mechanism="-"
        )
        return result.account if result.ok else None

    async def login(
        self, username: str, password: Secret, *, protocol: str, client_ip: str, mechanism: str
    ) -> LoginResult:
        """Check a login from ``client_ip`` over ``protocol`` ("imap", "pop3", "smtp"...).

        A blocked network is refused before any password check; then the account password
        or an app password is checked (with two-factor authentication on, only an app
        password opens a protocol). Failures are counted, answered after a growing delay,
        and may block the network. Every attempt is audited.
        """
        guard = self.guard
        network = network_key(client_ip)
        user_key = address_key(username[: MAX_ADDRESS + 1])
        # The same guess made several times at once (a client opening five connections, or
        # an attacker repeating one password) is one attempt: one reservation, one hash, one
        # failure; each connection still gets its answer and its audit row.
        key = (network, user_key, protocol, self.login_cache.digest(user_key, password))
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(
                self._attempt(username, password, protocol, client_ip, network, user_key))
            self._flights[key] = flight
            flight.add_done_callback(lambda _f: self._flights.pop(key, None))
        # Shielded: one client hanging up does not cancel the attempt the others wait for.
        checked = await asyncio.shield(flight)
        app = checked.app
        guard.audit(LoginRecord(
            at=self._clock(), account_id=checked.account.id if checked.account else None,
            username=username, protocol=protocol, client_ip=client_ip, mechanism=mechanism,
            success=checked.reason is None, reason=checked.audit_reason,
            app_password=app.name if app else None, app_password_id=app.id if app else None,
        ))
        if checked.reason is LoginFailure.APP_PASSWORD_WRONG_PROTOCOL and app is not None:
            return LoginResult(False, None, checked.reason, app_protocols=app.protocols)
        if checked.reason is not None:
            return LoginResult(False, None, checked.reason)
        return LoginResult(True, checked.account, None, app.name if app else None)

    async def _attempt(
        self, username: str, password: Secret, protocol: str, client_ip: str, network: str,
        user_key: str,
    ) -> _Checked:
        """One attempt: the block list, the reservation and its limit, the check, the
        failure count and delay (the audit is the caller's)."""
        guard = self.guard
        trusted = not client_ip or guard.trusted(client_ip)

        async def refused(reason: LoginFailure) -> _Checked:
            # Audited under the account (a cheap indexed read) so its owner sees the attack.
            return _Checked(await self._find(username), reason, reason.value)

        if not trusted and await guard.blocked(network):
            guard.stats.refused_blocked += 1
            return await refused(LoginFailure.BLOCKED)
        # Reserved before the first await of this attempt, so that every attempt that starts
        # later sees it: parallel attempts are counted when they start, not when they end.
        place = guard.throttle.begin(network, user_key)
        reserved = True
        try:
            give_up = time.monotonic() + SLOT_WAIT_SECONDS
            while True:
                admission = await guard.admit(network, user_key, place, trusted=trusted)
                if admission.allowed:
                    break
                # Not ``release``: a refused attempt frees no place, and waking the other
                # waiters for it would only have them all ask again at once.
                guard.throttle.end(network, user_key)
                reserved = False
                left = give_up - time.monotonic()
                if not admission.may_wait or left <= 0:
                    guard.stats.refused_rate_limited += 1
                    result = await refused(LoginFailure.RATE_LIMITED)
                    await self._sleep(admission.delay)
                    return result
                # Attempts under way are not failures: wait for one of them to end, then
                # ask again (the block, if their failures made one, answers first).
                guard.stats.waited_for_place += 1
                await guard.wait_for_place(network, min(left, 1.0))
                if await guard.blocked(network):
                    guard.stats.refused_blocked += 1
                    return await refused(LoginFailure.BLOCKED)
                place = guard.throttle.begin(network, user_key)
                reserved = True
            guard.stats.password_checks += 1
            # One event per password check (at debug: a guessing attack makes many), so the
            # checks a burst got past the limit can be counted in the log.
            log_event_at(log, logging.DEBUG, "security.password_check", network=network,
                         lane=admission.lane.name.lower(), protocol=protocol)
            checked = await self._check(username, password, protocol, admission.lane)
            delay = 0.0
            if checked.reason is LoginFailure.BAD_CREDENTIALS and not trusted:
                # Counted (on every node when the store is shared) and possibly blocked;
                # then the reservation is released, the attempt now being a failure.
                # The failure answer waits, growing with the network's (or the account's)
                # failures, as Dovecot's auth_failure_delay does: guessing one connection at
                # a time slows down, parallel guessing hits the limit and the block, and a
                # correct password is never delayed (a user who mistyped once is not
                # slowed on every connection their phone opens afterwards).
                delay = await guard.failed(network, user_key)
            elif checked.reason is None:
                guard.succeeded(network, user_key)
            guard.release(network, user_key)
            reserved = False
            if delay > 0:
                await self._sleep(delay)
        finally:
            if reserved:
                guard.release(network, user_key)
        return checked

    async def _check(
        self, username: str, password: Secret, protocol: str, lane: Lane
    ) -> _Checked:
        """The credential check, its hashes queued in ``lane`` of the pool. An unknown or
        malformed username is checked against a dummy hash so the answer takes as long as for
        a real account: timing must not reveal which accounts exist. A full queue refuses
        the attempt as RATE_LIMITED (temporary) without a hash."""
        account = await self._find(username)
        try:
            return await self._check_in(account, password, protocol, lane)
        except PoolFull:
            self.guard.stats.refused_busy += 1
            return _Checked(account, LoginFailure.RATE_LIMITED, "busy")

    async def _check_in(
        self, account: Account | None, password: Secret, protocol: str, lane: Lane
    ) -> _Checked:
        bad = _Checked(None, LoginFailure.BAD_CREDENTIALS, "bad_credentials")
        if account is None or len(password.reveal()) > MAX_LENGTH:
            await self._hash(verify_password, await self._dummy(), password, self._hasher,
                             lane=lane)
            return bad
        candidate = apppasswords.normalise(password.reveal())
        if candidate is not None and self._keys is not None:
            digest = self._keys.digest("app", candidate)
            match: AppPassword | None = None
            for app in await self._store.list_app_passwords(account.id):
                # Every stored digest is compared, in constant time.
                if equal(app.digest, digest) and match is None:
                    match = app
            if match is not None:
                if match.protocols and protocol not in match.protocols:
                    return _Checked(account, LoginFailure.APP_PASSWORD_WRONG_PROTOCOL,
                                    f"app_password_not_for_{protocol}"[:40], match)
                return _Checked(account, None, "ok", match)
        current = stored = account.password_hash
        ok, cached = await self.login_cache.verify(account, password, lambda: self._hash(
            verify_password, current, password, self._hasher, lane=lane))
        if not ok:
            return _Checked(account, LoginFailure.BAD_CREDENTIALS, "bad_credentials")
        self.guard.stats.cache_hits += cached
        if needs_rehash(account.password_hash, self._hasher):
            try:
                new_hash = await self._hash(hash_password, password, self._hasher, lane=lane)
                await self._store.set_password(account.address, new_hash)
            except NotFound:
                return bad  # removed while we were checking
            stored = new_hash
        # Read on every login, cached or not: enabling 2FA applies to the very next login.
        if await self._store.get_second_factor(account.id) is not None:
            self.login_cache.forget(account.id)
            return _Checked(account, LoginFailure.APP_PASSWORD_REQUIRED, "app_password_required")
        if not cached:  # entries are not refreshed: argon2 runs again once one expires
            self.login_cache.remember(
                Account(account.id, account.address, stored, account.created_at), password)
        return _Checked(account, None, "ok")

    async def _hash(self, fn: Callable[..., T], *args: object, lane: Lane = Lane.CLEAN) -> T:
        return await self.hash_pool.run(lane, fn, *args)

    async def _find(self, username: str) -> Account | None:
        """The account a client names, or None (also for a malformed or oversized name)."""
        if len(username) > MAX_ADDRESS:
            return None
        try:
            return await self._store.get_account(normalise_address(username))
        except AccountError:
            return None

    async def verify_second_factor(self, account: Account, code: str) -> bool:
        """True when ``code`` is a current TOTP code of the account (RFC 6238, one step of
        drift each way, each code once) or one of its unused recovery codes (then used up)."""
        return await self.check_second_factor(account, code) is CodeCheck.OK

    async def check_second_factor(self, account: Account, code: str) -> CodeCheck:
        """As ``verify_second_factor``, telling a wrong code from a right one used already
        (so the person can be told to wait for the next code)."""
        return await self.security.check_second_factor(account, code)
