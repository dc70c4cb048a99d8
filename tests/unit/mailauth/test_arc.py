"""ARC sealing (RFC 8617): our sets verify with dkimpy, chains extend, ended chains stay ended."""

from __future__ import annotations

import asyncio
import time

import dkim
import pytest

from mailstead.mailauth.arc import ArcSealer, ChainResult, arc_seal, chain_result
from mailstead.mailauth.dkim import RSA, generate_dkim_keys, load_signing_key
from mailstead.storage.interfaces import DkimKey

KEYS = {d: generate_dkim_keys(d, 1_790_000_000.0) for d in ("fwd.test", "second.test")}
TXT = {
    f"{k.selector}._domainkey.{k.domain}":
        f"v=DKIM1; k={'rsa' if k.algorithm == RSA else 'ed25519'}; p={k.public_key}".encode()
    for keys in KEYS.values() for k in keys
}
MESSAGE = (b"Authentication-Results: mx.fwd.test;\r\n\tspf=pass smtp.mailfrom=a@example.test;"
           b"\r\n\tdkim=none;\r\n\tarc=none\r\n"
           b"From: a@example.test\r\nTo: list@fwd.test\r\nSubject: hi\r\n\r\nbody\r\n")


def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
    return TXT.get(name.decode().rstrip("."))


def rsa_key(domain: str):  # type: ignore[no-untyped-def]
    return load_signing_key(next(k for k in KEYS[domain] if k.algorithm == RSA))


def seal(message: bytes, chain: ChainResult, domain: str = "fwd.test",
         authserv: str = "mx.fwd.test") -> bytes:
    return arc_seal(message, chain, authserv=authserv, domain=domain, key=rsa_key(domain),
                    timestamp=int(time.time()))


def test_chain_result_reads_our_field_only() -> None:
    found = chain_result(b"Authentication-Results: other.test; arc=fail\r\n" + MESSAGE,
                         "mx.fwd.test")
    assert found == ChainResult("none", "spf=pass smtp.mailfrom=a@example.test; dkim=none; "
                                        "arc=none")
    assert chain_result(b"Subject: x\r\n\r\n", "mx.fwd.test") is None


def test_first_set_verifies_with_dkimpy() -> None:
    chain = chain_result(MESSAGE, "mx.fwd.test")
    assert chain is not None
    sealed = seal(MESSAGE, chain) + MESSAGE
    assert sealed.startswith(b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=fwd.test;")
    assert b"ARC-Authentication-Results: i=1; mx.fwd.test;\r\n\tspf=pass" in sealed
    cv, _results, reason = dkim.arc_verify(sealed, dnsfunc=dnsfunc)
    assert (cv, reason) == (dkim.CV_Pass, "success")
    # Changing the body breaks the AMS of the newest set.
    cv, _, _ = dkim.arc_verify(sealed.replace(b"body", b"BODY"), dnsfunc=dnsfunc)
    assert cv == dkim.CV_Fail


def test_second_set_extends_the_chain() -> None:
    first = seal(MESSAGE, ChainResult("none", "arc=none")) + MESSAGE
    hop2 = b"Authentication-Results: mx.second.test; arc=pass\r\n" + first
    chain = chain_result(hop2, "mx.second.test")
    assert chain == ChainResult("pass", "arc=pass")
    second = seal(hop2, chain, "second.test", "mx.second.test") + hop2
    assert second.startswith(b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=second.test;")
    cv, results, _ = dkim.arc_verify(second, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass
    assert [r["instance"] for r in results] == [2, 1]


def test_failed_chain_is_sealed_as_fail_and_then_ends() -> None:
    first = seal(MESSAGE, ChainResult("none", "arc=none")) + MESSAGE
    broken = first.replace(b"body", b"tampered")
    failed = seal(broken, ChainResult("fail", "arc=fail"), "second.test") + broken
    assert b"cv=fail" in failed.split(b"\r\n")[0]
    # RFC 8617 section 5.1: once a seal says cv=fail nobody extends the chain.
    assert seal(failed, ChainResult("pass", "arc=pass")) == b""


def test_ed25519_key_and_instance_limit() -> None:
    ed = load_signing_key(next(k for k in KEYS["fwd.test"] if k.algorithm != RSA))
    assert arc_seal(MESSAGE, ChainResult("none", ""), authserv="x", domain="fwd.test", key=ed,
                    timestamp=1) == b""
    fifty = b"ARC-Seal: i=50; cv=pass; a=rsa-sha256; d=x.test; s=s; b=x\r\n" + MESSAGE
    assert seal(fifty, ChainResult("pass", "arc=pass")) == b""


class Keys:
    def __init__(self, keys: list[DkimKey]) -> None:
        self.keys = keys
        self.calls = 0

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        self.calls += 1
        return [k for k in self.keys if k.domain == domain]

    async def add_dkim_key(self, key: DkimKey) -> None:
        raise NotImplementedError

    async def set_dkim_active(self, domain: str, selectors: object) -> None:
        raise NotImplementedError


@pytest.mark.parametrize("authserv", ["mx.fwd.test"])
def test_sealer_seals_only_what_we_received(authserv: str) -> None:
    store = Keys(KEYS["fwd.test"])
    sealer = ArcSealer(store, authserv, clock=lambda: 1_790_000_000.0)

    async def go() -> tuple[bytes, bytes, bytes]:
        sealed = await sealer.seal(MESSAGE, "fwd.test")
        again = await sealer.seal(MESSAGE, "fwd.test")
        submitted = await sealer.seal(b"From: a@fwd.test\r\n\r\nx\r\n", "fwd.test")
        return sealed, again, submitted

    sealed, _again, submitted = asyncio.run(go())
    assert submitted == b""
    assert store.calls == 1  # keys cached
    assert dkim.arc_verify(sealed + MESSAGE, dnsfunc=dnsfunc)[0] == dkim.CV_Pass
    assert asyncio.run(sealer.seal(MESSAGE, "unknown.test")) == b""
