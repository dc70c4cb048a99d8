"""The web service of a real ``mailstead serve``: every autoconfiguration form fetched over
HTTP(S) and read as the client reads it, the Apple profile (signed and verified with openssl
when the certificate is CA-signed), the card page, and SIGHUP-reloaded certificates on HTTPS."""

from __future__ import annotations

import http.client
import json
import os
import plistlib
import shutil
import signal
import ssl
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from helpers import HOSTNAME, Server, Users, init_data_dir, rewrite_tables, tls_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "web"))
from webtestlib import write_ca_signed

ALICE = "alice@example.test"
USERS = Users(passwords={ALICE: "correct horse battery"})
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"


def _start(data: Path) -> Server:
    return Server(data).start(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("web") / "data"
    init_data_dir(data, USERS)
    srv = _start(data)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_text()[-5000:]
        assert "Traceback" not in srv.log_text(), srv.log_text()[-5000:]


def _get(server: Server, path: str, *, context: ssl.SSLContext | None = None,
         method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", server.ports["https"], timeout=10, context=tls_context(server.cert_path))
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", server.ports["https"], timeout=10,
                                           context=context)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.data = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def test_http_redirects_to_https(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=10)
    conn.request("GET", "/mail/config-v1.1.xml?emailaddress=alice%40example.test",
                 headers={"Host": "autoconfig.example.test"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 301
    assert response.getheader("location") == (
        f"https://autoconfig.example.test:{server.ports['https']}"
        "/mail/config-v1.1.xml?emailaddress=alice%40example.test")


def test_thunderbird_autoconfig(server: Server) -> None:
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        response = _get(server, f"{path}?emailaddress=alice%40example.test")
        assert response.status == 200
        assert response.getheader("strict-transport-security")
        assert "frame-ancestors 'none'" in (response.getheader("content-security-policy") or "")
        root = ET.fromstring(response.data)  # type: ignore[attr-defined]
        provider = root.find("emailProvider")
        assert provider is not None
        assert provider.findtext("domain") == "example.test"
        found = {
            (s.get("type"), s.findtext("socketType")): (s.findtext("hostname"),
                                                        int(s.findtext("port") or 0))
            for s in [*provider.iter("incomingServer"), *provider.iter("outgoingServer")]
        }
        assert found == {
            ("pop3", "SSL"): ("127.0.0.1", server.ports["pop3s"]),
            ("pop3", "STARTTLS"): ("127.0.0.1", server.ports["pop3"]),
            ("imap", "SSL"): ("127.0.0.1", server.ports["imaps"]),
            ("imap", "STARTTLS"): ("127.0.0.1", server.ports["imap"]),
            ("smtp", "SSL"): ("127.0.0.1", server.ports["submissions"]),
            ("smtp", "STARTTLS"): ("127.0.0.1", server.ports["submission"]),
        }
        assert {s.findtext("username") for s in provider.iter("incomingServer")} == {
            "%EMAILADDRESS%"}
    assert _get(server, "/mail/config-v1.1.xml?emailaddress=a%40elsewhere.test").status == 404


def test_outlook_autodiscover_pox_and_json(server: Server) -> None:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQUEST_NS}">'
            f"<Request><EMailAddress>{ALICE}</EMailAddress><AcceptableResponseSchema>"
            f"{OUTLOOK_NS}</AcceptableResponseSchema></Request></Autodiscover>").encode()
    response = _get(server, "/autodiscover/autodiscover.xml", method="POST", body=body,
                    headers={"Content-Type": "text/xml"})
    assert response.status == 200
    root = ET.fromstring(response.data)  # type: ignore[attr-defined]
    ns = {"o": OUTLOOK_NS}
    protocols = {p.findtext("o:Type", namespaces=ns): p
                 for p in root.iter(f"{{{OUTLOOK_NS}}}Protocol")}
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    assert protocols["IMAP"].findtext("o:Port", namespaces=ns) == str(server.ports["imaps"])
    assert protocols["SMTP"].findtext("o:Port", namespaces=ns) == str(server.ports["submissions"])
    assert protocols["IMAP"].findtext("o:LoginName", namespaces=ns) == ALICE
    xxe = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<Autodiscover xmlns="' + REQUEST_NS.encode() + b'"><Request><EMailAddress>&x;'
           b"</EMailAddress></Request></Autodiscover>")
    refused = _get(server, "/autodiscover/autodiscover.xml", method="POST", body=xxe)
    assert refused.status == 400
    assert b"root:" not in refused.data  # type: ignore[attr-defined]

    query = urlencode({"Email": ALICE, "Protocol": "AutodiscoverV1"})
    answer = _get(server, f"/autodiscover/autodiscover.json?{query}")
    assert answer.status == 200
    assert json.loads(answer.data) == {  # type: ignore[attr-defined]
        "Protocol": "AutodiscoverV1",
        "Url": f"https://127.0.0.1:{server.ports['https']}/autodiscover/autodiscover.xml",
    }


def test_apple_profile_unsigned_with_self_signed_cert(server: Server) -> None:
    response = _get(server, "/apple/profile.mobileconfig?email=alice%40example.test")
    assert response.status == 200
    assert response.getheader("content-type") == "application/x-apple-aspen-config"
    profile = plistlib.loads(response.data)  # type: ignore[attr-defined]
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["IncomingMailServerPortNumber"] == server.ports["imaps"]
    assert mail["OutgoingMailServerPortNumber"] == server.ports["submissions"]
    assert mail["IncomingMailServerUsername"] == ALICE


def test_card_page(server: Server) -> None:
    response = _get(server, "/setup?email=alice%40example.test")
    assert response.status == 200
    html = response.data.decode()  # type: ignore[attr-defined]
    for needle in (ALICE, str(server.ports["imaps"]), str(server.ports["submission"]),
                   "SSL/TLS", "STARTTLS", "<svg", "Not Verified", "self-signed"):
        assert needle in html, needle
    assert "http.request" in server.log_text()
    assert "alice%40example.test" not in server.log_text()  # query strings are not logged


def test_header_deadline_and_size_limit(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=10)
    conn.request("GET", "/" + "a" * 20000)
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 414
    conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=10)
    conn.request("GET", "/", headers={f"x-{i}": "v" * 1000 for i in range(20)})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 431
    # A client that never finishes its request head is cut off (the deadline is 20 s; here
    # it is enough that the server still answers others meanwhile).
    import socket
    with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert _get(server, "/static/mailstead.css").status == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_signed_profile_and_sighup_reload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data_dir(data, USERS)
    certs = tmp_path / "certs"
    certs.mkdir()
    ca1 = write_ca_signed(certs, HOSTNAME, ca_name="Test CA one")
    rewrite_tables(data / "mailstead.toml",
                   {"tls": {"cert": str(certs / "cert.pem"), "key": str(certs / "key.pem")}})
    server = _start(data)
    try:
        def fetch_signed(ca: Path) -> bytes:
            context = ssl.create_default_context(cafile=str(ca))
            context.check_hostname = False  # we connect to 127.0.0.1; the chain is what counts
            response = _get(server, "/apple/profile.mobileconfig?email=alice%40example.test",
                            context=context)
            assert response.status == 200
            der = tmp_path / "profile.der"
            der.write_bytes(response.data)  # type: ignore[attr-defined]
            proc = subprocess.run(
                ["openssl", "smime", "-verify", "-inform", "der", "-binary", "-in", str(der),
                 "-CAfile", str(ca), "-purpose", "any"],
                capture_output=True, check=False)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        plist = plistlib.loads(fetch_signed(ca1))
        assert plist["PayloadContent"][0]["EmailAddress"] == ALICE
        card = _get(server, "/setup?email=alice%40example.test",
                    context=_unverified()).data.decode()  # type: ignore[attr-defined]
        assert "Not Verified" not in card

        # Renewal: new files in place, SIGHUP; new HTTPS connections get the new chain.
        (certs / "ca.pem").rename(certs / "ca-one.pem")
        ca2 = write_ca_signed(certs, HOSTNAME, ca_name="Test CA two")
        os.kill(server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "tls.reloaded" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()[-3000:]
            time.sleep(0.05)
        plist2 = plistlib.loads(fetch_signed(ca2))  # the handshake itself verifies against CA 2
        assert plist2["PayloadUUID"] == plist["PayloadUUID"]  # same account: same UUID
        with pytest.raises(ssl.SSLError):
            fetch_signed(certs / "ca-one.pem")
    finally:
        assert server.stop() == 0, server.log_text()[-5000:]


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
