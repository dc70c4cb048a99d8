"""The filter pipeline, the authentication stage, and DeliveryService running them on MX mail
(against a real SQLite store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstead.core.address import parse_address
from mailstead.core.reply import Reply
from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction
from mailstead.dns.resolver import StaticResolver
from mailstead.filters.auth import AuthStage, FailAction
from mailstead.filters.pipeline import (
    R_FILTER_FAILURE,
    FilterContext,
    Pipeline,
    Verdict,
    parse_fields,
)
from mailstead.mailauth.dmarc import OrgDomains
from mailstead.mailauth.verify import AuthVerifier
from mailstead.storage import open_store
from mailstead.storage.interfaces import Store

HOST = "mx.example.test"
MX = SessionInfo(client_ip="203.0.113.9", submission=False, helo="client.remote.test")
MESSAGE = (b"Authentication-Results: MX.example.test; dkim=pass header.d=bank.test\r\n"
           b"Authentication-Results: other.test; spf=pass\r\n"
           b"From: ceo@bank.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nbody\r\n")
ZONE = StaticResolver(txt={
    "bank.test": ["v=spf1 ip4:192.0.2.1 -all"],
    "_dmarc.bank.test": ["v=DMARC1; p=reject"],
    "soft.test": ["v=spf1 ~all"],
    "_dmarc.soft.test": ["v=DMARC1; p=quarantine"],
})


def ctx(data: bytes = MESSAGE, mail_from: str = "ceo@bank.test") -> FilterContext:
    header = data[: data.index(b"\r\n\r\n") + 2]
    return FilterContext(session=MX, mail_from=mail_from, recipients=("alice@example.test",),
                         accounts=(1,), data=data, header=header)


class Fixed:
    def __init__(self, name: str, verdict: Verdict) -> None:
        self.name = name
        self.verdict = verdict
        self.seen = 0

    async def check(self, c: FilterContext) -> Verdict:
        self.seen += 1
        return self.verdict


class Broken:
    name = "broken"

    async def check(self, c: FilterContext) -> Verdict:
        raise RuntimeError("filter daemon down")


class Hangs:
    name = "hangs"

    async def check(self, c: FilterContext) -> Verdict:
        await asyncio.sleep(60)
        return Verdict.accept()


def test_parse_fields_round_trips() -> None:
    header = b"A: 1\r\n  cont\r\n\tmore\r\nnot a field\r\n cont-of-junk\r\nB:2\r\n"
    fields = parse_fields(header)
    assert b"".join(raw for _, raw in fields) == header
    assert [n for n, _ in fields] == [b"a", b"", b"", b"b"]


def test_verdict_validation() -> None:
    with pytest.raises(ValueError, match="needs a reply"):
        Verdict(action=Verdict.reject(Reply(550, "5.7.1", "x")).action)
    with pytest.raises(ValueError, match="5xx"):
        Verdict.reject(Reply(451, "4.3.0", "x"))
    with pytest.raises(ValueError, match="4xx"):
        Verdict.tempfail(Reply(550, "5.7.1", "x"))
    with pytest.raises(ValueError, match="complete header field"):
        Verdict.accept(b"X-Bad: a\r\nInjected: b")


def test_stages_in_order_headers_drops_and_mailbox() -> None:
    a = Fixed("a", Verdict.accept(b"X-A: 1\r\n", drop=frozenset({0, 99})))
    b = Fixed("b", Verdict.file_into("Junk", b"X-B: 2\r\n"))
    c = Fixed("c", Verdict.file_into("Later"))
    result = asyncio.run(Pipeline([a, b, c]).run(ctx()))
    assert result.reply is None
    assert result.mailbox == "Later"
    assert result.data == b"X-A: 1\r\nX-B: 2\r\n" + MESSAGE.split(b"\r\n", 1)[1]


def test_result_fields_describe_the_result_header() -> None:
    # The fields handed on (to Sieve) are what parse_fields gives for the new header block,
    # whether fields were added only, added and dropped, or nothing changed.
    def header_fields(data: bytes) -> list[tuple[bytes, bytes]]:
        return parse_fields(data[: data.index(b"\r\n\r\n") + 2])

    folded = b"X-A: 1,\r\n 2\r\n"
    for stages in ([Fixed("a", Verdict.accept(folded))],
                   [Fixed("a", Verdict.accept(folded, drop=frozenset({0, 2})))],
                   [Fixed("a", Verdict.accept())]):
        result = asyncio.run(Pipeline(stages).run(ctx()))
        assert list(result.fields) == header_fields(result.data)
    dropped = asyncio.run(Pipeline([Fixed("a", Verdict.accept(drop=frozenset({1})))]).run(ctx()))
    assert b"other.test" not in dropped.data
    assert list(dropped.fields) == header_fields(dropped.data)


def test_first_refusal_stops() -> None:
    reject = Fixed("r", Verdict.reject(Reply(554, "5.7.1", "no")))
    after = Fixed("after", Verdict.accept())
    result = asyncio.run(Pipeline([reject, after]).run(ctx()))
    assert result.reply == Reply(554, "5.7.1", "no")
    assert result.stage == "r"
    assert after.seen == 0


def test_failing_or_hanging_stage_is_a_temporary_failure() -> None:
    assert asyncio.run(Pipeline([Broken()]).run(ctx())).reply == R_FILTER_FAILURE
    hung = asyncio.run(Pipeline([Hangs()], timeout=0.05).run(ctx()))
    assert (hung.reply, hung.stage) == (R_FILTER_FAILURE, "hangs")


def auth_stage(**kwargs: FailAction) -> AuthStage:
    return AuthStage(AuthVerifier(ZONE, OrgDomains(), random=lambda: 0.0), HOST, **kwargs)


def test_auth_stage_rejects_forged_from_under_p_reject() -> None:
    c = ctx()
    result = asyncio.run(Pipeline([auth_stage()]).run(c))
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced) == (550, "5.7.1")
    assert "DMARC policy of bank.test" in result.reply.text
    assert c.auth is not None
    assert c.auth.dmarc.result == "fail"


def test_auth_stage_configurable_and_strips_forged_results() -> None:
    result = asyncio.run(Pipeline([auth_stage(on_reject=FailAction.JUNK)]).run(ctx()))
    assert result.reply is None
    assert result.mailbox == "Junk"
    assert result.data.startswith(b"Authentication-Results: mx.example.test;\r\n\tspf=fail")
    # Ours claimed by the sender is gone (RFC 8601 section 5); a foreign one stays.
    assert b"dkim=pass header.d=bank.test" not in result.data
    assert b"Authentication-Results: other.test; spf=pass\r\n" in result.data
    accepted = asyncio.run(Pipeline([auth_stage(on_reject=FailAction.ACCEPT)]).run(ctx()))
    assert accepted.reply is None
    assert accepted.mailbox is None


def test_auth_stage_quarantine_goes_to_junk() -> None:
    data = MESSAGE.replace(b"ceo@bank.test", b"a@soft.test")
    result = asyncio.run(Pipeline([auth_stage()]).run(ctx(data, "a@soft.test")))
    assert result.reply is None
    assert result.mailbox == "Junk"
    assert b"dmarc=fail (p=quarantine dis=quarantine)" in result.data


# DeliveryService with a pipeline --------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture
def store(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[Store]:
    async def setup() -> Store:
        st = await open_store(tmp_path)
        await st.add_domain("example.test")
        await st.add_account("alice@example.test", "x")
        return st

    st = loop.run_until_complete(setup())
    yield st
    loop.run_until_complete(st.close())


async def _deliver(service: DeliveryService, session: SessionInfo, data: bytes,
                   sender: str) -> tuple[Reply, Transaction]:
    txn = Transaction(sender=parse_address(sender))
    assert (await service.check_recipient(session, txn, parse_address("alice@example.test"))
            ).code == 250
    return (await service.deliver(session, txn, data)).reply, txn


def _mailbox(loop: asyncio.AbstractEventLoop, store: Store, name: str) -> list[bytes]:
    async def read() -> list[bytes]:
        account = await store.get_account("alice@example.test")
        assert account is not None
        infos = await store.list_messages(account.id, name)
        return [await store.read_blob(info.blob) for info in infos]

    return loop.run_until_complete(read())


def test_deliver_refuses_and_files(loop: asyncio.AbstractEventLoop, store: Store) -> None:
    service = DeliveryService(store, HOST, filters=Pipeline([auth_stage()]))
    reply, _ = loop.run_until_complete(_deliver(service, MX, MESSAGE, "ceo@bank.test"))
    assert (reply.code, reply.enhanced) == (550, "5.7.1")
    soft = MESSAGE.replace(b"ceo@bank.test", b"a@soft.test")
    reply, _ = loop.run_until_complete(_deliver(service, MX, soft, "a@soft.test"))
    assert reply.code == 250
    junk = _mailbox(loop, store, "Junk")
    assert len(junk) == 1
    assert junk[0].startswith(b"Received: ")
    assert b"\r\nAuthentication-Results: mx.example.test;\r\n\tspf=softfail" in junk[0]
    assert _mailbox(loop, store, "INBOX") == []


def test_submission_is_not_filtered(loop: asyncio.AbstractEventLoop, store: Store) -> None:
    stage = Fixed("x", Verdict.reject(Reply(554, "5.7.1", "no")))
    service = DeliveryService(store, HOST, filters=Pipeline([stage]))
    account = loop.run_until_complete(store.get_account("alice@example.test"))
    sub = SessionInfo(client_ip="127.0.0.1", submission=True, account=account)
    data = b"From: alice@example.test\r\nSubject: s\r\n\r\nx\r\n"
    reply, _ = loop.run_until_complete(_deliver(service, sub, data, "alice@example.test"))
    assert reply.code == 250
    assert stage.seen == 0


def test_missing_junk_mailbox_falls_back_to_inbox(
    loop: asyncio.AbstractEventLoop, store: Store
) -> None:
    stage = Fixed("x", Verdict.file_into("NoSuchBox"))
    service = DeliveryService(store, HOST, filters=Pipeline([stage]))
    reply, _ = loop.run_until_complete(_deliver(service, MX, MESSAGE, "ceo@bank.test"))
    assert reply.code == 250
    assert len(_mailbox(loop, store, "INBOX")) == 1
