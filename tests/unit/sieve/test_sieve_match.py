"""Comparators and the :matches wildcard matcher (RFC 5228 section 2.7, RFC 5229 3.2)."""

from __future__ import annotations

import time

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
