"""Issue 5, MTA-STS enforce (RFC 8461) end to end: g.test publishes an _mta-sts TXT record and
serves an "enforce" policy over HTTPS (a test CA, trusted through [queue] tls_ca_file); its MX
offers STARTTLS with a certificate for another name. Mailstead must not send the message in
the clear (no MAIL command ever reaches the peer), must defer it with a last_error that says
why, and must deliver it over verified TLS once the peer has a matching certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
MX_IP = "127.0.0.11"
POLICY_IP = "127.0.0.12"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.g.test\r\nmax_age: 86400\r\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, LocalCA, PolicyServer, int]]:
    root: Path = tmp_path_factory.mktemp("mtasts")
    ca = LocalCA(root)
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", MX_IP)
    https_port = free_port(POLICY_IP)
    a = make_instance(root, "a.test", "127.0.0.2", dns_port=dns_server.port, smtp_port=port,
                      users={ALICE: PASSWORD},
                      queue={"tls_ca_file": str(ca.ca_path), "mta_sts_port": https_port,
                             "retry_schedule": [1], "connection_reuse_time": 0})
    publish(zone, a)
    zone.add("g.test", "MX", (10, "mx.g.test"))
    zone.add("mx.g.test", "A", MX_IP)
    zone.add("_mta-sts.g.test", "TXT", "v=STSv1; id=20251124T1")
    zone.add("mta-sts.g.test", "A", POLICY_IP)
    policy = PolicyServer(POLICY_IP, https_port, "mta-sts.g.test", POLICY, ca)
    a.start()
    try:
        yield a, ca, policy, port
    finally:
        code = a.stop()
        policy.stop()
        dns_server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def test_enforce_with_a_mismatching_certificate_defers_and_sends_nothing_in_the_clear(
    world: tuple[Instance, LocalCA, PolicyServer, int],
) -> None:
    a, ca, policy, port = world
    # STARTTLS offered, but with a certificate for another name (signed by the trusted CA,
    # so only the name is wrong).
    peer = ScriptedPeer(MX_IP, port, ["250 2.1.5 Ok"],
                        tls_context=ca.server_context("other.test"))
    try:
        submit(a, ALICE, ["gina@g.test"], make_mail(ALICE, "gina@g.test", "sts-1"))

        def failed_rows() -> list[object]:
            return [r for r in a.queue()
                    if r.rcpt_to == "gina@g.test" and r.attempts >= 2 and r.state != "active"]

        rows = wait_for(failed_rows, 30, "two failed attempts", log=a.log)
        assert policy.fetches >= 1
        [row] = rows
        assert row.state == "deferred"
        assert row.last_error is not None
        assert "4.7.5" in row.last_error
        assert "certificate not valid for mx.g.test" in row.last_error
        assert peer.mails == []  # no MAIL FROM in the clear, nor anything after it
        assert peer.received == []
        failures = [line for line in a.log().splitlines() if "tlsrpt.failure" in line]
        assert failures
        assert "domain=g.test policy=sts result=certificate-host-mismatch" in failures[0]
        shown = cli("queue", "show", row.queue_id, "--data-dir", str(a.data_dir))
        assert shown.code == 0
        assert "certificate not valid for mx.g.test" in shown.out
    finally:
        peer.stop()

    # The MX gets a certificate for its name: the next attempt goes through, over TLS.
    good = ScriptedPeer(MX_IP, port, ["250 2.1.5 Ok"],
                        tls_context=ca.server_context("mx.g.test"))
    try:
        assert cli("queue", "retry", "--data-dir", str(a.data_dir)).code == 0
        wait_for(lambda: good.received, 30, "delivery over verified TLS", log=a.log)
        assert good.tls == [True]
        mail_from, rcpts, data = good.received[0]
        assert (mail_from, rcpts) == (ALICE, ["gina@g.test"])
        assert b"sts-1" in data
        wait_for(lambda: [r.state for r in a.queue() if r.rcpt_to == "gina@g.test"]
                 == ["delivered"], 10, "the row recorded as delivered")
    finally:
        good.stop()
    # Deferrals inside the delay-warning time are not reported to the sender.
    assert not [m for m in a.inbox(ALICE) if b"MAILER-DAEMON" in m and b"sts-1" in m]

