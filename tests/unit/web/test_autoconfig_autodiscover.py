from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from webtestlib import HOSTNAME, make_config

from mailstead.config.model import HostPort, ListenConfig
from mailstead.web.autoconfig import autoconfig_xml
from mailstead.web.autodiscover import (
    OUTLOOK_NS,
    REQUEST_NS,
    RESPONSE_NS,
    AutodiscoverError,
    json_response,
    parse_pox_request,
    pox_error,
    pox_response,
)
from mailstead.web.client_settings import client_settings


def _servers(root: ET.Element, tag: str) -> list[dict[str, str]]:
    out = []
    for server in root.iter(tag):
        fields = {child.tag: child.text or "" for child in server}
        fields["type"] = server.get("type", "")
        out.append(fields)
    return out


def test_autoconfig_as_thunderbird_reads_it(tmp_path: Path) -> None:
    settings = client_settings(make_config(tmp_path), "alice@example.test")
    root = ET.fromstring(autoconfig_xml(settings))
    assert root.tag == "clientConfig"
    assert root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.get("id") == "example.test"
    assert provider.findtext("domain") == "example.test"
    incoming = _servers(root, "incomingServer")
    assert [(s["type"], s["port"], s["socketType"]) for s in incoming] == [
        ("imap", "993", "SSL"), ("imap", "143", "STARTTLS"),
        ("pop3", "995", "SSL"), ("pop3", "110", "STARTTLS")]
    outgoing = _servers(root, "outgoingServer")
    assert [(s["type"], s["port"], s["socketType"]) for s in outgoing] == [
        ("smtp", "465", "SSL"), ("smtp", "587", "STARTTLS")]
    for server in incoming + outgoing:
        assert server["hostname"] == HOSTNAME
        assert server["username"] == "%EMAILADDRESS%"
        assert server["authentication"] == "password-cleartext"


def test_autoconfig_omits_listeners_that_are_off(tmp_path: Path) -> None:
    listen = ListenConfig(imaps=HostPort("0.0.0.0", 993), submission=HostPort("0.0.0.0", 587))
    root = ET.fromstring(autoconfig_xml(client_settings(make_config(tmp_path, listen), "a@x.test")))
    assert [s["port"] for s in _servers(root, "incomingServer")] == ["993"]
    assert [s["port"] for s in _servers(root, "outgoingServer")] == ["587"]


def _request(address: str, schema: str = OUTLOOK_NS) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQUEST_NS}"><Request>'
        f"<EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def test_pox_request_parsed() -> None:
    assert parse_pox_request(_request("alice@example.test")) == "alice@example.test"


_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b'<Autodiscover xmlns="' + REQUEST_NS.encode() + b'"><Request>'
    b"<EMailAddress>&lol2;</EMailAddress></Request></Autodiscover>"
)
_XXE = (
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<Autodiscover xmlns="' + REQUEST_NS.encode() + b'"><Request>'
    b"<EMailAddress>&x;</EMailAddress></Request></Autodiscover>"
)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<not xml",
        _LAUGHS,
        _XXE,
        b"<Autodiscover><Request><EMailAddress>a@b.test</EMailAddress></Request></Autodiscover>",
        _request("a@b.test").replace(b"<Request>", b"<Other>").replace(b"</Request>", b"</Other>"),
        _request("a@b.test").replace(b"</EMailAddress>",
                                     b"</EMailAddress><EMailAddress>b@c.test</EMailAddress>"),
        _request(""),
        _request("<b>x</b>"),
        _request("a@b.test") + b" " * 20000,
        "<Autodiscover>\udcff</Autodiscover>".encode("utf-8", "surrogateescape"),
    ],
)
def test_hostile_pox_requests_are_refused(body: bytes) -> None:
    with pytest.raises(AutodiscoverError) as info:
        parse_pox_request(body)
    assert info.value.error_code == 600


def test_other_response_schema_is_601() -> None:
    mobilesync = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
    with pytest.raises(AutodiscoverError) as info:
        parse_pox_request(_request("a@b.test", mobilesync))
    assert info.value.error_code == 601


def test_pox_response_as_outlook_reads_it(tmp_path: Path) -> None:
    settings = client_settings(make_config(tmp_path), "alice@example.test")
    root = ET.fromstring(pox_response(settings))
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    ns = {"o": OUTLOOK_NS}
    account = root.find("o:Response/o:Account", ns)
    assert account is not None
    assert account.findtext("o:AccountType", namespaces=ns) == "email"
    assert account.findtext("o:Action", namespaces=ns) == "settings"
    protocols = {
        p.findtext("o:Type", namespaces=ns): {c.tag.split("}")[1]: c.text for c in p}
        for p in account.findall("o:Protocol", ns)
    }
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    assert protocols["IMAP"]["Port"] == "993"
    assert protocols["IMAP"]["Encryption"] == "SSL"
    assert protocols["POP3"]["Port"] == "995"
    assert protocols["SMTP"]["Port"] == "465"
    for proto in protocols.values():
        assert proto["Server"] == HOSTNAME
        assert proto["LoginName"] == "alice@example.test"
        assert proto["SPA"] == "off"
        assert proto["AuthRequired"] == "on"


def test_pox_response_falls_back_to_starttls(tmp_path: Path) -> None:
    listen = ListenConfig(imap=HostPort("0.0.0.0", 143), submission=HostPort("0.0.0.0", 587))
    root = ET.fromstring(pox_response(client_settings(make_config(tmp_path, listen), "a@x.test")))
    ns = {"o": OUTLOOK_NS}
    encryption = {p.findtext("o:Type", namespaces=ns): (p.findtext("o:Port", namespaces=ns),
                                                      p.findtext("o:Encryption", namespaces=ns))
                  for p in root.iter(f"{{{OUTLOOK_NS}}}Protocol")}
    assert encryption == {"IMAP": ("143", "TLS"), "SMTP": ("587", "TLS")}


def test_pox_error_and_json() -> None:
    root = ET.fromstring(pox_error(AutodiscoverError("no <such> & domain", 600)))
    ns = {"r": RESPONSE_NS}
    assert root.findtext("r:Response/r:Error/r:ErrorCode", namespaces=ns) == "600"
    assert root.findtext("r:Response/r:Error/r:Message", namespaces=ns) == "no <such> & domain"
    assert json_response("https://h/autodiscover/autodiscover.xml") == {
        "Protocol": "AutodiscoverV1", "Url": "https://h/autodiscover/autodiscover.xml"}
