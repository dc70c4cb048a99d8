"""Router: MX order, implicit MX, null MX, NXDOMAIN, temporary failures, smarthosts and
MTA-STS filtering (RFC 5321 section 5.1, RFC 7505, RFC 8461 section 4.1)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

import pytest

from mailstead.core.secret import Secret
from mailstead.dns.resolver import StaticResolver
from mailstead.queue.mtasts import MtaStsCache, PolicyError
from mailstead.queue.routing import Route, Router, RouteTemporary, Smarthost, Target


def run(coro: Coroutine[Any, Any, Route]) -> Route:
    return asyncio.run(coro)


RESOLVER = StaticResolver(
    mx={
        "b.test": [(20, "mx3.b.test"), (10, "mx1.b.test."), (10, "mx2.b.test")],
        "null.test": [(0, ".")],
        "mixed.test": [(0, "."), (10, "mx1.b.test")],
        "numeric.test": [(5, "192.0.2.1"), (10, "mx1.b.test")],
        "deadmx.test": [(10, "gone.test")],
        "flaky.test": [(10, "broken.test"), (20, "mx1.b.test")],
        "self.test": [(10, "mx1.b.test"), (20, "me.a.test"), (30, "mx3.b.test")],
        "idn.test": [(10, "mx1.b.test")],
    },
    addresses={
        "mx1.b.test": ["127.0.0.1", "::1", "127.0.0.2"],
        "mx2.b.test": ["127.0.0.3"],
        "mx3.b.test": ["127.0.0.4"],
        "implicit.test": ["127.0.0.5"],
        "relay.a.test": ["127.0.0.9"],
        "me.a.test": ["127.0.0.8"],
        "xn--bcher-kva.test": ["127.0.0.6"],
    },
    txt={"nomail.test": ["v=spf1 -all"]},
    temporary=["broken.test", "servfail.test"],
)


def hosts(route: Route) -> list[str]:
    return [t.host for t in route.targets]


def test_mx_preference_order_with_addresses_of_each_host_first() -> None:
    route = run(Router(RESOLVER, rng=random.Random(1)).route("B.test."))
    assert route.kind == "mx"
    assert not route.tls_required
    # mx1 and mx2 share preference 10 (in some order), mx3 comes last; each host's
    # addresses are together, IPv6 before IPv4.
    assert hosts(route)[-1] == "mx3.b.test"
    assert set(hosts(route)[:4]) == {"mx1.b.test", "mx2.b.test"}
    mx1 = [t.address for t in route.targets if t.host == "mx1.b.test"]
    assert mx1[0] == "::1"
    assert sorted(mx1[1:]) == ["127.0.0.1", "127.0.0.2"]
    assert all(t.port == 25 for t in route.targets)


def test_equal_preferences_are_shuffled_by_the_injected_random_source() -> None:
    firsts = {hosts(run(Router(RESOLVER, rng=random.Random(seed)).route("b.test")))[0]
              for seed in range(20)}
    assert firsts == {"mx1.b.test", "mx2.b.test"}


def test_implicit_mx_null_mx_and_no_domain() -> None:
    router = Router(RESOLVER)
    assert run(router.route("implicit.test")).targets == [Target("implicit.test", "127.0.0.5")]
    null = run(router.route("null.test"))
    assert null.kind == "null_mx"
    assert "RFC 7505" in null.reason
    # A null MX next to real MX records is ignored (RFC 7505 section 3 forbids the mix).
    assert hosts(run(router.route("mixed.test")))[0] == "mx1.b.test"
    assert run(router.route("nowhere.test")).kind == "no_domain"
    nomail = run(router.route("nomail.test"))  # exists, but no MX and no address
    assert nomail.kind == "no_domain"
    assert "no MX and no A/AAAA" in nomail.reason
    assert run(router.route("bad..name")).kind == "no_domain"


def test_numeric_mx_names_are_skipped() -> None:
    route = run(Router(RESOLVER).route("numeric.test"))
    assert set(hosts(route)) == {"mx1.b.test"}


def test_temporary_failures() -> None:
    router = Router(RESOLVER)
    with pytest.raises(RouteTemporary, match="MX lookup"):
        run(router.route("servfail.test"))
    with pytest.raises(RouteTemporary, match="no address"):
        run(router.route("deadmx.test"))
    # One MX host failing temporarily does not stop the others.
    assert set(hosts(run(router.route("flaky.test")))) == {"mx1.b.test"}


def test_our_own_mx_cuts_the_list_and_best_mx_is_a_loop() -> None:
    router = Router(RESOLVER, own_names=["me.a.test"])
    assert set(hosts(run(router.route("self.test")))) == {"mx1.b.test"}
    with pytest.raises(RouteTemporary, match="loops back"):
        run(Router(RESOLVER, own_names=["mx1.b.test"]).route("idn.test"))


def test_address_literals_and_idn() -> None:
    router = Router(RESOLVER)
    assert run(router.route("[192.0.2.5]")).targets == [Target("192.0.2.5", "192.0.2.5")]
    assert run(router.route("[IPv6:2001:db8::1]")).targets[0].address == "2001:db8::1"
    assert run(router.route("[999.1.1.1]")).kind == "no_domain"
    assert run(router.route("bücher.test")).targets == [Target("xn--bcher-kva.test",
                                                                "127.0.0.6")]


def test_smarthost_overrides_mx_per_domain_and_wildcard() -> None:
    relay = Smarthost("relay.a.test", 465, "implicit", "alice", Secret("pw"))
    router = Router(RESOLVER, {"b.test": relay})
    route = run(router.route("b.test"))
    assert route.kind == "smarthost"
    assert route.targets == [Target("relay.a.test", "127.0.0.9", 465)]
    assert route.tls_required
    assert route.smarthost == relay
    assert run(router.route("implicit.test")).kind == "mx"
    everything = Router(RESOLVER, {"*": Smarthost("relay.a.test", tls="none")})
    assert run(everything.route("null.test")).kind == "smarthost"
    with pytest.raises(RouteTemporary, match="smarthost"):
        run(Router(RESOLVER, {"*": Smarthost("gone.test")}).route("b.test"))


def test_smarthost_validation() -> None:
    with pytest.raises(ValueError, match="tls"):
        Smarthost("x", tls="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="require"):
        Smarthost("x", tls="none", username="u", password=Secret("p"))
    with pytest.raises(ValueError, match="together"):
        Smarthost("x", username="u")
    assert "pw" not in repr(Smarthost("x", username="u", password=Secret("pw")))


class FakeFetcher:
    def __init__(self, policies: dict[str, str]) -> None:
        self.policies = policies

    async def fetch(self, domain: str) -> str:
        if domain not in self.policies:
            raise PolicyError("sts-policy-fetch-error", "404")
        return self.policies[domain]


def sts_router(mode: str, patterns: list[str]) -> Router:
    body = f"version: STSv1\nmode: {mode}\nmax_age: 86400\n" + "".join(
        f"mx: {p}\n" for p in patterns)
    resolver = StaticResolver(
        mx={"b.test": [(10, "mx1.b.test"), (20, "backup.other.test")]},
        addresses={"mx1.b.test": ["127.0.0.3"], "backup.other.test": ["127.0.0.4"]},
        txt={"_mta-sts.b.test": ["v=STSv1; id=1"]},
    )
    return Router(resolver, mta_sts=MtaStsCache(resolver, FakeFetcher({"b.test": body})))


def test_mta_sts_enforce_filters_mx_hosts_and_requires_tls() -> None:
    route = run(sts_router("enforce", ["*.b.test"]).route("b.test"))
    assert hosts(route) == ["mx1.b.test"]
    assert route.tls_required
    assert route.tls_names == ("*.b.test",)
    assert route.policy_domain == "b.test"
    assert route.mta_sts_mode == "enforce"
    with pytest.raises(RouteTemporary, match="MTA-STS"):
        run(sts_router("enforce", ["mail.elsewhere.test"]).route("b.test"))


def test_mta_sts_testing_keeps_every_host_and_does_not_require_tls() -> None:
    route = run(sts_router("testing", ["mail.elsewhere.test"]).route("b.test"))
    assert hosts(route) == ["mx1.b.test", "backup.other.test"]
    assert not route.tls_required
    assert route.mta_sts_mode == "testing"
