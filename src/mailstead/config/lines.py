"""Finds the line of a TOML key, because tomllib reports values but no positions.

A light scanner, not a TOML parser: it follows ``[table]`` headers and ``key =`` lines
(bare, quoted and dotted keys), and skips multi-line strings. That covers every file a person
writes for Mailstead; when a key cannot be found the nearest enclosing table's line is used.
"""

from __future__ import annotations

import re

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY_PATH = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_KEY_PATH})\s*\]\]?")
_ASSIGN = re.compile(rf"^\s*({_KEY_PATH})\s*=")
_PART = re.compile(_KEY_PART)


def _parts(path: str) -> tuple[str, ...]:
    out = []
    for match in _PART.finditer(path):
        part = match.group(0)
        if part[:1] in "\"'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


class KeyLines:
    """Line numbers (1-based) of the tables and keys of one TOML document."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            header = _HEADER.match(line)
            if header:
                table = _parts(header.group(1))
                self._lines.setdefault(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                path = table + _parts(assign.group(1))
                for end in range(len(table) + 1, len(path) + 1):
                    self._lines.setdefault(path[:end], number)
                rest = line[assign.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_multiline = quote
                        break

    def line_of(self, path: tuple[str, ...]) -> int | None:
        """The line where ``path`` (or, failing that, its nearest parent) is defined."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None
