"""SMTP TLS reports other senders mail to us (RFC 8460 section 5.3): the gzip'd (or plain)
JSON report of a message to a ``tls-reports@`` address, found in the message's one parse
(core.message's BODYSTRUCTURE), read with hard limits and summed up for the store. Anything
malformed is a ``ReportError`` (the message itself is still delivered): hostile input never
raises anything else, and never decompresses beyond ``MAX_JSON``."""

from __future__ import annotations

import base64
import binascii
import json
import quopri
import zlib
from collections.abc import Iterator
from typing import Any

from mailstead.storage.interfaces import ReceivedTlsReport

# RFC 8460 section 5.3 media types; the JSON of a big sender's daily report is a few KiB.
GZIP_TYPE = ("application", "tlsrpt+gzip")
JSON_TYPE = ("application", "tlsrpt+json")
MAX_JSON = 1024 * 1024
MAX_REPORTS = 4  # report parts kept per message
MAX_FIELD = 255


class ReportError(Exception):
    """Not a usable TLS report; the text says why."""


def _parts(node: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if not isinstance(node, dict) or depth > 20:
        return
    yield node
    for child in node.get("parts") or ():
        yield from _parts(child, depth + 1)


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "BASE64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReportError(f"bad base64: {exc}") from None
    if encoding == "QUOTED-PRINTABLE":
        return quopri.decodestring(body)
    return body


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_JSON + 1)
    except zlib.error as exc:
        raise ReportError(f"bad gzip data: {exc}") from None
    if len(out) > MAX_JSON or inflater.unconsumed_tail:
        raise ReportError(f"report larger than {MAX_JSON} octets uncompressed")
    return out


def report_bodies(data: bytes, bodystructure: str) -> list[bytes]:
    """The JSON of each TLS report part of the stored message ``data`` (at most
    MAX_REPORTS), from its BODYSTRUCTURE JSON; ReportError when a report part is broken."""
    try:
        tree = json.loads(bodystructure)
    except ValueError:
        return []
    out: list[bytes] = []
    for node in _parts(tree):
        kind = (str(node.get("type", "")).lower(), str(node.get("subtype", "")).lower())
        if kind not in (GZIP_TYPE, JSON_TYPE):
            continue
        start, end = node.get("body_offset"), node.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end:
            continue
        raw = _decode(data[start:end], str(node.get("encoding", "7BIT")).upper())
        if kind == GZIP_TYPE:
            raw = _gunzip(raw)
        elif len(raw) > MAX_JSON:
            raise ReportError(f"report larger than {MAX_JSON} octets")
        out.append(raw)
        if len(out) >= MAX_REPORTS:
            break
    return out


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"{name} is missing or not a string")
    return value.strip()[:MAX_FIELD]


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return min(value, 2**62)


def parse_report(raw: bytes, received_at: float) -> ReceivedTlsReport:
    """Checks and sums up one report (RFC 8460 section 4.4)."""
    try:
        report = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(report, dict):
        raise ReportError("the report is not a JSON object")
    date_range = report.get("date-range")
    if not isinstance(date_range, dict):
        raise ReportError("date-range is missing")
    policies = report.get("policies")
    if not isinstance(policies, list):
        raise ReportError("policies is missing")
    successes = failures = 0
    domains: list[str] = []
    for entry in policies:
        if not isinstance(entry, dict):
            continue
        policy = entry.get("policy")
        summary = entry.get("summary")
        if isinstance(policy, dict) and isinstance(policy.get("policy-domain"), str):
            domains.append(policy["policy-domain"].strip().lower()[:MAX_FIELD])
        if isinstance(summary, dict):
            successes += _count(summary.get("total-successful-session-count"))
            failures += _count(summary.get("total-failure-session-count"))
    return ReceivedTlsReport(
        received_at=received_at,
        organization=_text(report.get("organization-name"), "organization-name"),
        report_id=_text(report.get("report-id"), "report-id"),
        start_time=_text(date_range.get("start-datetime"), "start-datetime"),
        end_time=_text(date_range.get("end-datetime"), "end-datetime"),
        policy_domain=",".join(dict.fromkeys(domains))[:MAX_FIELD],
        successes=successes,
        failures=failures,
        report=json.dumps(report, separators=(",", ":")),
    )
