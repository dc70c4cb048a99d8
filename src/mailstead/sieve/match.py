"""Comparators and match types (RFC 5228 sections 2.7.1 and 2.7.3, RFC 4790, RFC 5231).

``:matches`` places the fixed-length pieces between the stars one after the other (no
regular expressions, no recursion, no backtracking into earlier stars), each found by a
C-level search or, when that would retry too often, one Shift-And pass: linear in the
value. The work is charged to the run's ``Budget``, which bounds many patterns together.
It records what each wildcard matched for the RFC 5229 section 3.2 match variables. The
relational match types order strings in one linear pass, numbers of any length included
(no ``int()``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstead.sieve.limits import Budget

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CASEMAP = str.maketrans(_UPPER, _UPPER.lower())
_UPCASE = str.maketrans(_UPPER.lower(), _UPPER)
_ASCII_DIGITS = "0123456789"
# RFC 5231 section 4: relational-match = "gt" / "ge" / "lt" / "le" / "eq" / "ne".
RELATIONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})


def fold(value: str, comparator: str) -> str:
    """RFC 4790 section 9.2: i;ascii-casemap folds only ASCII letters; i;octet nothing."""
    if comparator != "i;ascii-casemap":
        return value
    # On ASCII text str.lower changes exactly the letters A-Z, like the table, at C speed.
    return value.lower() if value.isascii() else value.translate(_CASEMAP)


def _upcase(value: str) -> str:
    # RFC 4790 section 9.2: i;ascii-casemap orders as i;octet once a-z are upper-cased
    # (the direction matters: "_" then sorts after the letters, not before them).
    return value.upper() if value.isascii() else value.translate(_UPCASE)


def _number(value: str) -> str | None:
    """RFC 4790 section 9.1.1: the number spelt by the leading US-ASCII digits, as digits
    without leading zeros; None when the string does not start with a digit (it then
    stands for positive infinity)."""
    rest = value.lstrip(_ASCII_DIGITS)  # str.isdigit would take non-ASCII digits too
    digits = value[: len(value) - len(rest)]
    if not digits:
        return None
    return digits.lstrip("0") or "0"


def order(left: str, right: str, comparator: str) -> int:
    """-1, 0 or 1 as ``left`` sorts before, with or after ``right`` in ``comparator``."""
    if comparator == "i;ascii-numeric":
        a, b = _number(left), _number(right)
        if a is None or b is None:
            # Infinity equals infinity and is greater than every number.
            return (a is None) - (b is None)
        # Without leading zeros a longer number is larger; equal lengths sort as text.
        if len(a) != len(b):
            return -1 if len(a) < len(b) else 1
        return (a > b) - (a < b)
    if comparator == "i;ascii-casemap":
        left, right = _upcase(left), _upcase(right)
    # i;octet orders by octets; for UTF-8 text that is the order of the code points.
    return (left > right) - (left < right)


def relational(value: str, key: str, relation: str, comparator: str) -> bool:
    """RFC 5231 section 4: ``value`` (from the message) ``relation`` ``key`` (the script's)."""
    c = order(value, key, comparator)
    if relation == "gt":
        return c > 0
    if relation == "ge":
        return c >= 0
    if relation == "lt":
        return c < 0
    if relation == "le":
        return c <= 0
    if relation == "eq":
        return c == 0
    return c != 0  # "ne"


# Characters a C-level scan (find, startswith, fold) covers for one step of the budget.
_SCAN_STEP = 1024


@dataclass(frozen=True, slots=True)
class _Segment:
    """The part of a pattern between two ``*``: fixed length, literal chunks at offsets,
    and the offsets of its ``?``."""

    length: int
    chunks: tuple[tuple[int, str], ...]  # (offset, literal text), longest first
    marks: tuple[int, ...]  # offsets of "?"


def _segments(pattern: str) -> list[_Segment]:
    """The pattern split at unquoted ``*``; a backslash quotes the next character
    (RFC 5228 section 2.7.1)."""
    out: list[_Segment] = []
    chunks: list[tuple[int, str]] = []
    marks: list[int] = []
    lit: list[str] = []
    pos = 0

    def flush_literal() -> None:
        if lit:
            chunks.append((pos - len(lit), "".join(lit)))
            lit.clear()

    i = 0
    while i <= len(pattern):
        ch = pattern[i] if i < len(pattern) else "*"  # the end closes the last segment
        if ch == "\\" and i + 1 < len(pattern):
            lit.append(pattern[i + 1])
            pos += 1
            i += 2
            continue
        if ch == "*":
            flush_literal()
            chunks.sort(key=lambda c: -len(c[1]))
            out.append(_Segment(pos, tuple(chunks), tuple(marks)))
            chunks, marks, pos = [], [], 0
        elif ch == "?":
            flush_literal()
            marks.append(pos)
            pos += 1
        else:
            lit.append(ch)
            pos += 1
        i += 1
    return out


def _at(seg: _Segment, text: str, i: int, budget: Budget | None) -> bool:
    """Does ``seg`` match ``text`` at ``i`` (which leaves room for it)?"""
    for offset, chunk in seg.chunks:
        if budget is not None:
            budget.spend(1 + len(chunk) // _SCAN_STEP)
        if not text.startswith(chunk, i + offset):
            return False
    return True


def _masks(seg: _Segment) -> tuple[dict[str, int], int]:
    """Shift-And tables of ``seg``: per character the bits of the positions it may take,
    and the bits of the ``?`` (which take any character)."""
    anything = 0
    for m in seg.marks:
        anything |= 1 << m
    masks: dict[str, int] = {}
    for offset, chunk in seg.chunks:
        for k, ch in enumerate(chunk):
            masks[ch] = masks.get(ch, anything) | 1 << (offset + k)
    return masks, anything


def _scan(seg: _Segment, text: str, start: int, budget: Budget | None) -> int:
    """``_find`` by one left-to-right pass of bit-parallel Shift-And: linear in the text
    (each character costs a few operations on an integer of ``seg.length`` bits)."""
    masks, anything = _masks(seg)
    goal = 1 << (seg.length - 1)
    cost = 1 + seg.length // 256  # steps per character
    state = 0
    for j in range(start, len(text)):
        state = ((state << 1) | 1) & masks.get(text[j], anything)
        if state & goal:
            if budget is not None:
                budget.spend(((j - start) & 255) * cost)
            return j - seg.length + 1
        if budget is not None and (j - start) & 255 == 255:
            budget.spend(256 * cost)
    if budget is not None:
        budget.spend(((len(text) - start) & 255) * cost)
    return -1


def _find(seg: _Segment, text: str, start: int, budget: Budget | None) -> int:
    """The leftmost position at or after ``start`` where ``seg`` matches, or -1.

    Candidates come from a C-level search for the segment's longest literal chunk, each
    checked chunk by chunk; when the checks cost more than the text they covered (many
    ``?``, chunks that occur everywhere), the rest is scanned with Shift-And, so the whole
    search stays linear in the length of the text."""
    last = len(text) - seg.length
    if not seg.chunks:
        return start if start <= last else -1
    offset, anchor = seg.chunks[0]
    pos = start + offset
    work = 0
    while True:
        j = text.find(anchor, pos)
        if budget is not None:
            budget.spend(1 + ((j if j >= 0 else len(text)) - pos) // _SCAN_STEP)
        if j < 0 or j - offset > last:
            return -1
        i = j - offset
        work += 1 + len(anchor) // 32  # the search compared the anchor once more
        for off, chunk in seg.chunks[1:]:
            work += 1
            if not text.startswith(chunk, i + off):
                break
        else:
            return i
        if budget is not None:
            budget.spend(1)
        if work > 2 * (i - start) + 64:
            return _scan(seg, text, i + 1, budget)
        pos = j + 1


def glob(value: str, pattern: str, comparator: str,
         budget: Budget | None = None) -> list[str] | None:
    """None when ``value`` does not match; else the match variables: the whole value, then
    what each ``*`` and ``?`` matched, left to right, each ``*`` as short as possible
    (RFC 5229 section 3.2).

    The segments between the stars have fixed lengths, so placing each one at its leftmost
    occurrence after the previous one is never wrong (a later place leaves less room for
    the rest), the first is anchored at the start and the last at the end: one forward
    pass, no backtracking over earlier stars. The work is charged to ``budget``.
    """
    text = fold(value, comparator)
    pattern = fold(pattern, comparator)  # folding leaves "*", "?" and "\\" as they are
    if budget is not None:
        budget.spend(1 + (len(text) + len(pattern)) // _SCAN_STEP)
    segs = _segments(pattern)
    first, last = segs[0], segs[-1]
    if len(segs) == 1:
        if len(text) != first.length or not _at(first, text, 0, budget):
            return None
        return [value, *(value[m] for m in first.marks)]
    end = len(text) - last.length  # where the last segment must start
    if end < first.length or not _at(first, text, 0, budget):
        return None
    groups = [value, *(value[m] for m in first.marks)]
    t = first.length
    for seg in segs[1:-1]:
        i = _find(seg, text, t, budget)
        if i < 0 or i + seg.length > end:
            return None
        groups.append(value[t:i])  # the star before this segment
        groups.extend(value[i + m] for m in seg.marks)
        t = i + seg.length
    if not _at(last, text, end, budget):
        return None
    groups.append(value[t:end])
    groups.extend(value[end + m] for m in last.marks)
    return groups


def matches(value: str, key: str, match: str, comparator: str,
            budget: Budget | None = None) -> tuple[bool, list[str] | None]:
    """Does ``value`` match ``key``? The second item is the match variables for :matches.
    Each comparison is charged to ``budget`` by the length of what it scans."""
    if comparator == "i;ascii-numeric":
        # RFC 4790 section 9.1: equality and ordering only; compile.py refuses :contains
        # and :matches with this comparator.
        return match == "is" and order(value, key, comparator) == 0, None
    if match != "matches" and budget is not None:
        budget.spend(1 + (len(value) + len(key)) // _SCAN_STEP)
    if match == "is":
        return fold(value, comparator) == fold(key, comparator), None
    if match == "contains":
        return fold(key, comparator) in fold(value, comparator), None
    groups = glob(value, key, comparator, budget)
    return groups is not None, groups
