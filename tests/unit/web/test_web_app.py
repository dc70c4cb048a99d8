from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from webtestlib import HOSTNAME, make_config

from mailstead.web.app import WebContext, create_app
from mailstead.web.autodiscover import OUTLOOK_NS, REQUEST_NS
from mailstead.web.security import CSP, https_redirect, redirect_host


class Domains:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    async def is_local_domain(self, name: str) -> bool:
        return name in self.names


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    config = make_config(tmp_path)
    app = create_app(WebContext(config=config, store=Domains("example.test")))
    return TestClient(app, base_url="https://mail.example.test", raise_server_exceptions=True)


def _assert_security_headers(response: object, https: bool = True) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-security-policy"] == CSP
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert ("strict-transport-security" in headers) is https


def test_autoconfig_both_paths(client: TestClient) -> None:
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        response = client.get(path, params={"emailaddress": "alice@example.test"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/xml")
        _assert_security_headers(response)
        root = ET.fromstring(response.content)
        assert root.findtext("emailProvider/domain") == "example.test"


def test_autoconfig_domain_from_host(client: TestClient) -> None:
    response = client.get("/mail/config-v1.1.xml", headers={"host": "autoconfig.example.test"})
    assert response.status_code == 200
    assert ET.fromstring(response.content).findtext("emailProvider/domain") == "example.test"
    response = client.get("/mail/config-v1.1.xml", headers={"host": "autoconfig.other.test"})
    assert response.status_code == 404


@pytest.mark.parametrize(("params", "status"), [
    ({"emailaddress": "alice@other.test"}, 404),
    ({"emailaddress": "not an address"}, 400),
    ([("emailaddress", "a@example.test"), ("emailaddress", "b@example.test")], 400),
])
def test_autoconfig_refusals(client: TestClient, params: object, status: int) -> None:
    response = client.get("/mail/config-v1.1.xml", params=params)  # type: ignore[arg-type]
    assert response.status_code == status
    _assert_security_headers(response)


def test_autodiscover_pox(client: TestClient) -> None:
    body = (f'<Autodiscover xmlns="{REQUEST_NS}"><Request><EMailAddress>alice@example.test'
            f"</EMailAddress><AcceptableResponseSchema>{OUTLOOK_NS}</AcceptableResponseSchema>"
            "</Request></Autodiscover>")
    response = client.post("/Autodiscover/Autodiscover.xml", content=body)
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    logins = [e.text for e in root.iter(f"{{{OUTLOOK_NS}}}LoginName")]
    assert logins == ["alice@example.test"] * 3
    bad = client.post("/autodiscover/autodiscover.xml", content=b"<!DOCTYPE x []><x/>")
    assert bad.status_code == 400
    assert b"<ErrorCode>600</ErrorCode>" in bad.content
    foreign = client.post("/autodiscover/autodiscover.xml",
                          content=body.replace("example.test", "other.test"))
    assert foreign.status_code == 404
    assert client.get("/autodiscover/autodiscover.xml").status_code == 405


def test_request_body_limit(client: TestClient) -> None:
    response = client.post("/autodiscover/autodiscover.xml", content=b"x" * (70 * 1024))
    assert response.status_code == 413
    _assert_security_headers(response)


def test_autodiscover_json(client: TestClient) -> None:
    response = client.get("/autodiscover/autodiscover.json",
                          params={"Email": "alice@example.test", "Protocol": "AutodiscoverV1"})
    assert response.status_code == 200
    assert response.json() == {"Protocol": "AutodiscoverV1",
                               "Url": f"https://{HOSTNAME}/autodiscover/autodiscover.xml"}
    path = client.get("/autodiscover/autodiscover.json/v1.0/alice@example.test",
                      params={"Protocol": "AutodiscoverV1"})
    assert path.json() == response.json()
    other = client.get("/autodiscover/autodiscover.json",
                       params={"Email": "alice@example.test", "Protocol": "ActiveSync"})
    assert other.status_code == 400
    assert other.json()["ErrorCode"] == "InvalidProtocol"


def test_profile_download(client: TestClient) -> None:
    response = client.get("/apple/profile.mobileconfig", params={"email": "alice@example.test"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-apple-aspen-config"
    assert "attachment" in response.headers["content-disposition"]
    profile = plistlib.loads(response.content)  # self-signed: unsigned plist
    assert profile["PayloadContent"][0]["EmailAddress"] == "alice@example.test"


def test_card_page_has_settings_qr_and_escapes(client: TestClient) -> None:
    response = client.get("/setup", params={"email": "alice@example.test"})
    assert response.status_code == 200
    _assert_security_headers(response)
    html = response.text
    for needle in (HOSTNAME, "993", "143", "995", "110", "465", "587", "SSL/TLS", "STARTTLS",
                   "alice@example.test", "<svg", "/apple/profile.mobileconfig?email=alice%40",
                   "Not Verified", "self-signed"):
        assert needle in html, needle
    assert "style=" not in html
    assert "<script" not in html
    hostile = client.get("/setup", params={"email": '"<script>x</script>"@example.test'})
    assert hostile.status_code == 200
    assert "<script>" not in hostile.text
    assert "&lt;script&gt;" in hostile.text
    css = client.get("/static/mailstead.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def test_unknown_domain_card_is_an_html_404(client: TestClient) -> None:
    response = client.get("/setup", params={"email": "alice@other.test"},
                          headers={"accept": "text/html"})
    assert response.status_code == 404
    assert "does not handle mail" in response.text


def test_http_app_has_no_hsts(tmp_path: Path) -> None:
    app = create_app(WebContext(config=make_config(tmp_path), store=Domains("example.test")),
                     listener="http", https=False)
    response = TestClient(app).get("/mail/config-v1.1.xml",
                                   params={"emailaddress": "a@example.test"})
    assert response.status_code == 200
    _assert_security_headers(response, https=False)


def test_https_redirect() -> None:
    client = TestClient(https_redirect(8443, HOSTNAME), base_url="http://autoconfig.example.test")
    response = client.get("/mail/config-v1.1.xml?emailaddress=a%40b.test", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == (
        "https://autoconfig.example.test:8443/mail/config-v1.1.xml?emailaddress=a%40b.test")
    post = client.post("/autodiscover/autodiscover.xml", content=b"x", follow_redirects=False)
    assert post.status_code == 308
    evil = client.get("/", headers={"host": "evil.test/x?"}, follow_redirects=False)
    assert evil.headers["location"] == f"https://{HOSTNAME}:8443/"


@pytest.mark.parametrize(("header", "expected"), [
    (b"Mail.Example.test:80", "mail.example.test"),
    (b"[::1]:80", "[::1]"),
    (b"127.0.0.1", "127.0.0.1"),
    (b"a b", "fallback"),
    (b"x@y", "fallback"),
    (b"\xff", "fallback"),
    (None, "fallback"),
])
def test_redirect_host(header: bytes | None, expected: str) -> None:
    assert redirect_host(header, "fallback") == expected
