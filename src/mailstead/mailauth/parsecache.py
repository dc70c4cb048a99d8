"""A small bounded map from an input text to what parsing it gave, owned by one verifier.

A busy MX sees the same few SPF and DMARC records, client addresses and From domains all
day; parsing them again for every message cost more than the checks themselves. Only pure
functions of the text are kept (the parsed record, never a per-message result), so a cached
entry is exactly what parsing again would give. Not thread-safe: use it from the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_SIZE = 1024


class ParseCache(Generic[K, V]):
    """``get(key, parse)`` is ``parse(key)``, computed once per key while it stays among the
    ``maxsize`` newest entries (the oldest insertion goes first)."""

    __slots__ = ("_items", "_max")

    def __init__(self, maxsize: int = DEFAULT_SIZE) -> None:
        self._max = max(1, maxsize)
        self._items: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K, parse: Callable[[K], V]) -> V:
        """The value for ``key``; ``parse`` must not raise (return the error as a value)."""
        try:
            return self._items[key]
        except KeyError:
            pass
        value = parse(key)
        if len(self._items) >= self._max:
            del self._items[next(iter(self._items))]
        self._items[key] = value
        return value
