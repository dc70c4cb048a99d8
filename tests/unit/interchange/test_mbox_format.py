"""The mbox reader and writer: quoting, separators, Content-Length, flags, hostile bytes."""

from __future__ import annotations

import io
import mailbox
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.interchange.mbox import (
    MboxFailure,
    MboxMessage,
    MboxWriter,
    asctime,
    flags_from_headers,
    from_line_date,
    read_mbox,
    read_sidecar,
)


def messages(raw: bytes, **kw: object) -> list[MboxMessage]:
    out = list(read_mbox(io.BytesIO(raw), **kw))  # type: ignore[arg-type]
    assert all(isinstance(m, MboxMessage) for m in out)
    return [m for m in out if isinstance(m, MboxMessage)]


def test_two_messages_separator_and_from_date() -> None:
    raw = (b"From a@x.test Mon Dec  7 16:52:30 2026\nSubject: one\n\nbody 1\n\n"
           b"From b@x.test Tue Dec  8 01:02:03 2026\nSubject: two\n\nbody 2\n")
    got = messages(raw)
    assert [m.data for m in got] == [b"Subject: one\n\nbody 1\n", b"Subject: two\n\nbody 2\n"]
    assert got[0].internal_date == from_line_date(b"From a Mon Dec  7 16:52:30 2026")
    assert asctime(got[1].internal_date) == "Tue Dec  8 01:02:03 2026"
    assert got[0].origin.startswith("0:")
    assert got[1].offset == raw.index(b"From b@")


def test_from_in_body_needs_blank_line_before() -> None:
    raw = b"From a Mon Dec  7 16:52:30 2026\nSubject: s\n\nline\nFrom the start\n"
    (only,) = messages(raw)
    assert b"From the start" in only.data


def test_mboxrd_and_mboxo_unquoting() -> None:
    raw = b"From a Mon Dec  7 16:52:30 2026\nS: s\n\n>From x\n>>From y\n"
    assert messages(raw, fmt="mboxrd")[0].data.endswith(b"\nFrom x\n>From y\n")
    assert messages(raw, fmt="mboxo")[0].data.endswith(b"\nFrom x\n>>From y\n")
    # Thunderbird writes mboxo: auto follows it for such messages.
    moz = b"From - Mon Dec  7 16:52:30 2026\nX-Mozilla-Status: 0005\n\n>>From y\n"
    (m,) = messages(moz)
    assert m.data.endswith(b">>From y\n")
    assert set(m.flags) == {"\\Seen", "\\Flagged"}


def test_content_length_counts_unquoted_from_lines() -> None:
    body = b"From inside the body\n\nFrom again\n"
    raw = (b"From a Mon Dec  7 16:52:30 2026\nContent-Length: %d\n\n" % len(body) + body
           + b"\nFrom b Mon Dec  7 16:52:31 2026\nS: 2\n\nx\n")
    got = messages(raw)
    assert len(got) == 2
    assert got[0].data.endswith(b"\n\n" + body)
    # An inconsistent Content-Length is ignored: the From_ lines decide.
    bad = raw.replace(b"Content-Length: %d" % len(body), b"Content-Length: 3")
    assert len(messages(bad)) == 4


def test_status_headers_to_flags() -> None:
    assert set(flags_from_headers(b"Status: RO\nX-Status: AFD\n")) == {
        "\\Seen", "\\Answered", "\\Flagged", "\\Deleted"}
    assert flags_from_headers(b"Status: O\n") == ()
    assert set(flags_from_headers(b"X-Mozilla-Status: 1002\n")) == {"\\Answered", "$Forwarded"}


def test_date_fallbacks() -> None:
    (m,) = messages(b"From nodate\nDate: Mon, 07 Dec 2026 16:52:30 +0000\n\nx\n")
    assert m.internal_date == from_line_date(b"From a Mon Dec  7 16:52:30 2026")
    (n,) = messages(b"From nodate\nS: x\n\nx\n", now=123.0)
    assert n.internal_date == 123.0


def test_oversized_message_is_a_counted_failure() -> None:
    raw = (b"From a Mon Dec  7 16:52:30 2026\n\n" + b"y" * 5000 + b"\n\n"
           b"From b Mon Dec  7 16:52:30 2026\n\nsmall\n")
    got = list(read_mbox(io.BytesIO(raw), max_size=1000))
    assert isinstance(got[0], MboxFailure)
    assert isinstance(got[1], MboxMessage)
    assert got[1].data == b"\nsmall\n"


def test_long_line_without_breaks_is_read_in_chunks() -> None:
    raw = b"From a Mon Dec  7 16:52:30 2026\n\nx" + b"From " * 100_000
    (m,) = messages(raw)
    assert m.data == b"\nx" + b"From " * 100_000


def test_python_mailbox_mbox_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "py.mbox"
    box = mailbox.mbox(str(path))
    msg = mailbox.mboxMessage(b"Subject: hi\n\nFrom here on\nbye\n")
    msg.set_flags("RF")
    box.add(msg)
    box.add(b"Subject: two\n\nplain\n")
    box.close()
    with open(path, "rb") as f:
        got = messages(f.read())
    assert len(got) == 2
    assert b"\nFrom here on\nbye\n" in got[0].data
    assert set(got[0].flags) == {"\\Seen", "\\Flagged"}
    assert got[1].data == b"Subject: two\n\nplain\n"


Item = tuple[bytes, tuple[str, ...], float]


def _roundtrip(tmp_path: Path, items: list[Item]) -> list[MboxMessage]:
    path = tmp_path / "out.mbox"
    w = MboxWriter(str(path))
    for data, flags, date in items:
        w.add(data, flags, date)
    w.close()
    side = read_sidecar(str(path) + ".mailstead.jsonl")
    with open(path, "rb") as f:
        return messages(f.read(), sidecar=side)


def test_writer_roundtrip_exact(tmp_path: Path) -> None:
    items = [
        (b"Subject: a\n\nFrom x\n>From y\n>>From z\n", ("\\Seen", "$Label1"), 1700000000.0),
        (b"Subject: b\r\n\r\nno final break", (), 1700000001.0),
        (b"Subject: c\n\nends with blank\n\n", ("\\Deleted",), 1700000002.0),
    ]
    got = _roundtrip(tmp_path, items)
    assert [(m.data, m.flags, m.internal_date) for m in got] == items


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash(raw: bytes) -> None:
    for item in read_mbox(io.BytesIO(raw), max_size=2000):
        assert isinstance(item, (MboxMessage, MboxFailure))


body_lines = st.lists(
    st.sampled_from([b"From x\n", b">From y\n", b">>From z\n", b"text\n", b"\n", b"From\n"]),
    max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(body_lines, st.booleans()), min_size=1, max_size=4))
def test_from_lines_roundtrip_mboxrd(msgs: list[tuple[list[bytes], bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        items = [(b"Subject: s\n\n" + b"".join(lines) + (b"" if term else b"tail"), (), 1.0e9)
                 for lines, term in msgs]
        got = _roundtrip(Path(d), items)
        assert [m.data for m in got] == [i[0] for i in items]
