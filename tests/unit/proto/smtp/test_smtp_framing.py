"""The framing layer alone: command lines, DATA content and BDAT chunks."""

from __future__ import annotations

import pytest

from mailstead.proto.smtp.framing import (
    BadLine,
    BdatReader,
    DataDone,
    DataProblem,
    DataReader,
    LineProblem,
    LineReader,
    dot_stuff,
)


def read_all(data: bytes, limit: int = 20) -> list[bytes | BadLine]:
    reader = LineReader()
    buf = bytearray(data)
    out: list[bytes | BadLine] = []
    while (item := reader.read_line(buf, limit)) is not None:
        out.append(item)
    return out


def test_lines_end_only_in_crlf() -> None:
    assert read_all(b"NOOP\r\nQUIT\r\n") == [b"NOOP", b"QUIT"]
    assert read_all(b"NOOP\nQUIT\r\n") == [BadLine(LineProblem.BARE_EOL)]
    assert read_all(b"NOOP\rQUIT\r\nRSET\r\n") == [BadLine(LineProblem.BARE_EOL), b"RSET"]
    assert read_all(b"NOOP\r\r\n") == [BadLine(LineProblem.BARE_EOL)]
    assert read_all(b"NOOP") == []


def test_line_limit_counts_crlf() -> None:
    assert read_all(b"x" * 18 + b"\r\n") == [b"x" * 18]
    assert read_all(b"x" * 19 + b"\r\nNOOP\r\n") == [BadLine(LineProblem.TOO_LONG), b"NOOP"]


def test_long_line_is_discarded_incrementally() -> None:
    reader = LineReader()
    buf = bytearray()
    results = []
    for piece in [b"y" * 30, b"y" * 30, b"QUIT\r", b"\nNOOP\r\n"]:
        buf += piece
        while (item := reader.read_line(buf, 20)) is not None:
            results.append(item)
        assert len(buf) <= 21
    assert results == [BadLine(LineProblem.TOO_LONG), b"NOOP"]


def test_crlf_split_across_feeds() -> None:
    reader = LineReader()
    buf = bytearray(b"NOOP\r")
    assert reader.read_line(buf, 20) is None
    buf += b"\n"
    assert reader.read_line(buf, 20) == b"NOOP"


def feed_data(wire: bytes, pieces: int = 1) -> tuple[DataDone | None, bytes]:
    reader = DataReader(max_size=1000, max_line=50)
    inbuf = bytearray()
    step = max(1, len(wire) // pieces)
    done = None
    for i in range(0, len(wire), step):
        inbuf += wire[i : i + step]
        done = reader.feed(inbuf)
        if done is not None:
            return done, bytes(inbuf) + wire[i + step :]
    return done, bytes(inbuf)


def test_data_end_and_leftover() -> None:
    done, rest = feed_data(b"a\r\n..b\r\n.\r\nQUIT\r\n")
    assert done == DataDone(b"a\r\n.b\r\n", None, 7)
    assert rest == b"QUIT\r\n"


def test_data_empty_message() -> None:
    assert feed_data(b".\r\n") == (DataDone(b"", None, 0), b"")


@pytest.mark.parametrize("pieces", [1, 2, 3, 7, 100])
def test_data_problems(pieces: int) -> None:
    done, _ = feed_data(b"a\nb\r\n.\r\n", pieces)
    assert done is not None
    assert done.problem is DataProblem.BARE_EOL
    assert done.content == b""
    done, _ = feed_data(b"x" * 51 + b"\r\n.\r\n", pieces)
    assert done is not None
    assert done.problem is DataProblem.LINE_TOO_LONG
    done, _ = feed_data(b"x" * 50 + b"\r\n.\r\n", pieces)
    assert done is not None
    assert done.problem is None
    done, _ = feed_data((b"x" * 40 + b"\r\n") * 30 + b".\r\n", pieces)
    assert done is not None
    assert done.problem is DataProblem.TOO_BIG
    assert done.size == 1260


def test_bare_eol_outranks_other_problems() -> None:
    done, _ = feed_data(b"x" * 60 + b"\r\na\rb\r\n.\r\n")
    assert done is not None
    assert done.problem is DataProblem.BARE_EOL


def test_bdat_reader() -> None:
    reader = BdatReader(5, keep=True)
    inbuf = bytearray(b"ab")
    assert reader.feed(inbuf) is None
    inbuf += b"c\r\nNOOP"
    assert reader.feed(inbuf) == b"abc\r\n"
    assert inbuf == b"NOOP"
    reader = BdatReader(3, keep=False)
    assert reader.feed(bytearray(b"xyz")) == b""


def test_dot_stuff() -> None:
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b".a\r\nb") == b"..a\r\nb\r\n.\r\n"
