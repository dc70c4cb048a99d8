from __future__ import annotations

from pathlib import Path

import pytest
from webtestlib import HOSTNAME, make_config

from mailstead.config.model import HostPort, ListenConfig
from mailstead.web.client_settings import (
    NotAnAddress,
    certificate_info,
    client_settings,
    parse_client_address,
    web_base_url,
)


def test_standard_ports_best_first(tmp_path: Path) -> None:
    s = client_settings(make_config(tmp_path), "alice@example.test")
    assert s.username == "alice@example.test"
    assert s.domain == "example.test"
    assert [(e.host, e.port, e.security) for e in s.imap] == [
        (HOSTNAME, 993, "ssl"), (HOSTNAME, 143, "starttls")]
    assert [(e.port, e.security) for e in s.pop3] == [(995, "ssl"), (110, "starttls")]
    assert [(e.port, e.security) for e in s.smtp] == [(465, "ssl"), (587, "starttls")]
    assert s.preferred("smtp") is not None
    assert s.preferred("smtp").port == 465
    assert s.imap[0].security_label == "SSL/TLS"


def test_disabled_listeners_are_left_out_and_bound_ports_used(tmp_path: Path) -> None:
    listen = ListenConfig(imap=HostPort("127.0.0.1", 0), submission=HostPort("127.0.0.1", 0),
                          https=HostPort("127.0.0.1", 0))
    config = make_config(tmp_path, listen)
    s = client_settings(config, "bob@example.test", {"imap": 40143, "submission": 40587})
    assert [(e.host, e.port) for e in s.imap] == [("127.0.0.1", 40143)]
    assert s.pop3 == ()
    assert [(e.port, e.security) for e in s.smtp] == [(40587, "starttls")]
    assert s.preferred("pop3") is None
    assert web_base_url(config, {"https": 8443}) == "https://127.0.0.1:8443"


def test_web_base_url_prefers_https_and_omits_default_port(tmp_path: Path) -> None:
    assert web_base_url(make_config(tmp_path)) == f"https://{HOSTNAME}"
    http_only = make_config(tmp_path, ListenConfig(http=HostPort("0.0.0.0", 8080)))
    assert web_base_url(http_only) == f"http://{HOSTNAME}:8080"
    assert web_base_url(make_config(tmp_path, ListenConfig())) is None


@pytest.mark.parametrize("text", ["", "no-at-sign", "a@", "@b.test", "a@[192.0.2.1]",
                                  "a b@c.test", "x" * 300 + "@a.test", "a@b.test\r\nX: y"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(NotAnAddress):
        parse_client_address(text)


def test_address_domain_is_normalised() -> None:
    assert parse_client_address(" Alice@EXAMPLE.Test ") == ("Alice@example.test", "example.test")


def test_certificate_info_self_signed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    info = certificate_info(config.tls.cert)
    assert info.self_signed
    assert len(info.fingerprint.split(":")) == 32
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    assert not certificate_info(make_config(ca_dir, ca_signed=True).tls.cert).self_signed
