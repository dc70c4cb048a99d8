"""MTA-STS (RFC 8461): policy and TXT parsing, the HTTPS fetch from a local server with a test
CA, caching by id and max_age, and enforce mode end to end against an aiosmtpd peer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from test_client import LocalCA, Peer

from mailstead.dns.resolver import StaticResolver
from mailstead.queue.client import OutboundClient
from mailstead.queue.mtasts import (
    HttpsPolicyFetcher,
    MtaStsCache,
    MtaStsPolicy,
    PolicyError,
    TlsRptCounters,
    parse_policy,
    parse_txt,
)
from mailstead.queue.routing import Router

POLICY = ("version: STSv1\r\nmode: enforce\r\nmx: mx.b.test\r\nmx: *.backup.b.test\r\n"
          "max_age: 86400\r\n")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def start(*args: Any, **kwargs: Any) -> Peer:
        started.append(Peer(*args, **kwargs))
        return started[-1]

    yield start
    for peer in started:
        peer.stop()


def test_parse_policy() -> None:
    policy = parse_policy(POLICY + "unknown_key: ignored\r\n")
    assert policy.mode == "enforce"
    assert policy.mx == ("mx.b.test", "*.backup.b.test")
    assert policy.max_age == 86400
    assert policy.matches("MX.b.test.")
    assert policy.matches("one.backup.b.test")
    assert not policy.matches("two.one.backup.b.test")  # the wildcard is one label only
    assert not policy.matches("backup.b.test")
    assert not policy.matches("evilmx.b.test")
    capped = parse_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n".replace(
        "99999999999", "9999999999"))
    assert capped.max_age == 31_557_600  # RFC 8461 section 3.2


@pytest.mark.parametrize("text", [
    "mode: enforce\nmx: a.test\nmax_age: 1\n",  # no version
    "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
    "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
    "version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx
    "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
    "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n",
    "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\n<html>\n",
])
def test_invalid_policies(text: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(text)
    assert error.value.result_type == "sts-policy-invalid"


def test_parse_txt() -> None:
    assert parse_txt(["v=STSv1; id=20240101T000000"]) == "20240101T000000"
    assert parse_txt(["v=spf1 -all", "v=STSv1;id=abc;"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # RFC 8461 section 3.1
    assert parse_txt(["v=STSv1; id=not-alnum"]) is None
    assert parse_txt(["v=STSv1"]) is None
    assert parse_txt([]) is None


# -- a local HTTPS server -------------------------------------------------------------------


def http_response(body: str, status: str = "200 OK", ctype: str = "text/plain",
                  extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
            f"{len(body.encode())}\r\n{extra}\r\n{body}").encode()


async def https_server(ca: LocalCA, response: bytes, name: str = "mta-sts.b.test"
                       ) -> tuple[asyncio.Server, int, list[bytes]]:
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(response)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                        ssl=ca.server_context(name))
    return server, server.sockets[0].getsockname()[1], requests


RESOLVER = StaticResolver(addresses={"mta-sts.b.test": ["127.0.0.1"]})


def fetch(ca: LocalCA, response: bytes, name: str = "mta-sts.b.test") -> str:
    async def main() -> str:
        server, port, requests = await https_server(ca, response, name)
        try:
            context = ca.client_factory()(True)
            fetcher = HttpsPolicyFetcher(RESOLVER, port=port, ssl_context=context, timeout=5)
            text = await fetcher.fetch("b.test")
            assert requests[0].startswith(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n"
                                          b"Host: mta-sts.b.test\r\n")
            return text
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def test_fetch_over_https(ca: LocalCA) -> None:
    assert fetch(ca, http_response(POLICY)) == POLICY
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nversi\r\n3\r\non:\r\n0\r\n\r\n")
    assert fetch(ca, chunked) == "version:"


@pytest.mark.parametrize(("response", "result_type"), [
    (http_response("", "301 Moved", extra="Location: https://evil.test/\r\n"),
     "sts-policy-fetch-error"),  # RFC 8461 section 3.3: redirects are not followed
    (http_response(POLICY, "404 Not Found"), "sts-policy-fetch-error"),
    (http_response(POLICY, ctype="text/html"), "sts-policy-invalid"),
    (http_response("x" * 70_000), "sts-policy-invalid"),
    (b"garbage", "sts-policy-fetch-error"),
])
def test_fetch_failures(ca: LocalCA, response: bytes, result_type: str) -> None:
    with pytest.raises(PolicyError) as error:
        fetch(ca, response)
    assert error.value.result_type == result_type


def test_fetch_refuses_a_certificate_for_another_name(ca: LocalCA) -> None:
    with pytest.raises(PolicyError) as error:
        fetch(ca, http_response(POLICY), name="www.b.test")
    assert error.value.result_type == "sts-webpki-invalid"


# -- the cache ------------------------------------------------------------------------------


class CountingFetcher:
    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0
        self.fail = False

    async def fetch(self, domain: str) -> str:
        self.calls += 1
        if self.fail:
            raise PolicyError("sts-policy-fetch-error", "down")
        return self.text


class MutableResolver(StaticResolver):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[str] | None = ["v=STSv1; id=one"]

    async def txt(self, name: str) -> list[str]:
        if self.records is None:
            return await super().txt(name)  # NXDOMAIN
        return list(self.records)


def test_cache_by_id_and_max_age_with_fallbacks() -> None:
    now = [1000.0]
    resolver = MutableResolver()
    fetcher = CountingFetcher(POLICY.replace("86400", "100"))
    counters = TlsRptCounters()
    cache = MtaStsCache(resolver, fetcher, clock=lambda: now[0], tlsrpt=counters)

    def policy() -> MtaStsPolicy | None:
        return asyncio.run(cache.policy("B.test"))

    first = policy()
    assert first is not None
    assert first.id == "one"
    assert policy() is first
    assert fetcher.calls == 1  # same id: no new fetch
    resolver.records = ["v=STSv1; id=two"]
    assert policy() is not first
    assert fetcher.calls == 2  # new id: fetched again
    resolver.records = None  # the TXT record vanished (or an attacker removed it)
    assert policy() is not None  # RFC 8461 section 5.1: the cached policy still applies
    now[0] += 101  # max_age passed
    assert policy() is None
    resolver.records = ["v=STSv1; id=three"]
    fetcher.fail = True
    assert policy() is None  # nothing cached, fetch failed: no policy
    assert counters.snapshot()[("b.test", "sts")].failures == {"sts-policy-fetch-error": 1}


# -- enforce mode end to end ----------------------------------------------------------------


def test_enforce_with_a_mismatching_certificate_defers_and_sends_nothing(
        ca: LocalCA, peers: Callable[..., Peer]) -> None:
    bad = peers(tls_context=ca.server_context("other.test"))
    good = peers(tls_context=ca.server_context("mx.b.test"))

    async def attempt(port: int) -> Any:
        server, https_port, _ = await https_server(ca, http_response(POLICY))
        resolver = StaticResolver(
            mx={"b.test": [(10, "mx.b.test"), (20, "other.test")]},
            addresses={"mx.b.test": ["127.0.0.1"], "other.test": ["127.0.0.1"],
                       "mta-sts.b.test": ["127.0.0.1"]},
            txt={"_mta-sts.b.test": ["v=STSv1; id=1"]},
        )
        fetcher = HttpsPolicyFetcher(resolver, port=https_port,
                                     ssl_context=ca.client_factory()(True))
        counters = TlsRptCounters()
        router = Router(resolver, mta_sts=MtaStsCache(resolver, fetcher), port=port)
        try:
            route = await router.route("b.test")
            client = OutboundClient("a.test", connect_timeout=5, command_timeout=5,
                                    tls_context_factory=ca.client_factory(), tlsrpt=counters)
            result = await client.deliver(route, "alice@a.test", ["bob@b.test"], b"x\r\n")
            return route, result, counters
        finally:
            server.close()
            await server.wait_closed()

    def go(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run(coro)

    route, result, counters = go(attempt(bad.port))
    # other.test is not in the policy: only mx.b.test is tried, with TLS required.
    assert [t.host for t in route.targets] == ["mx.b.test"]
    assert route.tls_required
    [r] = result.results
    assert r.reply.code == 451
    assert not r.permanent
    assert "certificate" in r.reply.text
    assert bad.mails == []
    assert bad.received == []  # nothing in the clear, nothing at all
    assert counters.snapshot()[("b.test", "sts")].failures == {"certificate-host-mismatch": 1}

    route, result, counters = go(attempt(good.port))
    assert result.results[0].reply.code == 250
    assert result.tls.endswith(" verified")
    assert counters.snapshot()[("b.test", "sts")].successes == 1
    assert len(good.received) == 1
