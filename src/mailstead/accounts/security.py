"""Administration of account security: two-factor enrolment, recovery codes, app passwords,
the login audit and IP blocks. Used by the CLI (and later the web pages) through
``AccountService.security``; the login path itself lives in service.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailstead.accounts import apppasswords, twofactor
from mailstead.accounts.keys import SecurityKeys
from mailstead.accounts.login import Guard
from mailstead.accounts.throttle import parse_network
from mailstead.accounts.twofactor import CodeCheck
from mailstead.core.errors import MailsteadError, NotFound
from mailstead.storage.interfaces import Account, AppPassword, IpBlock, LoginRecord, Store

if TYPE_CHECKING:
    from mailstead.accounts.service import AccountService


class SecurityError(MailsteadError, ValueError):
    """A security request the service refuses; the message says what to do."""


class SecurityAdmin:
    """A view of one AccountService for security administration."""

    def __init__(
        self,
        accounts: AccountService,
        store: Store,
        keys: SecurityKeys | None,
        guard: Guard,
        clock: Callable[[], float],
    ) -> None:
        self._accounts = accounts
        self._store = store
        self._keys_or_none = keys
        self._guard = guard
        self._clock = clock

    @property
    def _keys(self) -> SecurityKeys:
        if self._keys_or_none is None:
            raise SecurityError(self._accounts.key_problem or
                                "no security key: this needs the data directory's security.key")
        return self._keys_or_none

    async def account(self, address: str) -> Account:
        """The account of ``address``; raises NotFound."""
        account = await self._accounts.get_user(address)
        if account is None:
            raise NotFound(f"no account {address.strip()}")
        return account

    # Two-factor ------------------------------------------------------------------------

    async def begin_two_factor(self, address: str) -> twofactor.TwoFactorSetup:
        """A new TOTP secret for the account; nothing changes until ``confirm_two_factor``."""
        account = await self.account(address)
        return twofactor.new_setup(account.address, self._guard.settings.issuer)

    async def confirm_two_factor(self, setup: twofactor.TwoFactorSetup, code: str) -> list[str]:
        """Turn 2FA on with ``setup`` once ``code`` matches it (proof the app has the secret);
        returns the ten recovery codes, shown once. Replaces an earlier enrolment."""
        account = await self.account(setup.address)
        counter = twofactor.match_totp(setup.secret, code, self._clock())
        if counter is None:
            raise SecurityError(
                "the code does not match: check the phone's clock and type the current code; "
                "two-factor authentication was not turned on"
            )
        codes = twofactor.new_recovery_codes()
        digests = [self._keys.digest("recovery", twofactor.normalise_code(c)) for c in codes]
        secret = self._keys.encrypt(setup.secret, str(account.id))
        await self._store.set_second_factor(account.id, secret, digests, self._clock())
        await self._store.use_totp_counter(account.id, counter)  # that code is spent
        return codes

    async def disable_two_factor(self, address: str) -> bool:
        """Turn 2FA off; False when it was off. App passwords stay valid."""
        account = await self.account(address)
        return await self._store.remove_second_factor(account.id)

    async def two_factor_status(self, address: str) -> tuple[bool, int]:
        """(enabled, recovery codes left)."""
        account = await self.account(address)
        state = await self._store.get_second_factor(account.id)
        return (False, 0) if state is None else (True, state.recovery_codes_left)

    async def check_second_factor(self, account: Account, code: str) -> CodeCheck:
        """See ``AccountService.check_second_factor``."""
        state = await self._store.get_second_factor(account.id)
        if state is None or len(code) > 64:
            return CodeCheck.WRONG
        text = twofactor.normalise_code(code)
        if twofactor.looks_like_recovery_code(text):
            used = await self._store.use_recovery_code(
                account.id, self._keys.digest("recovery", text)
            )
            return CodeCheck.OK if used else CodeCheck.WRONG
        secret = self._keys.decrypt(state.secret, str(account.id))
        counter = twofactor.match_totp(secret, text, self._clock())
        if counter is None:
            return CodeCheck.WRONG
        if await self._store.use_totp_counter(account.id, counter):
            return CodeCheck.OK
        # RFC 6238 section 5.2: a code is accepted once; this one matched a time step that
        # was used already (or one older than the last used).
        return CodeCheck.REUSED

    # App passwords ---------------------------------------------------------------------

    async def add_app_password(
        self, address: str, name: str, protocols: str | None = None
    ) -> tuple[AppPassword, str]:
        """Create an app password; returns it and its text (``abcd efgh ijkl mnop``), which
        is never stored and cannot be shown again."""
        try:
            label = apppasswords.check_name(name)
            allowed = apppasswords.parse_protocols(protocols)
        except ValueError as exc:
            raise SecurityError(str(exc)) from None
        account = await self.account(address)
        existing = await self._store.list_app_passwords(account.id)
        if len(existing) >= apppasswords.MAX_PER_ACCOUNT:
            raise SecurityError(
                f"{account.address} has {len(existing)} app passwords, the most allowed; "
                "revoke unused ones first"
            )
        text = apppasswords.generate()
        compact = apppasswords.normalise(text)
        assert compact is not None
        digest = self._keys.digest("app", compact)
        app = await self._store.add_app_password(
            account.id, label, digest, allowed, self._clock()
        )
        return app, text

    async def list_app_passwords(self, address: str) -> list[AppPassword]:
        account = await self.account(address)
        return await self._store.list_app_passwords(account.id)

    async def revoke_app_password(self, address: str, name: str) -> None:
        """Effective for the very next login (nothing caches app passwords). Raises
        NotFound."""
        account = await self.account(address)
        await self._store.revoke_app_password(account.id, name.strip())

    # Audit and blocks ------------------------------------------------------------------

    async def logins(self, address: str, limit: int = 50) -> list[LoginRecord]:
        account = await self.account(address)
        await self._guard.flush()
        return await self._store.list_logins(account.id, max(1, min(limit, 10_000)))

    async def blocked(self) -> list[IpBlock]:
        return await self._store.active_blocks(self._clock())

    async def unblock(self, network: str) -> str:
        """Lift the block of an address (or IPv6 /64); returns the network. Raises NotFound
        when it is not blocked, SecurityError when ``network`` is not an address."""
        try:
            key = parse_network(network)
        except ValueError:
            raise SecurityError(
                f"{network.strip()[:60]!r} is not an IP address (or an IPv6 /64)"
            ) from None
        if not await self._store.remove_block(key):
            raise NotFound(f"{key} is not blocked (see: mailstead security blocked)")
        return key
