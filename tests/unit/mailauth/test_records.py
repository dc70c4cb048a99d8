"""The DNS record set: every record parses as zone-file RDATA (dnspython) and says what the
RFCs require."""

from __future__ import annotations

import ipaddress
import time

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from mailstead.mailauth.dkim import generate_dkim_keys
from mailstead.mailauth.records import (
    Record,
    Services,
    dkim_record_value,
    domain_records,
    mta_sts_id,
    mta_sts_policy,
    render_zone,
    txt_rdata,
    txt_strings,
)

KEYS = generate_dkim_keys("a.test", time.time())
ADDRESSES = [ipaddress.ip_address("192.0.2.25"), ipaddress.ip_address("2001:db8::25")]


def records(**kwargs: object) -> dict[tuple[str, str], list[Record]]:
    sections = domain_records(
        "a.test",
        "mail.a.test",
        KEYS,
        services=kwargs.pop("services", Services()),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    out: dict[tuple[str, str], list[Record]] = {}
    for section in sections:
        for r in section.records:
            out.setdefault((r.name, r.type), []).append(r)
    return out


def txt(record: Record) -> str:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, record.value)
    strings = rdata.strings  # type: ignore[attr-defined]
    assert all(len(s) <= 255 for s in strings)
    return b"".join(strings).decode()


def test_every_record_is_valid_rdata() -> None:
    for (_, rtype), recs in records(addresses=ADDRESSES).items():
        for r in recs:
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), r.value)
            assert r.name.endswith(".")


def test_the_whole_output_loads_as_a_zone() -> None:
    text = render_zone(
        "a.test",
        domain_records("a.test", "mail.a.test", KEYS, services=Services(), addresses=ADDRESSES),
    )
    zone = dns.zone.from_text(
        "$ORIGIN a.test.\n@ 3600 IN SOA ns.a.test. h.a.test. 1 2 3 4 5\n@ 3600 IN NS ns.a.test.\n"
        + text,
        origin="a.test.",
        relativize=False,
    )
    assert zone.get_rdataset("a.test.", "MX") is not None
    assert len(list(zone.iterate_rdatas("SRV"))) == 7
    assert "PTR" not in {r.rdtype.name for _, _, r in zone.iterate_rdatas()}
    assert "25.2.0.192.in-addr.arpa.\tIN\tPTR\tmail.a.test." in text
    assert "mail.a.test.\t3600\tIN\tAAAA\t2001:db8::25" in text


def test_mail_records() -> None:
    recs = records()
    assert recs[("a.test.", "MX")][0].value == "10 mail.a.test."
    assert [txt(r) for r in recs[("a.test.", "TXT")]] == ["v=spf1 mx -all"]
    assert [txt(r) for r in recs[("mail.a.test.", "TXT")]] == ["v=spf1 a -all"]
    assert txt(recs[("_dmarc.a.test.", "TXT")][0]) == (
        "v=DMARC1; p=quarantine; rua=mailto:postmaster@a.test"
    )
    assert txt(recs[("_smtp._tls.a.test.", "TXT")][0]) == (
        "v=TLSRPTv1; rua=mailto:tls-reports@a.test"
    )
    for key in KEYS:
        (record,) = recs[(f"{key.selector}._domainkey.a.test.", "TXT")]
        assert txt(record) == dkim_record_value(key)
    rsa_value = next(
        txt(recs[(f"{k.selector}._domainkey.a.test.", "TXT")][0])
        for k in KEYS
        if k.algorithm == "rsa-sha256"
    )
    assert rsa_value.startswith("v=DKIM1; k=rsa; p=MIIB")
    assert len(rsa_value) > 255
    ed_value = next(
        txt(recs[(f"{k.selector}._domainkey.a.test.", "TXT")][0])
        for k in KEYS
        if k.algorithm == "ed25519-sha256"
    )
    assert ed_value.startswith("v=DKIM1; k=ed25519; p=")


def test_srv_and_autoconfig_follow_the_listeners() -> None:
    recs = records(services=Services(pop3=None, pop3s=None, imap=2143, https=None))
    assert recs[("_submission._tcp.a.test.", "SRV")][0].value == "10 1 587 mail.a.test."
    assert recs[("_submissions._tcp.a.test.", "SRV")][0].value == "0 1 465 mail.a.test."
    assert recs[("_imaps._tcp.a.test.", "SRV")][0].value == "0 1 993 mail.a.test."
    assert recs[("_imap._tcp.a.test.", "SRV")][0].value == "10 1 2143 mail.a.test."
    assert recs[("_pop3s._tcp.a.test.", "SRV")][0].value == "0 0 0 ."  # RFC 6186 section 4
    assert recs[("autoconfig.a.test.", "CNAME")][0].value == "mail.a.test."
    assert recs[("autodiscover.a.test.", "CNAME")][0].value == "mail.a.test."
    assert ("_autodiscover._tcp.a.test.", "SRV") not in recs


def test_mta_sts() -> None:
    policy = mta_sts_policy("mail.a.test.")
    assert policy == "version: STSv1\r\nmode: enforce\r\nmx: mail.a.test\r\nmax_age: 604800\r\n"
    ident = mta_sts_id(policy)
    assert ident.isalnum()
    assert 1 <= len(ident) <= 32
    assert mta_sts_id(mta_sts_policy("mail.a.test", "testing")) != ident
    recs = records()
    assert txt(recs[("_mta-sts.a.test.", "TXT")][0]) == f"v=STSv1; id={ident}"
    assert recs[("mta-sts.a.test.", "CNAME")][0].value == "mail.a.test."
    with pytest.raises(ValueError, match="mode"):
        mta_sts_policy("mail.a.test", "strict")
    text = render_zone(
        "a.test",
        domain_records("a.test", "mail.a.test", KEYS, services=Services(), mta_sts_mode="testing"),
    )
    assert ";     mode: testing" in text
    assert "switch to enforce" in text


def test_txt_splitting_and_escaping() -> None:
    assert txt_strings("a" * 600) == ["a" * 255, "a" * 255, "a" * 90]
    assert txt_strings("") == [""]
    assert txt_rdata('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    parsed = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, txt_rdata('q"\\' * 200))
    assert b"".join(parsed.strings) == ('q"\\' * 200).encode()  # type: ignore[attr-defined]


def test_placeholders_without_addresses() -> None:
    text = render_zone("a.test", domain_records("a.test", "mail.a.test", [], services=Services()))
    assert "; mail.a.test.\t3600\tIN\tA\t<the public IPv4 address" in text
    assert "; <reverse name of each public address>\tIN\tPTR\tmail.a.test." in text
    assert "no DKIM keys: create them with mailstead dkim rotate" in text


def test_policy_lists_every_mx_and_parses_back() -> None:
    from mailstead.queue.mtasts import parse_policy

    text = mta_sts_policy(["mx1.a.test.", "*.mx.a.test"], "enforce", 86400)
    assert text == ("version: STSv1\r\nmode: enforce\r\nmx: mx1.a.test\r\nmx: *.mx.a.test\r\n"
                    "max_age: 86400\r\n")
    policy = parse_policy(text)
    assert policy.mx == ("mx1.a.test", "*.mx.a.test")
    assert mta_sts_id(text) != mta_sts_id(mta_sts_policy(["mx1.a.test"], "enforce", 86400))
