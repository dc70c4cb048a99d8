"""Hostile input for the IMAP framer and parser: random bytes in random pieces never raise
anything but ParseError, never hang, keep memory bounded, and frame the same whatever the
chunking; deep nesting is refused cleanly."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstead.proto.imap.ast import Command
from mailstead.proto.imap.framing import (
    NEED_DATA,
    CommandFrame,
    CommandFramer,
    Event,
    NeedContinuation,
    RawLine,
)
from mailstead.proto.imap.parser import ParseError, parse_command

MAX_LINE = 300
MAX_LITERAL = 200

TOKENS = [
    b"a ", b"A1 ", b"UID ", b"FETCH ", b"SEARCH ", b"STORE ", b"APPEND ", b"LOGIN ", b"LIST ",
    b"SELECT ", b"STATUS ", b"SORT ", b"THREAD ", b"ID ", b"SETQUOTA ", b"AUTHENTICATE ",
    b"ENABLE ", b"CREATE ", b"RENAME ", b"COPY ", b"MOVE ", b"EXPUNGE", b"IDLE", b"NOOP",
    b"1:*", b"1,3:5", b"$", b"*", b"0", b"4294967296", b"99999999999999999999999",
    b"(", b")", b"[", b"]", b"<0.10>", b"<", b">", b" ", b"\"", b"\\", b"\"x\\\"y\"",
    b"{3}\r\nabc", b"{3+}\r\nab\x00", b"~{2}\r\n\x00\x00", b"{0}\r\n", b"{5", b"{999+}\r\n",
    b"BODY.PEEK[HEADER.FIELDS (From To)]", b"BODY[1.2.MIME]", b"BINARY[1]", b"FLAGS",
    b"+FLAGS.SILENT", b"\\Seen", b"\\Recent", b"$Junk", b"NOT ", b"OR ", b"HEADER ", b"ALL",
    b"SINCE 1-Feb-1994", b"\"17-Jul-1996 02:44:25 -0700\"", b"CHARSET ", b"UTF-8", b"RETURN ",
    b"(CHANGEDSINCE 5 VANISHED)", b"(UNCHANGEDSINCE 0)", b"(QRESYNC (1 2 1:5 (1 2)))",
    b"MODSEQ ", b"\"/flags/\\\\seen\" all ", b"NIL", b"INBOX", b"UTF8 (", b"\r\n", b"\n",
    b"\r", b"\x00", b"\xff\xfe", "ü".encode(), b"%", b"DONE\r\n",
    b"PARTIAL ", b"-1:-100", b"1:100", b"-", b"(MIN MAX ALL COUNT)", b"(DISPLAYFROM)",
    b"NOTIFY ", b"SET ", b"STATUS ", b"(SELECTED (MessageNew (UID FLAGS) MessageExpunge))",
    b"(SUBTREE (a b) NONE)", b"CANCELUPDATE ", b"(UPDATE CONTEXT)",
]


def drive(pieces: list[bytes], expect_after_idle: bool = True) -> list[Event | Command | str]:
    """Feed pieces; parse every frame; only ParseError may come out of the parser."""
    framer = CommandFramer(max_line=MAX_LINE, max_literal=MAX_LITERAL)
    out: list[Event | Command | str] = []
    for piece in [*pieces, b""]:
        framer.receive_data(piece)
        for _ in range(100_000):
            event = framer.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            if isinstance(event, CommandFrame):
                assert len(event.lines) == len(event.literals) + 1
                assert all(len(line) + 2 <= MAX_LINE for line in event.lines)
                assert all(len(lit.data) <= MAX_LITERAL for lit in event.literals)
                try:
                    command = parse_command(event)
                except ParseError as err:
                    out.append(f"ERR {err.tag} {err.status}")
                    continue
                out.append(command)
                if expect_after_idle and command.name in ("IDLE", "AUTHENTICATE"):
                    framer.expect_line()
            else:
                out.append(event)
        else:
            raise AssertionError("the framer kept producing events")
        # Bounded memory: whatever is kept is within one frame's budget plus the unread input.
        assert sum(len(c) for c in framer._chunks) <= MAX_LITERAL
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.integers(0, 4000), max_size=20))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    drive(split(data, cuts))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.lists(st.integers(0, 4000),
                                                                  max_size=10))
def test_token_soup_never_raises_and_chunking_does_not_matter(
    tokens: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(tokens) + b"\r\n"
    whole = drive([data])
    assert drive(split(data, cuts)) == whole


@settings(max_examples=100)
@given(st.binary(max_size=300))
def test_parser_alone_on_arbitrary_frames(line: bytes) -> None:
    # Frames the framer would never build (CR/LF inside, odd literal bookkeeping) too.
    for frame in (CommandFrame((line,)), CommandFrame((b"a " + line,)),
                  CommandFrame((b"a SEARCH " + line,)), CommandFrame((b"a UID FETCH 1 " + line,))):
        with contextlib.suppress(ParseError):
            parse_command(frame)


@settings(max_examples=60)
@given(st.integers(65, 20_000), st.sampled_from([
    (b"a SEARCH ", b"(", b"ALL", b")"),
    (b"a SEARCH ", b"NOT ", b"ALL", b""),
    (b"a SEARCH ", b"OR ALL ", b"ALL", b""),
    (b"a SEARCH ", b"(NOT ", b"ALL", b")"),
    (b"a FETCH 1 ", b"(", b"FLAGS", b")"),
    (b"a LIST ", b"(", b"", b")"),
    (b"a STORE 1 FLAGS ", b"(", b"x", b")"),
]))
def test_deep_nesting_is_refused_cleanly(depth: int, shape: tuple[bytes, ...]) -> None:
    head, opener, middle, closer = shape
    line = head + opener * depth + middle + closer * depth
    with pytest.raises(ParseError) as info:
        parse_command(CommandFrame((line,)))
    assert info.value.tag == "a"


def test_never_ending_line_stays_bounded() -> None:
    framer = CommandFramer(max_line=MAX_LINE, max_literal=MAX_LITERAL)
    framer.receive_data(b"a LOGIN ")
    events = []
    for _ in range(2000):
        framer.receive_data(b"x" * 1000)
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
        assert len(framer._buf) <= 1
    assert len(events) == 1


def test_continuations_only_for_synchronising_literals() -> None:
    out = drive([b"a LOGIN {3}\r\nbob {2+}\r\npw\r\nb IDLE\r\nDONE\r\n"])
    assert out[0] == NeedContinuation("a", 3)
    assert isinstance(out[1], Command)
    assert out[3] == RawLine(b"DONE")
