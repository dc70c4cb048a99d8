"""REQUIRETLS (RFC 8689) against a real ``mailstead serve``: offered only after STARTTLS and
refused before it; a REQUIRETLS message goes out only over verified TLS to a server that
offers REQUIRETLS itself (g.test publishes an MTA-STS enforce policy, so its MX is known
securely), and bounces with 5.7.30 otherwise: to a domain without such a policy, to an MX
without STARTTLS, to an MX that does not offer REQUIRETLS. "TLS-Required: No" (section 5)
sets the MTA-STS policy aside for one message."""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import tls_context
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    LocalCA,
    PolicyServer,
    ScriptedPeer,
    Zone,
    free_port,
    make_instance,
    make_mail,
    publish,
    wait_for,
)

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"
MX_IP = "127.0.0.11"
POLICY_IP = "127.0.0.12"
PLAIN_IP = "127.0.0.13"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.g.test\r\nmax_age: 86400\r\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, LocalCA, int]]:
    root: Path = tmp_path_factory.mktemp("requiretls")
    ca = LocalCA(root)
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", MX_IP, PLAIN_IP)
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
    zone.add("h.test", "MX", (10, "mx.h.test"))  # no MTA-STS policy
    zone.add("mx.h.test", "A", PLAIN_IP)
    policy = PolicyServer(POLICY_IP, https_port, "mta-sts.g.test", POLICY, ca)
    a.start()
    try:
        yield a, ca, port
    finally:
        code = a.stop()
        policy.stop()
        dns_server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def send(a: Instance, rcpt: str, message: bytes, *, requiretls: bool = True) -> None:
    assert a.server is not None
    with smtplib.SMTP(a.ip, a.ports["submission"], timeout=20) as smtp:
        smtp.starttls(context=tls_context(a.server.cert_path, a.hostname))
        smtp.login(ALICE, PASSWORD)
        assert smtp.has_extn("requiretls")
        smtp.sendmail(ALICE, [rcpt], message, ["REQUIRETLS"] if requiretls else [])


def bounce(a: Instance, token: str) -> email.message.Message:
    def found() -> list[email.message.Message]:
        out = []
        for raw in a.inbox(ALICE):
            if b"MAILER-DAEMON" in raw and token.encode() in raw:
                out.append(email.message_from_bytes(raw, policy=email.policy.compat32))
        return out

    (msg,) = wait_for(found, 30, f"the bounce of {token}", log=a.log)
    rcpt = msg.get_payload()[1].get_payload()[1]
    assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.7.30"), str(rcpt)
    return msg


def explained(msg: email.message.Message) -> str:
    """The human part of a DSN, decoded and with its lines joined."""
    text = msg.get_payload()[0].get_payload(decode=True).decode("utf-8")
    return " ".join(text.split())


def test_requiretls_is_offered_only_after_starttls(world: tuple[Instance, LocalCA, int]) -> None:
    a, _ca, _port = world
    assert a.server is not None
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("requiretls")
        code, text = smtp.docmd("MAIL FROM:<x@r.test> REQUIRETLS")
        assert (code, text[:6]) == (530, b"5.7.10")
        smtp.starttls(context=tls_context(a.server.cert_path, a.hostname))
        smtp.ehlo("client.test")
        assert smtp.has_extn("requiretls")
        code, text = smtp.docmd("MAIL FROM:<x@r.test> REQUIRETLS=yes")
        assert code == 501
        assert smtp.docmd("MAIL FROM:<x@r.test> REQUIRETLS")[0] == 250
    with smtplib.SMTP(a.ip, a.ports["submission"], timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("requiretls")  # send() checks it is there after STARTTLS


def test_requiretls_to_a_domain_without_a_verified_route_bounces(
    world: tuple[Instance, LocalCA, int],
) -> None:
    a, _ca, port = world
    peer = ScriptedPeer(PLAIN_IP, port, ["250 2.1.5 Ok"])
    try:
        send(a, "hana@h.test", make_mail(ALICE, "hana@h.test", "rtls-nopolicy"))
        msg = bounce(a, "rtls-nopolicy")
        assert "no MTA-STS policy in enforce mode" in explained(msg)
        assert peer.mails == []  # nothing was sent at all
    finally:
        peer.stop()


def test_requiretls_to_an_mx_without_starttls_bounces(world: tuple[Instance, LocalCA, int]) -> None:
    a, _ca, port = world
    peer = ScriptedPeer(MX_IP, port, ["250 2.1.5 Ok"])
    try:
        send(a, "gina@g.test", make_mail(ALICE, "gina@g.test", "rtls-plain"))
        msg = bounce(a, "rtls-plain")
        assert "does not offer STARTTLS" in explained(msg)
        assert peer.mails == []
    finally:
        peer.stop()


def test_requiretls_to_an_mx_without_requiretls_bounces(
    world: tuple[Instance, LocalCA, int],
) -> None:
    a, ca, port = world
    peer = ScriptedPeer(MX_IP, port, ["250 2.1.5 Ok"], tls_context=ca.server_context("mx.g.test"))
    try:
        send(a, "gina@g.test", make_mail(ALICE, "gina@g.test", "rtls-noext"))
        msg = bounce(a, "rtls-noext")
        assert "does not offer REQUIRETLS" in explained(msg)
        assert peer.mails == []
    finally:
        peer.stop()


def test_requiretls_goes_out_over_verified_tls_with_the_parameter(
    world: tuple[Instance, LocalCA, int],
) -> None:
    a, ca, port = world
    peer = ScriptedPeer(MX_IP, port, ["250 2.1.5 Ok"], tls_context=ca.server_context("mx.g.test"),
                        requiretls=True)
    try:
        send(a, "gina@g.test", make_mail(ALICE, "gina@g.test", "rtls-ok"))
        wait_for(lambda: peer.received, 30, "the delivery", log=a.log)
        assert peer.tls == [True]
        assert "REQUIRETLS" in peer.mail_options[0]
        rows = [r for r in a.queue() if r.rcpt_to == "gina@g.test" and r.state == "delivered"]
        assert rows
        attempts = [line for line in a.log().splitlines()
                    if "queue.attempt" in line and "g.test" in line and "delivered=1" in line]
        assert attempts
        assert "verified" in attempts[-1]
        assert "unverified" not in attempts[-1]
    finally:
        peer.stop()


def test_tls_required_no_sets_the_mta_sts_policy_aside(
    world: tuple[Instance, LocalCA, int],
) -> None:
    a, _ca, port = world
    peer = ScriptedPeer(MX_IP, port, ["250 2.1.5 Ok"])  # no STARTTLS: enforce would defer
    try:
        message = b"TLS-Required: No\r\n" + make_mail(ALICE, "gina@g.test", "rtls-no-header")
        send(a, "gina@g.test", message, requiretls=False)
        wait_for(lambda: [d for _, _, d in peer.received if b"rtls-no-header" in d], 30,
                 "the delivery in the clear", log=a.log)
        assert peer.tls == [False]
    finally:
        peer.stop()
