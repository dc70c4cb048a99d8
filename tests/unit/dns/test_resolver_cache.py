"""DnsPythonResolver's own answer cache, against a counting DNS server on loopback (dnslib)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from mailstead.dns.resolver import DnsNoDomain, DnsNotFound, DnsPythonResolver, DnsTemporary


class CountingZone(BaseResolver):  # type: ignore[misc]
    """A few names with chosen TTLs; every question is counted by (name, type)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        self.delay = threading.Event()  # set: answer at once; clear: hold answers back
        self.delay.set()

    def count(self, name: str, qtype: str) -> int:
        with self.lock:
            return self.counts.get((name, qtype), 0)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.counts[(name, qtype)] = self.counts.get((name, qtype), 0) + 1
        self.delay.wait(5)
        reply = request.reply()
        soa = RR("zone.test", QTYPE.SOA, ttl=600,
                 rdata=SOA("ns.zone.test", "hostmaster.zone.test", (1, 3600, 600, 86400, 120)))
        if name == "txt.zone.test" and qtype == "TXT":
            reply.add_answer(RR(name, QTYPE.TXT, ttl=300, rdata=TXT("v=spf1 -all")))
        elif name == "host.zone.test" and qtype == "A":
            reply.add_answer(RR(name, QTYPE.A, ttl=300, rdata=A("127.0.0.9")))
        elif name == "host.zone.test":
            reply.add_auth(soa)  # NODATA for AAAA, with the SOA: cacheable
        elif name.endswith("bare.zone.test"):
            reply.header.rcode = RCODE.NXDOMAIN  # no SOA: must not be cached (RFC 2308 5)
        elif name.endswith("fail.zone.test"):
            reply.header.rcode = RCODE.SERVFAIL
        else:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(soa)
        return reply


@pytest.fixture
def zone() -> Iterator[tuple[CountingZone, int]]:
    resolver = CountingZone()
    server = DNSServer(resolver, port=0, address="127.0.0.1", tcp=False)
    server.start_thread()
    try:
        yield resolver, server.server.server_address[1]
    finally:
        resolver.delay.set()
        server.stop()
        server.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(port: int, clock: Clock, **kwargs: int) -> DnsPythonResolver:
    return DnsPythonResolver([("127.0.0.1", port)], timeout=2, lifetime=3, clock=clock,
                             **kwargs)


def test_positive_answers_are_cached_for_their_ttl(zone: tuple[CountingZone, int]) -> None:
    counter, port = zone
    clock = Clock()
    r = make(port, clock)

    async def main() -> None:
        assert await r.txt("txt.zone.test") == ["v=spf1 -all"]
        assert await r.txt("TXT.zone.test.") == ["v=spf1 -all"]  # same name, other spelling
        assert counter.count("txt.zone.test", "TXT") == 1
        got = await r.txt("txt.zone.test")
        got.append("mutated by a caller")
        assert await r.txt("txt.zone.test") == ["v=spf1 -all"]  # callers get copies
        clock.now += 299
        await r.txt("txt.zone.test")
        assert counter.count("txt.zone.test", "TXT") == 1
        clock.now += 2  # past the 300 s TTL
        await r.txt("txt.zone.test")
        assert counter.count("txt.zone.test", "TXT") == 2

    asyncio.run(main())


def test_negative_answers_cached_by_soa_minimum_only_with_soa(
    zone: tuple[CountingZone, int],
) -> None:
    counter, port = zone
    clock = Clock()
    r = make(port, clock)

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(DnsNoDomain):
                await r.txt("missing.zone.test")
            with pytest.raises(DnsNotFound):
                await r.txt("host.zone.test")  # NODATA
        assert counter.count("missing.zone.test", "TXT") == 1
        assert counter.count("host.zone.test", "TXT") == 1
        # RFC 2308 section 5: min(SOA TTL 600, MINIMUM 120) = 120 s.
        clock.now += 121
        with pytest.raises(DnsNoDomain):
            await r.txt("missing.zone.test")
        assert counter.count("missing.zone.test", "TXT") == 2
        # Without an SOA nothing is cached.
        for _ in range(2):
            with pytest.raises(DnsNoDomain):
                await r.txt("bare.zone.test")
        assert counter.count("bare.zone.test", "TXT") == 2

    asyncio.run(main())


def test_temporary_failures_are_never_cached(zone: tuple[CountingZone, int]) -> None:
    counter, port = zone
    r = make(port, Clock())

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(DnsTemporary):
                await r.txt("x.fail.zone.test")
        assert counter.count("x.fail.zone.test", "TXT") == 2

    asyncio.run(main())


def test_addresses_from_cache_and_literals_without_lookup(
    zone: tuple[CountingZone, int],
) -> None:
    counter, port = zone
    r = make(port, Clock())

    async def main() -> None:
        for _ in range(3):
            assert await r.addresses("host.zone.test") == ["127.0.0.9"]
            # A DNSBL query name starts like an address but is a name: looked up, NXDOMAIN.
            with pytest.raises(DnsNoDomain):
                await r.addresses("1.0.0.127.bl.zone.test")
        assert counter.count("host.zone.test", "A") == 1
        assert counter.count("host.zone.test", "AAAA") == 1
        assert counter.count("1.0.0.127.bl.zone.test", "A") == 1
        assert await r.addresses("127.0.0.1") == ["127.0.0.1"]
        assert await r.addresses("::1") == ["::1"]
        assert counter.count("127.0.0.1", "A") == 0

    asyncio.run(main())


def test_concurrent_questions_share_one_query_and_survive_a_cancelled_caller(
    zone: tuple[CountingZone, int],
) -> None:
    counter, port = zone
    r = make(port, Clock())

    async def main() -> None:
        counter.delay.clear()
        first = asyncio.ensure_future(r.txt("txt.zone.test"))
        others = [asyncio.ensure_future(r.txt("txt.zone.test")) for _ in range(9)]
        await asyncio.sleep(0.2)
        first.cancel()  # the caller that started the query gives up
        counter.delay.set()
        answers = await asyncio.gather(*others)
        assert answers == [["v=spf1 -all"]] * 9
        with pytest.raises(asyncio.CancelledError):
            await first
        assert counter.count("txt.zone.test", "TXT") == 1

    asyncio.run(main())


def test_cache_is_bounded(zone: tuple[CountingZone, int]) -> None:
    counter, port = zone
    r = make(port, Clock(), cache_size=2)

    async def main() -> None:
        for name in ("a.zone.test", "b.zone.test", "c.zone.test", "a.zone.test"):
            with pytest.raises(DnsNoDomain):
                await r.txt(name)
        # a was the oldest entry when c came in, so it was asked again.
        assert counter.count("a.zone.test", "TXT") == 2
        with pytest.raises(DnsNoDomain):
            await r.txt("c.zone.test")
        assert counter.count("c.zone.test", "TXT") == 1

    asyncio.run(main())
