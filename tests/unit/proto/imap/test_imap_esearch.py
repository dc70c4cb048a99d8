"""SORT RETURN (ESORT, RFC 5267 section 3) and PARTIAL (RFC 9394): parsing, the page a
range picks, and the ESEARCH responses, byte for byte; hostile ranges never raise anything
but ParseError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.proto.imap.ast import FetchArgs, SearchArgs, SearchKey
from mailstead.proto.imap.esearch import esearch, partial_slice
from mailstead.proto.imap.framing import NEED_DATA, CommandFrame, CommandFramer
from mailstead.proto.imap.parser import ParseError, parse_command


def parse(wire: bytes) -> object:
    framer = CommandFramer()
    framer.receive_data(wire + b"\r\n")
    frames = []
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, CommandFrame):
            frames.append(event)
    assert len(frames) == 1
    return parse_command(frames[0]).args


def test_sort_return_parses() -> None:
    got = parse(b"A282 SORT RETURN (MIN COUNT) (DATE) UTF-8 SINCE 1-Feb-1994")
    assert isinstance(got, SearchArgs)
    assert (got.returns, got.sort, got.charset) == (("MIN", "COUNT"), ("DATE",), "UTF-8")
    got = parse(b"a UID SORT RETURN () (REVERSE DISPLAYFROM) US-ASCII ALL")
    assert got == SearchArgs(SearchKey("ALL"), "US-ASCII", ("ALL",),
                             sort=("REVERSE DISPLAYFROM",))
    # Without RETURN nothing changes: ``returns`` None means the plain SORT response.
    got = parse(b"a SORT (ARRIVAL) UTF-8 ALL")
    assert isinstance(got, SearchArgs)
    assert got.returns is None


def test_partial_parses() -> None:
    got = parse(b"a UID SEARCH RETURN (PARTIAL -1:-100) UNDELETED")
    assert isinstance(got, SearchArgs)
    assert (got.returns, got.partial) == (("PARTIAL",), (-1, -100))
    got = parse(b"a SEARCH RETURN (COUNT PARTIAL 1:500) ALL")
    assert isinstance(got, SearchArgs)
    assert got.partial == (1, 500)
    got = parse(b"a SORT RETURN (PARTIAL 5:1) (SUBJECT) UTF-8 ALL")
    assert isinstance(got, SearchArgs)
    assert got.partial == (5, 1)


@pytest.mark.parametrize("wire", [
    b"a SEARCH RETURN (PARTIAL) ALL", b"a SEARCH RETURN (PARTIAL 1) ALL",
    b"a SEARCH RETURN (PARTIAL 0:5) ALL", b"a SEARCH RETURN (PARTIAL -1:5) ALL",
    b"a SEARCH RETURN (PARTIAL 1:-5) ALL", b"a SEARCH RETURN (PARTIAL --1:-5) ALL",
    b"a SEARCH RETURN (PARTIAL 1:4294967296) ALL", b"a SEARCH RETURN (ALL PARTIAL 1:5) ALL",
    b"a SEARCH RETURN (PARTIAL 1:5 PARTIAL 1:5) ALL", b"a SORT RETURN (MIN) UTF-8 ALL",
    b"a SORT RETURN (FOO) (DATE) UTF-8 ALL", b"a SORT RETURN(MIN) (DATE) UTF-8 ALL",
])
def test_bad_ranges_and_options_refused(wire: bytes) -> None:
    with pytest.raises(ParseError):
        parse(wire)


@given(st.text(alphabet="0123456789-:*,() $PARTIALMINXCOUNT", max_size=40))
def test_hostile_return_options_only_parse_error(tail: str) -> None:
    with contextlib.suppress(ParseError):
        parse(b"a UID SORT RETURN (PARTIAL " + tail.encode() + b" (DATE) UTF-8 ALL")


def naive_page(results: list[int], first: int, last: int) -> list[int]:
    """RFC 9394 section 3.1 read literally: position p (1-based) or -p from the end."""
    low, high = sorted((abs(first), abs(last)))
    size = len(results)
    positions = range(low, high + 1)
    if first > 0:
        return [results[p - 1] for p in positions if p <= size]
    return [results[size - p] for p in reversed(positions) if p <= size]


@given(st.lists(st.integers(1, 10_000), max_size=60, unique=True),
       st.integers(1, 80), st.integers(1, 80), st.booleans())
def test_partial_slice_matches_the_definition(results: list[int], a: int, b: int,
                                              negative: bool) -> None:
    first, last = (-a, -b) if negative else (a, b)
    assert partial_slice(results, first, last) == naive_page(results, first, last)


def test_esort_response_rfc5267_example() -> None:
    # RFC 5267 section 3: "* ESEARCH (TAG "A282") MIN 2 COUNT 3" for SORT RETURN (MIN COUNT).
    assert esearch([2, 6, 3], ["MIN", "COUNT"], tag="A282", uid=False, ordered=True) \
        == b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'
    # ALL keeps the sort order; only ascending runs are merged.
    assert esearch([9, 3, 4, 5, 1], ["ALL", "MAX"], tag="t", uid=True, ordered=True) \
        == b'* ESEARCH (TAG "t") UID ALL 9,3:5,1 MAX 1\r\n'
    assert esearch([], ["MIN", "COUNT", "ALL"], tag="t", uid=False, ordered=True) \
        == b'* ESEARCH (TAG "t") COUNT 0\r\n'


def test_partial_response() -> None:
    results = [*range(23500, 24001), 24500]
    assert esearch(results, ["PARTIAL"], tag="A01", uid=True, partial=(1, 500)) \
        == b'* ESEARCH (TAG "A01") UID PARTIAL (1:500 23500:23999)\r\n'
    assert esearch(results, ["PARTIAL"], tag="A02", uid=True, partial=(-1, -2)) \
        == b'* ESEARCH (TAG "A02") UID PARTIAL (-1:-2 24000,24500)\r\n'
    assert esearch([1, 2], ["COUNT", "PARTIAL"], tag="A03", uid=False, partial=(5, 10)) \
        == b'* ESEARCH (TAG "A03") COUNT 2 PARTIAL (5:10 NIL)\r\n'
    # In a SORT the page is taken in sort order and kept in it.
    assert esearch([7, 2, 9, 1], ["PARTIAL"], tag="t", uid=False, ordered=True,
                   partial=(2, 3)) == b'* ESEARCH (TAG "t") PARTIAL (2:3 2,9)\r\n'


def test_fetch_partial_modifier() -> None:
    got = parse(b"a UID FETCH 1:* (FLAGS) (PARTIAL -1:-30)")
    assert isinstance(got, FetchArgs)
    assert got.partial == (-1, -30)
    got = parse(b"a UID FETCH 1:* FLAGS (CHANGEDSINCE 5 PARTIAL 1:10)")
    assert isinstance(got, FetchArgs)
    assert (got.changed_since, got.partial) == (5, (1, 10))
    for wire in (b"a FETCH 1:* FLAGS (PARTIAL 1:0)", b"a FETCH 1 FLAGS (PARTIAL 1:2 PARTIAL 1:2)",
                 b"a FETCH 1 FLAGS (PARTIAL)", b"a FETCH 1 FLAGS (PARTIAL -1:2)"):
        with pytest.raises(ParseError):
            parse(wire)
