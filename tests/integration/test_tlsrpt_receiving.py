"""TLS reports mailed to us (RFC 8460 section 5.3): a gzip'd JSON report sent over port 25 to
the rua address ``mailstead dns`` publishes lands in the first administrator's INBOX and is
kept in the store, shown by ``mailstead tlsrpt show`` in plain words; the same report mailed
twice counts once; a broken report is delivered but not kept, and the server carries on."""

from __future__ import annotations

import gzip
import json
import re
import smtplib
import uuid
from collections.abc import Iterator
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from helpers import DOMAIN, Harness, Server, Users, init_data_dir, run_cli

ADMIN = f"admin@{DOMAIN}"
PASSWORD = "tlsrpt-Secret-1"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir: Path = tmp_path_factory.mktemp("tlsrpt-in") / "data"
    init_data_dir(data_dir, Users(passwords={}))
    run_cli("user", "add", ADMIN, "--admin", "--password-stdin", "--data-dir", str(data_dir),
            stdin=PASSWORD + "\n")
    server = Server(data_dir).start()
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        assert code == 0, server.log_text()[-4000:]
        assert "Traceback" not in server.log_text()


def _report(report_id: str) -> dict[str, Any]:
    """A report as a big receiver sends it (the shape of RFC 8460 appendix B)."""
    return {
        "organization-name": "Company-X",
        "date-range": {"start-datetime": "2026-12-06T00:00:00Z",
                       "end-datetime": "2026-12-06T23:59:59Z"},
        "contact-info": "sts-reporting@company-x.test",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts",
                       "policy-string": ["version: STSv1", "mode: testing",
                                         "mx: mail.example.test", "max_age: 604800"],
                       "policy-domain": DOMAIN},
            "summary": {"total-successful-session-count": 5326,
                        "total-failure-session-count": 303},
            "failure-details": [{"result-type": "certificate-expired",
                                 "sending-mta-ip": "2001:db8:abcd:0012::1",
                                 "receiving-mx-hostname": "mail.example.test",
                                 "failed-session-count": 100}],
        }],
    }


def _mail(rcpt: str, attachment: bytes, token: str) -> bytes:
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg["From"] = "tls-reporting@company-x.test"
    msg["To"] = rcpt
    msg["Subject"] = f"Report Domain: {DOMAIN} Submitter: company-x.test Report-ID: <{token}>"
    msg["TLS-Report-Domain"] = DOMAIN
    msg["TLS-Report-Submitter"] = "company-x.test"
    msg.attach(MIMEText(f"This is an aggregate TLS report. {token}\n"))
    part = MIMEApplication(attachment, "tlsrpt+gzip")
    part.add_header("Content-Disposition", "attachment",
                    filename=f"company-x.test!{DOMAIN}!1796515200!1796601599.json.gz")
    msg.attach(part)
    return msg.as_bytes(policy=SMTP)


def _send(h: Harness, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=15) as smtp:
        smtp.sendmail("tls-reporting@company-x.test", [rcpt], data)


@pytest.fixture(scope="module")
def rua(fresh: Harness) -> str:
    """The TLS-RPT address ``mailstead dns`` publishes."""
    zone = run_cli("dns", DOMAIN, "--data-dir", str(fresh.data_dir))
    match = re.search(r'_smtp\._tls\.\S+\s.*"v=TLSRPTv1; rua=mailto:([^"]+)"', zone)
    assert match, zone
    return match.group(1)


def _show(h: Harness) -> str:
    return run_cli("tlsrpt", "show", "--data-dir", str(h.data_dir))


def test_report_is_delivered_kept_and_shown(fresh: Harness, rua: str) -> None:
    assert _show(fresh).strip() == "no TLS reports received"
    token = f"r-{uuid.uuid4().hex[:8]}"
    data = _mail(rua, gzip.compress(json.dumps(_report(token)).encode()), token)
    _send(fresh, rua, data)
    _send(fresh, rua, data)  # mailed twice: kept once
    assert len(fresh.find(ADMIN, token)) == 2
    shown = _show(fresh)
    assert shown.count(f"report {token}") == 1, shown
    assert (f"Company-X about {DOMAIN}, 2026-12-06T00:00:00Z to 2026-12-06T23:59:59Z "
            f"(report {token}") in shown
    assert "5326 sessions with TLS, 303 failed" in shown
    assert "100 x certificate-expired at mail.example.test" in shown


BAD = [
    b"not gzip at all",
    gzip.compress(b"{not json"),
    gzip.compress(b"[1, 2]"),
    gzip.compress(json.dumps({"policies": [], "date-range": {}}).encode()),
    gzip.compress(b" " * (2 * 1024 * 1024)),  # over the 1 MiB limit uncompressed
]


def test_bad_reports_are_delivered_not_kept(fresh: Harness, rua: str) -> None:
    before = _show(fresh)
    for attachment in BAD:
        token = f"bad-{uuid.uuid4().hex[:8]}"
        _send(fresh, rua, _mail(rua, attachment, token))
        assert len(fresh.find(ADMIN, token)) == 1
    assert _show(fresh) == before
    assert fresh.log().count("not a usable TLS report") == len(BAD)
