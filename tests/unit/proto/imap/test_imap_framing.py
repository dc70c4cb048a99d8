"""The IMAP framer alone, byte for byte: lines, literals of every kind, limits, raw lines."""

from __future__ import annotations

import itertools
import time

import pytest

from mailstead.proto.imap.framing import (
    NEED_DATA,
    CommandFrame,
    CommandFramer,
    Event,
    LineTooLong,
    Literal,
    LiteralTooBig,
    NeedContinuation,
    RawLine,
    literal_header,
    tag_of,
)


def pull(framer: CommandFramer) -> list[Event]:
    out: list[Event] = []
    for _ in range(10_000):
        event = framer.next_event()
        if event is NEED_DATA:
            return out
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    raise AssertionError("the framer kept producing events")


def feed(wire: bytes, pieces: list[int] | None = None, **limits: int) -> list[Event]:
    """Feed ``wire`` cut at the offsets in ``pieces`` and collect every event."""
    framer = CommandFramer(**limits)
    cuts = [0, *(pieces or []), len(wire)]
    events: list[Event] = []
    for a, b in itertools.pairwise(cuts):
        framer.receive_data(wire[a:b])
        events += pull(framer)
    return events


def test_simple_lines_pipelined() -> None:
    assert feed(b"a1 NOOP\r\na2 CAPABILITY\r\n") == [
        CommandFrame((b"a1 NOOP",)),
        CommandFrame((b"a2 CAPABILITY",)),
    ]


def test_incomplete_line_waits_and_crlf_split() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a1 NOOP\r")
    assert pull(framer) == []
    assert framer.in_command is False
    framer.receive_data(b"\n")
    assert pull(framer) == [CommandFrame((b"a1 NOOP",))]


def test_bare_lf_and_cr_do_not_end_a_line() -> None:
    # RFC 9051 section 2.2: lines end in CRLF only; the bare LF/CR stays in the line for the
    # parser to refuse.
    assert feed(b"a NOOP\nb NOOP\rc\r\n") == [CommandFrame((b"a NOOP\nb NOOP\rc",))]


def test_synchronising_literal_asks_for_continuation() -> None:
    framer = CommandFramer()
    framer.receive_data(b"A003 APPEND saved-messages (\\Seen) {7}\r\n")
    assert pull(framer) == [NeedContinuation("A003", 7)]
    assert framer.in_command
    framer.receive_data(b"Hello\r\n\r\n")
    assert pull(framer) == [
        CommandFrame(
            (b"A003 APPEND saved-messages (\\Seen) {7}", b""),
            (Literal(b"Hello\r\n"),),
        )
    ]


def test_non_synchronising_literal_needs_no_continuation() -> None:
    # RFC 7888 section 3: {n+} is sent at once, no "+" from the server.
    assert feed(b"a LOGIN {3+}\r\nbob {4+}\r\npass\r\n") == [
        CommandFrame((b"a LOGIN {3+}", b" {4+}", b""), (Literal(b"bob"), Literal(b"pass")))
    ]


def test_binary_literal8_keeps_nul_and_is_marked() -> None:
    events = feed(b"a APPEND x ~{4}\r\n\x00\x01\r\n\r\n")
    assert events == [
        NeedContinuation("a", 4),
        CommandFrame((b"a APPEND x ~{4}", b""), (Literal(b"\x00\x01\r\n", binary=True),)),
    ]


def test_empty_literal() -> None:
    assert feed(b"a LOGIN {0+}\r\n {0}\r\n\r\n") == [
        NeedContinuation("a", 0),
        CommandFrame((b"a LOGIN {0+}", b" {0}", b""), (Literal(b""), Literal(b""))),
    ]


def test_literal_octets_are_opaque() -> None:
    # A literal holding what looks like a command (and a literal header) is just data: the
    # injection the framer exists to prevent.
    inner = b"x\r\nb DELETE INBOX {2}\r\n"
    wire = b"a LOGIN {%d+}\r\n%s pw\r\nc NOOP\r\n" % (len(inner), inner)
    assert feed(wire) == [
        CommandFrame((b"a LOGIN {%d+}" % len(inner), b" pw"), (Literal(inner),)),
        CommandFrame((b"c NOOP",)),
    ]


TWO_LITERALS = b"a LOGIN {5}\r\nal\x00ce {6+}\r\nse\r\nt!\r\nb NOOP\r\n"
TWO_LITERALS_EVENTS: list[Event] = [
    NeedContinuation("a", 5),
    CommandFrame((b"a LOGIN {5}", b" {6+}", b""), (Literal(b"al\x00ce"), Literal(b"se\r\nt!"))),
    CommandFrame((b"b NOOP",)),
]


@pytest.mark.parametrize("cut", range(1, len(TWO_LITERALS)))
def test_split_at_every_offset(cut: int) -> None:
    assert feed(TWO_LITERALS, [cut]) == TWO_LITERALS_EVENTS


def test_byte_by_byte() -> None:
    assert feed(TWO_LITERALS, list(range(1, len(TWO_LITERALS)))) == TWO_LITERALS_EVENTS


def test_synchronising_literal_too_big_is_refused_without_reading_it() -> None:
    # RFC 7889 section 4: NO [TOOBIG] instead of "+"; the client then sends nothing more
    # for this command, so the next line is the next command.
    events = feed(b"a APPEND INBOX {101}\r\nb NOOP\r\n", max_literal=100)
    assert events == [LiteralTooBig("a", 101), CommandFrame((b"b NOOP",))]


def test_non_synchronising_literal_too_big_closes_at_once() -> None:
    # RFC 7888 section 4: rather than read up to 4 GB of unwanted octets, refuse and close.
    framer = CommandFramer(max_literal=100)
    framer.receive_data(b"a APPEND INBOX {4000000000+}\r\n" + b"x" * 50)
    assert pull(framer) == [LiteralTooBig("a", 4000000000, sync=False)]
    assert framer.closed
    framer.receive_data(b"x" * 1000 + b"\r\nb NOOP\r\n")  # nothing is framed any more
    assert pull(framer) == []
    assert len(framer._buf) == 0


def test_non_synchronising_literal_just_over_the_limit_closes_too() -> None:
    wire = b"a APPEND INBOX {101+}\r\n" + b"x" * 101 + b"\r\nb NOOP\r\n"
    for cut in (5, 24, 30):
        assert feed(wire, [cut], max_literal=100) == [LiteralTooBig("a", 101, sync=False)]


def test_non_synchronising_literal_at_the_limit_is_framed() -> None:
    wire = b"a APPEND INBOX {100+}\r\n" + b"x" * 100 + b"\r\nb NOOP\r\n"
    assert feed(wire, max_literal=100) == [
        CommandFrame((b"a APPEND INBOX {100+}", b""), (Literal(b"x" * 100),)),
        CommandFrame((b"b NOOP",)),
    ]


def test_frame_budget_covers_several_literals() -> None:
    # Each literal fits, but the frame as a whole may not exceed max_line + max_literal.
    wire = b"a X {60+}\r\n" + b"x" * 60 + b" {60+}\r\n" + b"y" * 60 + b"\r\nb NOOP\r\n"
    events = feed(wire, max_line=50, max_literal=60)
    assert events == [LiteralTooBig("a", 60, sync=False)]
    # The same with synchronising literals: refused before the octets, framing goes on.
    wire = b"a X {60}\r\n" + b"x" * 60 + b" {60}\r\nb NOOP\r\n"
    assert feed(wire, max_line=50, max_literal=60) == [
        NeedContinuation("a", 60), LiteralTooBig("a", 60), CommandFrame((b"b NOOP",))
    ]


def test_discarded_command_announcing_huge_literal_plus_closes() -> None:
    # An over-long line ending in {n+}: its octets are skipped only up to max_literal.
    wire = b"a APPEND x (" + b"\\Seen " * 40 + b") {4000000000+}\r\nxxxx\r\nb NOOP\r\n"
    for cut in (20, 100, len(wire) - 30):
        events = feed(wire, [cut], max_line=100, max_literal=1000)
        # The BAD for the long line comes first only when it was seen before its end.
        assert events[-1] == LiteralTooBig("a", 4000000000, sync=False)
        assert events[:-1] in ([], [LineTooLong("a")])
    wire = b"a LOGIN {3+}\r\nbob " + b"p" * 200 + b" {5000+}\r\nb NOOP\r\n"
    assert feed(wire, max_line=100, max_literal=1000) == [LiteralTooBig("a", 5000, sync=False)]
    assert feed(wire, [150], max_line=100, max_literal=1000) == [
        LineTooLong("a"), LiteralTooBig("a", 5000, sync=False)
    ]


def test_line_too_long_is_reported_once_and_skipped_in_bounded_memory() -> None:
    framer = CommandFramer(max_line=100)
    framer.receive_data(b"t1 SEARCH " + b"x" * 200)
    assert pull(framer) == [LineTooLong("t1")]
    for _ in range(20):
        framer.receive_data(b"y" * 500)
        assert pull(framer) == []
        assert len(framer._buf) <= 1
    framer.receive_data(b"\r\nt2 NOOP\r\n")
    assert pull(framer) == [CommandFrame((b"t2 NOOP",))]


def test_line_limit_counts_crlf() -> None:
    assert feed(b"a NOOP" + b"x" * 2 + b"\r\n", max_line=10) == [CommandFrame((b"a NOOPxx",))]
    assert feed(b"a NOOP" + b"x" * 3 + b"\r\nb NOOP\r\n", max_line=10) == [
        LineTooLong("a"),
        CommandFrame((b"b NOOP",)),
    ]


def test_line_too_long_with_unreadable_tag() -> None:
    assert feed(b"+" * 300 + b"\r\n", max_line=100) == [LineTooLong(None)]
    assert feed(b"t" * 300 + b" NOOP\r\n", max_line=100) == [LineTooLong(None)]


def test_over_long_line_announcing_literal_plus_skips_its_octets() -> None:
    # Otherwise the literal's octets would be read as commands: injection.
    wire = b"a APPEND x (" + b"\\Seen " * 40 + b") {12+}\r\nb DELETE x\r\n\r\nc NOOP\r\n"
    for cut in (20, 100, len(wire) - 30):
        assert feed(wire, [cut], max_line=100) == [LineTooLong("a"), CommandFrame((b"c NOOP",))]


def test_over_long_continuation_line() -> None:
    wire = b"a LOGIN {3+}\r\nbob " + b"p" * 200 + b"\r\nb NOOP\r\n"
    assert feed(wire, max_line=100) == [LineTooLong("a"), CommandFrame((b"b NOOP",))]


def test_idle_done_via_expect_line() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
    assert framer.next_event() == CommandFrame((b"a IDLE",))
    framer.expect_line()
    assert framer.next_event() == RawLine(b"DONE")
    assert pull(framer) == [CommandFrame((b"b NOOP",))]


def test_authenticate_lines_are_raw() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    assert pull(framer) == [CommandFrame((b"a AUTHENTICATE PLAIN",))]
    framer.expect_line()
    framer.receive_data(b"AGJvYgBwdw==\r\n")  # a {n} at the end would mean nothing here
    assert pull(framer) == [RawLine(b"AGJvYgBwdw==")]
    framer.expect_line()
    framer.receive_data(b"*\r\n")
    assert pull(framer) == [RawLine(b"*")]


def test_raw_line_too_long() -> None:
    framer = CommandFramer(max_line=50)
    framer.expect_line()
    framer.receive_data(b"Q" * 100)
    assert pull(framer) == [LineTooLong(None)]
    framer.receive_data(b"Q" * 100 + b"{5+}\r\nb NOOP\r\n")
    assert pull(framer) == [CommandFrame((b"b NOOP",))]


def test_take_buffered_after_starttls() -> None:
    framer = CommandFramer()
    framer.receive_data(b"a STARTTLS\r\nb LOGIN injected pw\r\n")
    assert framer.next_event() == CommandFrame((b"a STARTTLS",))
    assert framer.take_buffered() == b"b LOGIN injected pw\r\n"
    assert pull(framer) == []


def test_literal_header_rules() -> None:
    assert literal_header(b"a LOGIN {5}") is not None
    header = literal_header(b"a APPEND x ~{12+}")
    assert header is not None
    assert (header.start, header.size, header.sync, header.binary) == (11, 12, False, True)
    for line in (b"a {5", b"a {}", b"a {-1}", b"a {5 }", b"a {+}", b"a {" + b"9" * 21 + b"}"):
        assert literal_header(line) is None


def test_malformed_literal_header_is_just_line_text() -> None:
    assert feed(b"a LOGIN {x}\r\n") == [CommandFrame((b"a LOGIN {x}",))]


def test_tag_of() -> None:
    assert tag_of(b"A001 NOOP") == "A001"
    assert tag_of(b"a]b NOOP") == "a]b"
    assert tag_of(b"a+b NOOP") is None
    assert tag_of(b"* NOOP") is None
    assert tag_of(b"") is None


def test_appending_a_4k_literal_and_framing_fetch_is_fast() -> None:
    fetch = (
        b"a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
        b"Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
        b"Content-Type Reply-To)])\r\n"
    )
    append = b"b APPEND INBOX {4096+}\r\n" + b"x" * 4096 + b"\r\n"
    framer = CommandFramer()
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        framer.receive_data(fetch)
        framer.next_event()
        framer.receive_data(append)
        framer.next_event()
    per_pair = (time.perf_counter() - start) / n
    assert framer.next_event() is NEED_DATA
    # A few microseconds each on a laptop; the bound leaves room for slow CI machines.
    assert per_pair < 200e-6
