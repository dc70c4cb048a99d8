"""The reply a client gets: a protocol code, an RFC 3463 enhanced status code and plain text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP-style reply; ``enhanced`` is e.g. ``"5.7.1"`` (RFC 3463), or None where RFC 2034
    says none is sent (the greeting and the reply to EHLO/HELO)."""

    code: int
    enhanced: str | None
    text: str

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def render(self, *, enhanced: bool = True) -> bytes:
        """The wire form, one line per line of ``text`` (RFC 5321 section 4.2.1 multi-line)."""
        lines = self.text.split("\n") or [""]
        prefix = f"{self.enhanced} " if enhanced and self.enhanced else ""
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced + ' ' if self.enhanced else ''}{self.text}"
