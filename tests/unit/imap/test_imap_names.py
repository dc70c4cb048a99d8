"""Mailbox name rules: refused names, INBOX, wire encodings, LIST patterns."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.imap import names


@pytest.mark.parametrize(
    "bad",
    ["", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", "a\x00b", "tab\there", "del\x7f",
     "a*b", "50%", "x" * 256, "/".join(["a"] * 40)],
)
def test_refused(bad: str) -> None:
    with pytest.raises(names.MailboxNameError):
        names.normalise(bad)


def test_inbox_is_case_insensitive_also_as_a_parent() -> None:
    assert names.normalise("inbox") == "INBOX"
    assert names.normalise("InBoX/Sub") == "INBOX/Sub"
    assert names.normalise("Inboxes") == "Inboxes"
    assert names.is_inbox("iNbOx")


def test_create_may_end_in_the_delimiter() -> None:
    assert names.normalise("Projects/", allow_trailing_delimiter=True) == "Projects"
    with pytest.raises(names.MailboxNameError):
        names.normalise("Projects//", allow_trailing_delimiter=True)


def test_nfc_normalisation() -> None:
    assert names.normalise("Cafe\u0301") == "Caf\u00e9"


def test_wire_forms() -> None:
    # RFC 3501 section 5.1.3 example.
    assert names.decode_wire(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-", utf8=False) == (
        "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"
    )
    assert names.encode_wire("Entw\u00fcrfe", utf8=False) == "Entw&APw-rfe"
    assert names.encode_wire("Entw\u00fcrfe", utf8=True) == "Entw\u00fcrfe"
    assert names.decode_wire("Entw\u00fcrfe".encode(), utf8=True) == "Entw\u00fcrfe"
    with pytest.raises(names.MailboxNameError):
        names.decode_wire("Entw\u00fcrfe".encode(), utf8=False)  # 8-bit needs UTF8=ACCEPT
    with pytest.raises(names.MailboxNameError):
        names.decode_wire(b"\xff", utf8=True)
    with pytest.raises(names.MailboxNameError):
        names.decode_wire(b"&bad", utf8=False)


def test_patterns_are_never_refused() -> None:
    # RFC 9051 section 6.3.9: what is not valid modified UTF-7 is matched literally.
    assert names.decode_pattern(b"&bad", utf8=False) == "&bad"
    assert names.decode_pattern(b"&Jjo-*", utf8=False) == "\u263a*"
    assert names.decode_pattern(b"&Jjo-*", utf8=True) == "&Jjo-*"
    assert names.decode_pattern("Entw\u00fcrfe%".encode(), utf8=False) == "Entw\u00fcrfe%"
    assert names.compile_pattern("", names.decode_pattern(b"&Jjo!*", utf8=False)).fullmatch(
        "&Jjo!/x"
    )


def test_from_wire_checks_the_decoded_name() -> None:
    with pytest.raises(names.MailboxNameError):
        names.from_wire(b"&AC4ALg-", utf8=False)  # ".." hidden in modified UTF-7
    assert names.from_wire(b"a/b/", utf8=True, allow_trailing_delimiter=True) == "a/b"


def test_parents() -> None:
    assert names.parent_names("a/b/c") == ["a", "a/b"]
    assert names.parent_names("a") == []


_LEVEL = st.sampled_from(["a", "b", "ab", "INBOX", "\u00fc", "x y"])


@given(st.lists(st.lists(_LEVEL, min_size=1, max_size=5).map("/".join), max_size=40))
def test_hierarchy_matches_the_definition(existing: list[str]) -> None:
    everything, with_children = names.hierarchy(existing)
    expected = set(existing).union(*(names.parent_names(n) for n in existing))
    assert everything == expected
    # A name has children exactly when another name lies below it (RFC 3348).
    assert with_children == {n for n in expected
                             if any(o.startswith(n + "/") for o in expected)}


def test_hierarchy_is_linear() -> None:
    # 20,000 names, half of them below 10,000 parents: one pass, not one per pair.
    existing = [f"p{i % 10_000}/box{i}" for i in range(20_000)]
    started = time.process_time()
    everything, with_children = names.hierarchy(existing)
    assert time.process_time() - started < 0.5
    assert len(everything) == 30_000
    assert len(with_children) == 10_000


@pytest.mark.parametrize(
    ("reference", "pattern", "name", "match"),
    [
        ("", "*", "a/b/c", True),
        ("", "%", "a/b", False),
        ("", "%", "a", True),
        ("", "a/%", "a/b", True),
        ("", "a/%", "a/b/c", False),
        ("a/", "%", "a/b", True),
        ("", "inbox", "INBOX", True),
        ("", "INBOX/*", "INBOX/x", True),
        ("", "a.b", "axb", False),
    ],
)
def test_patterns(reference: str, pattern: str, name: str, match: bool) -> None:
    assert names.compile_pattern(reference, pattern).fullmatch(name) is match


def _reference_match(pattern: str, name: str) -> bool:
    """RFC 9051 section 6.3.9 as a regex: fine for the short names hypothesis makes."""
    body = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(body, name, re.DOTALL) is not None


@given(st.text("ab/*%", max_size=8), st.text("ab/", max_size=10))
def test_pattern_agrees_with_the_regex_definition(pattern: str, name: str) -> None:
    assert names.Pattern(pattern).fullmatch(name) is _reference_match(pattern, name)


def test_hostile_pattern_is_linear() -> None:
    # A backtracking regex needed 41 s for four wildcards against 300 characters.
    name = "a" * 1000
    started = time.process_time()
    for pattern in ("*a" * 200 + "*b", "%a" * 200 + "%b", "*%" * 300 + "b"):
        assert names.compile_pattern("", pattern).fullmatch(name) is False
    assert names.compile_pattern("", "*a" * 200 + "*").fullmatch(name) is True
    assert time.process_time() - started < 1.0
