"""FETCH PREVIEW text (RFC 8970) from a message and its stored structure."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from test_imap_parser import args

from mailstead.core.message import summarize
from mailstead.proto.imap.ast import FetchAtt
from mailstead.proto.imap.preview import MAX_PREVIEW, html_text, preview


def of(data: bytes) -> str | None:
    return preview(data, json.loads(summarize(data).bodystructure))


def test_plain_text_is_whitespace_folded() -> None:
    assert of(b"Subject: x\r\n\r\n  Hello,\r\n\r\n   world \r\n") == "Hello, world"


def test_alternative_prefers_plain_and_decodes() -> None:
    data = (b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/html\r\n\r\n<b>html</b>\r\n--b\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\nD=E9j=E0 vu\r\n--b--\r\n")
    assert of(data) == "Déjà vu"


def test_html_only_and_base64() -> None:
    html = b"<style>x{}</style><p>One&nbsp;&amp; two</p><script>no()</script>"
    import base64
    data = (b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + base64.encodebytes(html))
    assert of(data) == "One\xa0& two".replace("\xa0", " ")


def test_mixed_skips_attachments_and_nil_without_text() -> None:
    data = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nattached\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nthe body\r\n--b--\r\n")
    assert of(data) == "the body"
    assert of(b"Content-Type: image/png\r\n\r\nxxxx\r\n") is None
    assert of(b"Subject: empty\r\n\r\n \r\n") is None
    assert preview(b"whatever", None) is None


def test_at_most_256_characters() -> None:
    assert len(of(b"\r\n" + "é".encode() * 1000) or "") == MAX_PREVIEW


def test_html_text_of_broken_markup() -> None:
    assert "text" in html_text("<p <b>text</p <!-- unterminated")


def test_parse_preview_and_lazy() -> None:
    assert args(b"a FETCH 1 PREVIEW").atts == (FetchAtt("PREVIEW"),)  # type: ignore[attr-defined]
    parsed = args(b"a FETCH 1:* (UID PREVIEW (LAZY) FLAGS)")
    assert [a.name for a in parsed.atts] == ["UID", "PREVIEW", "FLAGS"]  # type: ignore[attr-defined]
    modifiers = args(b"a FETCH 1 PREVIEW (CHANGEDSINCE 5)")
    assert modifiers.changed_since == 5  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_hostile_messages(data: bytes) -> None:
    text = of(data)
    assert text is None or 0 < len(text) <= MAX_PREVIEW
