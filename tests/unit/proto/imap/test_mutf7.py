"""Modified UTF-7 (RFC 3501 section 5.1.3): the RFC's examples, round trips, refusals."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.proto.imap.mutf7 import decode, decode_pattern, encode

EXAMPLES = [
    ("", ""),
    ("INBOX", "INBOX"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
    ("☺!", "&Jjo-!"),  # RFC 2152 style example
    ("Tom & Jerry", "Tom &- Jerry"),
    ("&", "&-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Gelöschte Elemente", "Gel&APY-schte Elemente"),
    ("😀", "&2D3eAA-"),  # a surrogate pair
    ("a\tb", "a&AAk-b"),  # control characters are not printable: encoded
    ("\x7f", "&AH8-"),
]


@pytest.mark.parametrize(("text", "wire"), EXAMPLES)
def test_examples(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text


@pytest.mark.parametrize(
    "wire",
    [
        "&Jjo",  # no closing "-"
        "&",
        "a&b",
        "&AGE-",  # "a" must represent itself
        "&ACA-",  # so must the space
        "&ACY-",  # "&" must be "&-"
        "&Jjo-&Jjo-",  # two adjacent runs: the canonical form is one
        "&Jjp-",  # non-zero padding bits
        "&Jj-",  # not whole UTF-16 units
        "&J-",  # truncated base64
        "&Jj/-",  # "/" is "," in modified base64
        "&Jjo=-",  # no padding
        "&2D0-",  # an unpaired high surrogate
        "&3gA-",  # an unpaired low surrogate
        "&2D3YPQ-",  # high surrogate followed by another high
        "ü",  # 8-bit outside base64
        "a\tb",  # control character written directly
        "&*-",
    ],
)
def test_refusals(wire: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ValueError is the documented contract
        decode(wire)


def test_encode_refuses_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode("a\ud800b")


@given(st.text(st.characters(codec="utf-8")))
def test_round_trip(text: str) -> None:
    wire = encode(text)
    assert wire.isascii()
    assert all(0x20 <= ord(c) <= 0x7E for c in wire)
    assert decode(wire) == text


@given(st.text(alphabet=st.sampled_from("&-ABCDEFGHUZabz019+,/=! ~\x00é")))
def test_decode_only_raises_value_error(wire: str) -> None:
    try:
        text = decode(wire)
    except ValueError:
        return
    assert encode(text) == wire


# LIST patterns (RFC 9051 section 6.3.9): valid runs decoded, anything else literal.
PATTERNS = [
    ("&Jjo!", "&Jjo!"),  # no closing "-": literal
    ("&Jjo-", "☺"),
    ("&Jjo-%&Jjo!", "☺%&Jjo!"),
    ("!#$&'+,-.0123456789:;<=>?@^_`|[}%*", "!#$&'+,-.0123456789:;<=>?@^_`|[}%*"),
    ("&", "&"),
    ("&-", "&"),
    ("&&-", "&&"),  # the first "&" has another "&" before its "-": literal
    ("&AGE-", "&AGE-"),  # "a" in BASE64 is not canonical: literal
    ("&*-", "&*-"),
    ("~peter/&U,BTFw-/*", "~peter/台北/*"),
]


@pytest.mark.parametrize(("wire", "text"), PATTERNS)
def test_decode_pattern(wire: str, text: str) -> None:
    assert decode_pattern(wire) == text


@given(st.text())
def test_decode_pattern_agrees_with_decode_on_every_name(name: str) -> None:
    try:
        wire = encode(name)
    except ValueError:
        return  # lone surrogates: no name holds them
    assert decode_pattern(wire) == name


@given(st.text(alphabet=st.sampled_from("&-AJjo!+,*%/a"), max_size=40))
def test_decode_pattern_never_fails_and_agrees_with_decode(wire: str) -> None:
    try:
        strict: str | None = decode(wire)
    except ValueError:
        strict = None
    text = decode_pattern(wire)
    if strict is not None:
        assert text == strict
    if "&" not in wire:
        assert text == wire
    assert len(text) <= len(wire)  # a decoded run is shorter than its BASE64


def test_decode_pattern_is_linear() -> None:
    for hostile in ("&" * 200_000 + "-", "&A" * 100_000 + "-", "&AAAA" * 40_000):
        started = time.monotonic()
        decode_pattern(hostile)
        assert time.monotonic() - started < 1.0, hostile[:10]
