"""BINARY decoding (RFC 3516, RFC 2045 sections 6.7 and 6.8) byte for byte, with round trips
of the stdlib's own encoders."""

from __future__ import annotations

import base64
import binascii
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core.message import summarize
from mailstead.proto.imap import sections
from mailstead.proto.imap.ast import FetchAtt, Partial, Section
from mailstead.proto.imap.fetch import render_fetch
from mailstead.storage.interfaces import MessageInfo


def single(encoding: str, body: bytes, *, ctype: bytes = b"text/plain") -> bytes:
    return (b"From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: " + ctype + b"\r\n"
            b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body)


def binary(message: bytes, part: tuple[int, ...] = (1,)) -> bytes | None:
    return sections.binary(message, _structure(message), part)


def _structure(message: bytes) -> dict[str, object]:
    import json

    loaded = json.loads(summarize(message).bodystructure)
    assert isinstance(loaded, dict)
    return loaded


def info(data: bytes) -> MessageInfo:
    s = summarize(data)
    return MessageInfo(1, 1, 7, 1, (), 0.0, len(data), "ab" * 32, s.envelope, s.bodystructure)


# ------------------------------------------------------------------ quoted-printable


@pytest.mark.parametrize(("encoded", "decoded"), [
    (b"a=3Db=3dc", b"a=b=c"),  # =XX in either case (RFC 2045 6.7 rule 1)
    (b"soft=\r\nbreak", b"softbreak"),  # rule 5: "=" at the end of a line
    (b"soft=\nbreak", b"softbreak"),
    (b"padded=  \t\r\nbreak", b"paddedbreak"),  # transport padding after the "="
    (b"trailing \t \r\nnext  ", b"trailing\r\nnext"),  # rule 3: trailing white space goes
    (b"kept=20\r\n", b"kept \r\n"),  # encoded white space stays
    (b"lf only\nline\n", b"lf only\r\nline\r\n"),  # rule 4: a hard line break is CRLF
    (b"end=", b"end"),
    (b"bad=4 =zz =G1", b"bad=4 =zz =G1"),  # malformed: kept as it is (6.7 note)
    (b"=C3=A9=\r\n=C3=A9", b"\xc3\xa9\xc3\xa9"),
    (b"under_score", b"under_score"),  # "_" is a space only in encoded-words
])
def test_quoted_printable_byte_for_byte(encoded: bytes, decoded: bytes) -> None:
    assert sections.decode_quoted_printable(encoded) == decoded
    assert binary(single("quoted-printable", encoded)) == decoded


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_quoted_printable_round_trip_of_any_octets(data: bytes) -> None:
    message = single("Quoted-Printable", binascii.b2a_qp(data, istext=False),
                     ctype=b"application/octet-stream")
    assert binary(message) == data
    message = single("quoted-printable", binascii.b2a_qp(data, quotetabs=True, istext=False))
    assert binary(message) == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                max_size=8))
def test_quoted_printable_round_trip_of_text(lines: list[bytes]) -> None:
    text = b"\r\n".join(lines)
    assert binary(single("quoted-printable", quopri.encodestring(text))) == text
    assert binary(single("quoted-printable", binascii.b2a_qp(text))) == text


# ------------------------------------------------------------------ base64


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_base64_round_trip(data: bytes) -> None:
    for encoded in (base64.encodebytes(data), base64.b64encode(data),
                    base64.encodebytes(data).replace(b"\n", b"\r\n")):
        message = single("base64", encoded, ctype=b"application/octet-stream")
        assert binary(message) == data
        assert binary(message + b"\r\n") == data


def test_base64_garbage_is_skipped_not_refused() -> None:
    # RFC 2045 section 6.8: characters outside the alphabet are ignored.
    assert binary(single("base64", b"QUJD\r\n!!*\r\nRE VG\r\n")) == b"ABCDEF"
    assert binary(single("base64", b"%%%")) == b""


# ------------------------------------------------------------------ parts, partials, literal8

MULTI = (
    b"From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx=3Dy=\r\nz\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(b"\x00\x01binary\x00").replace(b"\n", b"\r\n") + b"--b\r\n"
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\naW5uZXI=\r\n--b--\r\n"
)


def test_binary_of_parts_and_the_whole() -> None:
    assert binary(MULTI, (1,)) == b"x=yz"
    assert binary(MULTI, (2,)) == b"\x00\x01binary\x00"
    # A message part has no transfer encoding of its own (RFC 2045 6.4): sent as stored;
    # its body part is decoded.
    assert binary(MULTI, (3,)) == (b"Subject: inner\r\nContent-Transfer-Encoding: base64\r\n"
                                   b"\r\naW5uZXI=")
    assert binary(MULTI, (3, 1)) == b"inner"
    assert binary(MULTI, ()) == MULTI
    assert binary(MULTI, (9,)) == b""


def test_binary_of_identity_text_is_sent_in_crlf_form_like_body() -> None:
    stored = single("8bit", b"one\ntwo\n").replace(b"\r\n", b"\n")
    fetched = render_fetch(info(stored), 1, [FetchAtt("BINARY[]", Section((1,))),
                                             FetchAtt("BINARY.SIZE", Section((1,))),
                                             FetchAtt("BODY[]", Section((1,)))], body=stored)
    assert fetched.data == (b"* 1 FETCH (BINARY[1] {10}\r\none\r\ntwo\r\n BINARY.SIZE[1] 10 "
                            b"BODY[1] {10}\r\none\r\ntwo\r\n)\r\n")
    # Binary content keeps its octets (RFC 2045 section 6.2).
    raw = single("binary", b"a\nb\r\x00", ctype=b"application/octet-stream")
    assert binary(raw) == b"a\nb\r\x00"


def test_binary_partial_counts_decoded_octets_and_nul_goes_as_literal8() -> None:
    fetched = render_fetch(info(MULTI), 1, [
        FetchAtt("BINARY[]", Section((2,)), Partial(1, 4), peek=True),
        FetchAtt("BINARY.SIZE", Section((2,))),
        FetchAtt("BINARY[]", Section((1,)), Partial(2, 100), peek=True),
    ], body=MULTI)
    # RFC 3516 section 4.3: NUL needs literal8; BINARY.SIZE is the decoded size.
    assert fetched.data == (b"* 1 FETCH (BINARY[2]<1> {4}\r\n\x01bin BINARY.SIZE[2] 9 "
                            b"BINARY[1]<2> {2}\r\nyz)\r\n")
    fetched = render_fetch(info(MULTI), 1, [FetchAtt("BINARY[]", Section((2,)), peek=True)],
                           body=MULTI)
    assert fetched.data == b"* 1 FETCH (BINARY[2] ~{9}\r\n\x00\x01binary\x00)\r\n"


def test_unknown_encoding_is_reported_not_guessed() -> None:
    assert binary(single("x-uuencode", b"begin 644 x\r\n")) is None
    message = single("x-uuencode", b"x")
    fetched = render_fetch(info(message), 1, [FetchAtt("BINARY.SIZE", Section((1,)))],
                           body=message)
    assert fetched.unknown_cte
    assert fetched.data == b""


def test_decoding_happens_only_for_binary_items() -> None:
    calls: list[int] = []

    def body() -> bytes:
        calls.append(1)
        return MULTI

    render_fetch(info(MULTI), 1, [FetchAtt("UID"), FetchAtt("ENVELOPE"),
                                  FetchAtt("BODYSTRUCTURE")], body=body)
    assert calls == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["quoted-printable", "base64", "7bit", "binary"]))
def test_hostile_bodies_decode_without_raising_and_bounded(body: bytes, encoding: str) -> None:
    decoded = sections.decode_transfer_encoding(body, encoding)
    assert decoded is not None
    assert len(decoded) <= 2 * len(body)  # at most a CR added per bare LF
    decoded = binary(single(encoding, body))
    assert decoded is not None
    assert len(decoded) <= 2 * len(body) + 2


def test_large_quoted_printable_decodes_in_linear_time() -> None:
    import time

    body = b"caf=C3=A9 =3D soft=\r\n" * 200_000 + b"padded  \r\n" * 100_000  # ~5 MB
    start = time.perf_counter()
    decoded = sections.decode_quoted_printable(body)
    elapsed = time.perf_counter() - start
    assert decoded.startswith(b"caf\xc3\xa9 = softcaf")
    assert decoded.endswith(b"padded\r\npadded\r\n")
    assert elapsed < 5.0, elapsed  # about 0.1 s measured on a quiet machine
