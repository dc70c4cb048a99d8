"""DnsPythonResolver against a real DNS server on loopback (dnslib, in-process thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from mailstead.dns.resolver import (
    DnsNoDomain,
    DnsNotFound,
    DnsPythonResolver,
    DnsTemporary,
    StaticResolver,
)

ZONE = """
b.test.          60 IN MX 10 mx1.b.test.
b.test.          60 IN MX 20 mx2.b.test.
mx1.b.test.      60 IN A 127.0.0.3
mx1.b.test.      60 IN AAAA ::1
mx2.b.test.      60 IN CNAME real.b.test.
real.b.test.     60 IN A 127.0.0.4
null.test.       60 IN MX 0 .
v4only.test.     60 IN A 127.0.0.5
_mta-sts.b.test. 60 IN TXT "v=STSv1; " "id=2024"
_mta-sts.b.test. 60 IN TXT "other"
"""


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from ZONE, follows CNAMEs, SERVFAIL for names under broken.test."""

    def __init__(self) -> None:
        self.rrs = RR.fromZone(ZONE)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = request.q.qname
        if str(qname).endswith("broken.test."):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if str(qname).endswith("slow.test."):
            return None  # no answer at all: the client times out
        name, found = qname, False
        for _ in range(5):
            matches = [rr for rr in self.rrs if rr.rname == name]
            found = found or bool(matches)
            cname = [rr for rr in matches if rr.rtype == QTYPE.CNAME]
            if cname and request.q.qtype != QTYPE.CNAME:
                reply.add_answer(cname[0])
                name = cname[0].rdata.label
                continue
            for rr in matches:
                if rr.rtype == request.q.qtype:
                    reply.add_answer(rr)
            break
        if not found:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    server = DNSServer(ZoneResolver(), port=0, address="127.0.0.1", tcp=False)
    server.start_thread()
    try:
        yield server.server.server_address[1]
    finally:
        server.stop()
        server.server.server_close()


def resolver(port: int, **kwargs: float) -> DnsPythonResolver:
    return DnsPythonResolver([("127.0.0.1", port)], **kwargs)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_mx_in_dns_order_without_trailing_dots(dns_port: int) -> None:
    r = resolver(dns_port)
    assert sorted(run(r.mx("b.test"))) == [(10, "mx1.b.test"), (20, "mx2.b.test")]  # type: ignore[arg-type]
    assert run(r.mx("NULL.test.")) == [(0, ".")]


def test_addresses_ipv6_first_and_cname_followed(dns_port: int) -> None:
    r = resolver(dns_port)
    assert run(r.addresses("mx1.b.test")) == ["::1", "127.0.0.3"]
    assert run(r.addresses("mx2.b.test")) == ["127.0.0.4"]
    assert run(r.addresses("v4only.test")) == ["127.0.0.5"]  # AAAA NODATA is fine
    assert run(r.addresses("192.0.2.7")) == ["192.0.2.7"]  # a literal needs no query


def test_txt_strings_joined(dns_port: int) -> None:
    r = resolver(dns_port)
    assert sorted(run(r.txt("_mta-sts.b.test"))) == ["other", "v=STSv1; id=2024"]  # type: ignore[type-var]


def test_nxdomain_nodata_servfail_and_timeout(dns_port: int) -> None:
    r = resolver(dns_port, timeout=0.3, lifetime=0.6)
    with pytest.raises(DnsNoDomain):
        run(r.mx("nowhere.test"))
    with pytest.raises(DnsNotFound) as nodata:
        run(r.mx("v4only.test"))
    assert not isinstance(nodata.value, DnsNoDomain)
    with pytest.raises(DnsNoDomain):
        run(r.addresses("nowhere.test"))
    with pytest.raises(DnsTemporary, match="SERVFAIL"):
        run(r.mx("x.broken.test"))
    with pytest.raises(DnsTemporary, match="timed out"):
        run(r.addresses("x.slow.test"))
    with pytest.raises(DnsNotFound):
        run(r.mx("a..b.test"))


def test_nameservers_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="nameserver"):
        DnsPythonResolver([])


def test_static_resolver_distinguishes_nodata_nxdomain_and_servfail() -> None:
    r = StaticResolver(mx={"b.test": [(10, "mx.b.test")]}, addresses={"mx.b.test": ["::1"]},
                       temporary=["broken.test"])
    assert run(r.mx("B.test.")) == [(10, "mx.b.test")]
    with pytest.raises(DnsNotFound) as nodata:
        run(r.txt("b.test"))
    assert not isinstance(nodata.value, DnsNoDomain)
    with pytest.raises(DnsNoDomain):
        run(r.addresses("gone.test"))
    with pytest.raises(DnsTemporary):
        run(r.mx("broken.test"))
    assert ("MX", "b.test") in r.queries
