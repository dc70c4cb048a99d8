"""DMARC (RFC 7489): is the From: domain authenticated by an aligned SPF or DKIM pass, and
what does its owner ask us to do when it is not?

Policy discovery, alignment and the pct sampling are here; the SPF and DKIM results come in
from the caller. Organizational domains come from the Public Suffix List that the
``publicsuffixlist`` package ships (offline, RFC 7489 section 3.2), loaded once by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from publicsuffixlist import PublicSuffixList

from mailstead.dns.resolver import DnsError, DnsTemporary, Resolver
from mailstead.mailauth.parsecache import DEFAULT_SIZE, ParseCache


class DmarcResult(StrEnum):
    """RFC 7489 section 11.2 results for the "dmarc" method of Authentication-Results."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 (a result name, not a password)
    FAIL = "fail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Policy(StrEnum):
    """RFC 7489 section 6.3 "p" values, also used for the disposition we apply."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


# RFC 7489 section 6.6.4: a message not selected by pct gets the next lower policy.
_LOWER = {Policy.REJECT: Policy.QUARANTINE, Policy.QUARANTINE: Policy.NONE,
          Policy.NONE: Policy.NONE}
_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)
# RFC 7489 section 6.4: the record must start with v=DMARC1 (exactly, case-sensitive tag
# value), then ";" or the end.
_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a policy record that drive our decision (section 6.3)."""

    p: Policy
    sp: Policy | None = None
    adkim: str = "r"  # "r" relaxed or "s" strict (section 3.1.1)
    aspf: str = "r"  # section 3.1.2
    pct: int = 100


# Parsed policy records by their text (see ``check_dmarc``'s ``records``).
RecordCache = ParseCache[str, DmarcRecord | None]


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """The DMARC result, the policy the domain published and what we decided to do."""

    result: DmarcResult
    from_domain: str
    policy: Policy | None = None  # p (or sp for a subdomain) of the record found
    disposition: Policy = Policy.NONE  # what we apply, after pct
    reason: str = ""


class OrgDomains:
    """Organizational domains (RFC 7489 section 3.2) from the Public Suffix List.

    Loading the list parses about 10,000 rules: build one instance at start-up and share it.
    It remembers the answers for the names it was asked last (the list never changes while
    it lives, so an answer is what a new lookup would give).
    """

    def __init__(self, psl: PublicSuffixList | None = None,
                 cache_size: int = DEFAULT_SIZE) -> None:
        self._psl = psl if psl is not None else PublicSuffixList()
        self._known: ParseCache[str, str] = ParseCache(cache_size)

    def org_domain(self, domain: str) -> str:
        """The registered domain of ``domain`` (one label under its public suffix), or the
        name itself when it is a public suffix or not a valid name."""
        return self._known.get(domain.lower().rstrip("."), self._registered)

    def _registered(self, name: str) -> str:
        try:
            org = self._psl.privatesuffix(name)
        except (ValueError, TypeError, UnicodeError):
            return name
        return org if isinstance(org, str) and org else name

    def aligned(self, a: str, b: str, mode: str) -> bool:
        """RFC 7489 sections 3.1.1 and 3.1.2: strict means equal names, relaxed means equal
        organizational domains."""
        x, y = a.lower().rstrip("."), b.lower().rstrip(".")
        if not x or not y:
            return False
        if x == y:
            return True
        return mode != "s" and self.org_domain(x) == self.org_domain(y)


def _policy(value: str | None) -> Policy | None:
    if value is None:
        return None
    try:
        return Policy(value.lower())
    except ValueError:
        return None


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC policy record, or None when ``text`` is not one we may apply (section 6.6.3
    step 6: an invalid p or sp without a valid rua means no DMARC processing)."""
    if not _VERSION.match(text):
        return None
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        if not part.strip():
            continue
        m = _TAG.match(part)
        if m is None:
            continue  # section 6.3: unknown or broken tags are ignored
        tags.setdefault(m.group(1).lower(), m.group(2))
    p, sp = _policy(tags.get("p")), _policy(tags.get("sp"))
    if p is None or ("sp" in tags and sp is None):
        # Section 6.6.3 step 6: with a usable rua, act as if p=none was published.
        if "mailto:" not in tags.get("rua", "").lower():
            return None
        p, sp = Policy.NONE, None
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        p=p,
        sp=sp,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=pct,
    )


async def _lookup(resolver: Resolver, domain: str,
                  cache: RecordCache | None) -> DmarcRecord | None:
    """The one valid record at _dmarc.DOMAIN (section 6.6.3 step 3: zero or several valid
    records mean none). Raises DnsTemporary."""
    try:
        texts = await resolver.txt(f"_dmarc.{domain}")
    except DnsTemporary:
        raise
    except DnsError:
        return None
    parse = parse_record if cache is None else (lambda t: cache.get(t, parse_record))
    records = [r for r in map(parse, texts) if r is not None]
    return records[0] if len(records) == 1 else None


async def check_dmarc(
    resolver: Resolver,
    orgs: OrgDomains,
    from_domain: str,
    *,
    spf_pass_domain: str | None,
    dkim_pass_domains: Sequence[str],
    sample: float,
    records: RecordCache | None = None,
) -> DmarcOutcome:
    """Evaluate DMARC for ``from_domain``.

    ``spf_pass_domain``: the domain SPF authenticated (MAIL FROM or HELO for the null
    sender), None unless SPF passed; ``dkim_pass_domains``: the d= of every valid signature;
    ``sample``: a uniform random number in [0, 1) for pct (section 6.6.4), injected;
    ``records``: parsed policy records by their text, kept by the caller across messages.
    """
    domain = from_domain.lower().rstrip(".")
    org = orgs.org_domain(domain)
    try:
        record = await _lookup(resolver, domain, records)
        subdomain_policy = False
        if record is None and org != domain:
            # Section 6.6.3 step 4: fall back to the organizational domain.
            record = await _lookup(resolver, org, records)
            subdomain_policy = True
    except DnsTemporary as exc:
        return DmarcOutcome(DmarcResult.TEMPERROR, domain, reason=str(exc))
    if record is None:
        return DmarcOutcome(DmarcResult.NONE, domain, reason="no DMARC policy")
    policy = record.sp if subdomain_policy and record.sp is not None else record.p
    # Section 4.2: a pass needs an aligned SPF pass or an aligned DKIM pass.
    spf_ok = spf_pass_domain is not None and orgs.aligned(spf_pass_domain, domain, record.aspf)
    dkim_ok = any(orgs.aligned(d, domain, record.adkim) for d in dkim_pass_domains)
    if spf_ok or dkim_ok:
        how = "DKIM" if dkim_ok else "SPF"
        return DmarcOutcome(DmarcResult.PASS, domain, policy, Policy.NONE,
                            f"aligned {how} pass")
    disposition = policy
    if record.pct < 100 and sample * 100 >= record.pct:
        disposition = _LOWER[policy]
    return DmarcOutcome(DmarcResult.FAIL, domain, policy, disposition,
                        "no aligned SPF or DKIM pass")
