"""The spam stage (headers, thresholds, filter down), the built-in filter and the Junk
learner, against a real store where state is involved (greylisting: each backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailstead.delivery.service import SessionInfo
from mailstead.dns.resolver import StaticResolver
from mailstead.filters.dnsbl import DnsblChecker
from mailstead.filters.greylist import Greylist
from mailstead.filters.pipeline import Action, FilterContext, Pipeline
from mailstead.filters.spam import (
    BuiltinSpamFilter,
    FilterUnavailable,
    JunkLearner,
    SpamAction,
    SpamPolicy,
    SpamResult,
    SpamStage,
    Symbol,
)
from mailstead.storage import open_store
from mailstead.storage.interfaces import (
    IncomingMessage,
    LocalDelivery,
    MailboxInfo,
    MessageInfo,
    Store,
)
from storebackends import BACKENDS, open_backend

MX = SessionInfo(client_ip="192.0.2.7", submission=False, helo="client.remote.test")
MESSAGE = (b"X-Spam-Status: No, score=-100\r\nX-Spam-Flag: NO\r\nFrom: a@remote.test\r\n"
           b"To: alice@example.test\r\nSubject: hello\r\n\r\nbody\r\n")


def ctx(data: bytes = MESSAGE) -> FilterContext:
    header = data[: data.index(b"\r\n\r\n") + 2]
    return FilterContext(session=MX, mail_from="a@remote.test",
                         recipients=("alice@example.test",), accounts=(1,), data=data,
                         header=header)


class Fake:
    name = "fake"

    def __init__(self, result: SpamResult | Exception) -> None:
        self.result = result
        self.learned: list[tuple[int, bytes, bool]] = []

    async def classify(self, c: FilterContext) -> SpamResult:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    async def learn(self, account_id: int, message: bytes, spam: bool) -> None:
        self.learned.append((account_id, message, spam))


async def run(stage: SpamStage, data: bytes = MESSAGE) -> tuple[Action, bytes, str | None]:
    result = await Pipeline([stage]).run(ctx(data))
    action = Action.ACCEPT if result.reply is None else (
        Action.REJECT if result.reply.is_permanent else Action.TEMPFAIL)
    return action, result.data, result.mailbox


def test_clean_message_is_tagged_and_incoming_spam_headers_are_removed() -> None:
    stage = SpamStage(Fake(SpamResult(1.5, (Symbol("SPF_PASS", -0.5), Symbol("X", 2.0)))))
    action, data, mailbox = asyncio.run(run(stage))
    assert action is Action.ACCEPT
    assert mailbox is None
    head = data.split(b"\r\n\r\n")[0]
    assert head.startswith(b"X-Spam-Status: No, score=1.50 required=6.00\r\n"
                           b"X-Spam-Score: 1.50\r\nX-Spam-Level: *\r\n"
                           b"X-Spam-Symbols: X(2.00), SPF_PASS(-0.50)\r\n")
    assert b"score=-100" not in data
    assert b"X-Spam-Flag" not in data
    assert data.endswith(b"From: a@remote.test\r\nTo: alice@example.test\r\n"
                         b"Subject: hello\r\n\r\nbody\r\n")


def test_junk_threshold_files_into_junk() -> None:
    action, data, mailbox = asyncio.run(run(SpamStage(Fake(SpamResult(7.0)))))
    assert action is Action.ACCEPT
    assert mailbox == "Junk"
    assert data.startswith(b"X-Spam-Status: Yes, score=7.00 required=6.00\r\n")


def test_reject_threshold_refuses_with_550_5_7_1() -> None:
    result = asyncio.run(Pipeline([SpamStage(Fake(SpamResult(20.0)))]).run(ctx()))
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced) == (550, "5.7.1")
    assert "spam" in result.reply.text
    assert result.stage == "spam"


def test_filter_action_wins_over_a_low_score_and_reject_can_go_to_junk() -> None:
    fake = Fake(SpamResult(0.0, (Symbol("GTUBE", 0.0),), SpamAction.REJECT))
    result = asyncio.run(Pipeline([SpamStage(fake)]).run(ctx()))
    assert result.reply is not None
    assert result.reply.code == 550
    action, _, mailbox = asyncio.run(run(SpamStage(fake, SpamPolicy(reject_to_junk=True))))
    assert action is Action.ACCEPT
    assert mailbox == "Junk"


def test_greylist_action_is_a_451() -> None:
    fake = Fake(SpamResult(0.0, (), SpamAction.GREYLIST))
    result = asyncio.run(Pipeline([SpamStage(fake)]).run(ctx()))
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced) == (451,
                                                                                      "4.7.1")


def test_filter_down_accepts_tagged_unchecked_or_tempfails() -> None:
    down = Fake(FilterUnavailable("connection refused"))
    action, data, mailbox = asyncio.run(run(SpamStage(down)))
    assert action is Action.ACCEPT
    assert mailbox is None
    assert data.startswith(b"X-Spam-Status: unchecked\r\nFrom: a@remote.test\r\n")
    action, _, _ = asyncio.run(run(SpamStage(down, SpamPolicy(tempfail_when_down=True))))
    assert action is Action.TEMPFAIL


def test_hanging_filter_counts_as_down() -> None:
    class Hang(Fake):
        async def classify(self, c: FilterContext) -> SpamResult:
            await asyncio.sleep(30)
            raise AssertionError

    stage = SpamStage(Hang(SpamResult(0)), SpamPolicy(timeout=0.05))
    action, data, _ = asyncio.run(run(stage))
    assert action is Action.ACCEPT
    assert b"X-Spam-Status: unchecked" in data


def test_many_symbols_fold_into_valid_header_lines() -> None:
    symbols = tuple(Symbol(f"SYMBOL_NUMBER_{i}", float(i) / 10) for i in range(30))
    action, data, _ = asyncio.run(run(SpamStage(Fake(SpamResult(1.0, symbols)))))
    assert action is Action.ACCEPT
    head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert all(len(line) <= 78 for line in head)
    assert any(line.startswith(b" SYMBOL_NUMBER_") for line in head)


def test_builtin_scores_dnsbl_listing() -> None:
    resolver = StaticResolver(addresses={"7.2.0.192.bl.example.test": ["127.0.0.2"]})
    spam = BuiltinSpamFilter(dnsbl=DnsblChecker(resolver, ["bl.example.test",
                                                           "other.example.test"]))
    result = asyncio.run(spam.classify(ctx()))
    assert [s.name for s in result.symbols] == ["RBL_BL_EXAMPLE_TEST"]
    assert result.score == 3.0
    assert result.action is SpamAction.NO_ACTION


@pytest.mark.parametrize("backend", BACKENDS)
def test_builtin_greylists_then_passes(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        now = [1000.0]
        try:
            spam = BuiltinSpamFilter(greylist=Greylist(store, lambda: now[0]))
            first = await spam.classify(ctx())
            assert first.action is SpamAction.GREYLIST
            now[0] += 301
            second = await spam.classify(ctx())
            assert second.action is SpamAction.NO_ACTION
        finally:
            await store.close()

    asyncio.run(main())


def test_junk_learner_learns_moves_into_and_out_of_junk(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path)
        try:
            await store.add_domain("example.test")
            account = await store.add_account("alice@example.test", "x")
            boxes = {b.name: b for b in await store.list_mailboxes(account.id)}
            inbox, junk, trash = boxes["INBOX"], boxes["Junk"], boxes["Trash"]
            await deliver(store, account.id, MESSAGE)
            fake = Fake(SpamResult(0))
            learner = JunkLearner(store, [fake])
            pairs = await store.copy_messages(inbox.id, [1], junk.id, move=True)
            await learner.on_copy(account.id, inbox.id, junk.id, [p[1] for p in pairs])
            await learner.drain()
            assert [(a, s) for a, _, s in fake.learned] == [(account.id, True)]
            assert fake.learned[0][1] == MESSAGE
            pairs = await store.copy_messages(junk.id, [pairs[0][1]], inbox.id, move=True)
            await learner.on_copy(account.id, junk.id, inbox.id, [p[1] for p in pairs])
            await learner.drain()
            assert [s for _, _, s in fake.learned] == [True, False]
            # Into Trash, or between ordinary mailboxes, teaches nothing.
            pairs = await store.copy_messages(inbox.id, [pairs[0][1]], trash.id)
            await learner.on_copy(account.id, inbox.id, trash.id, [p[1] for p in pairs])
            await learner.drain()
            assert len(fake.learned) == 2
        finally:
            await store.close()

    asyncio.run(main())


async def deliver(store: Store, account_id: int, data: bytes) -> None:
    await store.accept_message(IncomingMessage(
        data=data, queue_id="q1", mail_from="", local=[LocalDelivery(account_id)], remote=[],
        internal_date=1000.0, envelope="{}", bodystructure="{}"))


class OnlyRows:
    """The store as the learner sees it, proving it asks for the moved rows only: reading the
    whole mailbox (``list_messages_in``) fails the test."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.asked: list[tuple[int, list[int] | None]] = []

    async def mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None:
        return await self.store.mailbox_by_id(mailbox_id)

    async def get_messages(self, mailbox_id: int, uids: Sequence[int] | None, *,
                           envelope: bool = True,
                           bodystructure: bool = True) -> list[MessageInfo]:
        self.asked.append((mailbox_id, None if uids is None else list(uids)))
        return await self.store.get_messages(mailbox_id, uids, envelope=envelope,
                                             bodystructure=bodystructure)

    async def list_messages_in(self, mailbox_id: int) -> list[MessageInfo]:
        raise AssertionError("the learner read the whole mailbox")

    async def read_blob(self, blob: str) -> bytes:
        return await self.store.read_blob(blob)


def test_junk_learner_reads_only_the_moved_messages(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(tmp_path)
        try:
            await store.add_domain("example.test")
            account = await store.add_account("alice@example.test", "x")
            boxes = {b.name: b for b in await store.list_mailboxes(account.id)}
            inbox, junk = boxes["INBOX"], boxes["Junk"]
            # Junk already holds older spam that must not be learned again.
            for i in range(5):
                await store.accept_message(IncomingMessage(
                    data=MESSAGE.replace(b"hello", b"old %d" % i), queue_id=f"o{i}",
                    mail_from="", local=[LocalDelivery(account.id, "Junk")], remote=[],
                    internal_date=1000.0, envelope="{}", bodystructure="{}"))
            await deliver(store, account.id, MESSAGE)
            fake = Fake(SpamResult(0))
            source = OnlyRows(store)
            learner = JunkLearner(source, [fake])
            pairs = await store.copy_messages(inbox.id, [1], junk.id, move=True)
            moved = [p[1] for p in pairs]
            # A UID that no longer exists (expunged meanwhile) is skipped, not an error.
            await learner.on_copy(account.id, inbox.id, junk.id, [*moved, 999])
            await learner.drain()
            assert source.asked == [(junk.id, [*moved, 999])]
            assert [(a, d, s) for a, d, s in fake.learned] == [(account.id, MESSAGE, True)]
        finally:
            await store.close()

    asyncio.run(main())
