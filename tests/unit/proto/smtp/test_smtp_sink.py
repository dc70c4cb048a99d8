"""Message content leaves the core through a sink as it arrives: the same result whatever the
chunking, and the sink's refusals and failures become 452 replies."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_core_driver import (
    EHLO_REPLY,
    GREETING,
    MAIL_OK,
    QUEUED,
    RCPT_OK,
    START_DATA,
    Driver,
)
from smtp_core_driver import (
    settings as core_settings,
)

from mailstead.core.reply import Reply
from mailstead.proto.smtp.framing import BdatReader, DataDone, DataReader, dot_stuff
from mailstead.proto.smtp.server import SMTPServerCore

NO_ROOM = Reply(452, "4.3.1", "Insufficient system storage")
NO_ROOM_LINE = b"452 4.3.1 Insufficient system storage\r\n"
ENVELOPE = b"EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.test>\r\n"
ENVELOPE_REPLY = EHLO_REPLY + MAIL_OK + RCPT_OK


class RecordingSink:
    """A sink that keeps what it got and can be told to refuse or to fail."""

    def __init__(self, refuse: bool = False, fail_after: int | None = None) -> None:
        self.refuse = refuse
        self.fail_after = fail_after
        self.chunks: list[bytes] = []
        self.opened = 0
        self.closed = 0
        self.is_open = False

    def open(self) -> Reply | None:
        if self.refuse:
            return NO_ROOM
        self.opened += 1
        self.is_open = True
        self.chunks = []
        return None

    def write(self, chunk: bytes) -> None:
        assert self.is_open
        assert chunk
        self.chunks.append(chunk)

    def failure(self) -> Reply | None:
        size = sum(map(len, self.chunks))
        return NO_ROOM if self.fail_after is not None and size > self.fail_after else None

    def close(self) -> None:
        self.closed += 1
        self.is_open = False

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks)


def _read_data(wire: bytes, cuts: list[int], *, sink: bool) -> tuple[DataDone | None, bytes,
                                                                      bytes]:
    """Feed ``wire`` split at ``cuts``: (DataDone, the content handed out, the leftover)."""
    out: list[bytes] = []
    reader = DataReader(300, 40, out.append if sink else None)
    inbuf = bytearray()
    bounds = [0, *sorted(set(cuts)), len(wire)]
    for start, end in itertools.pairwise(bounds):
        inbuf += wire[start:end]
        done = reader.feed(inbuf)
        if done is not None:
            return done, b"".join(out), bytes(inbuf) + wire[end:]
    return None, b"".join(out), bytes(inbuf)


# Lines that exercise dot-stuffing, bare CR/LF, over-long lines and the size limit.
_LINES = st.lists(
    st.sampled_from([b"a", b".", b"..", b".x", b"x" * 39, b"x" * 41, b"a\rb", b"a\nb", b"",
                     b"\r", b"y" * 80, b". .", b"\xff"]),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(_LINES, st.sampled_from([b"", b"QUIT\r\n", b"\r\n.\r\n"]))
def test_data_same_result_split_at_every_point(lines: list[bytes], tail: bytes) -> None:
    wire = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + tail
    whole, _, rest = _read_data(wire, [], sink=False)
    assert whole is not None
    for cut in range(len(wire) + 1):
        for sink in (False, True):
            done, handed, leftover = _read_data(wire, [cut], sink=sink)
            assert done is not None
            assert (done.problem, done.size, leftover) == (whole.problem, whole.size, rest)
            if sink:
                assert done.content == b""
                if whole.problem is None:
                    assert handed == whole.content
            else:
                assert done.content == whole.content


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_bdat_sink_same_octets_however_split(data: bytes, cuts: list[int]) -> None:
    out: list[bytes] = []
    reader = BdatReader(len(data), keep=True, out=out.append)
    inbuf = bytearray()
    bounds = [0, *sorted({c for c in cuts if c <= len(data)}), len(data)]
    result = b"" if not data else None
    for start, end in itertools.pairwise(bounds):
        inbuf += data[start:end]
        result = reader.feed(inbuf)
    assert result == b""
    assert b"".join(out) == data


def _driver(sink: RecordingSink, **overrides: object) -> Driver:
    driver = Driver(SMTPServerCore(core_settings(**overrides), sink))
    assert driver.core.data_to_send() == GREETING
    return driver


def test_data_goes_to_the_sink_and_is_closed_after_the_reply() -> None:
    sink = RecordingSink()
    driver = _driver(sink)
    body = b"Subject: s\r\n\r\n.dot\r\n" + b"line\r\n" * 50
    out = driver.send(ENVELOPE + b"DATA\r\n" + dot_stuff(body))
    assert out == ENVELOPE_REPLY + START_DATA + QUEUED
    assert sink.content == body
    assert (sink.opened, sink.is_open) == (1, False)
    message = driver.events[-1]
    assert getattr(message, "data", None) == b""  # the server's sink holds the content


def test_a_refusing_sink_answers_data_452_and_keeps_the_transaction() -> None:
    sink = RecordingSink(refuse=True)
    driver = _driver(sink)
    assert driver.send(ENVELOPE + b"DATA\r\n") == ENVELOPE_REPLY + NO_ROOM_LINE
    # The lines after the refused DATA are commands again, not content.
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    sink.refuse = False
    assert driver.send(b"DATA\r\n" + dot_stuff(b"hi")) == START_DATA + QUEUED
    assert sink.content == b"hi\r\n"


def test_a_refusing_sink_drops_the_bdat_chunk_and_the_transaction() -> None:
    sink = RecordingSink(refuse=True)
    driver = _driver(sink)
    out = driver.send(ENVELOPE + b"BDAT 4\r\nRSET" + b"BDAT 2 LAST\r\nhi")
    # RFC 3030 section 2: the chunk's octets are never commands; the next BDAT has no MAIL.
    assert out == ENVELOPE_REPLY + NO_ROOM_LINE + b"503 5.5.1 Need MAIL command\r\n"
    assert sink.chunks == []


def test_bdat_chunks_go_to_the_sink() -> None:
    sink = RecordingSink()
    driver = _driver(sink)
    out = driver.send(ENVELOPE + b"BDAT 3\r\nabcBDAT 2 LAST\r\nde")
    assert out == ENVELOPE_REPLY + b"250 2.0.0 3 octets received\r\n" + QUEUED
    assert (sink.content, sink.opened, sink.is_open) == (b"abcde", 1, False)


def test_a_failing_sink_answers_452_at_the_end() -> None:
    sink = RecordingSink(fail_after=10)
    driver = _driver(sink)
    out = driver.send(ENVELOPE + b"DATA\r\n" + dot_stuff(b"x" * 30))
    assert out == ENVELOPE_REPLY + START_DATA + NO_ROOM_LINE
    assert not sink.is_open
    out = driver.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.test>\r\n"
                      b"BDAT 30 LAST\r\n" + b"y" * 30)
    assert out == MAIL_OK + RCPT_OK + NO_ROOM_LINE
    assert not sink.is_open


def test_the_sink_is_closed_however_the_transaction_ends() -> None:
    for ending in (b"RSET\r\n", b"QUIT\r\n", b"EHLO again.test\r\n", b""):
        sink = RecordingSink()
        driver = _driver(sink)
        driver.send(ENVELOPE + b"BDAT 2\r\nab")
        assert sink.is_open
        driver.send(ending)
        assert not sink.is_open, ending
    sink = RecordingSink()
    driver = _driver(sink)
    driver.send(ENVELOPE + b"DATA\r\npartial line\r\n")
    assert sink.is_open
    driver.core.timeout()
    driver.pump()
    assert not sink.is_open
