"""The result of one diagnostic check and how a list of them is shown: a text table for people,
JSON for machines, and the exit status (non-zero when anything FAILed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Status(Enum):
    """How bad a finding is: PASS (fine), WARN (works, but fix it), FAIL (broken)."""

    PASS = "PASS"  # noqa: S105 - a status name, not a password
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: what was checked, its status, one line why, and the fix ("" when none)."""

    name: str
    status: Status
    why: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "why": self.why, "fix": self.fix}


def passed(name: str, why: str) -> Check:
    """A PASS finding (no fix needed)."""
    return Check(name, Status.PASS, why)


def warn(name: str, why: str, fix: str) -> Check:
    """A WARN finding with its fix."""
    return Check(name, Status.WARN, why, fix)


def fail(name: str, why: str, fix: str) -> Check:
    """A FAIL finding with its fix."""
    return Check(name, Status.FAIL, why, fix)


def printable(text: str, limit: int = 300) -> str:
    """Network-supplied text made safe for one terminal line: control characters become
    spaces and the length is capped, so a hostile server cannot forge report lines."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def render_text(checks: Sequence[Check]) -> str:
    """One line per check ("PASS name: why"), the fix indented under WARN and FAIL lines, and
    a summary line with the counts."""
    lines: list[str] = []
    for c in checks:
        lines.append(f"{c.status.value}  {c.name}: {printable(c.why, 1000)}")
        if c.fix and c.status is not Status.PASS:
            lines.append(f"      fix: {printable(c.fix, 1000)}")
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    lines.append(
        f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warning(s), "
        f"{counts[Status.FAIL]} failed"
    )
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check]) -> str:
    """The checks as a JSON document: ``{"checks": [...], "ok": bool}``."""
    doc = {"ok": exit_status(checks) == 0, "checks": [c.as_dict() for c in checks]}
    return json.dumps(doc, indent=2) + "\n"


def exit_status(checks: Sequence[Check]) -> int:
    """1 when any check FAILed, else 0 (warnings do not fail a run)."""
    return 1 if any(c.status is Status.FAIL for c in checks) else 0
