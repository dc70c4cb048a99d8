"""Vacation senders and recipients: ownership of :from and :addresses, the :mime header
rule, the sender verification a reply needs, and the hourly sending limit replies and
redirects share with submission (real store of each backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.address import parse_address
from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction
from mailstead.mailauth.dmarc import DmarcOutcome, DmarcResult
from mailstead.mailauth.spf import SpfOutcome, SpfResult
from mailstead.mailauth.verify import ArcOutcome, AuthResults, DkimOutcome
from mailstead.sieve.compile import compile_script
from mailstead.sieve.delivery import SieveRunner
from mailstead.sieve.senders import mime_problem, sender_unverified, upload_problem
from mailstead.storage.interfaces import Store
from storebackends import BACKENDS, open_backend

ALICE = "alice@example.test"


def _auth(spf: SpfResult, spf_domain: str = "remote.test",
          dkim: tuple[DkimOutcome, ...] = (),
          dmarc: DmarcResult = DmarcResult.NONE) -> AuthResults:
    return AuthResults(spf=SpfOutcome(spf, spf_domain, ""),
                       helo=SpfOutcome(SpfResult.NONE, "", ""), dkim=dkim,
                       dmarc=DmarcOutcome(dmarc, "remote.test"), arc=ArcOutcome("none"),
                       mail_from="x@remote.test", helo_name="remote.test")


def test_mime_reason_may_set_only_content_fields() -> None:
    ok = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n" \
         " \r\nMIME-Version: 1.0\r\n\r\nAway.\r\n"
    assert mime_problem(ok) is None
    for name in ("Reply-To", "From", "Sender", "Bcc", "DKIM-Signature", "X-Anything"):
        problem = mime_problem(f"Content-Type: text/plain\r\n{name}: x@b.test\r\n\r\nhi")
        assert problem is not None
        assert name in problem
    assert mime_problem("no header at all") is not None
    assert mime_problem("Content-Type: text/plain\rReply-To: x@b.test\r\n\r\nhi") is not None
    assert mime_problem("not a field\r\n\r\nbody") is not None


@given(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True))
def test_only_content_and_mime_version_fields_pass(name: str) -> None:
    allowed = name.lower().startswith("content-") or name.lower() == "mime-version"
    assert (mime_problem(f"{name}: v\r\n\r\nbody") is None) == allowed


def test_sender_must_be_vouched_for() -> None:
    assert sender_unverified(None, "x@remote.test") is None  # no checks ran
    assert sender_unverified(_auth(SpfResult.PASS), "x@remote.test") is None
    for result in (SpfResult.FAIL, SpfResult.SOFTFAIL, SpfResult.NONE, SpfResult.NEUTRAL,
                   SpfResult.TEMPERROR):
        assert sender_unverified(_auth(result), "x@remote.test") is not None
    # SPF for another domain does not vouch for this one; an aligned DKIM pass does.
    assert sender_unverified(_auth(SpfResult.PASS, "other.test"), "x@remote.test")
    signed = (DkimOutcome("pass", "remote.test", "s", "b"),)
    assert sender_unverified(_auth(SpfResult.NONE, dkim=signed), "x@mail.remote.test") is None
    weak = (DkimOutcome("pass", "remote.test", "s", "b", weak=True),)
    assert sender_unverified(_auth(SpfResult.NONE, dkim=weak), "x@remote.test")
    other = (DkimOutcome("pass", "attacker.test", "s", "b"),)
    assert sender_unverified(_auth(SpfResult.NONE, dkim=other), "x@remote.test")
    assert sender_unverified(_auth(SpfResult.PASS, dmarc=DmarcResult.FAIL), "x@remote.test")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(params=BACKENDS)
def store(tmp_path: Path, loop: asyncio.AbstractEventLoop,
          request: pytest.FixtureRequest) -> Iterator[Store]:
    async def setup() -> Store:
        st_ = await open_backend(request.param, tmp_path)
        await st_.add_domain("example.test")
        await st_.add_account(ALICE, "x")
        await st_.add_alias("office@example.test", [ALICE])
        return st_

    st_ = loop.run_until_complete(setup())
    yield st_
    loop.run_until_complete(st_.close())


def test_upload_problem_names_the_address(store: Store,
                                          loop: asyncio.AbstractEventLoop) -> None:
    def check(args: str, variables: bool = False) -> str | None:
        req = '["vacation", "variables"]' if variables else '"vacation"'
        script = compile_script(f'require {req};\r\nif true {{ vacation {args} "x"; }}\r\n')
        return loop.run_until_complete(upload_problem(store, ALICE, script))

    problem = check(':from "Payroll <payroll@b.test>"')
    assert problem is not None
    assert problem.startswith("line 2: vacation :from 'Payroll <payroll@b.test>'")
    assert check(':addresses ["alice@example.test", "boss@b.test"]') is not None
    assert check(':from "not an address"') is not None
    assert check(':from "alice@example.test, payroll@b.test"') is not None
    assert check(':from "Payroll <payroll@b.test>, alice@example.test"') is not None
    for ok in (':from "Alice <alice@example.test>"', ':from "alice+away@example.test"',
               ':from "office@example.test" :addresses "office@example.test"'):
        assert check(ok) is None
    # Known only at run time (checked then).
    assert check(':from "${who}"', variables=True) is None


def test_replies_share_the_hourly_sending_limit(store: Store,
                                                loop: asyncio.AbstractEventLoop) -> None:
    runner = SieveRunner(store, "mx.example.test", sender_hourly_limit=2)
    svc = DeliveryService(store, "mx.example.test", sieve=runner)

    async def go() -> None:
        account = await store.get_account(ALICE)
        assert account is not None
        await store.put_sieve_script(account.id, "main", 'require "vacation";\r\n'
                                     'vacation :days 1 "away";\r\n')
        await store.set_active_sieve_script(account.id, "main")
        for i in range(4):
            sender = f"s{i}@remote.test"
            txn = Transaction(sender=parse_address(sender))
            session = SessionInfo(client_ip="192.0.2.1", submission=False)
            assert (await svc.check_recipient(session, txn, parse_address(ALICE))).code == 250
            data = (f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {i}\r\n\r\nhi\r\n").encode()
            assert (await svc.deliver(session, txn, data)).reply.code == 250
        queue = await store.list_queue()
        assert len(queue) == 2
        assert await store.count_sent_since(account.id, 0) == 2
        assert len(await store.list_messages(account.id, "INBOX")) == 4

    loop.run_until_complete(go())


def test_reject_notice_only_to_a_verified_sender(store: Store,
                                                 loop: asyncio.AbstractEventLoop) -> None:
    runner = SieveRunner(store, "mx.example.test")

    async def go() -> None:
        account = await store.get_account(ALICE)
        assert account is not None
        script = 'require ["reject", "vacation"];\r\nreject "no thanks";\r\n'
        data = f"From: x@remote.test\r\nTo: {ALICE}\r\nSubject: s\r\n\r\nhi\r\n".encode()
        kinds = {}
        for spf in (SpfResult.FAIL, SpfResult.PASS):
            plan = await runner.plan({account.id: ALICE}, "x@remote.test", data, "INBOX",
                                     scripts={account.id: script}, auth=_auth(spf))
            assert plan.rejected == {account.id: "no thanks"}
            kinds[spf] = [f.kind for f in plan.followups]
        assert kinds == {SpfResult.FAIL: [], SpfResult.PASS: ["reject"]}

    loop.run_until_complete(go())
