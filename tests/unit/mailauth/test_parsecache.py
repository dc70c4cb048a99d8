"""The bounded parse caches a verifier keeps (records by their text), and their use by SPF,
DMARC and the organizational-domain lookup: a cached answer is what parsing again gives."""

from __future__ import annotations

import asyncio

from mailstead.dns.resolver import StaticResolver
from mailstead.mailauth.dmarc import DmarcResult, OrgDomains, RecordCache, check_dmarc
from mailstead.mailauth.parsecache import ParseCache
from mailstead.mailauth.spf import SpfCache, SpfResult, check_host


def test_parse_once_per_key_and_bounded() -> None:
    calls: list[str] = []

    def parse(text: str) -> int:
        calls.append(text)
        return len(text)

    cache: ParseCache[str, int] = ParseCache(maxsize=2)
    assert [cache.get(t, parse) for t in ("a", "bb", "a", "bb")] == [1, 2, 1, 2]
    assert calls == ["a", "bb"]
    cache.get("ccc", parse)  # full: the oldest insertion ("a") goes
    assert len(cache) == 2
    cache.get("a", parse)
    assert calls == ["a", "bb", "ccc", "a"]


def test_spf_with_a_cache_gives_the_same_outcomes() -> None:
    res = StaticResolver(txt={"good.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
                              "bad.test": ["v=spf1 ip4:192.0.2.0/33 -all"]})
    cache = SpfCache(maxsize=8)

    async def outcomes(domain: str, ip: str) -> list[tuple[SpfResult, str]]:
        runs = [await check_host(res, ip, domain, f"a@{domain}", "h.test")]
        for _ in range(2):
            o = await check_host(res, ip, domain, f"a@{domain}", "h.test", cache=cache)
            runs.append(o)
        return [(o.result, o.reason) for o in runs]

    for domain, ip, expected in (("good.test", "192.0.2.7", SpfResult.PASS),
                                 ("good.test", "198.51.100.1", SpfResult.FAIL),
                                 ("bad.test", "192.0.2.7", SpfResult.PERMERROR),
                                 ("good.test", "not-an-ip", SpfResult.PERMERROR)):
        first, *again = asyncio.run(outcomes(domain, ip))
        assert first[0] is expected
        assert again == [first, first]  # a cached syntax error is reported as before


def test_dmarc_records_and_org_domains_cached() -> None:
    res = StaticResolver(txt={"_dmarc.example.test": ["v=DMARC1; p=reject; pct=50"]})
    orgs = OrgDomains(cache_size=4)
    records: RecordCache = ParseCache(4)

    async def check(domain: str, cache: RecordCache | None) -> tuple[object, ...]:
        o = await check_dmarc(res, orgs, domain, spf_pass_domain=None,
                              dkim_pass_domains=[], sample=0.7, records=cache)
        return (o.result, o.from_domain, o.policy, o.disposition, o.reason)

    for domain in ("example.test", "mail.example.test", "other.test"):
        assert asyncio.run(check(domain, records)) == asyncio.run(check(domain, None))
    assert asyncio.run(check("mail.example.test", records))[0] is DmarcResult.FAIL
    assert len(records) == 1  # one record text seen, parsed once
    assert orgs.org_domain("Mail.Example.Test.") == orgs.org_domain("mail.example.test")
    assert orgs.org_domain("a.b.example.co.uk") == "example.co.uk"
