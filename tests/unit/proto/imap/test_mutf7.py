"""Modified UTF-7 (RFC 3501 section 5.1.3): the RFC's examples, round trips, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.proto.imap.mutf7 import decode, encode

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
