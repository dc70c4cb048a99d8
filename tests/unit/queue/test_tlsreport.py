"""The pure parts of the daily TLS reports (RFC 8460): the _smtp._tls record (hostile input
never raises), the report JSON's counts, the report mail's fields and attachment, and the
per-day session counts the SMTP client gathers."""

from __future__ import annotations

import email
import gzip
import json

from hypothesis import given
from hypothesis import strategies as st

from mailstead.queue.mtasts import TlsRptCounters
from mailstead.queue.tlsreport import (
    MAX_RUA,
    mailto_address,
    parse_tlsrpt_record,
    report_json,
    report_message,
)
from mailstead.storage.interfaces import TlsResult

POLICY = "version: STSv1\nmode: enforce\nmx: mx.b.test\nmax_age: 86400"


def test_record_parsing() -> None:
    assert parse_tlsrpt_record(["v=TLSRPTv1; rua=mailto:r@b.test,https://r.b.test/x"]) == (
        "mailto:r@b.test", "https://r.b.test/x")
    assert parse_tlsrpt_record(["v=TLSRPTv1;rua=mailto:r@b.test", "v=spf1 -all"]) == (
        "mailto:r@b.test",)
    # RFC 8460 section 3: more than one record is none; other schemes are not used.
    assert parse_tlsrpt_record(["v=TLSRPTv1; rua=mailto:a@b.test"] * 2) == ()
    assert parse_tlsrpt_record(["v=TLSRPTv1; rua=http://b.test/,ftp://x"]) == ()
    assert parse_tlsrpt_record(["v=TLSRPTv10; rua=mailto:a@b.test"]) == ()
    assert parse_tlsrpt_record([]) == ()


@given(st.lists(st.text(max_size=300), max_size=4))
def test_record_parsing_never_raises(records: list[str]) -> None:
    uris = parse_tlsrpt_record(records)
    assert len(uris) <= MAX_RUA
    assert all(u.lower().startswith(("mailto:", "https://")) for u in uris)


@given(st.text(max_size=200))
def test_mailto_never_raises(text: str) -> None:
    address = mailto_address("mailto:" + text)
    assert address is None or "@" in address


def test_mailto() -> None:
    assert mailto_address("mailto:tls%2Breports@b.test") == "tls+reports@b.test"
    assert mailto_address("mailto:r@b.test?subject=x") == "r@b.test"
    assert mailto_address("mailto:not an address") is None
    assert mailto_address("mailto:r@[192.0.2.1]") is None


def _rows() -> list[TlsResult]:
    return [
        TlsResult("2026-12-07", "b.test", "sts", POLICY, "", "mx.b.test", "192.0.2.1", 5),
        TlsResult("2026-12-07", "b.test", "sts", POLICY, "validation-failure", "mx.b.test",
                  "192.0.2.1", 2),
        TlsResult("2026-12-07", "b.test", "sts", POLICY, "starttls-not-supported",
                  "mx2.b.test", "192.0.2.2", 1),
        TlsResult("2026-12-07", "b.test", "no-policy-found", "", "", "mx.b.test",
                  "192.0.2.1", 3),
    ]


def test_report_json_counts() -> None:
    report = report_json("2026-12-07", "b.test", _rows(), organization="Org",
                         contact="tls-reports@a.test", report_id="id-1")
    assert report["date-range"] == {"start-datetime": "2026-12-07T00:00:00Z",
                                    "end-datetime": "2026-12-07T23:59:59Z"}
    assert (report["organization-name"], report["contact-info"], report["report-id"]) == (
        "Org", "tls-reports@a.test", "id-1")
    sts, none = report["policies"]
    assert sts["policy"] == {"policy-type": "sts", "policy-string": POLICY.split("\n"),
                             "policy-domain": "b.test", "mx-host": ["mx.b.test"]}
    assert sts["summary"] == {"total-successful-session-count": 5,
                              "total-failure-session-count": 3}
    assert [(d["result-type"], d["failed-session-count"]) for d in sts["failure-details"]] == [
        ("validation-failure", 2), ("starttls-not-supported", 1)]
    assert none["summary"]["total-successful-session-count"] == 3
    assert "failure-details" not in none


def test_report_message() -> None:
    report = report_json("2026-12-07", "b.test", _rows(), organization="Org",
                         contact="tls-reports@a.test", report_id="id-1")
    gz = gzip.compress(json.dumps(report).encode())
    data = report_message(report, gz, domain="b.test", submitter="mail.a.test",
                          sender="tls-reports@a.test", rcpts=["r@b.test"], now=1.8e9)
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    msg = email.message_from_bytes(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "b.test"
    assert msg["TLS-Report-Submitter"] == "mail.a.test"
    assert " ".join(msg["Subject"].split()) == (
        "Report Domain: b.test Submitter: mail.a.test Report-ID: <id-1>")
    [part] = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert part.get_filename() == "mail.a.test!b.test!1796601600!1796687999.json.gz"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert json.loads(gzip.decompress(payload)) == report


def test_counters_keep_days_and_drain() -> None:
    now = [1796601600.0 + 3600]  # 2026-12-07 01:00 UTC
    counters = TlsRptCounters(clock=lambda: now[0])
    lines = tuple(POLICY.split("\n"))
    counters.success("B.test", "sts", policy=lines, mx_host="MX.b.test.", ip="192.0.2.1")
    counters.success("b.test", "sts", policy=lines, mx_host="mx.b.test", ip="192.0.2.1")
    counters.failure("b.test", "sts", "validation-failure", policy=lines, mx_host="mx.b.test",
                     ip="192.0.2.1")
    now[0] += 86400
    counters.success("b.test", "no-policy-found")
    rows = sorted(counters.drain_results(), key=lambda r: (r.day, r.result_type))
    assert [(r.day, r.result_type, r.sessions) for r in rows] == [
        ("2026-12-07", "", 2), ("2026-12-07", "validation-failure", 1), ("2026-12-08", "", 1)]
    assert rows[0].policy_string == POLICY
    assert rows[0].mx_host == "mx.b.test"
    assert counters.drain_results() == []
    counters.restore_results(rows[:1])
    assert [r.sessions for r in counters.drain_results()] == [2]
