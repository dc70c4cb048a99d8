"""The ADDTO/REMOVEFROM data of CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4.3):
applied as the RFC describes, they always turn the old results into the new ones."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from mailstead.imap.context_search import result_options, update_items
from mailstead.proto.imap.ast import CancelUpdateArgs
from mailstead.proto.imap.framing import NEED_DATA, CommandFrame, CommandFramer
from mailstead.proto.imap.parser import ParseError, parse_command


def same(uids: Sequence[int]) -> list[int]:
    return list(uids)


def apply(old: list[int], removals: bytes, additions: bytes) -> list[int]:
    """What a client does with one REMOVEFROM and one ADDTO, pair by pair."""
    out = list(old)
    for pos, uid in re.findall(rb"(\d+) (\d+)", removals):
        assert out[int(pos) - 1] == int(uid), (out, pos, uid)
        del out[int(pos) - 1]
    for pos, uid in re.findall(rb"(\d+) (\d+)", additions):
        out.insert(int(pos) - 1, int(uid))
    return out


orders = st.lists(st.integers(1, 60), unique=True, max_size=30)


@given(orders, orders)
def test_sort_updates_rebuild_the_new_order(old: list[int], new_pool: list[int]) -> None:
    # Messages in both keep their relative order (sort keys do not change); others come and go.
    kept = [u for u in old if u in set(new_pool)]
    fresh = [u for u in new_pool if u not in set(old)]
    new = kept[:]
    for i, uid in enumerate(fresh):
        new.insert((i * 7) % (len(new) + 1), uid)
    removals, additions = update_items(old, new, ordered=True, show=same)
    assert apply(old, removals, additions) == new


def test_search_updates_use_position_zero() -> None:
    assert update_items([1, 2, 3, 7], [1, 3, 7, 8, 9], ordered=False, show=same) \
        == (b"0 2", b"0 8:9")
    assert update_items([1, 2], [1, 2], ordered=False, show=same) == (b"", b"")


def test_result_options() -> None:
    # RFC 5267 section 4.1: UPDATE and CONTEXT alone mean ALL, as RETURN () does.
    assert result_options(["UPDATE"]) == ("ALL",)
    assert result_options(["CONTEXT", "COUNT", "UPDATE"]) == ("COUNT",)
    assert result_options(["PARTIAL"]) == ()


def parse(wire: bytes) -> object:
    framer = CommandFramer()
    framer.receive_data(wire + b"\r\n")
    frames = []
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, CommandFrame):
            frames.append(event)
    return parse_command(frames[0]).args


def test_cancelupdate_parses() -> None:
    assert parse(b'a CANCELUPDATE "B01" "B02"') == CancelUpdateArgs(("B01", "B02"))
    for wire in (b"a CANCELUPDATE", b"a CANCELUPDATE B01", b'a CANCELUPDATE "B01" ',
                 b'a CANCELUPDATE ("B01")'):
        try:
            parse(wire)
        except ParseError:
            continue
        raise AssertionError(wire)
