"""Failure counters for brute-force protection, in memory (per process), the clock passed in.

Counters are per client network (an IPv4 address, or an IPv6 /64: one customer of an ISP or
one server gets a whole /64, RFC 6177 section 2, so counting single IPv6 addresses would let
an attacker rotate through 2^64 of them) and per account. A network's failures delay its
next attempts and, past ``max_failures`` within ``window``, block it (the block itself is
kept in the store so every process and the CLI see it). Account failures only ever slow down
networks that have failed themselves, so an attacker can never lock the owner out.
Every table is bounded, so a flood of addresses cannot grow memory without limit.

Where the counts live is a ``FailureCounter``: ``MemoryCounter`` (the ``Throttle`` tables of
this process, for the embedded store, which has one node) or ``StoreCounter`` (the store's
``auth_failures`` table, when several nodes share a PostgreSQL store, so failures on one node
delay and block the attacker on every other). The policy (``failure_delay``, ``rate_limited``)
is the same for both.

An attempt is counted as under way from the moment it starts (``Throttle.begin`` reserves a
slot for its network and its account before any await, let alone the password hash) until its
outcome is known (``end``: released after a success, or once its failure is recorded), so a
burst of parallel guesses sees every sibling that started before it and no more than
``max_failures`` of them reach the password check at once. Attempts under way are not
failures: one that finds no place waits for earlier ones to end (``Guard.wait_for_place``)
rather than being refused, so a household behind one NAT that mistyped once still gets every
device in, while guesses get no more checks than the failures left before the block.
Attempts under way are counted per process:
with a shared store, each node adds its own reservations to the committed failures of every
node, so N nodes let at most N times the limit through at once (and the block that follows
stops every node).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from typing import Protocol

from mailstead.core.errors import StoreError
from mailstead.core.network import network_key as network_key  # the unit counted
from mailstead.observability.log import log_event_at
from mailstead.storage.interfaces import SharedStateStore

log = logging.getLogger("mailstead.security")

MAX_KEYS = 100_000
ACCOUNT_HISTORY = 64


def parse_network(text: str) -> str:
    """What ``security unblock`` accepts (an address, or the /64 of an IPv6 address) in
    ``network_key`` form. Raises ValueError."""
    value = text.strip()
    if "/" in value:
        net = ipaddress.ip_network(value, strict=False)
        if net.version == 6 and net.prefixlen == 64:
            return str(net)
        if net.version == 4 and net.prefixlen == 32:
            return str(net.network_address)
        raise ValueError("give an address, or an IPv6 /64")
    ipaddress.ip_address(value)
    return network_key(value)


def failure_delay(delay: float, max_delay: float, network: int, account: int) -> float:
    """Seconds a failure answer waits: 0 for a network without recent failures (the owner on
    a clean network is never slowed), else ``delay`` doubled per failure of the network or of
    the account, whichever has more, up to ``max_delay``."""
    if network == 0 or delay <= 0:
        return 0.0
    worst = max(network, account)
    return float(min(max_delay, delay * 2 ** min(worst - 1, 32)))


def rate_limited(max_failures: int, failures: int, in_flight: int) -> bool:
    """True when the network's failures plus its attempts under way (``in_flight``, counting
    this one) pass ``max_failures``: had they all failed, the network would be blocked before
    this attempt, so parallel guessing stops at the threshold without a password check."""
    return failures + in_flight > max_failures


class Throttle:
    """Sliding-window failure counts and the delay each attempt waits."""

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        delay: float,
        max_delay: float,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.delay = delay
        self.max_delay = max_delay
        self._max_keys = max_keys
        self._networks: dict[str, deque[float]] = {}
        self._accounts: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}
        self._account_in_flight: dict[str, int] = {}

    def _count(self, table: dict[str, deque[float]], key: str, now: float) -> int:
        times = table.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del table[key]
            return 0
        return len(times)

    def network_failures(self, network: str, now: float) -> int:
        return self._count(self._networks, network, now)

    def account_failures(self, account: str, now: float) -> int:
        return self._count(self._accounts, account, now)

    def delay_for(self, network: str, account: str, now: float) -> float:
        """``failure_delay`` from this process's counts."""
        mine = self.network_failures(network, now)
        theirs = self.account_failures(account, now) if mine else 0
        return failure_delay(self.delay, self.max_delay, mine, theirs)

    def over_limit(self, network: str, now: float) -> bool:
        """``rate_limited`` from this process's counts (call after ``begin``)."""
        failures = self.network_failures(network, now)
        return rate_limited(self.max_failures, failures, self.in_flight(network))

    def in_flight(self, network: str) -> int:
        """Attempts of ``network`` under way in this process (between ``begin`` and ``end``)."""
        return self._in_flight.get(network, 0)

    def account_in_flight(self, account: str) -> int:
        """Attempts for ``account`` under way in this process, from any network."""
        return self._account_in_flight.get(account, 0)

    def begin(self, network: str, account: str = "") -> int:
        """Reserve a slot for an attempt that starts now (synchronously: before any await);
        returns its place, the network's attempts under way including it. Of any attempts
        under way together, the last to begin has a place at least their number, so
        deciding each on its place (``rate_limited``) admits no more than the limit at once,
        even when the decision awaits a store read while later attempts begin."""
        place = _up(self._in_flight, network)
        if account:
            _up(self._account_in_flight, account)
        return place

    def end(self, network: str, account: str = "") -> None:
        """Release the slot of ``begin`` once the attempt's outcome is known."""
        _down(self._in_flight, network)
        if account:
            _down(self._account_in_flight, account)

    def record_failure(self, network: str, account: str, now: float) -> int:
        """Counts one failure; returns the network's failures within the window."""
        self._add(self._accounts, account, now, ACCOUNT_HISTORY)
        self._add(self._networks, network, now, self.max_failures + 1)
        return self.network_failures(network, now)

    def forget(self, network: str) -> None:
        """After a block: the network starts afresh once the block ends or is lifted."""
        self._networks.pop(network, None)

    def _add(self, table: dict[str, deque[float]], key: str, now: float, cap: int) -> None:
        times = table.get(key)
        if times is None:
            if len(table) >= self._max_keys:
                self._evict(table, now)
            times = table[key] = deque(maxlen=cap)
        times.append(now)

    def _evict(self, table: dict[str, deque[float]], now: float) -> None:
        for key in [k for k, t in table.items() if not t or t[-1] <= now - self.window]:
            del table[key]
        while len(table) >= self._max_keys:  # still full: drop the oldest entries
            del table[next(iter(table))]


def _up(table: dict[str, int], key: str) -> int:
    count = table[key] = table.get(key, 0) + 1
    return count


def _down(table: dict[str, int], key: str) -> None:
    left = table.get(key, 0) - 1
    if left > 0:
        table[key] = left
    else:
        table.pop(key, None)


class FailureCounter(Protocol):
    """Where failed logins are counted: (network failures, account failures) within the
    failure window, as of ``now``."""

    async def counts(self, network: str, account: str, now: float) -> tuple[int, int]: ...

    async def record(self, network: str, account: str, now: float) -> tuple[int, int]:
        """Counts one failure; returns the counts including it."""

    async def forget(self, network: str) -> None:
        """After a block: the network starts afresh once the block ends or is lifted."""


class MemoryCounter:
    """The counts of one process, in a ``Throttle`` (the embedded store: one node)."""

    def __init__(self, throttle: Throttle) -> None:
        self.throttle = throttle

    async def counts(self, network: str, account: str, now: float) -> tuple[int, int]:
        t = self.throttle
        return t.network_failures(network, now), t.account_failures(account, now)

    async def record(self, network: str, account: str, now: float) -> tuple[int, int]:
        mine = self.throttle.record_failure(network, account, now)
        return mine, self.throttle.account_failures(account, now)

    async def forget(self, network: str) -> None:
        self.throttle.forget(network)


class StoreCounter:
    """The counts of every node, in the store's ``auth_failures`` table (issue 10).

    Each failure is also counted in ``local`` (this process's ``Throttle``), which answers
    while the store cannot: an outage of the database never stops the counting on this node.
    The rows are deleted past the window by the hourly maintenance (``prune_auth_failures``).
    """

    def __init__(self, store: SharedStateStore, window: float, local: Throttle) -> None:
        self._store = store
        self._window = window
        self._local = MemoryCounter(local)

    async def counts(self, network: str, account: str, now: float) -> tuple[int, int]:
        try:
            return await self._store.auth_failures(network, account, now - self._window)
        except StoreError as exc:
            log_event_at(log, logging.WARNING, "security.failures_unreadable", error=str(exc))
            return await self._local.counts(network, account, now)

    async def record(self, network: str, account: str, now: float) -> tuple[int, int]:
        local = await self._local.record(network, account, now)
        try:
            await self._store.add_auth_failure(network, account, now)
            return await self._store.auth_failures(network, account, now - self._window)
        except StoreError as exc:
            log_event_at(log, logging.WARNING, "security.failure_not_stored", network=network,
                         error=str(exc))
            return local

    async def forget(self, network: str) -> None:
        await self._local.forget(network)
        try:
            await self._store.clear_auth_failures(network)
        except StoreError as exc:  # the rows age out of the window, and the block holds
            log_event_at(log, logging.WARNING, "security.failures_not_cleared",
                         network=network, error=str(exc))
