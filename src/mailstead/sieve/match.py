"""Comparators and match types (RFC 5228 sections 2.7.1 and 2.7.3, RFC 4790, RFC 5231).

``:matches`` uses an iterative wildcard matcher (no regular expressions, no recursion), so
a hostile pattern costs at most O(len(pattern) * len(value)) steps; it records what each
wildcard matched for the RFC 5229 section 3.2 match variables. The relational match types
order strings in one linear pass, numbers of any length included (no ``int()``).
"""

from __future__ import annotations

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


def _pattern(pattern: str) -> list[tuple[str, str]]:
    """The pattern as ("lit", char) / ("*", "") / ("?", ""): a backslash quotes the next
    character (RFC 5228 section 2.7.1)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(("lit", pattern[i + 1]))
            i += 2
            continue
        out.append((ch, "") if ch in "*?" else ("lit", ch))
        i += 1
    return out


def _glob_stars(value: str, text: str, pattern: str) -> list[str] | None:
    """``glob`` for a (folded) pattern of literal text and ``*`` only, by whole-segment
    searches: what the general matcher finds, each ``*`` but the last ending where the next
    literal segment first occurs, the last one where the final segment ends the value."""
    first, *middle, last = pattern.split("*")
    if not text.startswith(first):
        return None
    groups = [value]
    t = len(first)
    for segment in middle:
        i = text.find(segment, t)
        if i < 0:
            return None
        groups.append(value[t:i])
        t = i + len(segment)
    end = len(text) - len(last)
    if end < t or not text.endswith(last):
        return None
    groups.append(value[t:end])
    return groups


def glob(value: str, pattern: str, comparator: str) -> list[str] | None:
    """None when ``value`` does not match; else the match variables: the whole value, then
    what each ``*`` and ``?`` matched, left to right (each ``*`` as short as possible)."""
    text = fold(value, comparator)
    pattern = fold(pattern, comparator)  # folding leaves "*", "?" and "\\" as they are
    if "?" not in pattern and "\\" not in pattern:
        if "*" not in pattern:
            return [value] if text == pattern else None
        return _glob_stars(value, text, pattern)
    lits = _pattern(pattern)
    # spans[k] = (start, end) in value of wildcard k of the pattern
    spans: dict[int, tuple[int, int]] = {}
    p = t = 0
    star_p = -1  # pattern index of the last "*" seen
    star_t = 0  # where in text that "*" currently ends
    while t < len(text):
        if p < len(lits) and lits[p][0] == "?":
            spans[p] = (t, t + 1)
            p += 1
            t += 1
        elif p < len(lits) and lits[p][0] == "lit" and lits[p][1] == text[t]:
            p += 1
            t += 1
        elif p < len(lits) and lits[p][0] == "*":
            star_p, star_t = p, t
            spans[p] = (t, t)
            p += 1
        elif star_p >= 0:
            # Backtrack: the last "*" swallows one more character; later spans are redone.
            star_t += 1
            spans = {k: v for k, v in spans.items() if k <= star_p}
            spans[star_p] = (spans[star_p][0], star_t)
            p, t = star_p + 1, star_t
        else:
            return None
    while p < len(lits) and lits[p][0] == "*":
        spans[p] = (t, t)
        p += 1
    if p != len(lits):
        return None
    groups = [value]
    for k in sorted(spans):
        start, end = spans[k]
        groups.append(value[start:end])
    return groups


def matches(value: str, key: str, match: str, comparator: str) -> tuple[bool, list[str] | None]:
    """Does ``value`` match ``key``? The second item is the match variables for :matches."""
    if comparator == "i;ascii-numeric":
        # RFC 4790 section 9.1: equality and ordering only; compile.py refuses :contains
        # and :matches with this comparator.
        return match == "is" and order(value, key, comparator) == 0, None
    if match == "is":
        return fold(value, comparator) == fold(key, comparator), None
    if match == "contains":
        return fold(key, comparator) in fold(value, comparator), None
    groups = glob(value, key, comparator)
    return groups is not None, groups
