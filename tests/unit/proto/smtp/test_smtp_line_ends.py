"""The BDAT line-end judge: the same verdict as on the whole message, however it is split."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailstead.proto.smtp.framing import LineEndCheck

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def judge(chunks: list[bytes], header_only: bool = False) -> bool:
    check = LineEndCheck(header_only=header_only)
    for chunk in chunks:
        check.feed(chunk)
    check.finish()
    return check.fault


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# Messages made mostly of line-end octets, where the mistakes would be.
_OCTETS = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":", b" "]), max_size=40)


@given(_OCTETS, st.lists(st.integers(min_value=0, max_value=80), max_size=6))
def test_any_split_gives_the_whole_message_verdict(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    assert judge(split(data, cuts)) == bool(_BARE.search(data))


@given(_OCTETS, _OCTETS, st.lists(st.integers(min_value=0, max_value=160), max_size=6))
def test_header_only_judges_up_to_the_empty_line(
    head: list[bytes], tail: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(head) + b"\r\n\r\n" + b"".join(tail)
    end = (b"\r\n" + data).find(b"\r\n\r\n")  # the header ends at the first empty line
    header = data[: end + 2]
    assert judge(split(data, cuts), header_only=True) == bool(_BARE.search(header))


def test_empty_header_ends_at_once() -> None:
    assert not judge([b"\r", b"\n\n\r\x00"], header_only=True)
