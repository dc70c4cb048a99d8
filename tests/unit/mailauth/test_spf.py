"""The SPF evaluator (RFC 7208) over a static resolver: the RFC's Appendix A examples, the
lookup limits of section 4.6.4, macros (section 7) and hostile records."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailstead.dns.resolver import StaticResolver
from mailstead.mailauth.spf import (
    SpfResult,
    check_helo,
    check_host,
    check_mailfrom,
    parse_record,
    valid_domain,
)

# RFC 7208 Appendix A: the example.com zone (renamed to .test).
ZONE_ADDRESSES = {
    "example.test": ["192.0.2.10", "192.0.2.11"],
    "amy.example.test": ["192.0.2.65"],
    "bob.example.test": ["192.0.2.66"],
    "mail-a.example.test": ["192.0.2.129"],
    "mail-b.example.test": ["192.0.2.130"],
    "mail-c.example.org.test": ["192.0.2.140"],
    "v6.example.test": ["2001:db8::10"],
}
ZONE_MX = {
    "example.test": [(10, "mail-a.example.test"), (20, "mail-b.example.test")],
    "example.org.test": [(10, "mail-c.example.org.test")],
    "nullmx.test": [(0, ".")],
}


def resolver(records: dict[str, list[str]], **extra: Any) -> StaticResolver:
    txt = {**records}
    return StaticResolver(txt=txt, addresses={**ZONE_ADDRESSES, **extra.get("addresses", {})},
                          mx={**ZONE_MX, **extra.get("mx", {})},
                          temporary=extra.get("temporary", ()))


def result(record: str, ip: str, *, domain: str = "example.test",
           sender: str = "user@example.test", extra: dict[str, list[str]] | None = None,
           **kwargs: Any) -> SpfResult:
    res = resolver({domain: [record], **(extra or {})}, **kwargs)
    return asyncio.run(check_host(res, ip, domain, sender, "mx.client.test")).result


@pytest.mark.parametrize(
    ("record", "ip", "expected"),
    [
        # RFC 7208 Appendix A.1 (simple examples).
        ("v=spf1 +all", "192.0.2.1", SpfResult.PASS),
        ("v=spf1 a -all", "192.0.2.10", SpfResult.PASS),
        ("v=spf1 a -all", "192.0.2.12", SpfResult.FAIL),
        ("v=spf1 a:example.org.test -all", "192.0.2.10", SpfResult.FAIL),
        ("v=spf1 mx -all", "192.0.2.129", SpfResult.PASS),
        ("v=spf1 mx -all", "192.0.2.10", SpfResult.FAIL),
        ("v=spf1 mx:example.org.test -all", "192.0.2.140", SpfResult.PASS),
        ("v=spf1 mx mx:example.org.test -all", "192.0.2.130", SpfResult.PASS),
        ("v=spf1 mx/30 mx:example.org.test/30 -all", "192.0.2.131", SpfResult.PASS),
        ("v=spf1 mx/30 mx:example.org.test/30 -all", "192.0.2.141", SpfResult.PASS),
        ("v=spf1 mx/30 mx:example.org.test/30 -all", "192.0.2.150", SpfResult.FAIL),
        ("v=spf1 ip4:192.0.2.128/28 -all", "192.0.2.140", SpfResult.PASS),
        ("v=spf1 ip4:192.0.2.128/28 -all", "192.0.2.120", SpfResult.FAIL),
        ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::1", SpfResult.PASS),
        ("v=spf1 ip6:2001:db8::/32 -all", "2001:db9::1", SpfResult.FAIL),
        ("v=spf1 a//64 -all", "2001:db8::10", SpfResult.FAIL),  # v6 name has no AAAA here
        ("v=spf1 a:v6.example.test//64 -all", "2001:db8::ffff", SpfResult.PASS),
        ("v=spf1 ~all", "192.0.2.1", SpfResult.SOFTFAIL),
        ("v=spf1 ?all", "192.0.2.1", SpfResult.NEUTRAL),
        ("v=spf1 ip4:10.0.0.0/8", "192.0.2.1", SpfResult.NEUTRAL),  # section 4.7
        ("V=SPF1 IP4:192.0.2.1 -ALL", "192.0.2.1", SpfResult.PASS),  # case-insensitive
        # IPv4-mapped IPv6 clients are IPv4 clients.
        ("v=spf1 ip4:192.0.2.1 -all", "::ffff:192.0.2.1", SpfResult.PASS),
        # A null MX names no host.
        ("v=spf1 mx:nullmx.test -all", "192.0.2.1", SpfResult.FAIL),
    ],
)
def test_mechanisms(record: str, ip: str, expected: SpfResult) -> None:
    assert result(record, ip) is expected


def test_include_and_redirect() -> None:
    extra = {
        "inc.test": ["v=spf1 ip4:198.51.100.0/24 -all"],
        "noinc.test": ["not spf"],
        "redir.test": ["v=spf1 ip4:203.0.113.0/24 ~all"],
    }
    assert result("v=spf1 include:inc.test -all", "198.51.100.7", extra=extra) is SpfResult.PASS
    # RFC 7208 section 5.2: an include that fails is simply no match.
    assert result("v=spf1 include:inc.test ~all", "192.0.2.99", extra=extra) is SpfResult.SOFTFAIL
    # ... and an include of a domain without a record is permerror.
    assert result("v=spf1 include:noinc.test -all", "192.0.2.1",
                  extra=extra) is SpfResult.PERMERROR
    assert result("v=spf1 redirect=redir.test", "203.0.113.9", extra=extra) is SpfResult.PASS
    assert result("v=spf1 redirect=redir.test", "192.0.2.9", extra=extra) is SpfResult.SOFTFAIL
    # Section 6.1: redirect is ignored when "all" is present; a redirect to nothing is permerror.
    assert result("v=spf1 -all redirect=redir.test", "203.0.113.9",
                  extra=extra) is SpfResult.FAIL
    assert result("v=spf1 redirect=noinc.test", "192.0.2.1", extra=extra) is SpfResult.PERMERROR


def test_ten_lookup_limit() -> None:
    chain = {f"l{i}.test": [f"v=spf1 include:l{i + 1}.test -all"] for i in range(12)}
    chain["l12.test"] = ["v=spf1 +all"]
    res = resolver(chain)
    outcome = asyncio.run(check_host(res, "192.0.2.1", "l0.test", "a@l0.test", "h.test"))
    assert outcome.result is SpfResult.PERMERROR
    assert "more than 10 DNS lookups" in outcome.reason
    # Exactly 10 lookups is still fine.
    chain = {f"l{i}.test": [f"v=spf1 include:l{i + 1}.test -all"] for i in range(10)}
    chain["l10.test"] = ["v=spf1 +all"]
    outcome = asyncio.run(check_host(resolver(chain), "192.0.2.1", "l0.test", "a@l0.test", "h"))
    assert outcome.result is SpfResult.PASS


def test_void_lookup_limit() -> None:
    record = "v=spf1 a:n1.test a:n2.test a:n3.test +all"
    assert result(record, "192.0.2.1") is SpfResult.PERMERROR
    assert result("v=spf1 a:n1.test a:n2.test +all", "192.0.2.1") is SpfResult.PASS


def test_too_many_mx_names() -> None:
    mx = {"many.test": [(i, f"m{i}.many.test") for i in range(11)]}
    assert result("v=spf1 mx:many.test -all", "192.0.2.1", mx=mx) is SpfResult.PERMERROR


def test_record_selection() -> None:
    res = resolver({"two.test": ["v=spf1 -all", "v=spf1 +all"],
                    "none.test": ["v=spf10 +all", "google-site-verification=x"]})
    two = asyncio.run(check_host(res, "192.0.2.1", "two.test", "a@two.test", "h"))
    assert two.result is SpfResult.PERMERROR
    none = asyncio.run(check_host(res, "192.0.2.1", "none.test", "a@none.test", "h"))
    assert none.result is SpfResult.NONE
    nx = asyncio.run(check_host(res, "192.0.2.1", "nx.test", "a@nx.test", "h"))
    assert nx.result is SpfResult.NONE


def test_temporary_failures() -> None:
    assert result("v=spf1 -all", "192.0.2.1", domain="tmp.test", sender="a@tmp.test",
                  temporary=("tmp.test",)) is SpfResult.TEMPERROR
    assert result("v=spf1 a:tmp2.test -all", "192.0.2.1",
                  temporary=("tmp2.test",)) is SpfResult.TEMPERROR
    assert result("v=spf1 include:tmp2.test -all", "192.0.2.1",
                  temporary=("tmp2.test",)) is SpfResult.TEMPERROR


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 foo:bar -all",
        "v=spf1 ip4:300.1.1.1 -all",
        "v=spf1 ip4:192.0.2.0/33 -all",
        "v=spf1 ip4:192.0.2.0/08 -all",
        "v=spf1 ip6:192.0.2.1 -all",
        "v=spf1 a:example.test/40 -all",
        "v=spf1 include -all",
        "v=spf1 redirect=a.test redirect=b.test",
        "v=spf1 exp=a.test exp=b.test -all",
        "v=spf1 exists:%{q}.test -all",
        "v=spf1 exists:%{c}.test -all",  # c only in exp
        "v=spf1 a:%{d0}.test -all",
        "v=spf1 all:x",
        "v=spf1 a:100",
        "v=spf1 -all \x00",
    ],
)
def test_syntax_errors_are_permerror(record: str) -> None:
    assert result(record, "192.0.2.10") is SpfResult.PERMERROR


def test_syntax_checked_before_evaluation() -> None:
    # Section 4.6: the broken term after the matching one still makes the record permerror.
    with pytest.raises(Exception, match="unknown mechanism"):
        parse_record("v=spf1 +all bogus")
    assert result("v=spf1 +all bogus", "192.0.2.1") is SpfResult.PERMERROR
    # Unknown modifiers are ignored (section 6).
    assert result("v=spf1 foo=bar ip4:192.0.2.1 -all", "192.0.2.1") is SpfResult.PASS


def test_macros() -> None:
    # RFC 7208 section 7.4 examples, through "exists" on names the zone answers.
    addresses = {
        "strong.lp.example.test.spf.test": ["127.0.0.2"],
        "1.2.0.192.in-addr.spf.test": ["127.0.0.2"],
        "email.example.test.spf.test": ["127.0.0.2"],
        "example.test.spf.test": ["127.0.0.2"],
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.spf.test":
            ["127.0.0.2"],
    }

    def macro(spec: str, ip: str = "192.0.2.1", sender: str = "strong-bad@email.example.test"
              ) -> SpfResult:
        res = resolver({"email.example.test": [f"v=spf1 exists:{spec} -all"]},
                       addresses=addresses)
        return asyncio.run(check_host(res, ip, "email.example.test", sender, "h.test")).result

    assert macro("%{o}.spf.test") is SpfResult.PASS
    assert macro("%{d2}.spf.test") is SpfResult.PASS
    assert macro("%{d3}.spf.test") is SpfResult.PASS
    assert macro("%{ir}.%{v}.spf.test") is SpfResult.PASS
    assert macro("%{l1r-}.lp.%{o2}.spf.test") is SpfResult.PASS  # strong-bad -> strong
    assert macro("%{lr-}.lp.%{o2}.spf.test") is SpfResult.FAIL  # bad.strong: not in the zone
    assert macro("%{l-r}.spf.test") is SpfResult.PERMERROR  # transformers before delimiters
    assert macro("%{ir}.%{v}.spf.test", ip="2001:db8::1") is SpfResult.PASS
    assert macro("%{dr}.spf.test") is SpfResult.FAIL  # test.example.email: not in the zone


def test_identities() -> None:
    res = resolver({"client.test": ["v=spf1 ip4:192.0.2.7 -all"],
                    "example.test": ["v=spf1 -all"]})
    helo = asyncio.run(check_helo(res, "192.0.2.7", "client.test"))
    assert (helo.result, helo.domain) == (SpfResult.PASS, "client.test")
    assert asyncio.run(check_helo(res, "192.0.2.7", "[192.0.2.7]")).result is SpfResult.NONE
    assert asyncio.run(check_helo(res, "192.0.2.7", "localhost")).result is SpfResult.NONE
    null = asyncio.run(check_mailfrom(res, "192.0.2.7", "", "client.test"))
    assert (null.result, null.domain) == (SpfResult.PASS, "client.test")
    mf = asyncio.run(check_mailfrom(res, "192.0.2.7", "x@example.test", "client.test"))
    assert mf.result is SpfResult.FAIL
    bad_ip = asyncio.run(check_host(res, "not-an-ip", "example.test", "x@example.test", "h"))
    assert bad_ip.result is SpfResult.PERMERROR


def test_timeout_is_temperror() -> None:
    class Slow(StaticResolver):
        async def txt(self, name: str) -> list[str]:
            await asyncio.sleep(10)
            return []

    outcome = asyncio.run(check_host(Slow(), "192.0.2.1", "slow.test", "a@slow.test", "h",
                                     timeout=0.05))
    assert outcome.result is SpfResult.TEMPERROR


def test_valid_domain() -> None:
    assert valid_domain("example.test")
    assert valid_domain("example.test.")
    assert not valid_domain("localhost")
    assert not valid_domain("a..test")
    assert not valid_domain("x" * 64 + ".test")
    assert not valid_domain("")
