"""Periodic housekeeping of the running server: stored state that only grows unless somebody
removes the old rows (Sieve's vacation and redirect log, greylisting triplets, failed logins
counted in a shared store, expired web sessions).

``app.py`` starts one ``Maintenance`` next to the queue workers and stops it before the store
closes. Each job runs soon after start and then every ``interval`` seconds (hourly); a failing
job is logged and retried at the next round, and never stops the others or the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mailstead.filters.greylist import Greylist
from mailstead.observability.log import log_event
from mailstead.queue.tlsreport import TlsReporter, utc_day
from mailstead.sieve.interpreter import VACATION_DAYS_MAX
from mailstead.storage.interfaces import (
    SharedStateStore,
    SieveStore,
    TlsReportStore,
    WebSessionStore,
)
from mailstead.web.sessions import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, MAX_ANONYMOUS, MAX_SIGNED_IN

log = logging.getLogger("mailstead.maintenance")

HOURLY = 3600.0
# The first round waits a little so start-up (recovery, listeners) is not slowed by deletes.
FIRST_DELAY = 60.0
DAY = 86400.0
# RFC 5230 section 4.1: a vacation reply is remembered for :days (at most VACATION_DAYS_MAX
# here) and a redirect counts for a day's limit; a day more is kept for clock skew.
SIEVE_EVENT_RETENTION = (VACATION_DAYS_MAX + 1) * DAY
# TLS session counts outlive their day's report (RFC 8460 section 4.1: one report per UTC day)
# long enough to look into a complaint about one.
TLS_RESULTS_RETENTION = 30 * DAY


@dataclass(frozen=True, slots=True)
class Job:
    """One housekeeping step: ``run`` removes what is stale and returns how many rows."""

    name: str
    run: Callable[[], Awaitable[int]]


def sieve_events_job(
    store: SieveStore, clock: Callable[[], float] = time.time,
    retention: float = SIEVE_EVENT_RETENTION,
) -> Job:
    """Forgets Sieve vacation/redirect log rows older than any rule still reads them."""

    async def run() -> int:
        return await store.prune_sieve_events(clock() - retention)

    return Job("sieve_events", run)


def auth_failures_job(
    store: SharedStateStore, window: float, clock: Callable[[], float] = time.time
) -> Job:
    """Forgets failed logins older than the failure window (``[security] failure_window``),
    which no delay or block decision reads any more (accounts/throttle.py StoreCounter)."""

    async def run() -> int:
        return await store.prune_auth_failures(clock() - window)

    return Job("auth_failures", run)


def web_sessions_job(
    store: WebSessionStore, clock: Callable[[], float] = time.time, *,
    idle: float = IDLE_TIMEOUT, absolute: float = ABSOLUTE_TIMEOUT,
    max_anonymous: int = MAX_ANONYMOUS, max_signed_in: int = MAX_SIGNED_IN,
) -> Job:
    """Removes the web sessions past their idle or absolute timeout (and any beyond the caps),
    which would otherwise stay until their browser came back: most never do."""

    async def run() -> int:
        now = clock()
        return await store.prune_web_sessions(now - idle, now - absolute, max_anonymous,
                                              max_signed_in)

    return Job("web_sessions", run)


def tls_reports_job(
    reporter: TlsReporter | None, store: TlsReportStore, clock: Callable[[], float] = time.time,
    retention: float = TLS_RESULTS_RETENTION,
) -> Job:
    """Sends yesterday's (UTC) TLS reports (RFC 8460 section 4.1: daily), once per domain
    whichever node runs it first (the store marks what went out), then forgets old counts;
    ``reporter`` None (``[tls_reports] send = false``) only forgets."""

    async def run() -> int:
        now = clock()
        if reporter is not None:
            await reporter.send_day(utc_day(now - DAY))
        return await store.prune_tls_results(utc_day(now - retention))

    return Job("tls_reports", run)


def greylist_job(greylist: Greylist) -> Job:
    """Forgets greylisting triplets and networks unused for their lifetime (RFC 6647 section
    4.5), also on a quiet server where no message triggers the greylist's own pruning."""
    return Job("greylist", greylist.prune)


class Maintenance:
    """Runs ``jobs`` one after another every ``interval`` seconds until ``stop``."""

    def __init__(
        self, jobs: Sequence[Job], *, interval: float = HOURLY, first_delay: float = FIRST_DELAY
    ) -> None:
        if interval <= 0 or first_delay < 0:
            raise ValueError("interval must be positive and first_delay not negative")
        self.jobs = tuple(jobs)
        self._interval = interval
        self._first_delay = first_delay
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # completed rounds (tests, diagnostics)

    async def run_once(self) -> dict[str, int | None]:
        """One round: rows removed per job, None for a job that failed (logged)."""
        done: dict[str, int | None] = {}
        for job in self.jobs:
            try:
                done[job.name] = await job.run()
            except Exception:
                log.exception("maintenance job %s failed; retrying next round", job.name)
                done[job.name] = None
        self.rounds += 1
        removed = {name: n for name, n in done.items() if n}
        if removed:
            log_event(log, "maintenance.pruned", **removed)
        return done

    async def _loop(self) -> None:
        delay = self._first_delay
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            await self.run_once()
            delay = self._interval

    async def start(self) -> None:
        """Starts the background loop (idempotent); nothing happens without jobs."""
        if self._task is None and self.jobs:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name="maintenance")

    async def stop(self, grace: float = 5.0) -> None:
        """Stops the loop, letting a running round finish for up to ``grace`` seconds."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
