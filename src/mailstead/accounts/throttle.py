"""Failure counters for brute-force protection, in memory (per process), the clock passed in.

Counters are per client network (an IPv4 address, or an IPv6 /64: one customer of an ISP or
one server gets a whole /64, RFC 6177 section 2, so counting single IPv6 addresses would let
an attacker rotate through 2^64 of them) and per account. A network's failures delay its
next attempts and, past ``max_failures`` within ``window``, block it (the block itself is
kept in the store so every process and the CLI see it). Account failures only ever slow down
networks that have failed themselves, so an attacker can never lock the owner out.
Every table is bounded, so a flood of addresses cannot grow memory without limit.
"""

from __future__ import annotations

import ipaddress
from collections import deque

MAX_KEYS = 100_000
ACCOUNT_HISTORY = 64


def network_key(ip: str) -> str:
    """The unit that is counted and blocked: ``192.0.2.7`` or ``2001:db8:1:2::/64``.
    IPv4-mapped IPv6 counts as IPv4; an unparsable peer (a Unix socket...) counts as itself."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip[:64] or "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


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
        """Seconds to wait before checking: 0 for a network without recent failures (the
        owner on a clean network is never slowed), else ``delay`` doubled per failure of the
        network or of the account, whichever has more, up to ``max_delay``."""
        mine = self.network_failures(network, now)
        if mine == 0 or self.delay <= 0:
            return 0.0
        worst = max(mine, self.account_failures(account, now))
        return float(min(self.max_delay, self.delay * 2 ** min(worst - 1, 32)))

    def over_limit(self, network: str, now: float) -> bool:
        """True when a network that has failed already has so many attempts under way that
        they could pass the threshold together: parallel guessing stops at the threshold."""
        failures = self.network_failures(network, now)
        return failures > 0 and failures + self._in_flight.get(network, 0) >= self.max_failures

    def begin(self, network: str) -> None:
        self._in_flight[network] = self._in_flight.get(network, 0) + 1

    def end(self, network: str) -> None:
        left = self._in_flight.get(network, 0) - 1
        if left > 0:
            self._in_flight[network] = left
        else:
            self._in_flight.pop(network, None)

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
