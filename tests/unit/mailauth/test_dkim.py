"""DKIM signing against the real SQLite store, checked by an independent verifier (dkimpy)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import dkim
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.accounts.service import AccountService
from mailstead.core.errors import StoreError
from mailstead.mailauth.dkim import (
    ED25519,
    RSA,
    DkimSigner,
    SigningKey,
    dkim_signature_headers,
    generate_dkim_keys,
    load_signing_key,
    normalise_line_endings,
    relaxed_body,
    relaxed_header,
    split_message,
)
from mailstead.mailauth.records import dkim_record_value
from mailstead.storage import open_store
from mailstead.storage.interfaces import DkimKey, Store

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

MESSAGE = (
    b"Received: from phone (phone.a.test [127.0.0.9]) by mail.a.test\r\n"
    b"From: Alice <alice@a.test>\r\n"
    b"To: Bob <bob@b.test>\r\n"
    b"Cc: carol@c.test\r\n"
    b"Subject: Lunch   on\r\n\tFriday?  \r\n"
    b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@a.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n\r\nsee you   there.\r\n\r\n\r\n"
)

KEYS = generate_dkim_keys("a.test", time.time())
SIGNING = [load_signing_key(k) for k in KEYS]  # parsing an RSA key costs tens of ms


class Run(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def store(run: Run, tmp_path: Path) -> Iterator[Store]:
    opened = run(open_store(tmp_path / "data"))
    run(AccountService(opened, FAST).add_domain("a.test"))
    yield opened
    run(opened.close())


def dns_for(keys: Sequence[DkimKey]) -> dict[bytes, bytes]:
    return {
        f"{k.selector}._domainkey.{k.domain}.".encode(): dkim_record_value(k).encode() for k in keys
    }


def verify_all(signed: bytes, keys: Sequence[DkimKey]) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of ``signed``, public keys from ``keys``."""
    records = dns_for(keys)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    def one(idx: int) -> bool:
        try:
            return bool(dkim.DKIM(signed).verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.ValidationError:  # dkimpy raises for some failures (body hash mismatch)
            return False

    return [one(i) for i in range(len(re.findall(rb"(?im)^dkim-signature:", signed)))]


def tags(signed: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature field of ``signed`` (unfolded, whitespace removed)."""
    fields, _ = split_message(signed)
    out = []
    for name, raw in fields:
        if name == b"dkim-signature":
            value = re.sub(r"\s+", "", raw.decode().partition(":")[2])
            out.append(dict(t.split("=", 1) for t in value.split(";") if t))
    return out


def test_domain_add_creates_two_active_keys_that_verify(run: Run, store: Store) -> None:
    keys = run(store.dkim_keys("a.test"))
    assert sorted(k.algorithm for k in keys) == [ED25519, RSA]
    assert all(k.active for k in keys)
    day = time.strftime("%Y%m%d", time.gmtime())
    assert {k.selector for k in keys} == {f"ms{day}r", f"ms{day}e"}

    headers = run(DkimSigner(store).sign(MESSAGE, "a.test"))
    assert headers.endswith(b"\r\n")
    assert headers.count(b"DKIM-Signature:") == 2
    assert all(len(line) <= 78 for line in headers.split(b"\r\n"))
    assert verify_all(headers + MESSAGE, keys) == [True, True]

    rsa_tags, ed_tags = tags(headers + MESSAGE)
    assert (rsa_tags["a"], ed_tags["a"]) == (RSA, ED25519)
    for t in (rsa_tags, ed_tags):
        assert t["c"] == "relaxed/relaxed"
        assert t["d"] == "a.test"
        assert t["v"] == "1"
        assert "l" not in t  # RFC 6376 section 8.2
        assert abs(int(t["t"]) - time.time()) < 60
        assert t["h"].split(":") == [
            "from", "from", "subject", "subject", "to", "to",
            "date", "message-id", "cc", "mime-version", "content-type",
        ]  # fmt: skip


def test_relaxed_canonicalisation_survives_harmless_changes(run: Run, store: Store) -> None:
    keys = run(store.dkim_keys("a.test"))
    signed = run(DkimSigner(store).sign(MESSAGE, "a.test")) + MESSAGE
    # Refolding, whitespace runs, case of names, extra trailing empty lines, new unsigned fields.
    changed = signed.replace(b"Subject: Lunch   on\r\n\tFriday?  ", b"subject:Lunch on Friday?")
    changed = changed.replace(b"see you   there.", b"see you \t there.   ")
    changed = b"X-Spam: no\r\n" + changed + b"\r\n\r\n"
    assert verify_all(changed, keys) == [True, True]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: Lunch", b"Subject: Dinner"),
        (b"see you", b"meet you"),
        (b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice"),  # oversigned From
        (b"Subject: Lunch", b"Subject: Win!\r\nSubject: Lunch"),  # oversigned Subject
        (b"X-Mailer", b"To: everyone@evil.test\r\nX-Mailer"),  # oversigned To
        (b"Date: Tue", b"Date: Wed"),
        (b"charset=utf-8", b"charset=latin1"),
    ],
)
def test_tampering_breaks_both_signatures(run: Run, store: Store, old: bytes, new: bytes) -> None:
    keys = run(store.dkim_keys("a.test"))
    signed = run(DkimSigner(store).sign(MESSAGE, "a.test")) + MESSAGE
    assert signed.count(old) == 1
    assert verify_all(signed.replace(old, new), keys) == [False, False]


def test_absent_to_is_oversigned_so_it_cannot_be_added(run: Run, store: Store) -> None:
    keys = run(store.dkim_keys("a.test"))
    message = b"From: a@a.test\r\nSubject: x\r\n\r\nbody\r\n"
    signed = run(DkimSigner(store).sign(message, "a.test")) + message
    assert tags(signed)[0]["h"] == "from:from:subject:subject:to"
    assert verify_all(signed, keys) == [True, True]
    added = signed.replace(b"Subject: x", b"Subject: x\r\nTo: victim@b.test")
    assert verify_all(added, keys) == [False, False]


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@a.test\r\n\r\n",  # empty body
        b"From: a@a.test\r\n",  # no body at all
        b"From: a@a.test\r\n\r\nno final newline",
        b"From: a@a.test\r\n\r\n\r\n\r\n",  # only empty lines
        b"From: a@a.test\nTo: b@b.test\n\nbare LF\nlines\n",
        b"From: a@a.test\rSubject: bare CR\r\rtext\r",
        b"From: a@a.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n\xc3\xa9t\xc3\xa9 8bit\r\n",
        b"Received: x\r\nFrom: a@a.test\r\nReceived: y\r\nTo: b@b.test\r\nTo: c@b.test\r\n\r\nx",
        b"From: a@a.test\r\n" + b"Subject: " + b"long " * 400 + b"\r\n\r\nx\r\n",
    ],
)
def test_edge_case_messages_verify(run: Run, store: Store, message: bytes) -> None:
    keys = run(store.dkim_keys("a.test"))
    headers = run(DkimSigner(store).sign(message, "a.test"))
    # What the SMTP client sends: the same message with CRLF line endings.
    assert verify_all(headers + normalise_line_endings(message), keys) == [True, True]


def test_bare_line_endings_are_signed_as_crlf() -> None:
    assert normalise_line_endings(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"
    assert normalise_line_endings(b"a\r\n\r\n") == b"a\r\n\r\n"


def test_canonicalisation_primitives() -> None:
    # RFC 6376 section 3.4.6, example 1 (relaxed/relaxed).
    assert relaxed_header(b"A: X\r\n") == b"a:X\r\n"
    assert relaxed_header(b"B : Y\t\r\n\tZ  \r\n") == b"b:Y Z\r\n"
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert relaxed_body(b"") == b""
    assert relaxed_body(b"\r\n\r\n") == b""
    assert relaxed_body(b"x") == b"x\r\n"


def test_split_message_skips_malformed_lines() -> None:
    fields, body = split_message(b" orphan\r\nFrom: a\r\nnot a field\r\n\tcont\r\nTo: b\r\n\r\nB")
    assert fields == [(b"from", b"From: a\r\n"), (b"to", b"To: b\r\n")]
    assert body == b"B"
    assert split_message(b"\r\nbody only") == ([], b"body only")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_hostile_messages_never_raise(data: bytes) -> None:
    headers = dkim_signature_headers(data, "a.test", SIGNING, 1_800_000_000)
    lines = headers.split(b"\r\n")
    assert lines[-1] == b""
    assert headers.isascii()
    assert all(0 < len(line) <= 78 for line in lines[:-1])
    assert headers.count(b"DKIM-Signature:") == 2


@settings(max_examples=60, deadline=None)
@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from(["From", "To", "Subject", "Cc", "Date", "X-Other", "Reply-To"]),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        ),
        max_size=8,
    ),
    body=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
)
def test_any_well_formed_message_verifies(fields: list[tuple[str, str]], body: bytes) -> None:
    head = b"".join(f"{n}: {v}\r\n".encode() for n, v in [("From", "a@a.test"), *fields])
    message = head + b"\r\n" + body
    headers = dkim_signature_headers(message, "a.test", SIGNING, int(time.time()))
    assert verify_all(headers + message, KEYS) == [True, True]


class CountingStore:
    """The three DKIM methods over a list, counting reads (no other method exists)."""

    def __init__(self, keys: list[DkimKey]) -> None:
        self.keys = keys
        self.reads = 0
        self.fail = False

    async def add_dkim_key(self, key: DkimKey) -> None:
        self.keys.insert(0, key)

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        self.reads += 1
        if self.fail:
            raise StoreError("database is locked")
        return [k for k in self.keys if k.domain == domain]

    async def set_dkim_active(self, domain: str, selectors: Sequence[str]) -> None:
        self.keys = [
            replace(k, active=k.selector in selectors) if k.domain == domain else k
            for k in self.keys
        ]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_keys_are_cached_and_refreshed(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real_load = load_signing_key

    def counting_load(key: DkimKey) -> SigningKey:
        parsed.append(key.selector)
        return real_load(key)

    monkeypatch.setattr("mailstead.mailauth.dkim.load_signing_key", counting_load)
    backing = CountingStore(list(KEYS))
    clock = Clock()
    signer = DkimSigner(backing, clock=clock, refresh=60)
    for _ in range(5):
        assert run(signer.sign(MESSAGE, "A.Test.")).count(b"DKIM-Signature") == 2
    assert backing.reads == 1
    assert sorted(parsed) == sorted(k.selector for k in KEYS)

    # A rotation in another process: seen after the refresh interval; unchanged keys are
    # not parsed again, only the new one.
    new = generate_dkim_keys("a.test", clock.now, existing=[k.selector for k in KEYS])
    rsa_new = next(k for k in new if k.algorithm == RSA)
    ed_old = next(k for k in KEYS if k.algorithm == ED25519)
    run(backing.add_dkim_key(rsa_new))
    run(backing.set_dkim_active("a.test", [rsa_new.selector, ed_old.selector]))
    assert tags(run(signer.sign(MESSAGE, "a.test")) + MESSAGE)[0]["s"] != rsa_new.selector
    clock.now += 61
    signed = run(signer.sign(MESSAGE, "a.test")) + MESSAGE
    assert [t["s"] for t in tags(signed)] == [rsa_new.selector, ed_old.selector]
    assert verify_all(signed, [*KEYS, rsa_new]) == [True, True]
    assert backing.reads == 2
    assert parsed.count(ed_old.selector) == 1
    assert parsed[-1] == rsa_new.selector

    # invalidate() takes effect at once.
    run(backing.set_dkim_active("a.test", []))
    assert run(signer.sign(MESSAGE, "a.test")) != b""
    signer.invalidate("a.test")
    assert run(signer.sign(MESSAGE, "a.test")) == b""


def test_no_key_literal_domain_and_store_errors(run: Run) -> None:
    backing = CountingStore(list(KEYS))
    signer = DkimSigner(backing)
    assert run(signer.sign(MESSAGE, "b.test")) == b""  # not our domain: no keys
    assert run(signer.sign(MESSAGE, "[127.0.0.1]")) == b""
    assert run(signer.sign(MESSAGE, "bad domain")) == b""
    backing.fail = True
    with pytest.raises(StoreError):  # the worker defers rather than send unsigned mail
        run(signer.sign(MESSAGE, "a.test"))


def test_an_unusable_key_is_skipped_and_logged(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    rsa_key = next(k for k in KEYS if k.algorithm == RSA)
    broken = replace(rsa_key, private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n")
    ed_key = next(k for k in KEYS if k.algorithm == ED25519)
    wrong_type = replace(ed_key, selector="wrong", algorithm=RSA)  # an Ed25519 key labelled RSA
    signer = DkimSigner(CountingStore([broken, wrong_type, ed_key]))
    with caplog.at_level(logging.ERROR, logger="mailstead.dkim"):
        signed = run(signer.sign(MESSAGE, "a.test")) + MESSAGE
    assert [t["a"] for t in tags(signed)] == [ED25519]
    assert verify_all(signed, KEYS) == [True]
    assert "unreadable" in caplog.text
    assert "not a rsa-sha256 key" in caplog.text
    assert "PRIVATE KEY" not in caplog.text  # keys are never logged


def test_generated_keys() -> None:
    now = 1_795_478_400.0  # 2026-11-24 00:00 UTC
    keys = generate_dkim_keys("a.test", now, existing=["ms20261124r", "ms20261124r2"])
    by_alg = {k.algorithm: k for k in keys}
    assert by_alg[RSA].selector == "ms20261124r3"
    assert by_alg[ED25519].selector == "ms20261124e"
    private = serialization.load_pem_private_key(by_alg[RSA].private_key.encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    assert by_alg[RSA].private_key.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    public = serialization.load_der_public_key(base64.b64decode(by_alg[RSA].public_key))
    assert isinstance(public, rsa.RSAPublicKey)
    private_ed = serialization.load_pem_private_key(by_alg[ED25519].private_key.encode(), None)
    assert isinstance(private_ed, ed25519.Ed25519PrivateKey)
    assert len(base64.b64decode(by_alg[ED25519].public_key)) == 32  # RFC 8463 section 4
    assert all(k.created_at == now and k.active and k.domain == "a.test" for k in keys)


def test_signing_cost() -> None:
    """Both signatures of a 4 KB message; the figure is printed (-s) and bounded loosely so
    that a pure-Python RSA fallback (about 8 ms) would be caught."""
    keys = SIGNING
    message = MESSAGE + b"x" * 70 * 55 + b"\r\n"
    dkim_signature_headers(message, "a.test", keys, 1)
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        dkim_signature_headers(message, "a.test", keys, 1)
    per_message = (time.perf_counter() - start) / rounds
    print(f"DKIM RSA-2048 + Ed25519 signing of a 4 KB message: {per_message * 1000:.2f} ms")
    assert per_message < 0.006
