"""What a login attempt returns, the security settings, and the machinery around the password
check that every protocol shares: the block list (kept in the store, cached briefly), the
failure counters (in memory, or in the store when several nodes share it: throttle.py) and
the buffered audit log.

A successful password check is remembered for ``login_cache_ttl`` seconds (``LoginCache``),
like Dovecot's auth_cache: clients open several connections, and each argon2id verification
costs a tenth of a second of CPU or more. The cache only ever replaces the argon2 step; the
block list, the delays, the two-factor rule and the audit apply to every attempt.

The audit is written in batches (one transaction per ``AUDIT_FLUSH_DELAY`` or
``AUDIT_BATCH`` rows) so that a guessing attack costs the store one commit per batch, not one
fsync per attempt; the buffer is bounded and counts what it had to drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from mailstead.accounts import apppasswords
from mailstead.accounts.hashpool import Lane
from mailstead.accounts.keys import SecurityKeys
from mailstead.accounts.throttle import (
    FailureCounter,
    MemoryCounter,
    StoreCounter,
    Throttle,
    failure_delay,
    rate_limited,
)
from mailstead.core.errors import StoreError
from mailstead.core.network import parse_ip
from mailstead.core.secret import Secret
from mailstead.observability.log import log_event, log_event_at
from mailstead.storage.interfaces import (
    Account,
    IpBlock,
    LoginRecord,
    SecurityStore,
    SharedStateStore,
)

log = logging.getLogger("mailstead.security")

BLOCK_CACHE_SECONDS = 2.0  # how soon a block or an unblock made by another process applies
AUDIT_FLUSH_DELAY = 0.25
AUDIT_BATCH = 500
AUDIT_MAX_PENDING = 20_000
PRUNE_INTERVAL = 3600.0
MAX_USERNAME_AUDITED = 200
# How long an attempt waits for earlier attempts of its network to end before it is refused:
# a phone or a family behind one NAT opens many connections at once, and each must get in.
SLOT_WAIT_SECONDS = 20.0
LOGIN_CACHE_ENTRIES = 10_000  # LRU bound: about 300 bytes each, so a few MiB at most
PROVEN_SECONDS = 86400.0  # how long a network that opened an account keeps the first lane
PROVEN_ENTRIES = 10_000  # LRU bound of the (network, account) pairs remembered


class LoginFailure(Enum):
    """Why a login failed, in the terms each protocol maps to its own reply."""

    BAD_CREDENTIALS = "bad_credentials"
    # 2FA is on and the account password was given
    APP_PASSWORD_REQUIRED = "app_password_required"  # noqa: S105
    BLOCKED = "blocked"  # the client's network is blocked: no password was checked
    # its failures and attempts under way reach the limit: no password was checked
    RATE_LIMITED = "rate_limited"
    # a right app password, on a protocol it was not made for (LoginResult.app_protocols)
    APP_PASSWORD_WRONG_PROTOCOL = "app_password_wrong_protocol"  # noqa: S105


@dataclass(frozen=True, slots=True)
class LoginResult:
    ok: bool
    account: Account | None = None
    reason: LoginFailure | None = None
    app_password_name: str | None = None
    app_protocols: tuple[str, ...] = ()  # with APP_PASSWORD_WRONG_PROTOCOL: what it opens

    @property
    def detail(self) -> str | None:
        """A client-facing explanation more specific than "invalid credentials", when the
        failure has one that leaks nothing (see apppasswords.scope_text)."""
        if self.reason is LoginFailure.APP_PASSWORD_WRONG_PROTOCOL:
            return apppasswords.scope_text(self.app_protocols)
        return None

    @property
    def temporary(self) -> bool:
        """True for BLOCKED and RATE_LIMITED: the protocols answer with a temporary failure."""
        return self.reason in (LoginFailure.BLOCKED, LoginFailure.RATE_LIMITED)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """``[security]`` of the config, minus the argon2 parameters (which make the hasher)."""

    max_failures: int = 10
    failure_window: float = 600.0
    block_duration: float = 900.0
    failure_delay: float = 0.5
    max_failure_delay: float = 8.0
    trusted_networks: tuple[str, ...] = ()
    audit_retention: float = 90 * 86400.0
    login_cache_ttl: float = 300.0  # seconds a verified password skips argon2; 0 = off
    issuer: str = "Mailstead"  # shown by authenticator apps next to the account


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether an attempt (reserved with ``Throttle.begin``) may have its password checked:
    if so in which hashing lane, if not how long its refusal waits."""

    allowed: bool
    lane: Lane = Lane.CLEAN
    delay: float = 0.0
    # Refused only for the attempts of the network under way: once some of them end, the
    # attempt may be admitted (a correct password among them is not a failure).
    may_wait: bool = False


@dataclass
class GuardStats:
    """Counters for tests, benchmarks and the log."""

    attempts: int = 0
    password_checks: int = 0
    cache_hits: int = 0  # password checks answered without argon2
    refused_blocked: int = 0
    refused_rate_limited: int = 0
    waited_for_place: int = 0
    refused_busy: int = 0  # the hashing queue of the attempt's lane was full
    blocks: int = 0
    audit_dropped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Guard:
    """Block list, failure counters and audit buffer of one process.

    With ``shared`` (a store other nodes use too) the failure counts are read from and
    written to it, so every node delays and blocks a guessing network alike; without, they
    stay in this process's ``throttle``. Attempts under way are reserved per process, from
    their start (``throttle.begin``) to their outcome, and added to the committed failures.
    """

    def __init__(
        self,
        store: SecurityStore,
        settings: SecuritySettings,
        clock: Callable[[], float],
        *,
        shared: SharedStateStore | None = None,
    ) -> None:
        self._store = store
        self.settings = settings
        self._clock = clock
        self.throttle = Throttle(
            max_failures=settings.max_failures,
            window=settings.failure_window,
            delay=settings.failure_delay,
            max_delay=settings.max_failure_delay,
        )
        self.failures: FailureCounter = (
            MemoryCounter(self.throttle) if shared is None
            else StoreCounter(shared, settings.failure_window, self.throttle)
        )
        self._trusted = tuple(ipaddress.ip_network(n) for n in settings.trusted_networks)
        self._blocks: dict[str, float] = {}
        self._blocks_read_at = float("-inf")
        self._blocks_reading: asyncio.Future[None] | None = None
        self._made: dict[str, tuple[float, float]] = {}  # blocks made lately: (at, until)
        self._pending: list[LoginRecord] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_prune = float("-inf")
        self._proven: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._freed: dict[str, asyncio.Event] = {}  # set when an attempt of the network ends
        self.stats = GuardStats()

    def release(self, network: str, account: str = "") -> None:
        """End the reservation of ``throttle.begin`` and wake the attempts of the same
        network that wait for a place (``wait_for_place``)."""
        self.throttle.end(network, account)
        freed = self._freed.pop(network, None)
        if freed is not None:
            freed.set()

    async def wait_for_place(self, network: str, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until an attempt of ``network`` under way ends.
        Only attempts refused with ``may_wait`` wait, and those exist only while others of
        their network are under way, so the event is always set and removed by one of them."""
        freed = self._freed.setdefault(network, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(freed.wait(), timeout)

    def trusted(self, client_ip: str) -> bool:
        addr = parse_ip(client_ip)
        return addr is not None and any(addr in net for net in self._trusted)

    async def blocked(self, network: str) -> bool:
        """Whether ``network`` is blocked now, from a copy of the store's block table at most
        BLOCK_CACHE_SECONDS old. A store failure keeps the last known blocks (fail safe for
        the owner: an outage never blocks anyone new)."""
        now = self._clock()
        if now - self._blocks_read_at >= BLOCK_CACHE_SECONDS:
            if self._blocks_reading is None:
                # One read at a time: the attempts that arrive meanwhile wait for the same
                # read rather than judging by the stale copy (a block stored moments ago by
                # another node or the CLI would let them through).
                self._blocks_reading = asyncio.ensure_future(self._read_blocks(now))
            # Shielded: one client hanging up does not cancel the read the others wait for.
            await asyncio.shield(self._blocks_reading)
        until = self._blocks.get(network)
        return until is not None and until > now

    async def _read_blocks(self, now: float) -> None:
        try:
            rows = await self._store.active_blocks(now)
        except StoreError as exc:
            log_event_at(log, logging.WARNING, "security.blocks_unreadable", error=str(exc))
        else:
            # A block this process made shortly before or during the read may not be in it
            # yet (it is stored after a few awaits): it stays, or a burst would pass the
            # limit again meanwhile.
            self._made = {n: m for n, m in self._made.items()
                          if m[0] > now - BLOCK_CACHE_SECONDS}
            self._blocks = {b.network: b.until for b in rows}
            self._blocks.update({n: until for n, (_, until) in self._made.items()})
            self._blocks_read_at = now
        finally:
            self._blocks_reading = None

    async def admit(
        self, network: str, account: str, place: int, *, trusted: bool = False
    ) -> Admission:
        """Decide an attempt already reserved with ``place = throttle.begin(network,
        account)``.

        Refused unchecked when the network's failures plus its place among the attempts
        under way pass ``max_failures``: even if every one of them failed, no more than the
        limit would have been checked. Where only the attempts under way stand in the way
        (``may_wait``), the caller waits for them to end and asks again: attempts under way
        are not failures, so correct passwords from a busy network all get in, while
        parallel guessing still gets no more checks than the failures left before the block.
        The refusal waits as a failure would (at least one failure's worth), so a burst
        costs the attacker time as well as its answers.
        Otherwise the lane: ``PROVEN`` for a network that opened this account lately,
        ``CLEAN`` when neither the network nor the account has failed or has other attempts
        under way, else ``SUSPECT``.
        """
        now = self._clock()
        proven = self._is_proven(network, account, now)
        if trusted:
            return Admission(True, Lane.PROVEN if proven else Lane.CLEAN)
        s = self.settings
        t = self.throttle
        # This process's own counts never exceed the store's (each failure is counted in
        # both): when they already refuse, the store is not asked, which keeps a flood's
        # cost to the shared store down.
        failures = t.network_failures(network, now)
        if rate_limited(s.max_failures, failures, place):
            account_failures = t.account_failures(account, now)
        else:
            failures, account_failures = await self.failures.counts(network, account, now)
        if rate_limited(s.max_failures, failures, place):
            delay = failure_delay(s.failure_delay, s.max_failure_delay, max(1, failures),
                                  account_failures)
            return Admission(False, Lane.SUSPECT, delay,
                             may_wait=not rate_limited(s.max_failures, failures, 1))
        if proven:
            return Admission(True, Lane.PROVEN)
        crowded = t.in_flight(network) > 1 or t.account_in_flight(account) > 1
        if failures or account_failures or crowded:
            return Admission(True, Lane.SUSPECT)
        return Admission(True, Lane.CLEAN)

    def succeeded(self, network: str, account: str) -> None:
        """Remember that ``network`` opened ``account``: its next attempts take the first
        lane of the hashing pool, ahead of any guessing. Bounded, least recently used."""
        key = (network, account)
        self._proven[key] = self._clock() + PROVEN_SECONDS
        self._proven.move_to_end(key)
        while len(self._proven) > PROVEN_ENTRIES:
            self._proven.popitem(last=False)

    def _is_proven(self, network: str, account: str, now: float) -> bool:
        until = self._proven.get((network, account))
        if until is None:
            return False
        if until <= now:
            del self._proven[(network, account)]
            return False
        return True

    async def failed(self, network: str, account: str) -> float:
        """Counts a failed login (or second factor) of ``network`` for ``account`` and blocks
        the network once it reaches ``max_failures``; returns the seconds the failure answer
        waits (0 for the attempt that blocked: the block answers the next ones)."""
        now = self._clock()
        mine, theirs = await self.failures.record(network, account, now)
        if mine >= self.settings.max_failures:
            await self.block(network, mine)
            return 0.0
        s = self.settings
        return failure_delay(s.failure_delay, s.max_failure_delay, mine, theirs)

    async def block(self, network: str, failures: int) -> None:
        now = self._clock()
        until = now + self.settings.block_duration
        self._blocks[network] = until
        self._made[network] = (now, until)
        await self.failures.forget(network)
        self.stats.blocks += 1
        log_event_at(log, logging.WARNING, "security.blocked", network=network,
                     failures=failures, seconds=int(self.settings.block_duration))
        reason = f"{failures} failed logins in {int(self.settings.failure_window)} s"
        try:
            await self._store.add_block(IpBlock(network, until, failures, now, reason))
        except StoreError as exc:  # still blocked in this process
            log_event_at(log, logging.ERROR, "security.block_not_stored", network=network,
                         error=str(exc))

    def audit(self, record: LoginRecord) -> None:
        """Queue one audit row; written within AUDIT_FLUSH_DELAY seconds."""
        self.stats.attempts += 1
        self.stats.by_reason[record.reason] = self.stats.by_reason.get(record.reason, 0) + 1
        if len(self._pending) >= AUDIT_MAX_PENDING:
            self.stats.audit_dropped += 1
            return
        self._pending.append(
            LoginRecord(
                at=record.at,
                account_id=record.account_id,
                username=record.username[:MAX_USERNAME_AUDITED],
                protocol=record.protocol[:20],
                client_ip=record.client_ip[:64],
                mechanism=record.mechanism[:40],
                success=record.success,
                reason=record.reason,
                app_password=record.app_password,
                app_password_id=record.app_password_id,
            )
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(AUDIT_FLUSH_DELAY)
        await self.flush()

    async def flush(self) -> None:
        """Write every queued audit row now; prune old rows once an hour."""
        while self._pending:
            batch, self._pending = self._pending[:AUDIT_BATCH], self._pending[AUDIT_BATCH:]
            try:
                await self._store.add_login_records(batch)
            except StoreError as exc:
                self.stats.audit_dropped += len(batch)
                log_event_at(log, logging.ERROR, "security.audit_failed", rows=len(batch),
                             error=str(exc))
        now = self._clock()
        if now - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = now
            try:
                pruned = await self._store.prune_logins(now - self.settings.audit_retention)
            except StoreError as exc:
                log_event_at(log, logging.ERROR, "security.prune_failed", error=str(exc))
            else:
                if pruned:
                    log_event(log, "security.audit_pruned", rows=pruned)

    async def close(self) -> None:
        """Flush what is queued; stop the background flush."""
        task, self._flusher = self._flusher, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()


@dataclass(frozen=True, slots=True)
class _Remembered:
    digest: bytes  # HMAC-SHA256(key, address || password)
    password_hash: str  # the stored hash the password was verified against
    expires: float


class LoginCache:
    """Verified passwords of the last ``ttl`` seconds, by account id, bounded and LRU.

    An entry holds no password: only a keyed digest of address and password (with the
    server's security key, so a memory dump allows no offline guessing without the key
    file either) and the stored argon2 hash it was verified against. It counts only while
    that hash is still the account's: a password change or removal invalidates it at the
    next login, as the caller passes the account as just read from the store. Entries are
    never refreshed, so argon2 runs at least once per ``ttl`` for an account in use.
    """

    def __init__(
        self,
        keys: SecurityKeys | None,
        ttl: float,
        clock: Callable[[], float],
        max_entries: int = LOGIN_CACHE_ENTRIES,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._max = max_entries
        # Without a key file (a process with no data directory) a per-process random key.
        self._mac_key = secrets.token_bytes(32)
        self._keys = keys
        self._entries: OrderedDict[int, _Remembered] = OrderedDict()
        self._running: dict[tuple[int, bytes, str], asyncio.Task[bool]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, name: str, password: Secret) -> bytes:
        """The keyed digest of a (name, password) pair: equal pairs, equal digests; nothing
        about the password can be learnt from it without the key."""
        return self._digest(name, password)

    def _digest(self, address: str, password: Secret) -> bytes:
        # Length-prefixed, so no (address, password) pair can collide with another.
        text = f"{len(address)}:{address}{password.reveal()}"
        if self._keys is not None:
            return bytes.fromhex(self._keys.digest("login-cache", text))
        return hmac.new(self._mac_key, text.encode("utf-8"), hashlib.sha256).digest()

    def _hit(self, account: Account, digest: bytes) -> bool:
        entry = self._entries.get(account.id)
        if entry is None:
            return False
        if entry.expires <= self._clock() or not hmac.compare_digest(
            entry.password_hash.encode(), account.password_hash.encode()
        ):
            del self._entries[account.id]  # expired, or the password was changed
            return False
        if not hmac.compare_digest(entry.digest, digest):
            return False  # another password: argon2 decides (and the entry stays)
        self._entries.move_to_end(account.id)
        return True

    async def verify(
        self, account: Account, password: Secret, check: Callable[[], Awaitable[bool]]
    ) -> tuple[bool, bool]:
        """``(matches, from_cache)``: a remembered answer, else ``check()`` (the argon2
        verification). Concurrent checks of the same password against the same hash share
        one run, so a client opening five connections at once costs one argon2."""
        if self.ttl <= 0:
            return await check(), False
        digest = self._digest(account.address, password)
        if self._hit(account, digest):
            return True, True
        key = (account.id, digest, account.password_hash)
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(check())
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))
        # Shielded: one cancelled waiter (a client that hung up) does not cancel the others.
        return await asyncio.shield(task), False

    def remember(self, account: Account, password: Secret) -> None:
        """Call after a login succeeded with the account password (never after a failure)."""
        if self.ttl <= 0:
            return
        self._entries[account.id] = _Remembered(
            self._digest(account.address, password), account.password_hash,
            self._clock() + self.ttl,
        )
        self._entries.move_to_end(account.id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, account_id: int) -> None:
        self._entries.pop(account_id, None)
