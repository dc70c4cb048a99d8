"""Change notification inside one process: the writer thread publishes "account N changed"
after each commit; IMAP IDLE and POP3/IMAP sessions wait for it on their event loops.

Each watcher is a small slotted object holding a ``pending`` flag, so a change that happens
while its session is busy (not waiting) is remembered until the next ``wait``; a future exists
only while a ``wait`` is in progress. Watchers are grouped by account, so a publish touches
only the watchers of the accounts it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Watch:
    """One subscription (implements ``interfaces.MailboxWatch``). Use from one event loop."""

    __slots__ = ("_account_id", "_closed", "_hub", "_pending", "_waiter")

    def __init__(self, hub: WatchHub, account_id: int) -> None:
        self._hub = hub
        self._account_id = account_id
        self._pending = False
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    @property
    def account_id(self) -> int:
        return self._account_id

    async def wait(self, timeout: float | None = None) -> bool:
        """True when the account changed since the previous ``wait`` returned (or since the
        watch was created), False after ``timeout`` seconds without a change or once closed."""
        loop = asyncio.get_running_loop()
        with self._hub.lock:
            if self._pending:
                self._pending = False
                return True
            if self._closed:
                return False
            future: asyncio.Future[None] = loop.create_future()
            self._waiter = (loop, future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        except BaseException:  # cancelled: keep a pending change for the next wait
            with self._hub.lock:
                self._waiter = None
            raise
        with self._hub.lock:
            self._waiter = None
            changed = self._pending
            self._pending = False
        return changed

    def close(self) -> None:
        """Unsubscribes; a ``wait`` in progress returns False. Idempotent."""
        with self._hub.lock:
            if self._closed:
                return
            self._closed = True
            self._hub.discard(self)
            waiter = self._waiter
        if waiter is not None:
            _schedule(*waiter)

    def _notify(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None:
        """Called with the hub lock held: marks the change, returns the waiter to wake."""
        self._pending = True
        return self._waiter


def _schedule(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(_wake, future)


class WatchHub:
    """The watchers of one store, by account. ``publish`` may be called from any thread."""

    __slots__ = ("_by_account", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._by_account: dict[int, set[Watch]] = {}

    def watch(self, account_id: int) -> Watch:
        watch = Watch(self, account_id)
        with self.lock:
            self._by_account.setdefault(account_id, set()).add(watch)
        return watch

    def discard(self, watch: Watch) -> None:
        """Removes ``watch``; the caller holds ``lock``."""
        watchers = self._by_account.get(watch.account_id)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._by_account[watch.account_id]

    def publish(self, account_ids: Iterable[int]) -> None:
        """Tells every watcher of these accounts that something changed."""
        wake: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        with self.lock:
            for account_id in set(account_ids):
                for watch in self._by_account.get(account_id, ()):
                    waiter = watch._notify()
                    if waiter is not None:
                        wake.append(waiter)
        for loop, future in wake:
            _schedule(loop, future)

    def publish_all(self) -> None:
        """Tells every watcher that something may have changed (after notifications were
        lost, e.g. a reconnect to PostgreSQL)."""
        with self.lock:
            accounts = list(self._by_account)
        self.publish(accounts)

    def watchers(self, account_id: int) -> int:
        """How many watchers the account has (for metrics and tests)."""
        with self.lock:
            return len(self._by_account.get(account_id, ()))
