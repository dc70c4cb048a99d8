"""DNS blocklist lookups: query names, answer rules, and a loopback DNS server (dnslib)
answering "listed" through the real dnspython resolver."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from mailstead.dns.resolver import DnsPythonResolver, StaticResolver
from mailstead.filters.dnsbl import DnsblChecker, Listing, reversed_name


def test_reversed_names() -> None:
    assert reversed_name("192.0.2.99", "zen.example.test") == "99.2.0.192.zen.example.test"
    assert reversed_name("::ffff:192.0.2.99", "z.test.") == "99.2.0.192.z.test"
    v6 = reversed_name("2001:db8::1", "z.test")
    assert v6 is not None
    assert v6.startswith("1.0.0.0.")
    assert v6.endswith(".8.b.d.0.1.0.0.2.z.test")
    assert len(v6.split(".")) == 32 + 2
    assert reversed_name("nonsense", "z.test") is None


def test_listed_unlisted_errors_and_outside_answers() -> None:
    resolver = StaticResolver(
        addresses={
            "2.0.0.127.a.test": ["127.0.0.2", "127.0.0.4"],
            "2.0.0.127.b.test": ["127.255.255.254"],  # Spamhaus: refused, not a listing
            "2.0.0.127.c.test": ["192.0.2.1"],  # a hijacking resolver
        },
        temporary=["2.0.0.127.d.test"],
    )
    checker = DnsblChecker(resolver, ["a.test", "b.test", "c.test", "d.test", "e.test"])
    found = asyncio.run(checker.lookup("127.0.0.2"))
    assert found == [Listing("a.test", ("127.0.0.2", "127.0.0.4"))]
    assert asyncio.run(DnsblChecker(resolver, []).lookup("127.0.0.2")) == []
    # One zone is asked without gathering tasks; the same client twice reuses its query
    # names (an address that is no IP gives none).
    single = DnsblChecker(resolver, ["a.test"], cache_size=1)
    for ip in ("127.0.0.2", "127.0.0.2", "::ffff:127.0.0.2", "not-an-ip", "127.0.0.2"):
        expected = [] if ip == "not-an-ip" else [Listing("a.test", ("127.0.0.2", "127.0.0.4"))]
        assert asyncio.run(single.lookup(ip)) == expected


class _Listed(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        if request.q.qtype == QTYPE.A and name == "2.0.0.127.bl.mailstead.test":
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("127.0.0.2"), ttl=60))
        elif name != "2.0.0.127.bl.mailstead.test":
            reply.header.rcode = 3  # NXDOMAIN
        return reply


@pytest.fixture
def dns_port() -> Iterator[int]:
    server = DNSServer(_Listed(), port=0, address="127.0.0.1",
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
    server.start_thread()
    try:
        yield server.server.server_address[1]
    finally:
        server.stop()
        server.server.server_close()


def test_loopback_dns_server_answers_listed(dns_port: int) -> None:
    resolver = DnsPythonResolver([("127.0.0.1", dns_port)], timeout=2, lifetime=4)
    checker = DnsblChecker(resolver, ["bl.mailstead.test"])
    assert asyncio.run(checker.lookup("127.0.0.2")) == [
        Listing("bl.mailstead.test", ("127.0.0.2",))]
    assert asyncio.run(checker.lookup("127.0.0.1")) == []
