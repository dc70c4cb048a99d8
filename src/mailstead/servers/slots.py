"""How a listener shares out its connection slots: who counts as one client, and whom to close
when the slots run short. Pure functions over numbers the listener measures (no I/O, no clock).

A flood of slow clients (slowloris) must not hold every slot while real clients are refused:
under slot pressure a newcomer makes room by shedding the waiting session that has made the
least progress, idle longest first, rather than being turned away itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeVar

from mailstead.core.network import network_key

# A session must have been idle this long before it may be shed: a client that has just
# connected (or just been answered) is not yet slow, only new.
SHED_MIN_IDLE = 1.0


@dataclass(frozen=True, slots=True)
class SlotPolicy:
    """The listener-wide rules of ``[connections]`` (config/model.py ConnectionsConfig)."""

    tls_handshake_timeout: float = 10.0
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    shed_above: int = 90  # percent of max_connections; 100 never sheds

    def shed_threshold(self, max_connections: int) -> int:
        """The number of live connections from which a newcomer sheds a slow session."""
        if self.shed_above >= 100:
            return max_connections
        return max(1, max_connections * self.shed_above // 100)


def address_key(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The client a connection counts against for the per-address limit: the same unit as
    login failures and blocks (``core.network.network_key``), with configurable prefixes."""
    return network_key(ip, ipv4_prefix, ipv6_prefix)


class Tier(IntEnum):
    """Who goes first when a slot is needed; lower tiers are shed first."""

    ANONYMOUS = 0  # shaking hands, or waiting for input before any login
    AUTHENTICATED = 1  # logged in and waiting for the next command


class Occupant(Protocol):
    """What the choice needs to know of a connection (``listener.Connection`` has it)."""

    @property
    def sheddable(self) -> Tier | None:
        """The tier of a session that may be closed now, None when it must not be (busy
        carrying out a command, in IMAP IDLE, already being closed)."""

    @property
    def accepted_at(self) -> float: ...

    @property
    def progress_at(self) -> float:
        """When the session last completed a command (or was accepted)."""

    @property
    def progress_bytes(self) -> int:
        """Bytes of input the session has made use of: complete commands, message content."""


OccupantT = TypeVar("OccupantT", bound=Occupant)


def progress_rate(occupant: Occupant, now: float) -> float:
    """Bytes of complete commands per second since the connection was accepted."""
    return occupant.progress_bytes / max(now - occupant.accepted_at, 1.0)


def pick_victim(occupants: Iterable[OccupantT], now: float) -> OccupantT | None:
    """The session to close so a newcomer gets its slot: among those that may be shed and
    have been idle at least SHED_MIN_IDLE, the lowest tier, then the least progress per
    second, then the one idle longest. None when no session may go."""
    best: OccupantT | None = None
    best_key: tuple[int, float, float] | None = None
    for occ in occupants:
        tier = occ.sheddable
        if tier is None or now - occ.progress_at < SHED_MIN_IDLE:
            continue
        key = (int(tier), progress_rate(occ, now), occ.progress_at)
        if best_key is None or key < best_key:
            best, best_key = occ, key
    return best
