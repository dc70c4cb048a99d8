"""Issue 9: ARC sealing when an alias forwards to a remote target. news@sender.test (SPF, DKIM
and DMARC p=reject in a DNS server on loopback) writes to fwd@a.test on port 25 of one
Mailstead; the alias sends it on to friend@remote.test, whose MX is an aiosmtpd sink. The sink
gets the message with an ARC set sealed by a.test that dkimpy's arc_verify accepts, carrying
the results of our inbound checks; mail submitted by a user is not sealed."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import rewrite_tables, run_cli
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    ScriptedPeer,
    Zone,
    free_port,
    make_instance,
    make_mail,
    publish,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                         serialization.NoEncryption())
PUB = base64.b64encode(_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
SINK_IP = "127.0.0.4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, ScriptedPeer, DnsFixture]]:
    root: Path = tmp_path_factory.mktemp("arc")
    zone = Zone()
    server = DnsFixture(zone)
    port = free_port("127.0.0.2", SINK_IP)
    a = make_instance(root, "a.test", "127.0.0.2", dns_port=server.port, smtp_port=port,
                      users={"alice@a.test": PASSWORD})
    rewrite_tables(a.data_dir / "mailstead.toml", {"auth_checks": {"enable": True}})
    run_cli("alias", "add", "fwd@a.test", "friend@remote.test", "--data-dir", str(a.data_dir))
    # A second local domain that publishes no SPF or DMARC record, as many a family's does.
    run_cli("domain", "add", "lax.test", "--data-dir", str(a.data_dir))
    publish(zone, a)
    # The original author's domain, sending from 127.0.0.1 (the test client).
    zone.add("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("sel._domainkey.sender.test", "TXT", f"v=DKIM1; k=rsa; p={PUB}")
    zone.add("_dmarc.sender.test", "TXT", "v=DMARC1; p=reject")
    # The alias target's MX: the sink, on the port the queue uses for every MX.
    zone.add("remote.test", "MX", (10, "mx.remote.test"))
    zone.add("mx.remote.test", "A", SINK_IP)
    sink = ScriptedPeer(SINK_IP, port, ["250 2.1.5 Ok"])
    a.start()
    try:
        yield a, sink, server
    finally:
        code = a.stop()
        sink.stop()
        server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def _dnsfunc(port: int):  # type: ignore[no-untyped-def]
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def _received(sink: ScriptedPeer, token: bytes, a: Instance) -> bytes:
    found = wait_for(lambda: [m for _, _, m in sink.received if token in m], 30,
                     f"the message {token!r} at the sink", log=a.log)
    message: bytes = found[0]
    return message


def _header(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


def test_forwarded_message_is_arc_sealed(
    setup: tuple[Instance, ScriptedPeer, DnsFixture],
) -> None:
    a, sink, dns_server = setup
    data = make_mail("news@sender.test", "fwd@a.test", "arc-forward-1")
    data = dkim.sign(data, b"sel", b"sender.test", PEM, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + data
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("client.sender.test")
        client.sendmail("news@sender.test", ["fwd@a.test"], data)
    message = _received(sink, b"arc-forward-1", a)
    header = _header(message)
    # One complete set, instance 1, sealed by the alias's domain, ahead of our trace fields.
    for name in (b"ARC-Seal: i=1;", b"ARC-Message-Signature: i=1;",
                 b"ARC-Authentication-Results: i=1; mail.a.test;"):
        assert header.count(name.split(b":")[0] + b":") == 1, header.decode()
        assert name in header, header.decode()
    assert header.index(b"ARC-Seal:") < header.index(b"Received:")
    unfolded = b" ".join(header.split())
    assert b"cv=none" in unfolded
    assert b"d=a.test" in unfolded
    # The AAR carries what our checks found on the way in.
    aar = unfolded.split(b"ARC-Authentication-Results: ", 1)[1].split(b"ARC-", 1)[0]
    assert b"spf=pass smtp.mailfrom=news@sender.test" in aar
    assert b"dkim=pass header.d=sender.test" in aar
    assert b"dmarc=pass" in aar
    # dkimpy, as the next hop would: the chain validates against the published keys, and the
    # author's own DKIM signature survived the forwarding.
    cv, results, reason = dkim.arc_verify(message, dnsfunc=_dnsfunc(dns_server.port))
    assert cv == dkim.CV_Pass, (reason, results)
    assert results[0]["as-domain"] == b"a.test"
    assert dkim.verify(message, dnsfunc=_dnsfunc(dns_server.port))
    # The envelope went to the alias target.
    assert any(rcpts == ["friend@remote.test"] and b"arc-forward-1" in m
               for _, rcpts, m in sink.received)


def test_tampered_forward_fails_arc_verify(
    setup: tuple[Instance, ScriptedPeer, DnsFixture],
) -> None:
    a, sink, dns_server = setup
    data = make_mail("news@sender.test", "fwd@a.test", "arc-forward-2")
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("client.sender.test")
        client.sendmail("news@sender.test", ["fwd@a.test"], data)
    message = _received(sink, b"arc-forward-2", a)
    cv, _results, _reason = dkim.arc_verify(message, dnsfunc=_dnsfunc(dns_server.port))
    assert cv == dkim.CV_Pass
    # A change after our seal breaks the AMS: the next hop sees a failed chain.
    tampered = message.replace(b"Hello Bob.", b"Hello Eve.")
    cv, _results, _reason = dkim.arc_verify(tampered, dnsfunc=_dnsfunc(dns_server.port))
    assert cv == dkim.CV_Fail


def test_submitted_mail_is_not_sealed(
    setup: tuple[Instance, ScriptedPeer, DnsFixture],
) -> None:
    a, sink, _dns_server = setup
    submit(a, "alice@a.test", ["friend@remote.test"],
           make_mail("alice@a.test", "friend@remote.test", "arc-submit-1"))
    header = _header(_received(sink, b"arc-submit-1", a))
    assert b"ARC-" not in header
    assert b"DKIM-Signature:" in header  # signed as usual, by alice's domain


def test_forwarded_mail_is_never_dkim_signed_for_the_from_domain(
    setup: tuple[Instance, ScriptedPeer, DnsFixture],
) -> None:
    """An outsider writes "From: ceo@lax.test" (our domain, no DMARC record, so our inbound
    checks let it in) to an alias that forwards it: the copy that leaves must not carry our
    DKIM signature for lax.test, or the next hop would see DMARC pass for the forgery. It is
    ARC-sealed instead, as every forward is."""
    a, sink, _dns_server = setup
    data = make_mail("ceo@lax.test", "fwd@a.test", "arc-forged-1")
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("client.sender.test")
        client.sendmail("news@sender.test", ["fwd@a.test"], data)
    header = _header(_received(sink, b"arc-forged-1", a))
    assert b"ARC-Seal: i=1;" in header
    assert b"DKIM-Signature:" not in header, header.decode()
