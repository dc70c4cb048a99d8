"""Daily SMTP TLS reports (RFC 8460) end to end: a.test (a real ``mailstead serve``) delivers
to b.test (no MTA-STS, STARTTLS with a good certificate: successes), d.test (same MX, but no
_smtp._tls record: no report) and c.test (MTA-STS enforce, MX certificate for another name: a
certificate-host-mismatch failure). ``mailstead tlsrpt send --day today`` then mails one
report per asking domain to its rua (a loopback aiosmtpd peer), through the queue: a
multipart/report with the RFC's fields, DKIM-signed, whose gzip'd JSON has exactly those
counts; a second run sends nothing."""

from __future__ import annotations

import email
import gzip
import json
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    LocalCA,
    PolicyServer,
    ScriptedPeer,
    Zone,
    cli,
    free_port,
    make_instance,
    make_mail,
    publish,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"
B_IP, C_IP, POLICY_IP = "127.0.0.13", "127.0.0.14", "127.0.0.15"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.c.test\r\nmax_age: 86400\r\n"
RUA = "v=TLSRPTv1; rua=mailto:reports@b.test"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, ScriptedPeer]]:
    root: Path = tmp_path_factory.mktemp("tlsrpt")
    ca = LocalCA(root)
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", B_IP, C_IP)
    https_port = free_port(POLICY_IP)
    # One attempt each in the test's time: the c.test failure is counted once.
    a = make_instance(root, "a.test", "127.0.0.2", dns_port=dns_server.port, smtp_port=port,
                      users={ALICE: PASSWORD},
                      queue={"tls_ca_file": str(ca.ca_path), "mta_sts_port": https_port,
                             "retry_schedule": [3600], "connection_reuse_time": 0})
    publish(zone, a)
    for domain in ("b.test", "d.test"):
        zone.add(domain, "MX", (10, "mx.b.test"))
    zone.add("mx.b.test", "A", B_IP)
    zone.add("_smtp._tls.b.test", "TXT", RUA)
    zone.add("c.test", "MX", (10, "mx.c.test"))
    zone.add("mx.c.test", "A", C_IP)
    zone.add("_mta-sts.c.test", "TXT", "v=STSv1; id=20261207T1")
    zone.add("mta-sts.c.test", "A", POLICY_IP)
    zone.add("_smtp._tls.c.test", "TXT", RUA)
    policy = PolicyServer(POLICY_IP, https_port, "mta-sts.c.test", POLICY, ca)
    peer_b = ScriptedPeer(B_IP, port, ["250 2.1.5 Ok"], tls_context=ca.server_context("mx.b.test"))
    peer_c = ScriptedPeer(C_IP, port, ["250 2.1.5 Ok"], tls_context=ca.server_context("x.test"))
    a.start()
    try:
        yield a, peer_b
    finally:
        code = a.stop()
        peer_b.stop()
        peer_c.stop()
        policy.stop()
        dns_server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def _report(message: bytes) -> tuple[Message, dict[str, Any]]:
    msg = email.message_from_bytes(message)
    parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1, message[:2000]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return msg, json.loads(gzip.decompress(payload))


def test_daily_report_counts_sessions(world: tuple[Instance, ScriptedPeer]) -> None:
    a, peer_b = world
    for rcpt in ("bob@b.test", "carol@b.test", "dave@d.test", "gina@c.test"):
        submit(a, ALICE, [rcpt], make_mail(ALICE, rcpt, f"tlsrpt-{rcpt[:4]}"))
    wait_for(lambda: len(peer_b.received) >= 3, 30, "three deliveries over TLS", log=a.log)
    assert all(peer_b.tls[:3])
    wait_for(lambda: [r for r in a.queue() if r.rcpt_to == "gina@c.test" and r.attempts >= 1
                      and r.state == "deferred"], 30, "the failed c.test attempt", log=a.log)

    today = time.strftime("%Y-%m-%d", time.gmtime())
    result = cli("tlsrpt", "send", "--day", "today", "--data-dir", str(a.data_dir))
    assert result.code == 0, result.err
    assert "2 report(s) sent" in result.out, result.out
    assert "d.test: publishes no _smtp._tls record" in result.out

    def reports() -> list[tuple[str, list[str], bytes]]:
        return [m for m in peer_b.received if m[1] == ["reports@b.test"]]

    wait_for(lambda: len(reports()) >= 2, 30, "two reports at the rua", log=a.log)
    by_domain = {}
    for mail_from, _rcpts, data in reports():
        msg, report = _report(data)
        domain = msg["TLS-Report-Domain"]
        assert msg["TLS-Report-Submitter"] == "mail.a.test"
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "tlsrpt"
        subject = " ".join(msg["Subject"].split())  # unfolded
        assert subject == (f"Report Domain: {domain} Submitter: mail.a.test "
                           f"Report-ID: <{report['report-id']}>")
        assert "d=a.test" in (msg["DKIM-Signature"] or "")
        assert mail_from == "tls-reports@a.test"
        assert report["date-range"] == {"start-datetime": f"{today}T00:00:00Z",
                                        "end-datetime": f"{today}T23:59:59Z"}
        assert report["organization-name"] == "mail.a.test"
        by_domain[domain] = report["policies"]
    assert set(by_domain) == {"b.test", "c.test"}
    [b] = by_domain["b.test"]
    assert b["policy"] == {"policy-type": "no-policy-found", "policy-string": [],
                           "policy-domain": "b.test"}
    assert b["summary"] == {"total-successful-session-count": 2,
                            "total-failure-session-count": 0}
    assert "failure-details" not in b
    [c] = by_domain["c.test"]
    assert c["policy"]["policy-type"] == "sts"
    assert c["policy"]["policy-string"] == POLICY.rstrip("\r\n").split("\r\n")
    assert c["policy"]["mx-host"] == ["mx.c.test"]
    assert c["summary"] == {"total-successful-session-count": 0,
                            "total-failure-session-count": 1}
    assert c["failure-details"] == [{"result-type": "certificate-host-mismatch",
                                     "receiving-ip": C_IP,
                                     "receiving-mx-hostname": "mx.c.test",
                                     "failed-session-count": 1}]

    again = cli("tlsrpt", "send", "--day", "today", "--data-dir", str(a.data_dir))
    assert again.code == 0, again.err
    assert "0 report(s) sent" in again.out
    assert "b.test: sent before, not again" in again.out
