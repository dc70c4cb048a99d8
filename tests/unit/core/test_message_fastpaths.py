"""core/message.py fast paths: the C-speed header split and the simple-mailbox shortcut must
give exactly what the general code gives (the general code is the reference here)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core import message
from mailstead.core.message import _parse_headers, parse_address_list, summarize

_LINE_END = re.compile(rb"\r?\n")


def reference_headers(data: bytes, start: int, end: int) -> tuple[dict[str, str], int]:
    """The line-by-line header parser the fast one replaced, kept as the oracle."""
    fields: dict[str, str] = {}
    pos, name, chunks, body = start, None, [], end
    wanted = message._CONTENT_FIELDS | set(message._ENVELOPE_FIELDS)

    def store() -> None:
        if name is not None and name not in fields:
            fields[name] = b"".join(chunks).decode("utf-8", "surrogateescape").strip()

    while pos < end:
        match = _LINE_END.search(data, pos, end)
        line_end = match.start() if match else end
        next_pos = match.end() if match else end
        line = data[pos:line_end]
        if not line:
            body = next_pos
            break
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                chunks.append(line)
        else:
            store()
            colon = line.find(b":")
            candidate = line[:colon].strip().lower() if colon > 0 else b""
            name = candidate.decode("ascii", "replace") if candidate else None
            if name is not None and name in wanted:
                chunks = [line[colon + 1 :]]
            else:
                name, chunks = None, []
        pos = next_pos
    store()
    return fields, body


def reference_addresses(value: str) -> list[list[str | None]]:
    """``parse_address_list`` with the shortcut disabled."""
    saved = message._SIMPLE_MAILBOX
    message._SIMPLE_MAILBOX = re.compile(r"(?!)")
    try:
        return parse_address_list(value)
    finally:
        message._SIMPLE_MAILBOX = saved


HEADER_PIECES = [
    b"From: <a@b.test>", b"To: x@y.test", b"Subject: hi", b"Subject: second", b" folded",
    b"\tmore", b"Content-Type: text/plain", b"X-Other: 1", b"no colon", b":empty name",
    b"", b"\r", b"body text", b"Date: now\r", b"CC : spaced@name.test",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(HEADER_PIECES), max_size=12),
    st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=12, max_size=12),
    st.booleans(),
)
def test_header_split_matches_reference(
    pieces: list[bytes], ends: list[bytes], terminated: bool
) -> None:
    data = b"".join(p + e for p, e in zip(pieces, ends, strict=False))
    if not terminated and data.endswith(b"\n"):
        data = data[:-1]
    for start in (0, min(3, len(data))):
        assert _parse_headers(data, start, len(data)) == reference_headers(data, start, len(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_header_split_matches_reference_on_any_bytes(data: bytes) -> None:
    end = len(data) - (len(data) // 3)
    assert _parse_headers(data, 0, end) == reference_headers(data, 0, end)


@pytest.mark.parametrize(
    "data",
    [b"\r\nbody", b"\nbody", b"A: b\r\n\r\nbody", b"A: b\n\nbody", b"A: b\r\n\nbody",
     b"A: b\n\r\nbody", b"A: b\r\r\n\r\nx", b"A: b", b"", b"\r", b"From: x\r"],
)
def test_header_split_edge_cases(data: bytes) -> None:
    assert _parse_headers(data, 0, len(data)) == reference_headers(data, 0, len(data))


ATOM = st.text(alphabet="ab.!#-é\\\u2028\x0b+=\"(),:;<>@[] \t", max_size=5)


@settings(max_examples=500, deadline=None)
@given(st.lists(ATOM, max_size=3), ATOM, ATOM, st.sampled_from(["", " ", "\t", "  "]),
       st.booleans())
def test_simple_mailbox_shortcut_matches_general_parser(
    words: list[str], local: str, host: str, pad: str, angle: bool
) -> None:
    if angle:
        value = f"{pad}{' '.join(words)}{pad}<{local}@{host}>{pad}"
    else:
        value = f"{pad}{local}@{host}{pad}"
    assert parse_address_list(value) == reference_addresses(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b.test>", [[None, None, "a", "b.test"]]),
        ("a.b@c.test", [[None, None, "a.b", "c.test"]]),
        ("Alice   Smith <alice@x.test>", [["Alice Smith", None, "alice", "x.test"]]),
        ('"Smith, A" <a@x.test>', [["Smith, A", None, "a", "x.test"]]),  # general path
        ("a@b.test, c@d.test", [[None, None, "a", "b.test"], [None, None, "c", "d.test"]]),
    ],
)
def test_address_forms(value: str, expected: list[list[str | None]]) -> None:
    assert parse_address_list(value) == expected == reference_addresses(value)


def test_summary_is_unchanged_for_a_plain_message() -> None:
    data = (b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"From: <sender@remote.test>\r\nTo: <bench1@example.test>\r\nSubject: t\r\n\r\n"
            b"line\r\n")
    summary = summarize(data)
    assert summary.envelope == (
        '{"date":null,"subject":"t","from":[[null,null,"sender","remote.test"]],'
        '"sender":[[null,null,"sender","remote.test"]],'
        '"reply_to":[[null,null,"sender","remote.test"]],'
        '"to":[[null,null,"bench1","example.test"]],"cc":null,"bcc":null,'
        '"in_reply_to":null,"message_id":null}'
    )
    assert '"body_offset":' + str(data.index(b"line")) in summary.bodystructure
