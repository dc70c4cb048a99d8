"""Sizes as admins write them ("2G", "500M", "1.5GiB", "none") and as people read them."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"(\d{1,16}(?:\.\d{1,6})?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
MAX_SIZE = 1024**5  # 1 PiB: more than any mailbox, far below where floats lose octets
UNLIMITED = frozenset({"none", "unlimited", "off"})


def parse_size(text: str) -> int | None:
    """Octets for ``text`` (binary units: 1K = 1024), None for "none"; ValueError with a
    message that says what is accepted."""
    value = text.strip()
    if value.lower() in UNLIMITED:
        return None
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"{text.strip()[:40]!r} is not a size: write e.g. 2G, 500M, 800K, "
                         "a number of bytes, or none")
    number, unit = match.groups()
    octets = int(Decimal(number) * _UNITS[unit.upper()])  # exact, unlike a float
    if octets <= 0:
        raise ValueError("a size must be more than 0 (write none for no limit)")
    if octets > MAX_SIZE:
        raise ValueError("a size must be at most 1 PiB")
    return octets


def format_size(octets: int) -> str:
    """``octets`` for people: "2 GiB", "1.5 MiB", "800 B"."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if octets >= factor:
            shown = f"{octets / factor:.1f}".removesuffix(".0")
            return f"{shown} {unit}"
    return f"{octets} B"


def exact_size(octets: int) -> str:
    """``octets`` in the largest unit that divides it ("2G", "500M", "1234"), which
    ``parse_size`` reads back to the same number (for forms that show the current value)."""
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if octets % factor == 0:
            return f"{octets // factor}{unit}"
    return str(octets)
