"""Greylisting: the first message of an unknown (client network, sender, recipient) triplet
is asked to come back later; real MTAs retry (RFC 5321 section 4.5.4.1), most spam bots do
not. A network that retried correctly once is trusted from then on (auto-allow).

Design after RFC 6647 (greylisting best practices): the client is keyed by its /24 (IPv4) or
/64 (IPv6) because large senders retry from another address of the same pool (section 4.2);
the delay is short (section 5: "no more than" about 5 minutes is kind to senders); records
are forgotten after a while (section 4.5).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from mailstead.storage.interfaces import SpamStore

log = logging.getLogger("mailstead.filters.greylist")

DELAY = 300.0  # RFC 6647 section 5: 5 minutes
RETRY_WINDOW = 24 * 3600.0  # a first retry later than this starts over
LIFETIME = 36 * 86400.0  # passed triplets and allowed networks are kept this long unused
PRUNE_EVERY = 3600.0


class GreyResult(Enum):
    """The outcome for one message."""

    PASS = "pass"  # noqa: S105 (a result name, not a password); known triplets or an allowed network: go on
    ALLOWED = "allowed"  # passed now, for the first time
    DEFER = "defer"  # come back later (451 4.7.1)


def client_network(ip: str) -> str:
    """The client's /24 (IPv4) or /64 (IPv6) as text; an unparsable address stays as is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip.lower()
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def triplet_key(network: str, sender: str, recipient: str) -> str:
    """The stored key of one triplet (addresses compared case-insensitively)."""
    return f"{network}\x00{sender.lower()}\x00{recipient.lower()}"


@dataclass(frozen=True, slots=True)
class GreylistSettings:
    """The timers of RFC 6647 sections 4.5 and 5, in seconds."""

    delay: float = DELAY
    retry_window: float = RETRY_WINDOW
    lifetime: float = LIFETIME


class Greylist:
    """Decides per message; state in the store, so it survives restarts and is shared by
    every process on the same store."""

    def __init__(
        self,
        store: SpamStore,
        clock: Callable[[], float],
        settings: GreylistSettings = GreylistSettings(),
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._next_prune = 0.0

    async def check(self, client_ip: str, sender: str, recipients: Sequence[str]) -> GreyResult:
        """Every recipient's triplet must have waited out the delay for the message to pass."""
        now = self._clock()
        if now >= self._next_prune:  # RFC 6647 section 4.5: records are not kept for ever
            self._next_prune = now + PRUNE_EVERY
            await self.prune()
        network = client_network(client_ip)
        seen = await self._store.greylist_network_seen(network)
        if seen is not None and now - seen < self._settings.lifetime:
            return GreyResult.PASS
        result = GreyResult.PASS
        for rcpt in recipients:
            key = triplet_key(network, sender, rcpt)
            first, passed = await self._store.greylist_touch(key, now)
            if passed:
                continue
            waited = now - first
            if waited > self._settings.retry_window:
                await self._store.greylist_restart(key, now)
                result = GreyResult.DEFER
            elif waited < self._settings.delay:
                result = GreyResult.DEFER
            else:
                await self._store.greylist_pass(key, network, now)
                if result is GreyResult.PASS:
                    result = GreyResult.ALLOWED
        if result is GreyResult.DEFER:
            log.info("greylisted network=%s sender=%s", network, sender or "<>")
        return result

    async def prune(self) -> int:
        """Forgets records unused for longer than the lifetime (call now and then)."""
        return await self._store.greylist_prune(self._clock() - self._settings.lifetime)
