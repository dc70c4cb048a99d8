"""Recording attempt outcomes: the DSNs they call for first, then the queue rows, with
concurrent attempts sharing one store transaction (and its fsync).

Ordering that matters for "never lost" (DESIGN rule 6): a DSN is made durable before the rows
it reports are marked bounced; if the DSN cannot be written, the rows stay deferred and the
notice is tried again a minute later rather than dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mailstead.core.errors import StoreError
from mailstead.observability.log import log_event
from mailstead.queue.dsn import DsnRecipient, Notifier, status_of
from mailstead.queue.outcome import Outcome
from mailstead.queue.schedule import RetryPolicy
from mailstead.storage.interfaces import QueueEntry, QueueUpdate, Store

log = logging.getLogger("mailstead.queue")

# When a DSN cannot be stored, its rows are tried again this much later (not lost, not spun).
DSN_RETRY = 60.0


def _wants(entry: QueueEntry, kind: str, *, default: bool = True) -> bool:
    """Whether ``entry``'s recipient asked for a notice of ``kind`` (RFC 3461 section 4.1)."""
    if entry.dsn is None:
        return default
    return entry.dsn.wants(kind)


class Recorder:
    """Turns outcomes into DSNs and queue updates (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._policy = policy
        self._clock = clock
        self._pending: list[tuple[list[QueueUpdate], asyncio.Future[None]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None

    async def finish(self, first: QueueEntry, outcomes: list[Outcome]) -> None:
        """Sends the DSNs these outcomes call for, then records the outcomes."""
        # RFC 3461 section 4.1: each recipient's NOTIFY says which notices it wants (without
        # one: failures and delays); NEVER wants none.
        for o in outcomes:
            if o.warn and not _wants(o.entry, "DELAY"):
                o.warn = False
        bounced = [o for o in outcomes if o.state == "bounced" and _wants(o.entry, "FAILURE")]
        warned = [o for o in outcomes if o.state == "deferred" and o.warn]
        # RFC 3461 section 6.2.2: SUCCESS is reported here when delivered here ("delivered")
        # or handed to a server that does not offer DSN ("relayed"); one that does got the
        # request and reports itself.
        succeeded = [o for o in outcomes if o.state == "delivered" and not o.dsn_passed
                     and _wants(o.entry, "SUCCESS", default=False)]
        if first.mail_from and (bounced or warned or succeeded):
            now = self._clock()
            recipients = [self.dsn_recipient(o, "failed", now) for o in bounced]
            recipients += [self.dsn_recipient(o, "delayed", now) for o in warned]
            recipients += [
                self.dsn_recipient(o, "delivered" if o.local else "relayed", now)
                for o in succeeded
            ]
            try:
                await self._notifier.send(first, recipients)
            except StoreError as exc:
                # Keep the rows alive rather than lose the notice: retried in a minute.
                log_event(log, "queue.dsn_failed", queue_id=first.queue_id, error=str(exc))
                later = self._clock() + DSN_RETRY
                for o in bounced:
                    o.state, o.next_attempt = "deferred", later
                for o in warned:
                    o.warn = False
        updates = [
            QueueUpdate(o.entry.id, o.state, o.next_attempt, o.error_text, warned=o.warn)
            for o in outcomes
        ]
        await self.record(updates)

    def dsn_recipient(self, o: Outcome, action: str, now: float) -> DsnRecipient:
        """The DSN's view of one outcome (RFC 3464 section 2.3): a temporary reply that
        expired is reported with a permanent status, a delay with a temporary one."""
        reply = o.reply
        if action in ("delivered", "relayed"):
            status = "2.0.0"
        elif reply is not None:
            status = status_of(reply)
        else:
            status = "5.4.7" if action == "failed" else "4.4.7"  # RFC 3463: delivery time expired
        if action == "failed" and not status.startswith("5"):
            status = "5" + status[1:]  # a temporary failure that expired is now permanent
        if action == "delayed" and not status.startswith("4"):
            status = "4" + status[1:]
        return DsnRecipient(
            rcpt=o.entry.rcpt_to,
            action=action,
            status=status,
            diagnostic=str(reply) if reply is not None else None,
            remote_mta=o.remote_mta,
            last_attempt=now,
            retry_until=self._policy.expires_at(o.entry) if action == "delayed" else None,
            reason=o.reason,
            orcpt=o.entry.dsn.orcpt if o.entry.dsn is not None else None,
        )

    async def record(self, updates: list[QueueUpdate]) -> None:
        """Records outcomes; concurrent callers share one store transaction (and its fsync)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((updates, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                merged = [u for updates, _ in batch for u in updates]
                try:
                    await self._store.update_queue(merged)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._flushing = False
