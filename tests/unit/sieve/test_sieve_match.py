"""Comparators and the :matches wildcard matcher (RFC 5228 section 2.7, RFC 5229 3.2)."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.sieve.match import glob, matches


def test_is_and_contains_with_comparators() -> None:
    assert matches("Hello", "hello", "is", "i;ascii-casemap")[0]
    assert not matches("Hello", "hello", "is", "i;octet")[0]
    assert matches("Make Money", "money", "contains", "i;ascii-casemap")[0]
    # i;ascii-casemap folds only ASCII letters (RFC 4790 section 9.2).
    assert not matches("\u00c9t\u00e9", "\u00e9t\u00e9", "is", "i;ascii-casemap")[0]


def test_matches_wildcards_and_captures() -> None:
    assert glob("[dev] hello", "[*] *", "i;ascii-casemap") == ["[dev] hello", "dev", "hello"]
    assert glob("abc", "a?c", "i;octet") == ["abc", "b"]
    assert glob("abc", "a*", "i;octet") == ["abc", "bc"]
    assert glob("", "*", "i;octet") == ["", ""]
    assert glob("abc", "abd", "i;octet") is None
    assert glob("a*c", "a\\*c", "i;octet") == ["a*c"]
    assert glob("abc", "a\\*c", "i;octet") is None
    # RFC 5229 section 3.2 example: each "*" as short as possible, left to right.
    assert glob("www.example.com", "*.*", "i;octet") == ["www.example.com", "www",
                                                          "example.com"]
    assert glob("make lots of money fast", "*make*money*fast*", "i;ascii-casemap") is not None


def test_hostile_pattern_is_fast() -> None:
    value = "a" * 5000
    pattern = "*a" * 60 + "b"
    start = time.monotonic()
    assert glob(value, pattern, "i;octet") is None
    assert time.monotonic() - start < 5


def _reference_glob(value: str, pattern: str, comparator: str) -> list[str] | None:
    """The general backtracking matcher, for patterns the fast path of ``glob`` takes."""
    text = value.lower() if comparator == "i;ascii-casemap" else value
    pat = pattern.lower() if comparator == "i;ascii-casemap" else pattern
    spans: dict[int, tuple[int, int]] = {}
    p = t = 0
    star_p, star_t = -1, 0
    while t < len(text):
        if p < len(pat) and pat[p] == "*":
            star_p, star_t = p, t
            spans[p] = (t, t)
            p += 1
        elif p < len(pat) and pat[p] == text[t]:
            p += 1
            t += 1
        elif star_p >= 0:
            star_t += 1
            spans[star_p] = (spans[star_p][0], star_t)
            p, t = star_p + 1, star_t
        else:
            return None
    while p < len(pat) and pat[p] == "*":
        spans[p] = (t, t)
        p += 1
    if p != len(pat):
        return None
    return [value] + [value[a:b] for _, (a, b) in sorted(spans.items())]


@given(st.text(alphabet="abAB.*", max_size=12), st.text(alphabet="abAB.", max_size=14),
       st.sampled_from(["i;octet", "i;ascii-casemap"]))
@settings(max_examples=3000, deadline=None)
def test_star_patterns_capture_like_the_general_matcher(
    pattern: str, value: str, comparator: str
) -> None:
    # Patterns of literals and "*" only are matched by whole-segment searches; the match
    # variables must be those of the character-by-character matcher (RFC 5229 section 3.2).
    assert glob(value, pattern, comparator) == _reference_glob(value, pattern, comparator)


def test_ascii_casemap_fold_of_non_ascii_text() -> None:
    # The fast str.lower path is for ASCII only; other text folds A-Z and nothing else.
    assert matches("ÉTÉ Sale", "Été sale", "is", "i;ascii-casemap") == (False, None)
    assert matches("été SALE", "été sale", "is", "i;ascii-casemap") == (True, None)
