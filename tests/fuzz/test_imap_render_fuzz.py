"""Random messages -> summarize -> FETCH of every attribute: never raises, and the response
is well framed (balanced lists, no bare CR/LF outside literals, exact literal sizes)."""

from __future__ import annotations

import re
from datetime import datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailstead.core.message import summarize
from mailstead.proto.imap.ast import FetchAtt, Partial, SearchKey, Section
from mailstead.proto.imap.fetch import render_fetch
from mailstead.proto.imap.search import evaluate
from mailstead.proto.imap.sort import sort_messages
from mailstead.proto.imap.thread import ordered_subject, references, render_threads
from mailstead.storage.interfaces import MessageInfo

_QUOTED = re.compile(rb'"(?:[^"\\\r\n\x00]|\\["\\])*"')
_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n")
_ATOMISH = re.compile(rb"[^\s()\[\]\"{}]+(?:\[[^\]\r\n]*\])?(?:<\d+>)?")


def check_framing(data: bytes) -> None:
    """Scans one FETCH response as a client would; fails on any framing error."""
    assert data.startswith(b"* "), data[:80]
    assert data.endswith(b")\r\n"), data[-80:]
    pos, depth, end = 2, 0, len(data) - 2
    while pos < end:
        char = data[pos : pos + 1]
        if char == b" ":
            pos += 1
        elif char == b"(":
            depth += 1
            pos += 1
        elif char == b")":
            depth -= 1
            assert depth >= 0
            pos += 1
        elif char == b'"':
            match = _QUOTED.match(data, pos)
            assert match is not None, data[pos : pos + 80]
            pos = match.end()
        elif char in (b"{", b"~"):
            match = _LITERAL.match(data, pos)
            assert match is not None, data[pos : pos + 80]
            size = int(match.group(1))
            assert match.end() + size <= end
            if char == b"{":
                assert b"\x00" not in data[match.end() : match.end() + size]
            pos = match.end() + size
        else:
            match = _ATOMISH.match(data, pos)
            assert match is not None, data[pos : pos + 80]
            pos = match.end()
    assert depth == 0
    assert pos == end


ALL_ATTS = [
    FetchAtt(name)
    for name in ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE",
                 "BODY", "MODSEQ", "EMAILID", "THREADID", "SAVEDATE", "RFC822.HEADER",
                 "RFC822.TEXT", "RFC822")
] + [
    FetchAtt("BODY[]", Section(part, text, fields), partial, peek=True)
    for part in ((), (1,), (2,), (1, 1), (2, 1, 3))
    for text in ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")
    if part or text != "MIME"
    for fields in ((("SUBJECT", "FROM"),) if text.startswith("HEADER.FIELDS") else ((),))
    for partial in (None, Partial(3, 7))
]
# Items that may meet an unknown transfer encoding, rendered one at a time.
BINARY_ATTS = [
    FetchAtt(name, Section(p), partial, peek=True)
    for name in ("BINARY[]", "BINARY.SIZE")
    for p in ((), (1,), (2,), (1, 2))
    for partial in ((None, Partial(1, 5)) if name == "BINARY[]" else (None,))
]

_text = st.binary(max_size=40) | st.sampled_from(
    [b"", b"a\r\n b", b"\x00", b"\xff\xfe", b'"quoted" \\', b"=?utf-8?q?x?=", b"(comment",
     b"a@b.test, <c@d.test>", b"g: a@b.test;", b"<id@x.test>", b"\r", b"\n", b"{5}\r\n"]
)
_header = st.tuples(
    st.sampled_from([b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID",
                     b"Content-Type", b"Content-Transfer-Encoding", b"Content-Disposition",
                     b"Content-Language", b"In-Reply-To", b"X-Junk", b"content-id"]),
    _text,
).map(lambda t: t[0] + b": " + t[1] + b"\r\n")
_content_type = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b1\r\n",
    b"Content-Type: multipart/alternative; boundary=\"b1\"\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=\"\xff\"\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-weird\r\n",
    b"",
])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    head = b"".join(draw(st.lists(_header, max_size=6))) + draw(_content_type)
    parts = draw(st.lists(
        st.tuples(_content_type, st.lists(_header, max_size=2), st.binary(max_size=60)),
        max_size=4,
    ))
    body = b"".join(
        b"--b1\r\n" + ct + b"".join(hs) + b"\r\n" + payload + b"\r\n" for ct, hs, payload in parts
    )
    if draw(st.booleans()):
        body += b"--b1--\r\n"
    return head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=messages() | st.binary(max_size=300), utf8=st.booleans())
@example(data=b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n\x00--x--", utf8=False)
def test_fetch_of_every_attribute_is_well_framed(data: bytes, utf8: bool) -> None:
    s = summarize(data)
    msg = MessageInfo(1, 1, 7, 3, ("\\Seen", "bad flag"), 1e9, len(data), "f" * 64,
                      s.envelope, s.bodystructure)
    result = render_fetch(msg, 1, ALL_ATTS, body=data, utf8=utf8, uid=True)
    check_framing(result.data)
    for att in BINARY_ATTS:
        binary = render_fetch(msg, 1, [att], body=lambda: data, utf8=utf8)
        if binary.unknown_cte:
            assert binary.data == b""
        else:
            check_framing(binary.data)


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(messages() | st.binary(max_size=200), max_size=8))
def test_search_sort_thread_never_raise(batch: list[bytes]) -> None:
    infos = []
    for uid, data in enumerate(batch, 1):
        s = summarize(data)
        infos.append(MessageInfo(uid, 1, uid, uid, (), float(uid), len(data), "0",
                                 s.envelope, s.bodystructure))
    items = [(m.uid, m) for m in infos]
    for name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
        evaluate(SearchKey(name, text="a"), infos)
    evaluate(SearchKey("SENTBEFORE", date=datetime(2000, 1, 1)), infos)
    for criterion in ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM"):
        assert sorted(sort_messages(items, [criterion])) == [m.uid for m in infos]
    refs = {m.uid: data.decode("latin-1") for m, data in zip(infos, batch, strict=True)}
    for roots in (references(items, refs), ordered_subject(items)):
        rendered = render_threads(roots)
        numbers = sorted(int(n) for n in re.findall(rb"\d+", rendered))
        assert numbers == [m.uid for m in infos]
