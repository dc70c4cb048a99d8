"""core/message.py: ENVELOPE and BODYSTRUCTURE summaries, offsets, hostile input."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core.message import MAX_DEPTH, parse_address_list, parse_header, summarize


def parts(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    s = summarize(data)
    return json.loads(s.envelope), json.loads(s.bodystructure)


PLAIN = (
    b"Received: from a.test by b.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.test>\r\n"
    b'To: Bob <bob@example.test>,\r\n "Smith, Al" <al@x.test>\r\n'
    b"Cc: friends: a@x.test, (c) b@y.test;, old@style.test (Old Name)\r\n"
    b"Subject: Hello\r\n  folded\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"In-Reply-To: <0@example.test>\r\n"
    b"\r\n"
    b"line one\r\nline two\r\n"
)


def test_plain_envelope() -> None:
    env, body = parts(PLAIN)
    assert env["subject"] == "Hello  folded"
    assert env["date"] == "Mon, 1 Jan 2024 00:00:00 +0000"
    assert env["message_id"] == "<1@example.test>"
    assert env["in_reply_to"] == "<0@example.test>"
    assert env["from"] == [["=?utf-8?q?J=C3=B6rg?=", None, "jorg", "example.test"]]
    assert env["sender"] == env["reply_to"] == env["from"]  # RFC 3501 7.4.2 defaults
    assert env["to"] == [["Bob", None, "bob", "example.test"], ["Smith, Al", None, "al", "x.test"]]
    assert env["cc"] == [
        [None, None, "friends", None],
        [None, None, "a", "x.test"],
        ["c", None, "b", "y.test"],
        [None, None, None, None],
        ["Old Name", None, "old", "style.test"],
    ]
    assert env["bcc"] is None
    assert body["type"] == "text"
    assert body["subtype"] == "plain"
    assert body["params"] == [["charset", "us-ascii"]]  # RFC 2045 5.2 default
    assert body["encoding"] == "7BIT"
    assert body["lines"] == 2
    assert PLAIN[body["body_offset"] : body["end"]] == b"line one\r\nline two\r\n"
    assert body["size"] == len(b"line one\r\nline two\r\n")
    assert body["md5"] is None


def test_route_and_missing_parts() -> None:
    assert parse_address_list("<@relay.test,@r2.test:joe@x.test>") == [
        [None, "@relay.test,@r2.test", "joe", "x.test"]
    ]
    assert parse_address_list("justlocal") == [[None, None, "justlocal", "MISSING_DOMAIN"]]
    assert parse_address_list('"quoted \\" name" <"odd local"@x.test>') == [
        ['quoted " name', None, '"odd local"', "x.test"]
    ]
    assert parse_address_list("undisclosed-recipients:;") == [
        [None, None, "undisclosed-recipients", None],
        [None, None, None, None],
    ]


ALTERNATIVE = (
    b"From: a@x.test\r\nSubject: alt\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain\r\n"
    b'--inner\r\nContent-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<b>html</b>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="r (1).pdf"\r\n'
    b'Content-Disposition: attachment; filename="r (1).pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\nContent-ID: <pdf@x>\r\n"
    b"Content-Description: report\r\nContent-Language: en, de\r\n"
    b"Content-Location: http://x.test/r.pdf\r\n\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b"From: inner@x.test\r\nSubject: inside\r\n\r\ninner body\r\n"
    b"--outer--\r\nepilogue\r\n"
)


def test_multipart_tree_and_offsets() -> None:
    env, root = parts(ALTERNATIVE)
    assert env["subject"] == "alt"
    assert (root["type"], root["subtype"]) == ("multipart", "mixed")
    alt, pdf, rfc822 = root["parts"]
    assert [p["subtype"] for p in alt["parts"]] == ["plain", "html"]
    plain, html = alt["parts"]
    assert ALTERNATIVE[plain["body_offset"] : plain["end"]] == b"plain"
    assert ALTERNATIVE[html["body_offset"] : html["end"]] == b"<b>html</b>"
    assert html["encoding"] == "QUOTED-PRINTABLE"
    assert ALTERNATIVE[plain["header_offset"] :].startswith(b"Content-Type: text/plain")
    assert pdf["params"] == [["name", "r (1).pdf"]]
    assert pdf["disposition"] == ["attachment", [["filename", "r (1).pdf"]]]
    assert (pdf["id"], pdf["description"], pdf["language"], pdf["location"]) == (
        "<pdf@x>",
        "report",
        ["en", "de"],
        "http://x.test/r.pdf",
    )
    assert pdf["lines"] is None
    assert ALTERNATIVE[pdf["body_offset"] : pdf["end"]] == b"JVBERi0xLjQK"
    assert rfc822["envelope"]["subject"] == "inside"
    assert rfc822["envelope"]["from"] == [[None, None, "inner", "x.test"]]
    inner = rfc822["body"]
    assert ALTERNATIVE[inner["body_offset"] : inner["end"]] == b"inner body"
    assert rfc822["lines"] == 4  # three CRLF-ended lines and "inner body"


def test_digest_default_type() -> None:
    data = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
        b"Subject: digested\r\n\r\nx\r\n--d--\r\n"
    )
    _, root = parts(data)
    part = root["parts"][0]
    assert (part["type"], part["subtype"]) == ("message", "rfc822")  # RFC 2046 5.1.5
    assert part["envelope"]["subject"] == "digested"


def test_broken_mime_degrades() -> None:
    unterminated = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nrest of it"
    _, root = parts(unterminated)
    assert unterminated[root["parts"][0]["body_offset"] :] == b"rest of it"
    no_boundary = b"Content-Type: multipart/mixed\r\n\r\nbody"
    _, leaf = parts(no_boundary)
    assert (leaf["type"], "parts" in leaf) == ("application", False)
    invalid = b"Content-Type: garbage\r\n\r\nx"
    assert parts(invalid)[1]["subtype"] == "plain"
    header_only = b"Subject: no body"
    env, node = parts(header_only)
    assert env["subject"] == "no body"
    assert node["size"] == 0
    bare_lf = b"Subject: lf\n\nbody\n"
    env, node = parts(bare_lf)
    assert env["subject"] == "lf"
    assert bare_lf[node["body_offset"] :] == b"body\n"
    eight_bit = b"Subject: caf\xe9 \xff\r\n\r\n\xff"
    env, _ = parts(eight_bit)
    assert env["subject"].encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"


def test_deep_nesting_is_capped() -> None:
    depth = 500
    data = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    data += b"\r\nleaf\r\n"
    _, node = parts(data)
    levels = 0
    while "parts" in node:
        node = node["parts"][0]
        levels += 1
    assert levels == MAX_DEPTH
    assert node["type"] == "application"


def test_many_parts_bounded() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nx\r\n" * 5000
        + b"--b--\r\n"
    )
    _, root = parts(data)
    assert 0 < len(root["parts"]) <= 1000


def test_speed_typical_message() -> None:
    body = b"".join(b"Line %d of a fairly ordinary text message body.\r\n" % i for i in range(80))
    data = (
        PLAIN.split(b"\r\n\r\n")[0] + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
    )
    start = time.perf_counter()
    for _ in range(200):
        summarize(data)
    per_message = (time.perf_counter() - start) / 200
    assert per_message < 0.002  # typically ~30 us; generous for slow CI


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_bytes(data: bytes) -> None:
    s = summarize(data)
    json.loads(s.envelope)
    json.loads(s.bodystructure)


MIME_PIECES = [
    b"\r\n",
    b"\n",
    b"--b",
    b"--b--",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n",
    b'From: "x <y@z>\r\n',
    b"To: a:b;c,<d@>\r\n",
    b"(((",
    b")",
    b'"',
    b"=?utf-8?q?x?=",
    b" ",
    b"\xff",
    b'Content-Type: text/plain; a="\r\n',
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MIME_PIECES), max_size=60))
def test_never_raises_on_mime_shaped(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    s = summarize(data)
    root = json.loads(s.bodystructure)
    assert 0 <= root["header_offset"] <= root["body_offset"] <= root["end"] == len(data)


def test_parse_header_fields_spans_and_stray_lines() -> None:
    data = b"From: A\r\n <a@x.test>\r\nX-Y:1\nbad line\r\nSubject: s\r\n\r\nbody\r\n"
    parsed = parse_header(data)
    assert [(f.name, f.value) for f in parsed.fields] == [
        ("from", "A <a@x.test>"), ("x-y", "1"), ("subject", "s")]
    assert [data[f.start:f.end] for f in parsed.fields] == [
        b"From: A\r\n <a@x.test>\r\n", b"X-Y:1\n", b"Subject: s\r\n"]
    assert parsed.stray_lines == 1
    assert data[parsed.body_offset:] == b"body\r\n"
    assert parsed.values("FROM") == ["A <a@x.test>"]
    assert parse_header(b" lead: x\r\nA: b\r\n\r\n").stray_lines == 1
    assert parse_header(b"\r\nbody").fields == ()
