"""Sender authentication through a real ``mailstead serve`` on port 25: a DNS server on loopback
serves SPF, DKIM and DMARC records, messages are DKIM-signed here with dkimpy, and the stored
Authentication-Results field (or the 550 5.7.1 refusal) is checked per case."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from helpers import (
    HOSTNAME,
    USERS,
    Harness,
    Server,
    init_data_dir,
    rewrite_tables,
)

ALICE = "alice@example.test"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                         serialization.NoEncryption())
PUB = base64.b64encode(_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
RECORDS = {
    "sender.test": ["v=spf1 ip4:127.0.0.1 -all"],
    "sel._domainkey.sender.test": [f"v=DKIM1; k=rsa; p={PUB}"],
    "_dmarc.sender.test": ["v=DMARC1; p=reject"],
    "bank.test": ["v=spf1 ip4:192.0.2.1 -all"],
    "_dmarc.bank.test": ["v=DMARC1; p=reject"],
    "soft.test": ["v=spf1 ip4:192.0.2.1 ~all"],
    "_dmarc.soft.test": ["v=DMARC1; p=quarantine"],
}


class Zone(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in RECORDS:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for text in RECORDS[name]:
                raw = text.encode()
                reply.add_answer(RR(name, QTYPE.TXT, ttl=60,
                                    rdata=TXT([raw[i:i + 255] for i in range(0, len(raw), 255)])))
        return reply


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    dns = DNSServer(Zone(), port=0, address="127.0.0.1", tcp=False,
                    logger=DNSLogger(logf=lambda _s: None))
    dns.start_thread()
    data_dir = tmp_path_factory.mktemp("inbound-auth") / "data"
    init_data_dir(data_dir, USERS)
    port = dns.server.server_address[1]
    rewrite_tables(data_dir / "mailstead.toml", {
        "dns": {"nameservers": [f"127.0.0.1:{port}"]},
        "auth_checks": {"enable": True, "dmarc_reject_action": "reject",
                        "quarantine_action": "junk"},
    })
    server = Server(data_dir).start(timeout=20)
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        dns.stop()
        dns.server.server_close()
        assert code == 0
        assert "Traceback" not in server.log_text()


def message(token: str, sender: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@x.test>\r\n\r\nbody {token}\r\n").encode()


def signed(data: bytes) -> bytes:
    return dkim.sign(data, b"sel", b"sender.test", PEM, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject", b"message-id"]) + data


def send(h: Harness, data: bytes, sender: str) -> None:
    with h.client("smtp") as client:
        client.ehlo("client.sender.test")
        client.sendmail(sender, [ALICE], data)


def auth_field(stored: bytes) -> str:
    """Our Authentication-Results field, unfolded."""
    start = stored.index(f"Authentication-Results: {HOSTNAME};".encode())
    end = stored.index(b"\r\n", start)
    while stored[end + 2:end + 3] in (b" ", b"\t"):
        end = stored.index(b"\r\n", end + 2)
    return " ".join(stored[start:end].decode().split())


def test_aligned_pass_is_delivered_with_results(auth_server: Harness, token: str) -> None:
    data = signed(message(token, "news@sender.test"))
    # A forged field claiming our authserv-id is removed (RFC 8601 section 5).
    forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=evil.test\r\n".encode()
    send(auth_server, forged + data, "news@sender.test")
    [stored] = auth_server.find(ALICE, token)
    b = b"".join(data.split(b"b=")[-1].split(b"\r\n\r\n")[0].split())[:8].decode()
    # Base64 may hold "/", a MIME tspecial, which makes the value a quoted-string (RFC 2045);
    # "+" is a token character and stays bare.
    b = f'"{b}"' if "/" in b else b
    assert auth_field(stored) == (
        f"Authentication-Results: {HOSTNAME}; spf=pass smtp.mailfrom=news@sender.test; "
        f"dkim=pass header.d=sender.test header.s=sel header.b={b}; "
        "dmarc=pass (p=reject dis=none) header.from=sender.test; arc=none")
    assert b"evil.test" not in stored
    assert stored.startswith(b"Received: ")
    assert stored.endswith(data)


def test_forged_from_refused_with_550(auth_server: Harness, token: str) -> None:
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(auth_server, message(token, "ceo@bank.test"), "ceo@bank.test")
    assert err.value.smtp_code == 550
    assert err.value.smtp_error.startswith(b"5.7.1 ")
    assert auth_server.find(ALICE, token) == []


def test_broken_body_hash_refused(auth_server: Harness, token: str) -> None:
    data = signed(message(token, "news@sender.test")).replace(b"body", b"BODY")
    with pytest.raises(smtplib.SMTPDataError) as err:
        # From a host SPF does not allow either: nothing aligned passes.
        send(auth_server, data, "bounce@soft.test")
    assert err.value.smtp_code == 550


def test_spf_softfail_quarantine_goes_to_junk(auth_server: Harness, token: str) -> None:
    send(auth_server, message(token, "a@soft.test"), "a@soft.test")
    assert auth_server.find(ALICE, token) == []
    [stored] = auth_server.find(ALICE, token, "Junk")
    assert auth_field(stored) == (
        f"Authentication-Results: {HOSTNAME}; spf=softfail smtp.mailfrom=a@soft.test; "
        "dkim=none; dmarc=fail (p=quarantine dis=quarantine) header.from=soft.test; arc=none")
