"""Sender authentication end to end over a DNS server on loopback (dnslib), with messages signed
in the test by dkimpy and our signer; the Authentication-Results field is checked exactly."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from mailstead.dns.resolver import DnsPythonResolver
from mailstead.filters.pipeline import parse_fields
from mailstead.mailauth.dmarc import OrgDomains, Policy
from mailstead.mailauth.results import ResultItem, authserv_id, forged_indexes, pvalue, render
from mailstead.mailauth.verify import AuthVerifier

HOST = "mx.dest.test"
T = 1_790_000_000


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


SENDER_KEY, SENDER_PUB = _key()
FWD_KEY, FWD_PUB = _key()

RECORDS: dict[str, list[str]] = {
    "example.test": ["v=spf1 ip4:192.0.2.10 -all"],
    "soft.test": ["v=spf1 ip4:192.0.2.10 ~all"],
    "sel._domainkey.example.test": [f"v=DKIM1; k=rsa; p={SENDER_PUB}"],
    "_dmarc.example.test": ["v=DMARC1; p=reject; rua=mailto:d@example.test"],
    "_dmarc.soft.test": ["v=DMARC1; p=quarantine"],
    "_dmarc.bank.test": ["v=DMARC1; p=reject"],
    "bank.test": ["v=spf1 -all"],
    "fwd.test": ["v=spf1 ip4:198.51.100.20 -all"],
    "arc._domainkey.fwd.test": [f"v=DKIM1; k=rsa; p={FWD_PUB}"],
    "flaky.test": [],
}
ADDRESSES = {"mx.example.test": "192.0.2.10"}


class Zone(BaseResolver):  # type: ignore[misc]
    """TXT and A answers from the tables above; SERVFAIL for names under flaky.test."""

    def __init__(self) -> None:
        self.queries = 0

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        self.queries += 1
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name.endswith("flaky.test"):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if request.q.qtype == QTYPE.TXT and name in RECORDS:
            for text in RECORDS[name]:
                raw = text.encode()
                chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)]
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        elif request.q.qtype == QTYPE.A and name in ADDRESSES:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(ADDRESSES[name]), ttl=60))
        elif name not in RECORDS and name not in ADDRESSES:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    server = DNSServer(Zone(), port=0, address="127.0.0.1", tcp=False,
                       logger=DNSLogger(logf=lambda _s: None))
    server.start_thread()
    try:
        yield server.server.server_address[1]
    finally:
        server.stop()
        server.server.server_close()


@pytest.fixture(scope="module")
def orgs() -> OrgDomains:
    return OrgDomains()


def verify(port: int, orgs: OrgDomains, data: bytes, *, ip: str = "192.0.2.10",
           mail_from: str = "alice@example.test", helo: str = "mx.example.test",
           **kwargs: Any) -> Any:
    verifier = AuthVerifier(DnsPythonResolver([("127.0.0.1", port)], lifetime=3.0), orgs,
                            random=lambda: 0.5, **kwargs)
    return asyncio.run(verifier.verify(client_ip=ip, helo=helo, mail_from=mail_from, data=data))


def message(sender: str = "alice@example.test", body: bytes = b"Hello there.\r\n") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: bob@dest.test\r\nSubject: test\r\n"
            "Date: Sat, 01 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\n"
            ).encode() + body


def signed(data: bytes, domain: bytes = b"example.test") -> bytes:
    sig = dkim.sign(data, b"sel", domain, SENDER_KEY, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + data


def b_tag(data: bytes) -> str:
    value = data.split(b"b=")[-1].split(b"\r\n\r\n")[0]
    clean = b"".join(value.split())
    return pvalue(clean[:8].decode())


def test_aligned_pass(dns_port: int, orgs: OrgDomains) -> None:
    data = signed(message())
    results = verify(dns_port, orgs, data)
    assert results.header(HOST).decode() == (
        f"Authentication-Results: {HOST};\r\n"
        "\tspf=pass smtp.mailfrom=alice@example.test;\r\n"
        "\tdkim=pass header.d=example.test header.s=sel header.b=" + b_tag(data) + ";\r\n"
        "\tdmarc=pass (p=reject dis=none) header.from=example.test;\r\n"
        "\tarc=none\r\n"
    )
    assert results.dmarc.disposition is Policy.NONE


def test_forged_from_fails_dmarc_reject(dns_port: int, orgs: OrgDomains) -> None:
    # Sent from an IP the sender controls, signed by its own domain, but From: bank.test.
    data = signed(message(sender="ceo@bank.test"))
    results = verify(dns_port, orgs, data)
    assert results.dmarc.disposition is Policy.REJECT
    assert results.header(HOST).decode() == (
        f"Authentication-Results: {HOST};\r\n"
        "\tspf=pass smtp.mailfrom=alice@example.test;\r\n"
        "\tdkim=pass header.d=example.test header.s=sel header.b=" + b_tag(data) + ";\r\n"
        "\tdmarc=fail (p=reject dis=reject) header.from=bank.test;\r\n"
        "\tarc=none\r\n"
    )


def test_broken_body_hash(dns_port: int, orgs: OrgDomains) -> None:
    data = signed(message()).replace(b"Hello there.", b"Hello THERE.")
    results = verify(dns_port, orgs, data, ip="203.0.113.5")
    assert results.header(HOST).decode() == (
        f"Authentication-Results: {HOST};\r\n"
        "\tspf=fail smtp.mailfrom=alice@example.test;\r\n"
        "\tdkim=fail reason=\"body hash did not verify\" header.d=example.test\r\n"
        "\t header.s=sel header.b=" + b_tag(data) + ";\r\n"
        "\tdmarc=fail (p=reject dis=reject) header.from=example.test;\r\n"
        "\tarc=none\r\n"
    )


def test_spf_softfail_quarantines(dns_port: int, orgs: OrgDomains) -> None:
    results = verify(dns_port, orgs, message(sender="a@soft.test"), ip="203.0.113.5",
                     mail_from="a@soft.test", helo="203.0.113.5")
    assert results.header(HOST).decode() == (
        f"Authentication-Results: {HOST};\r\n"
        "\tspf=softfail smtp.mailfrom=a@soft.test;\r\n"
        "\tdkim=none;\r\n"
        "\tdmarc=fail (p=quarantine dis=quarantine) header.from=soft.test;\r\n"
        "\tarc=none\r\n"
    )
    assert results.dmarc.disposition is Policy.QUARANTINE


def test_spf_fail_and_helo_reported(dns_port: int, orgs: OrgDomains) -> None:
    results = verify(dns_port, orgs, message(sender="x@fwd.test"), ip="203.0.113.5",
                     mail_from="x@fwd.test", helo="fwd.test")
    assert results.header(HOST).decode() == (
        f"Authentication-Results: {HOST};\r\n"
        "\tspf=fail smtp.mailfrom=x@fwd.test;\r\n"
        "\tspf=fail smtp.helo=fwd.test;\r\n"
        "\tdkim=none;\r\n"
        "\tdmarc=none header.from=fwd.test;\r\n"
        "\tarc=none\r\n"
    )


def test_null_sender_checks_helo(dns_port: int, orgs: OrgDomains) -> None:
    results = verify(dns_port, orgs, message(), mail_from="", helo="example.test")
    assert results.spf.result == "pass"
    assert "\tspf=pass smtp.helo=example.test;\r\n" in results.header(HOST).decode()


def test_dns_failure_is_temperror(dns_port: int, orgs: OrgDomains) -> None:
    results = verify(dns_port, orgs, message(sender="a@flaky.test"), mail_from="a@flaky.test")
    text = results.header(HOST).decode()
    assert "\tspf=temperror smtp.mailfrom=a@flaky.test;\r\n" in text
    assert "dmarc=temperror" in text
    assert results.dmarc.disposition is Policy.NONE


def _forwarded(port: int) -> bytes:
    """alice@example.test -> list@fwd.test (ARC-sealed by dkimpy) -> us."""
    original = signed(message())
    first_hop = (b"Authentication-Results: fwd.test; spf=pass smtp.mailfrom=alice@example.test;"
                 b" dkim=pass header.d=example.test; dmarc=pass header.from=example.test\r\n"
                 ) + original
    altered = first_hop.replace(b"Subject: test", b"Subject: [list] test")
    sets = dkim.arc_sign(altered, b"arc", b"fwd.test", FWD_KEY, b"fwd.test", timestamp=T)
    return b"".join(sets) + altered


def test_forwarded_message_with_valid_arc_chain(dns_port: int, orgs: OrgDomains) -> None:
    data = _forwarded(dns_port)
    results = verify(dns_port, orgs, data, ip="198.51.100.20", mail_from="alice@example.test",
                     helo="fwd.test")
    text = results.header(HOST).decode()
    # The list changed the Subject (DKIM fails) and relays from its own IP (SPF fails): DMARC
    # fails, but the ARC chain carries the first hop's results and validates.
    assert "\tdkim=fail reason=\"signature did not verify\"" in text
    assert "\tdmarc=fail (p=reject dis=reject) header.from=example.test;\r\n" in text
    assert text.endswith("\tarc=pass (i=1 d=fwd.test)\r\n")
    # A trusted forwarder's chain excuses the DMARC failure (local policy).
    trusted = verify(dns_port, orgs, data, ip="198.51.100.20", helo="fwd.test",
                     trusted_arc_sealers=["fwd.test"])
    assert trusted.dmarc.disposition is Policy.NONE
    assert ("dmarc=fail (p=reject dis=none override=arc:fwd.test) header.from=example.test"
            in " ".join(trusted.header(HOST).decode().split()))


def test_tampered_arc_chain_fails(dns_port: int, orgs: OrgDomains) -> None:
    data = _forwarded(dns_port).replace(b"Hello there.", b"Hello THERE.")
    results = verify(dns_port, orgs, data, ip="198.51.100.20", helo="fwd.test",
                     trusted_arc_sealers=["fwd.test"])
    assert results.arc.result == "fail"
    assert results.dmarc.disposition is Policy.REJECT


def test_missing_key_and_garbage_signatures(dns_port: int, orgs: OrgDomains) -> None:
    data = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=nokey; h=from; bh=x; b=y\r\n"
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=nokey; h=from; bh=AAAA;\r\n"
            b"\tb=AAAA\r\n"
            b"DKIM-Signature: \x00\xff garbage ;;; ===\r\n"
            b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=fwd.test; s=arc; b=zz\r\n"
            + message())
    results = verify(dns_port, orgs, data)
    assert [d.result for d in results.dkim] == ["permerror", "permerror", "permerror"]
    # RFC 6376 section 6.1.1: the signature's own tags are checked before its key.
    assert results.dkim[0].reason == "bh= is not valid base64"
    assert results.dkim[1].reason == "no key for signature"
    assert results.arc.result == "fail"
    assert results.dmarc.result == "pass"  # SPF still aligns


def test_no_from_header(dns_port: int, orgs: OrgDomains) -> None:
    results = verify(dns_port, orgs, b"Subject: x\r\n\r\nbody\r\n")
    assert results.dmarc.result == "permerror"
    assert 'dmarc=permerror reason="no From: header"' in results.header(HOST).decode()


def test_header_fields_of_the_pipeline_give_the_same_results(dns_port: int,
                                                             orgs: OrgDomains) -> None:
    # The filters hand their parsed header over; the results are those of parsing the
    # message here, also for messages that are not CRLF throughout (then it is parsed here).
    verifier = AuthVerifier(DnsPythonResolver([("127.0.0.1", dns_port)], lifetime=3.0), orgs,
                            random=lambda: 0.5)

    async def both(data: bytes) -> tuple[Any, Any]:
        header = data[: data.index(b"\r\n\r\n") + 2]
        kwargs = {"client_ip": "192.0.2.10", "helo": "mx.example.test",
                  "mail_from": "alice@example.test", "data": data}
        return (await verifier.verify(**kwargs),
                await verifier.verify(**kwargs, fields=parse_fields(header)))

    good = signed(message())
    for data in (good, good.replace(b"Hello", b"Bye"), b"X-Junk\r\n" + good,
                 good.replace(b"there.\r\n", b"there.\n"),
                 signed(message(body=b"")), b"From: <a@example.test>\r\n\r\n"):
        plain, shared = asyncio.run(both(data))
        assert shared == plain
        assert shared.header(HOST) == plain.header(HOST)
    assert [d.result for d in asyncio.run(both(good))[1].dkim] == ["pass"]


def test_second_message_gets_the_same_results(dns_port: int, orgs: OrgDomains) -> None:
    # The first message waits for DNS (the checks overlap in tasks), the second is answered
    # from the caches (the checks run one after the other in place): same results.
    cases = [
        (signed(message()), "192.0.2.10", "alice@example.test", "mx.example.test"),
        (message(sender="x@fwd.test"), "203.0.113.5", "x@fwd.test", "fwd.test"),
        (message(), "192.0.2.10", "", "example.test"),
        (message(sender="a@flaky.test"), "192.0.2.10", "a@flaky.test", "mx.example.test"),
    ]
    async def twice(data: bytes, ip: str, mail_from: str, helo: str) -> list[Any]:
        verifier = AuthVerifier(DnsPythonResolver([("127.0.0.1", dns_port)], lifetime=3.0),
                                orgs, random=lambda: 0.5)
        return [await verifier.verify(client_ip=ip, helo=helo, mail_from=mail_from, data=data)
                for _ in range(2)]

    for case in cases:
        first, second = asyncio.run(twice(*case))
        assert second.header(HOST) == first.header(HOST)
        # The field is what rendering the public items gives.
        assert first.header(HOST) == render(HOST, first.items())
        assert all(isinstance(item, ResultItem) for item in first.items())
        assert (second.spf, second.helo, second.dmarc) == (first.spf, first.helo, first.dmarc)


# Authentication-Results rendering and parsing (RFC 8601) --------------------------------------


def test_render_quotes_hostile_values() -> None:
    field = render("mx.dest.test", [
        ResultItem("spf", "pass", properties=(("smtp.mailfrom", 'evil"\r\nX-Injected: 1'),)),
        ResultItem("dkim", "fail", comment="a) (b\r\n", reason="x;y"),
    ])
    text = field.decode()
    assert text.count("\r\n") == 3
    assert text.endswith("\r\n")
    assert 'smtp.mailfrom="evil\\"??X-Injected: 1"' in text
    assert "(a] [b??)" in text
    assert 'reason="x;y"' in text


def test_render_none_and_authserv_id() -> None:
    assert render("mx.dest.test", []) == b"Authentication-Results: mx.dest.test; none\r\n"
    assert authserv_id(" (comment) MX.Dest.Test 1; spf=pass") == "mx.dest.test"
    assert authserv_id(' "mx.dest.test"; none') == "mx.dest.test"
    assert authserv_id("  ") is None


def test_forged_results_found() -> None:
    fields = [
        (b"authentication-results", b"Authentication-Results: mx.dest.test; dkim=pass\r\n"),
        (b"subject", b"Subject: x\r\n"),
        (b"authentication-results", b"Authentication-Results: (x) MX.DEST.TEST.;\r\n arc=pass\r\n"),
        (b"authentication-results", b"Authentication-Results: other.test; dkim=pass\r\n"),
    ]
    assert forged_indexes(fields, "mx.dest.test") == [0, 2]
