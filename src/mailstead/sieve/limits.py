"""The hard limits every Sieve script and run is held to (``[sieve]`` in the config)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SieveLimits:
    """Bounds that keep a hostile script from costing unbounded memory or time."""

    max_script_size: int = 64 * 1024  # octets of one script
    max_string: int = 16 * 1024  # characters of one string literal or variable value
    max_identifier: int = 64
    max_tokens: int = 20_000
    max_commands: int = 2_000
    max_nesting: int = 15  # block and test nesting depth
    max_arguments: int = 32  # arguments of one command or test
    max_list_items: int = 256  # strings in one list, tests in one allof/anyof
    max_actions: int = 32  # actions one run may produce (RFC 5228 section 2.10.6 allows limits)
    max_redirects: int = 4  # redirects in one run (RFC 5228 section 4.2: limit redirects)
    max_variables: int = 128  # RFC 5229 section 6: bound the number of variables
    max_body_scan: int = 1024 * 1024  # octets of decoded body text the body test searches
    # The work one run may do (steps: commands, tests, candidate positions, comparisons) and
    # the CPU seconds it may take; past either the run stops and the message is kept.
    max_steps: int = 1_000_000
    max_cpu_seconds: float = 2.0


# The CPU clock is read once per this many steps (reading it costs more than a step).
_CLOCK_EVERY = 4096


class BudgetExceeded(Exception):
    """A script run used up its step or CPU budget (``Budget``)."""


class Budget:
    """The work one script run may do: ``steps`` units, and, when ``clock`` (a CPU clock,
    injected) is given, ``seconds`` of it. ``spend`` raises ``BudgetExceeded`` once either
    is used up, so a hostile script over a hostile message stops, deterministically when
    the steps run out first."""

    __slots__ = ("_check_at", "_clock", "_deadline", "left")

    def __init__(self, steps: int, clock: Callable[[], float] | None = None,
                 seconds: float = 0.0) -> None:
        self.left = steps
        self._clock = clock
        self._deadline = clock() + seconds if clock is not None else 0.0
        self._check_at = steps - _CLOCK_EVERY

    def spend(self, n: int = 1) -> None:
        """Charges ``n`` steps."""
        self.left -= n
        if self.left < 0:
            raise BudgetExceeded("step budget used up")
        if self._clock is not None and self.left <= self._check_at:
            self._check_at = self.left - _CLOCK_EVERY
            if self._clock() > self._deadline:
                raise BudgetExceeded("CPU time budget used up")
