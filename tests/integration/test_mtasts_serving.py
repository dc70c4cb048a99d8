"""Our own MTA-STS policy (RFC 8461 sections 3.2 and 3.3) served by a real ``mailstead serve``
on its HTTPS listener for Host mta-sts.DOMAIN, fetched by our own outbound fetcher and parser
(queue/mtasts.py, what a sending MTA does), with the ``_mta-sts`` TXT id of ``mailstead dns``
derived from exactly the served bytes, so it changes when [mta_sts] mode does."""

from __future__ import annotations

import asyncio
import http.client
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DOMAIN, HOSTNAME, Harness, Server, Users, init_data_dir, rewrite_tables, run_cli

from mailstead.dns.resolver import StaticResolver
from mailstead.mailauth.records import mta_sts_id
from mailstead.queue.mtasts import HttpsPolicyFetcher, PolicyError, parse_policy, parse_txt


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir: Path = tmp_path_factory.mktemp("sts") / "data"
    init_data_dir(data_dir, Users(passwords={}))
    server = Server(data_dir).start()
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        assert code == 0, server.log_text()[-4000:]
        assert "Traceback" not in server.log_text()


def _fetch(h: Harness, domain: str = DOMAIN) -> str:
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt as a sending MTA does, the name
    resolving to the test server, whose certificate is trusted as is."""
    ctx = ssl.create_default_context(cafile=str(h.cert_path))
    ctx.check_hostname = False  # the dev certificate names mail.example.test only
    resolver = StaticResolver(addresses={f"mta-sts.{domain}": ["127.0.0.1"]})
    fetcher = HttpsPolicyFetcher(resolver, port=h.port("https"), ssl_context=ctx, timeout=10)
    return asyncio.run(fetcher.fetch(domain))


def _dns_id(data_dir: Path) -> str:
    zone = run_cli("dns", DOMAIN, "--data-dir", str(data_dir))
    match = re.search(r'^_mta-sts\.\S+\s.*TXT\s+"(v=STSv1;[^"]*)"', zone, re.M)
    assert match, zone
    policy_id = parse_txt([match.group(1)])
    assert policy_id is not None, match.group(1)
    return policy_id


def _get(h: Harness, host: str, listener: str = "https") -> http.client.HTTPResponse:
    if listener == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", h.port("https"), context=h.tls(), timeout=10)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", h.port(listener), timeout=10)
    try:
        conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def test_policy_is_served_and_parses(web: Harness) -> None:
    body = _fetch(web)
    policy = parse_policy(body)
    assert policy.mode == "testing"  # mode auto with the self-signed dev certificate
    assert policy.mx == (HOSTNAME,)
    assert policy.max_age == 604800
    assert body == f"version: STSv1\r\nmode: testing\r\nmx: {HOSTNAME}\r\nmax_age: 604800\r\n"
    assert _dns_id(web.data_dir) == mta_sts_id(body)


def test_only_mta_sts_of_a_local_domain_over_https(web: Harness) -> None:
    assert _get(web, f"mta-sts.{DOMAIN}").status == 200
    assert _get(web, HOSTNAME).status == 404
    assert _get(web, "mta-sts.elsewhere.test").status == 404
    with pytest.raises(PolicyError):
        _fetch(web, "elsewhere.test")
    # RFC 8461 section 3.3: HTTPS only; the plain listener redirects, which senders never
    # follow.
    assert _get(web, f"mta-sts.{DOMAIN}", "http").status != 200


def test_id_changes_with_the_mode(web: Harness, tmp_path: Path) -> None:
    before = _dns_id(web.data_dir)
    config = web.data_dir / "mailstead.toml"
    rewrite_tables(config, {"mta_sts": {"mode": "enforce", "max_age": 86400,
                                        "mx": [HOSTNAME, "*.mx.example.test"]}})
    after = _dns_id(web.data_dir)
    assert after != before
    web.server.stop()
    web.server.start()
    body = _fetch(web)
    policy = parse_policy(body)
    assert (policy.mode, policy.max_age) == ("enforce", 86400)
    assert policy.mx == (HOSTNAME, "*.mx.example.test")
    assert mta_sts_id(body) == after
