"""The framer's spooling of large literals and its limits changed between commands (the
server's smaller literal limit before authentication)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.proto.imap.framing import (
    NEED_DATA,
    CommandFrame,
    CommandFramer,
    Event,
    Literal,
    LiteralChunk,
    LiteralTooBig,
    NeedContinuation,
)
from mailstead.proto.imap.parser import ParseError, parse_command


def pull(framer: CommandFramer) -> list[Event]:
    out: list[Event] = []
    for _ in range(100_000):
        event = framer.next_event()
        if event is NEED_DATA:
            return out
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    raise AssertionError("the framer kept producing events")


def feed(framer: CommandFramer, wire: bytes, cuts: list[int]) -> list[Event]:
    points = [0, *sorted(c for c in cuts if 0 < c < len(wire)), len(wire)]
    events: list[Event] = []
    for a, b in itertools.pairwise(points):
        framer.receive_data(wire[a:b])
        events += pull(framer)
    return events


def test_large_literal_leaves_as_chunks_and_is_not_kept() -> None:
    framer = CommandFramer(spool_at=10)
    body = b"0123456789abcdefghij"
    framer.receive_data(b"a APPEND INBOX {20+}\r\n" + body[:7])
    assert pull(framer) == [LiteralChunk(body[:7], end=False)]
    framer.receive_data(body[7:] + b"\r\nb NOOP\r\n")
    assert pull(framer) == [
        LiteralChunk(body[7:], end=True),
        CommandFrame((b"a APPEND INBOX {20+}", b""),
                     (Literal(b"", spooled=True, size=20),)),
        CommandFrame((b"b NOOP",)),
    ]


def test_small_literal_is_kept_and_sync_literal_is_spooled_after_the_go_ahead() -> None:
    framer = CommandFramer(spool_at=4)
    framer.receive_data(b"a LOGIN {4}\r\n")
    assert pull(framer) == [NeedContinuation("a", 4)]
    framer.receive_data(b"user {5}\r\n")
    assert pull(framer) == [NeedContinuation("a", 5)]
    framer.receive_data(b"pa\x00ss\r\n")
    assert pull(framer) == [
        LiteralChunk(b"pa\x00ss", end=True),
        CommandFrame((b"a LOGIN {4}", b" {5}", b""),
                     (Literal(b"user"), Literal(b"", spooled=True, size=5, has_nul=True))),
    ]


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    spool_at=st.integers(min_value=0, max_value=2000),
    binary=st.booleans(),
)
def test_spooling_keeps_every_octet_whatever_the_cuts(
    body: bytes, cuts: list[int], spool_at: int, binary: bool
) -> None:
    """Hostile input: any literal, cut anywhere, comes out whole and in order, either in the
    frame or as chunks; NUL is reported; memory held is never the spooled literal."""
    header = b"~{%d+}" % len(body) if binary else b"{%d+}" % len(body)
    wire = b"a APPEND INBOX " + header + b"\r\n" + body + b"\r\nz NOOP\r\n"
    framer = CommandFramer(spool_at=spool_at)
    events = feed(framer, wire, cuts)
    chunks = [e for e in events if isinstance(e, LiteralChunk)]
    frames = [e for e in events if isinstance(e, CommandFrame)]
    assert [f.lines[0] for f in frames] == [b"a APPEND INBOX " + header, b"z NOOP"]
    (lit,) = frames[0].literals
    if len(body) > spool_at:
        assert lit.spooled
        assert lit.size == len(body)
        assert lit.has_nul == (b"\x00" in body)
        assert b"".join(c.data for c in chunks) == body
        assert [c.end for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert all(len(c.data) <= len(wire) for c in chunks)
    else:
        assert not chunks
        assert lit == Literal(body, binary)


def test_limit_changed_between_commands_applies_to_the_next() -> None:
    """The server lowers ``max_literal`` before authentication: a pipelined LITERAL+ over it
    closes framing at once, without buffering what follows."""
    framer = CommandFramer(max_literal=4096)
    framer.receive_data(b"a LOGIN {3+}\r\nbob {51380224+}\r\n" + b"x" * 100_000)
    events = pull(framer)
    assert events == [LiteralTooBig("a", 51380224, sync=False)]
    assert framer.closed
    framer.receive_data(b"y" * 100_000)
    assert pull(framer) == []
    framer = CommandFramer(max_literal=4096)
    framer.receive_data(b"a LOGIN {4097}\r\n")
    assert pull(framer) == [LiteralTooBig("a", 4097)]
    framer.max_literal = 1 << 20
    framer.receive_data(b"b APPEND INBOX {4097}\r\n")
    assert pull(framer) == [NeedContinuation("b", 4097)]


def test_parser_takes_a_spooled_literal_only_as_the_append_message() -> None:
    spooled = Literal(b"", spooled=True, size=70_000)
    cmd = parse_command(CommandFrame((b"a APPEND INBOX {70000}", b""), (spooled,)))
    assert cmd.args.spooled_size == 70_000  # type: ignore[union-attr]
    assert cmd.args.size == 70_000  # type: ignore[union-attr]
    assert cmd.args.message == b""  # type: ignore[union-attr]
    with pytest.raises(ParseError) as refused:
        parse_command(CommandFrame((b"a LOGIN {70000}", b" pw"), (spooled,)))
    assert (refused.value.status, refused.value.code) == ("NO", "TOOBIG")
    nul = Literal(b"", spooled=True, size=70_000, has_nul=True)
    with pytest.raises(ParseError) as bad:
        parse_command(CommandFrame((b"a APPEND INBOX {70000}", b""), (nul,)))
    assert bad.value.status == "BAD"  # RFC 9051 section 4.3: NUL only in a literal8
    binary = parse_command(CommandFrame((b"a APPEND INBOX ~{70000}", b""), (nul,)))
    assert binary.args.spooled_size == 70_000  # type: ignore[union-attr]
