"""NOTIFY (RFC 3461 section 4.1) decides which notices the recorder sends: without it,
failures and delays; NEVER, none; SUCCESS, a "relayed" notice when the next hop had no DSN
and a "delivered" one for local delivery, none when the next hop took the request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from mailstead.core.dsn import RecipientDsn
from mailstead.core.reply import Reply
from mailstead.queue.dsn import DsnRecipient
from mailstead.queue.outcome import Outcome
from mailstead.queue.recorder import Recorder
from mailstead.queue.schedule import RetryPolicy
from mailstead.storage.interfaces import QueueEntry, QueueUpdate


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[list[DsnRecipient]] = []

    async def send(self, first: QueueEntry, recipients: Sequence[DsnRecipient]) -> str:
        self.sent.append(list(recipients))
        return "DSN1"


class FakeStore:
    def __init__(self) -> None:
        self.updates: list[QueueUpdate] = []

    async def update_queue(self, updates: Sequence[QueueUpdate]) -> None:
        self.updates.extend(updates)


def entry(n: int, notify: tuple[str, ...] | None, orcpt: str | None = None) -> QueueEntry:
    dsn = RecipientDsn(notify, orcpt) if notify is not None or orcpt is not None else None
    return QueueEntry(id=n, queue_id="Q1", mail_from="alice@a.test", rcpt_to=f"r{n}@b.test",
                      blob="x", state="active", attempts=0, next_attempt=0.0, created_at=0.0,
                      last_error=None, dsn=dsn)


def finish(outcomes: list[Outcome]) -> tuple[list[list[DsnRecipient]], list[QueueUpdate]]:
    notifier, store = FakeNotifier(), FakeStore()
    recorder = Recorder(store, notifier, RetryPolicy(), clock=lambda: 100.0)  # type: ignore[arg-type]
    asyncio.run(recorder.finish(outcomes[0].entry, outcomes))
    return notifier.sent, store.updates


NO = Reply(550, "5.1.1", "no such user")
LATER = Reply(451, "4.3.0", "later")
OK = Reply(250, "2.0.0", "ok")


@pytest.mark.parametrize(
    ("notify", "reported"),
    [(None, True), (("FAILURE",), True), (("SUCCESS", "DELAY"), False), (("NEVER",), False)],
)
def test_failures(notify: tuple[str, ...] | None, reported: bool) -> None:
    sent, updates = finish([Outcome(entry(1, notify, "rfc822;o@c.test"), "bounced", NO)])
    assert [u.state for u in updates] == ["bounced"]  # the row ends whatever was asked
    if reported:
        (notice,) = sent
        assert [(r.action, r.status, r.orcpt) for r in notice] == [
            ("failed", "5.1.1", "rfc822;o@c.test")]
    else:
        assert sent == []


@pytest.mark.parametrize(
    ("notify", "warned"),
    [(None, True), (("DELAY",), True), (("FAILURE",), False), (("NEVER",), False)],
)
def test_delay_warnings(notify: tuple[str, ...] | None, warned: bool) -> None:
    deferred = Outcome(entry(1, notify), "deferred", LATER, next_attempt=200.0, warn=True)
    sent, updates = finish([deferred])
    assert [u.warned for u in updates] == [warned]
    assert [[r.action for r in n] for n in sent] == ([["delayed"]] if warned else [])


def test_success_notices() -> None:
    outcomes: list[Any] = [
        Outcome(entry(1, ("SUCCESS",)), "delivered", OK, remote_mta="mx.b.test"),
        Outcome(entry(2, ("SUCCESS",)), "delivered", OK, dsn_passed=True),
        Outcome(entry(3, ("SUCCESS", "FAILURE")), "delivered", OK, local=True),
        Outcome(entry(4, None), "delivered", OK),
    ]
    (notice,) = finish(outcomes)[0]
    assert [(r.rcpt, r.action, r.status) for r in notice] == [
        ("r1@b.test", "relayed", "2.0.0"), ("r3@b.test", "delivered", "2.0.0")]
