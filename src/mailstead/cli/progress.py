"""A progress bar for long commands (import, export, backup, restore): messages, bytes, rate
and ETA on stderr.

On a terminal one line is redrawn in place (at most ten times a second); otherwise (a log,
a pipe, a test) a plain line is written every ``interval`` seconds, so a short run prints
nothing and a long one leaves a readable trace. ``finish`` always writes the final line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def size_text(n: int) -> str:
    """``n`` octets for a person: "512 bytes", "4.2 MiB"."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"


def duration_text(seconds: float) -> str:
    """A duration for a person: "45s", "3m12s", "2h05m"."""
    s = max(0, int(seconds + 0.5))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressBar:
    """Counts done items and octets against optional totals and shows them with the rate
    and the estimated time left; ``label`` names the step ("importing INBOX")."""

    def __init__(
        self,
        stream: TextIO,
        *,
        unit: str = "messages",
        total: int | None = None,
        total_bytes: int | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream
        self.unit = unit
        self.total = total
        self.total_bytes = total_bytes
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.nbytes = 0
        self.label = ""
        self.tty = stream.isatty() if tty is None else tty
        self.interval = 0.1 if self.tty else interval
        self._last = self.started
        self._drawn = False

    def set_totals(self, total: int | None = None, total_bytes: int | None = None) -> None:
        """Totals known only after a first pass (a listing of the source)."""
        if total is not None:
            self.total = total
        if total_bytes is not None:
            self.total_bytes = total_bytes

    def advance(self, items: int = 1, nbytes: int = 0, label: str | None = None) -> None:
        self.done += items
        self.nbytes += nbytes
        if label is not None:
            self.label = label
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The progress text as it would be shown now (without the bar on a non-terminal)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        parts: list[str] = []
        if self.label:
            parts.append(self.label + ":")
        if self.tty and self.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * self.done // self.total)
            parts.append("[" + "#" * filled + " " * (BAR_WIDTH - filled) + "]")
        count = f"{self.done:,}"
        if self.total is not None:
            count += f"/{self.total:,}"
        parts.append(f"{count} {self.unit}")
        amount = size_text(self.nbytes)
        if self.total_bytes:
            amount += f" of {size_text(self.total_bytes)}"
        parts.append(amount)
        parts.append(f"{self.done / elapsed:,.0f} {self.unit}/s")
        parts.append(f"{size_text(int(self.nbytes / elapsed))}/s")
        eta = self._eta(elapsed)
        if eta is not None:
            parts.append(f"ETA {duration_text(eta)}")
        return "  ".join(parts)

    def _eta(self, elapsed: float) -> float | None:
        # Bytes predict better than counts when both are known: one 30 MB attachment costs
        # as much as thousands of short messages.
        if self.total_bytes and self.nbytes:
            return max(0.0, elapsed * (self.total_bytes - self.nbytes) / self.nbytes)
        if self.total and self.done:
            return max(0.0, elapsed * (self.total - self.done) / self.done)
        return None

    def _draw(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            self.stream.write("mailstead: " + text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (a warning, a folder done) that does not garble the bar."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Writes the final state once; a short run that showed nothing still shows this."""
        now = self.clock()
        text = self.line(now)
        if self.tty:
            self.stream.write("\r\x1b[K" + text + "\n")
        else:
            self.stream.write("mailstead: " + text + "\n")
        self._drawn = False
        self.stream.flush()
