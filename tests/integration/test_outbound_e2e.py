"""Issue 5, first proof: alice@a.test (one Mailstead on 127.0.0.2) sends to bob@b.test (a
second Mailstead on 127.0.0.3) through MX routing from a DNS server on loopback; Bob reads the
message over IMAPS and both DKIM signatures verify with dkimpy against that DNS server."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest
from helpers import tls_context
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    Zone,
    free_port,
    make_instance,
    make_mail,
    publish,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, store_backend: str
         ) -> Iterator[tuple[Instance, Instance, Zone, DnsFixture]]:
    root: Path = tmp_path_factory.mktemp("outbound")
    zone = Zone()
    server = DnsFixture(zone)
    port = free_port("127.0.0.2", "127.0.0.3")
    a = make_instance(root, "a.test", "127.0.0.2", dns_port=server.port, smtp_port=port,
                      users={"alice@a.test": PASSWORD})
    b = make_instance(root, "b.test", "127.0.0.3", dns_port=server.port, smtp_port=port,
                      users={"bob@b.test": PASSWORD})
    publish(zone, a)
    publish(zone, b)
    a.start()
    b.start()
    try:
        yield a, b, zone, server
    finally:
        codes = (a.stop(), b.stop())
        server.stop()
        assert codes == (0, 0), a.log()[-4000:] + b.log()[-4000:]
        for inst in (a, b):
            assert "Traceback" not in inst.log(), inst.log()[-8000:]


def _dnsfunc(port: int):  # type: ignore[no-untyped-def]
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def test_alice_to_bob_signed_over_mx_and_read_by_imap(
    pair: tuple[Instance, Instance, Zone, DnsFixture],
) -> None:
    a, b, _zone, dns_server = pair
    submit(a, "alice@a.test", ["bob@b.test"], make_mail("alice@a.test", "bob@b.test", "e2e-1"))
    found = wait_for(lambda: [m for m in b.inbox("bob@b.test") if b"e2e-1" in m], 30,
                     "the message in Bob's INBOX", log=lambda: a.log() + b.log())
    message = found[0]
    # Every queue row of A ends delivered.
    assert {r.state for r in a.queue()} == {"delivered"}
    # Read it like Bob would: IMAP over implicit TLS.
    assert b.server is not None
    ctx = tls_context(b.server.cert_path, b.hostname)
    with imaplib.IMAP4_SSL(b.ip, b.ports["imaps"], ssl_context=ctx) as imap:
        imap.login("bob@b.test", PASSWORD)
        imap.select("INBOX")
        _typ, data = imap.search(None, "SUBJECT", '"e2e-1"')
        ids = data[0].split()
        assert ids
        _typ, fetched = imap.fetch(ids[-1], "(RFC822)")
        raw = fetched[0][1]
        assert isinstance(raw, bytes)
        assert b"Hello Bob." in raw
    # Both signatures (RSA and Ed25519) verify against the test DNS.
    d = dkim.DKIM(message)
    count = message.count(b"DKIM-Signature:")
    assert count == 2, message[:3000]
    algorithms = set()
    for idx in range(count):
        assert d.verify(idx=idx, dnsfunc=_dnsfunc(dns_server.port)), f"signature {idx}"
        algorithms.add(d.signature_fields[b"a"])
    assert algorithms == {b"rsa-sha256", b"ed25519-sha256"}
    # The hop from A to B was encrypted (opportunistic STARTTLS).
    assert b"TLS" in message or b"tls" in message
