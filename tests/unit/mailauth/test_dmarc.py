"""DMARC (RFC 7489): record parsing, organizational domains, alignment, discovery and pct."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailstead.dns.resolver import StaticResolver
from mailstead.mailauth.dmarc import (
    DmarcResult,
    OrgDomains,
    Policy,
    check_dmarc,
    parse_record,
)


@pytest.fixture(scope="module")
def orgs() -> OrgDomains:
    return OrgDomains()


def test_parse_record() -> None:
    r = parse_record("v=DMARC1; p=reject; sp=none; adkim=s; aspf=s; pct=20; rua=mailto:x@y")
    assert r is not None
    assert (r.p, r.sp, r.adkim, r.aspf, r.pct) == (Policy.REJECT, Policy.NONE, "s", "s", 20)
    defaults = parse_record("v=DMARC1;p=quarantine")
    assert defaults is not None
    assert (defaults.adkim, defaults.aspf, defaults.pct, defaults.sp) == ("r", "r", 100, None)
    # Section 6.4: v=DMARC1 must come first; section 6.6.3 step 6: a bad p without rua is
    # no record, with a usable rua it is p=none.
    assert parse_record("p=reject; v=DMARC1") is None
    assert parse_record("v=DMARC2; p=reject") is None
    assert parse_record("v=DMARC1; p=bogus") is None
    fallback = parse_record("v=DMARC1; p=bogus; rua=mailto:r@example.test")
    assert fallback is not None
    assert fallback.p is Policy.NONE
    odd = parse_record("v=DMARC1; p=REJECT; pct=500; adkim=x; future=1; ; junk")
    assert odd is not None
    assert (odd.p, odd.pct, odd.adkim) == (Policy.REJECT, 100, "r")


def test_org_domains(orgs: OrgDomains) -> None:
    assert orgs.org_domain("a.b.example.co.uk") == "example.co.uk"
    assert orgs.org_domain("mail.example.test") == "example.test"
    assert orgs.org_domain("co.uk") == "co.uk"
    assert orgs.aligned("mail.example.test", "example.test", "r")
    assert not orgs.aligned("mail.example.test", "example.test", "s")
    assert orgs.aligned("EXAMPLE.test.", "example.test", "s")
    assert not orgs.aligned("a.co.uk", "b.co.uk", "r")
    assert not orgs.aligned("", "example.test", "r")


def check(orgs: OrgDomains, txt: dict[str, list[str]], domain: str, **kwargs: Any) -> Any:
    res = StaticResolver(txt=txt, temporary=kwargs.pop("temporary", ()))
    kwargs.setdefault("spf_pass_domain", None)
    kwargs.setdefault("dkim_pass_domains", ())
    kwargs.setdefault("sample", 0.0)
    return asyncio.run(check_dmarc(res, orgs, domain, **kwargs))


ZONE = {
    "_dmarc.example.test": ["v=DMARC1; p=reject; sp=quarantine"],
    "_dmarc.strict.test": ["v=DMARC1; p=reject; adkim=s; aspf=s"],
    "_dmarc.half.test": ["v=DMARC1; p=reject; pct=50"],
    "_dmarc.two.test": ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
}


def test_alignment_and_policy(orgs: OrgDomains) -> None:
    ok = check(orgs, ZONE, "example.test", dkim_pass_domains=["mail.example.test"])
    assert (ok.result, ok.disposition, ok.policy) == (DmarcResult.PASS, Policy.NONE, Policy.REJECT)
    ok_spf = check(orgs, ZONE, "example.test", spf_pass_domain="bounce.example.test")
    assert ok_spf.result is DmarcResult.PASS
    fail = check(orgs, ZONE, "example.test", dkim_pass_domains=["other.test"],
                 spf_pass_domain="other.test")
    assert (fail.result, fail.disposition) == (DmarcResult.FAIL, Policy.REJECT)
    strict = check(orgs, ZONE, "strict.test", dkim_pass_domains=["mail.strict.test"])
    assert strict.result is DmarcResult.FAIL
    assert check(orgs, ZONE, "strict.test", dkim_pass_domains=["strict.test"]).result \
        is DmarcResult.PASS


def test_subdomain_policy_from_org_domain(orgs: OrgDomains) -> None:
    sub = check(orgs, ZONE, "news.example.test")
    assert (sub.result, sub.policy, sub.disposition) == (
        DmarcResult.FAIL, Policy.QUARANTINE, Policy.QUARANTINE)


def test_pct_sampling(orgs: OrgDomains) -> None:
    # RFC 7489 section 6.6.4: not selected -> the next lower policy.
    assert check(orgs, ZONE, "half.test", sample=0.2).disposition is Policy.REJECT
    assert check(orgs, ZONE, "half.test", sample=0.7).disposition is Policy.QUARANTINE


def test_no_or_ambiguous_record_and_dns_failure(orgs: OrgDomains) -> None:
    assert check(orgs, ZONE, "nothing.test").result is DmarcResult.NONE
    assert check(orgs, ZONE, "two.test").result is DmarcResult.NONE
    temp = check(orgs, ZONE, "example.test", temporary=("_dmarc.example.test",))
    assert (temp.result, temp.disposition) == (DmarcResult.TEMPERROR, Policy.NONE)
