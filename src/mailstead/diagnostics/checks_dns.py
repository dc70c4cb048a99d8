"""The doctor's DNS checks, all through the configured resolver: the hostname's addresses,
and for each local domain MX, SPF, DKIM, DMARC, MTA-STS, SRV/autoconfig names, plus reverse
DNS and DNS blocklists for our addresses. Each returns findings and never raises."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import ssl
from collections.abc import Sequence

from mailstead.config.model import Config
from mailstead.diagnostics.lookup import Lookup
from mailstead.diagnostics.model import Check, fail, passed, printable, warn
from mailstead.dns.resolver import DnsError, DnsNotFound
from mailstead.mailauth import spf
from mailstead.queue.mtasts import HttpsPolicyFetcher, PolicyError, parse_policy, parse_txt
from mailstead.storage.interfaces import DkimKey

# RFC 6186 section 3 / RFC 8314 section 5.1: SRV names and the listener each describes.
_SRV = (("_submissions._tcp", "submissions"), ("_submission._tcp", "submission"),
        ("_imaps._tcp", "imaps"), ("_imap._tcp", "imap"),
        ("_pop3s._tcp", "pop3s"), ("_pop3._tcp", "pop3"))


async def check_host_addresses(lookup: Lookup, hostname: str) -> tuple[Check, list[str]]:
    """A/AAAA of the hostname; also returns the addresses found."""
    try:
        found = await lookup.addresses(hostname)
    except DnsError as exc:
        return fail(f"dns {hostname} A/AAAA", f"no address: {exc}",
                    f"publish an A (and AAAA) record for {hostname} with this server's "
                    "public address"), []
    return passed(f"dns {hostname} A/AAAA", ", ".join(found)), found


async def check_mx(lookup: Lookup, domain: str, hostname: str, ours: Sequence[str]) -> Check:
    """The domain's MX hosts include this server (by name or by address)."""
    label = f"dns {domain} MX"
    record_fix = f"publish: {domain}. MX 10 {hostname}."
    try:
        records = await lookup.mx(domain)
    except DnsError as exc:
        return fail(label, f"no MX record: {exc}", record_fix)
    hosts = [h for _, h in sorted(records)]
    if hosts == ["."]:
        return fail(label, "a null MX (RFC 7505): the domain says it takes no mail", record_fix)
    if hostname in hosts:
        return passed(label, f"points here ({', '.join(hosts)})")
    for host in hosts:
        try:
            if set(await lookup.addresses(host)) & set(ours):
                return passed(label, f"{host} has this server's address")
        except DnsError:
            continue
    return fail(label, f"points to {', '.join(hosts)}, not to {hostname}: mail for "
                f"{domain} goes elsewhere", record_fix)


async def check_spf(lookup: Lookup, domain: str, hostname: str, ours: Sequence[str]) -> Check:
    """One SPF record (RFC 7208 section 4.5) that passes for each of our addresses."""
    label = f"dns {domain} SPF"
    record_fix = f'publish: {domain}. TXT "v=spf1 mx -all"'
    try:
        records = [r for r in await lookup.txt(domain) if r.lower().startswith("v=spf1")]
    except DnsError as exc:
        return fail(label, f"no SPF record: {exc}", record_fix)
    if not records:
        return fail(label, "no SPF record: receivers cannot tell our mail from forgeries",
                    record_fix)
    if len(records) > 1:
        return fail(label, f"{len(records)} SPF records (RFC 7208 section 4.5: permerror)",
                    "merge them into one record")
    bad = []
    for ip in ours:
        outcome = await spf.check_host(lookup.resolver, ip, domain, f"postmaster@{domain}",
                                       hostname, timeout=10)
        if outcome.result is not spf.SpfResult.PASS:
            bad.append(f"{ip}: {outcome.result.value}")
    if bad:
        return fail(label, f"does not allow this server ({'; '.join(bad)}): "
                    f"{printable(records[0], 120)}", record_fix)
    return passed(label, f"allows {', '.join(ours) or 'this server'}: "
                  f"{printable(records[0], 120)}")


_P_TAG = re.compile(r"(?:^|;)\s*p\s*=\s*([^;]*)", re.IGNORECASE)


def _public_key(record: str) -> str | None:
    match = _P_TAG.search(record)
    return None if match is None else re.sub(r"\s+", "", match.group(1))


async def check_dkim(lookup: Lookup, domain: str, keys: Sequence[DkimKey]) -> list[Check]:
    """Each stored key's record is published with the same public key (RFC 6376 section
    3.6.2.1: SELECTOR._domainkey.DOMAIN)."""
    if not keys:
        return [warn(f"dns {domain} DKIM", "no DKIM keys: mail is not signed",
                     f"mailstead dkim rotate {domain} --activate, then publish the records "
                     f"(mailstead dns {domain})")]
    out = []
    for key in keys:
        name = f"{key.selector}._domainkey.{domain}"
        label = f"dns {name}"
        fix_text = f"publish the record shown by: mailstead dns {domain}"
        try:
            published = [_public_key(r) for r in await lookup.txt(name)]
        except DnsError as exc:
            why = f"missing ({exc})"
            if key.active:
                out.append(fail(label, why + ": mail signed with this key fails DKIM "
                                "(and DMARC)", fix_text))
            else:
                out.append(warn(label, why + " (the key does not sign)", fix_text))
            continue
        if key.public_key in published:
            state = "signing" if key.active else "published, not signing"
            out.append(passed(label, f"matches our {key.algorithm} key ({state})"))
        else:
            out.append(fail(label, "published, but with another public key: signatures "
                            "fail", fix_text))
    return out


async def check_dmarc(lookup: Lookup, domain: str) -> Check:
    """A DMARC record (RFC 7489 section 6.1) and its policy."""
    label = f"dns _dmarc.{domain}"
    record_fix = (f'publish: _dmarc.{domain}. TXT "v=DMARC1; p=quarantine; '
                  f'rua=mailto:postmaster@{domain}"')
    try:
        records = [r for r in await lookup.txt(f"_dmarc.{domain}")
                   if r.replace(" ", "").upper().startswith("V=DMARC1")]
    except DnsError:
        records = []
    if len(records) != 1:
        why = "no DMARC record" if not records else "several DMARC records (none applies)"
        return warn(label, why + ": large receivers (Gmail, Yahoo) expect one",
                    record_fix)
    policy = _tag(records[0], "p")
    if policy in ("quarantine", "reject"):
        return passed(label, f"policy {policy}")
    return warn(label, f"policy {policy or 'missing'}: forged mail is only reported",
                "once reports show your mail passes, set p=quarantine or p=reject")


def _tag(record: str, name: str) -> str:
    for part in record.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip().lower() == name:
            return value.strip().lower()
    return ""


async def check_mta_sts(lookup: Lookup, config: Config, domain: str) -> Check:
    """An MTA-STS policy (RFC 8461), when announced, lists every MX host of the domain."""
    label = f"mta-sts {domain}"
    try:
        policy_id = parse_txt(await lookup.txt(f"_mta-sts.{domain}"))
    except DnsError:
        policy_id = None
    if policy_id is None:
        return warn(label, "no MTA-STS policy: senders may deliver without TLS",
                    f"publish the _mta-sts record and policy shown by: mailstead dns {domain}")
    ctx = ssl.create_default_context(
        cafile=str(config.queue.tls_ca_file) if config.queue.tls_ca_file else None)
    fetcher = HttpsPolicyFetcher(lookup.resolver, port=config.queue.mta_sts_port,
                                 ssl_context=ctx, timeout=10)
    try:
        policy = parse_policy(await fetcher.fetch(domain))
        mx = [h for _, h in await lookup.mx(domain)]
    except PolicyError as exc:
        return fail(label, f"announced (id {policy_id}) but the policy is unusable: "
                    f"{printable(exc.detail)}",
                    f"serve the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt "
                    f"with a valid certificate for mta-sts.{domain}")
    except DnsError as exc:
        return fail(label, f"cannot check against the MX: {exc}", "publish an MX record")
    missing = [h for h in mx if not policy.matches(h)]
    if missing:
        return fail(label, f"mode {policy.mode}, but MX host(s) {', '.join(missing)} are not "
                    f"in the policy's mx list ({', '.join(policy.mx)}): enforcing senders "
                    "will not deliver", "add them to the policy and change the TXT id")
    return passed(label, f"mode {policy.mode}, covers every MX ({', '.join(mx)})")


async def check_client_names(lookup: Lookup, config: Config, domain: str) -> list[Check]:
    """RFC 6186 SRV records match the listeners, and the autoconfig name resolves."""
    missing, wrong = [], []
    for name, listener in _SRV:
        endpoint = getattr(config.listen, listener)
        if endpoint is None:
            continue
        try:
            records = await lookup.srv(f"{name}.{domain}")
        except DnsError:
            missing.append(name)
            continue
        if not any(t == config.hostname and port == endpoint.port
                   for _, _, port, t in records):
            wrong.append(f"{name} -> " + ", ".join(f"{t}:{p}" for _, _, p, t in records))
    out = []
    label = f"dns {domain} SRV"
    if wrong:
        out.append(fail(label, f"point elsewhere: {'; '.join(wrong)}",
                        f"publish the SRV records shown by: mailstead dns {domain}"))
    elif missing:
        out.append(warn(label, f"missing: {', '.join(missing)}; mail clients must guess",
                        f"publish the SRV records shown by: mailstead dns {domain}"))
    else:
        out.append(passed(label, "every client service is announced (RFC 6186)"))
    try:
        await lookup.addresses(f"autoconfig.{domain}")
        out.append(passed(f"dns autoconfig.{domain}", "resolves"))
    except DnsError:
        out.append(warn(f"dns autoconfig.{domain}", "does not resolve: Thunderbird and "
                        "others cannot fetch the settings",
                        f"publish: autoconfig.{domain}. CNAME {config.hostname}."))
    return out


async def check_ptr(lookup: Lookup, hostname: str, address: str) -> Check:
    """Forward-confirmed reverse DNS (RFC 1912 section 2.1): PTR names the hostname."""
    label = f"dns PTR {address}"
    fix_text = (f"ask whoever owns {address} (the hosting provider) to set its reverse DNS "
                f"to {hostname}")
    try:
        names = await lookup.ptr(address)
    except DnsError as exc:
        return fail(label, f"no PTR record ({exc}): many receivers refuse such mail",
                    fix_text)
    if hostname in names:
        return passed(label, f"names {hostname}")
    return fail(label, f"names {', '.join(names)}, not {hostname}", fix_text)


def _dnsbl_name(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    # RFC 5782 section 2.1 (IPv4: octets reversed) and 2.4 (IPv6: nibbles reversed).
    reverse = ip.reverse_pointer.rsplit(".", 2)[0]
    return f"{reverse}.{zone}"


async def check_dnsbl(lookup: Lookup, address: str, zone: str) -> Check:
    """``address`` on the blocklist ``zone`` (RFC 5782: an A record in 127.0.0.0/8 means
    listed; Spamhaus answers 127.255.255.x to refuse a query)."""
    label = f"blocklist {zone} {address}"
    name = _dnsbl_name(address, zone)
    try:
        answers = await lookup.a(name)
    except DnsNotFound:
        return passed(label, "not listed")
    except DnsError as exc:
        return warn(label, f"no answer: {exc}", "check the resolver in [dns]")
    if any(a.startswith("127.255.255.") for a in answers):
        return warn(label, f"the blocklist refused the query ({', '.join(answers)})",
                    "use a resolver of your own in [dns], not a public one")
    reason = ""
    with contextlib.suppress(DnsError):
        reason = ": " + printable("; ".join(await lookup.txt(name)), 200)
    return fail(label, f"LISTED ({', '.join(answers)}){reason}: many receivers refuse our mail",
                f"find why on the blocklist's web site (lookup {address}), fix the cause "
                "(an open relay, a stolen password), then request delisting")
