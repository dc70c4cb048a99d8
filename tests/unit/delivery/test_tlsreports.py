"""Received TLS reports (RFC 8460 section 5.3): found by media type in the message's one parse,
base64 and gzip undone with a size cap, summed up; hostile input only ever raises
ReportError."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.message import summarize
from mailstead.delivery.tlsreports import MAX_JSON, ReportError, parse_report, report_bodies

REPORT = {"organization-name": "X", "report-id": "r1",
          "date-range": {"start-datetime": "a", "end-datetime": "b"},
          "policies": [{"policy": {"policy-domain": "Example.TEST"},
                        "summary": {"total-successful-session-count": 3,
                                    "total-failure-session-count": 1}},
                       {"policy": {"policy-domain": "example.test"},
                        "summary": {"total-successful-session-count": True,
                                    "total-failure-session-count": -4}}]}


def _message(payload: bytes, media: str = "application/tlsrpt+gzip") -> bytes:
    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"From: r@x.test\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/report; report-type="tlsrpt"; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            b"--b\r\nContent-Type: " + media.encode() + b"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--b--\r\n")


def _bodies(data: bytes) -> list[bytes]:
    return report_bodies(data, summarize(data).bodystructure)


def test_found_decoded_and_summed() -> None:
    raw = json.dumps(REPORT).encode()
    assert _bodies(_message(gzip.compress(raw))) == [raw]
    assert _bodies(_message(raw, "application/tlsrpt+json")) == [raw]
    assert _bodies(b"Subject: x\r\n\r\nplain\r\n") == []
    report = parse_report(raw, 5.0)
    assert (report.organization, report.report_id, report.start_time) == ("X", "r1", "a")
    assert (report.successes, report.failures) == (3, 1)  # bad counts count nothing
    assert report.policy_domain == "example.test"
    assert json.loads(report.report) == REPORT


def test_limits() -> None:
    with pytest.raises(ReportError, match="larger"):
        _bodies(_message(gzip.compress(b" " * (MAX_JSON + 1))))
    with pytest.raises(ReportError, match="gzip"):
        _bodies(_message(b"\x1f\x8bnot really"))
    with pytest.raises(ReportError):
        parse_report(b"[" * 100_000, 0.0)


@given(st.binary(max_size=400))
def test_hostile_parts_only_raise_report_error(payload: bytes) -> None:
    try:
        for raw in _bodies(_message(payload)) + _bodies(_message(gzip.compress(payload))):
            parse_report(raw, 0.0)
    except ReportError:
        pass


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(
                         ["policies", "policy", "summary", "date-range", "report-id",
                          "organization-name", "start-datetime", "end-datetime",
                          "policy-domain", "total-successful-session-count"]), inner,
                         max_size=5), max_leaves=20)


@given(_json)
def test_hostile_json_only_raises_report_error(value: object) -> None:
    try:
        report = parse_report(json.dumps(value).encode(), 0.0)
    except ReportError:
        return
    assert report.successes >= 0
    assert report.failures >= 0
