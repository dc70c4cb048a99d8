"""The queue workers against the real store of each backend with a scripted router and
client: grouping, outcomes, loops, local recipients, DSNs and their absence for null senders."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.reply import Reply
from mailstead.queue.mtasts import TlsRptCounters
from mailstead.queue.schedule import RetryPolicy
from mailstead.queue.workers import QueueWorkers, WorkerSettings
from mailstead.storage.interfaces import IncomingMessage, Store
from storebackends import BACKENDS, open_backend

MSG = b"From: <alice@a.test>\r\nTo: <x@b.test>\r\nSubject: t\r\n\r\nbody\r\n"


@dataclass
class FakeRoute:
    kind: str = "mx"
    targets: list[Any] = field(default_factory=list)
    reason: str = ""


@dataclass
class FakeResult:
    results: list[Any]
    tls: str | None = None
    peer: str = "mx.b.test[127.0.0.9]:25"


@dataclass
class FakeRcpt:
    rcpt: str
    reply: Reply
    permanent: bool


class Router:
    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds

    async def route(self, domain: str) -> FakeRoute:
        return FakeRoute(self.kinds.get(domain, "mx"))


class Client:
    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, list[str], bytes]] = []

    async def deliver(self, route: Any, mail_from: str, rcpts: Sequence[str], data: bytes, *,
                      smtputf8: bool, eight_bit: bool, dsn: Any = None) -> FakeResult:
        self.calls.append((mail_from, list(rcpts), data))
        return FakeResult([FakeRcpt(r, self.replies[r], self.replies[r].code >= 500)
                           for r in rcpts])


async def _setup(tmp: Path, backend: str = "sqlite") -> tuple[Store, int]:
    store = await open_backend(backend, tmp / "data")
    await store.add_domain("a.test")
    alice = await store.add_account("alice@a.test", "x")
    return store, alice.id


async def _queue(store: Store, rcpts: list[str], data: bytes = MSG, sender: str = "alice@a.test",
                 qid: str = "Q1") -> None:
    await store.accept_message(IncomingMessage(data, qid, sender, [], rcpts, 0.0, "{}", "{}"))


def _workers(store: Store, client: Client, kinds: dict[str, str] | None = None) -> QueueWorkers:
    settings = WorkerSettings(hostname="mail.a.test", policy=RetryPolicy(schedule=(10.0,)))
    return QueueWorkers(store, Router(kinds or {}), client, None, settings,
                        clock=lambda: time.time() + 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grouping_outcomes_and_dsn(tmp_path: Path, backend: str) -> None:
    async def go() -> None:
        store, alice = await _setup(tmp_path, backend)
        try:
            client = Client({"x@b.test": Reply(250, "2.1.5", "ok"),
                             "y@b.test": Reply(550, "5.1.1", "no such user"),
                             "z@b.test": Reply(451, "4.3.0", "later"),
                             "w@c.test": Reply(250, "2.1.5", "ok")})
            await _queue(store, ["x@b.test", "y@b.test", "z@b.test", "w@c.test"])
            w = _workers(store, client)
            await w.run_due()
            # One transaction per destination domain, all its recipients together.
            assert sorted(sorted(c[1]) for c in client.calls) == [
                ["w@c.test"], ["x@b.test", "y@b.test", "z@b.test"]]
            states = {e.rcpt_to: (e.state, e.last_error) for e in await store.list_queue()}
            assert states["x@b.test"][0] == "delivered"
            assert states["y@b.test"] == ("bounced", "550 5.1.1 no such user")
            assert states["z@b.test"][0] == "deferred"
            inbox = await store.list_messages(alice, "INBOX")
            assert len(inbox) == 1  # the DSN for y, delivered locally to Alice
            dsn = await store.read_blob(inbox[0].blob)
            assert b"550 5.1.1 no such user" in dsn
            assert b"y@b.test" in dsn
            assert b"z@b.test" not in dsn.split(b"text/rfc822-headers")[0].split(
                b"delivery-status")[1]
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_loop_null_mx_and_null_sender(tmp_path: Path, backend: str) -> None:
    async def go() -> None:
        store, alice = await _setup(tmp_path, backend)
        try:
            client = Client({})
            looped = b"Received: from x by y\r\n" * 51 + MSG
            await _queue(store, ["x@b.test"], looped, qid="Q1")
            await _queue(store, ["n@nullmx.test"], sender="", qid="Q2")
            await _workers(store, client, {"nullmx.test": "null_mx"}).run_due()
            assert client.calls == []  # neither was attempted
            rows = {e.queue_id: e for e in await store.list_queue()}
            assert rows["Q1"].state == "bounced"
            assert "5.4.6" in (rows["Q1"].last_error or "")
            assert rows["Q2"].state == "bounced"
            assert "5.1.10" in (rows["Q2"].last_error or "")
            # Q1's sender is told; the null-sender Q2 gets no notice.
            assert len(await store.list_messages(alice, "INBOX")) == 1
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_domain_rows_are_delivered_locally(tmp_path: Path, backend: str) -> None:
    async def go() -> None:
        store, alice = await _setup(tmp_path, backend)
        try:
            client = Client({})
            await _queue(store, ["alice@a.test", "ghost@a.test"], sender="bob@b.test")
            await _workers(store, client).run_due()
            assert client.calls == []
            states = {e.rcpt_to: e.state for e in await store.list_queue() if e.queue_id == "Q1"}
            assert states == {"alice@a.test": "delivered", "ghost@a.test": "bounced"}
            assert len(await store.list_messages(alice, "INBOX")) == 1
            # The bounce for ghost@ goes back to bob@b.test through the queue.
            assert [e.rcpt_to for e in await store.list_queue() if e.mail_from == ""] == [
                "bob@b.test"]
        finally:
            await store.close()

    asyncio.run(go())


class ClosingClient(Client):
    def __init__(self) -> None:
        super().__init__({})
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def test_tlsrpt_counters_are_logged_each_interval_and_at_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    counters = TlsRptCounters()

    async def go() -> None:
        store, _alice = await _setup(tmp_path)
        client = ClosingClient()
        settings = WorkerSettings(hostname="mail.a.test", poll_interval=0.01,
                                  maintenance_interval=0.0, tlsrpt_interval=3600.0)
        w = QueueWorkers(store, Router({}), client, None, settings, clock=lambda: now[0],
                         tlsrpt=counters)
        try:
            await w.start()
            counters.success("b.test", "sts")
            counters.success("b.test", "sts")
            counters.failure("c.test", "sts", "certificate-host-mismatch")
            await asyncio.sleep(0.1)
            assert "tlsrpt.summary" not in caplog.text  # the hour has not passed
            now[0] += 3600.0
            await asyncio.sleep(0.1)
            summaries = [r.getMessage() for r in caplog.records
                         if r.getMessage().startswith("tlsrpt.summary")]
            assert summaries == [
                "tlsrpt.summary domain=b.test policy=sts success=2 failure=0 results=none",
                "tlsrpt.summary domain=c.test policy=sts success=0 failure=1 "
                'results="certificate-host-mismatch=1"',
            ]
            assert counters.snapshot() == {}  # counting afresh
            counters.success("d.test", "no-policy-found")
            caplog.clear()
            await w.stop(1.0)
            assert client.closed == 1  # idle outbound sessions ended
            assert [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("tlsrpt.summary")] == [
                "tlsrpt.summary domain=d.test policy=no-policy-found success=1 failure=0 "
                "results=none"]
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="mailstead"):
        asyncio.run(go())
