"""The outbound queue manager: claims due recipients, delivers them, records every outcome.

DESIGN rule 7 (Postfix ``qmgr``, mox ``queue``): the queue is explicit per-recipient states in
the store. A loop claims due rows in batches with a lease (``OutboundStore.claim_due``), groups
the rows of one message by destination domain into one SMTP transaction, and runs the
transactions under two bounds: connections in total and per destination domain. Each attempt
ends in one outcome per recipient: delivered, deferred on the retry schedule (4xx, no
connection), or bounced (5xx, expiry, loop, null MX) with a DSN to the sender. Recipients in a
local domain never leave the process: they are delivered locally by the same two-phase store
path as inbound mail (``local.py``). A row left "active" by a process that died is retried
after restart (embedded store) or, when several nodes share the store, by any node once its
lease has run out. The TLS-RPT counters are logged from the maintenance pass every hour.

Ordering that matters for "never lost": a DSN is made durable before the rows it reports are
marked bounced (``recorder.py``), and a message is marked delivered only after the remote
server's 250 (a crash between the two repeats the delivery; only rows in flight at a crash can
be delivered twice). The shapes of what the loop drives live in ``outcome.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailstead.core.errors import StoreError
from mailstead.core.message import parse_header
from mailstead.core.reply import Reply
from mailstead.delivery.headers import from_addresses, header_values, split_header
from mailstead.delivery.recipients import RecipientResolver
from mailstead.mailauth.srs import Srs
from mailstead.observability.log import log_event
from mailstead.queue.client import Requests
from mailstead.queue.dsn import Notifier
from mailstead.queue.local import deliver_local
from mailstead.queue.mtasts import TlsRptCounters
from mailstead.queue.outcome import (
    MAX_HOPS,
    R_LOOP,
    R_NO_DOMAIN,
    R_NULL_MX,
    Client,
    Outcome,
    RcptResult,
    Router,
    Sealer,
    Signer,
    domain_of,
    needs_smtputf8,
    rcpt_results,
    received_count,
)
from mailstead.queue.recorder import Recorder
from mailstead.queue.schedule import RetryPolicy
from mailstead.storage.interfaces import QueueEntry, QueueUpdate, Store

log = logging.getLogger("mailstead.queue")

# RFC 8460 section 4 reports cover whole days; the counters are logged (and restarted) at
# this interval so the log holds the raw numbers of each day's report in hourly slices.
TLSRPT_INTERVAL = 3600.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How the workers run; built from ``[queue]`` in app.py."""

    hostname: str
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_connections: int = 100
    max_per_domain: int = 20
    # A claimed row is "active" this long; it must outlast the longest attempt (connection
    # attempts to every MX address plus every command timeout), or a slow attempt could be
    # claimed twice. ``app.py`` derives it from the timeouts.
    lease: float = 3600.0
    # This node's name (core/nodeid.py), recorded on the rows it claims: at start-up a node
    # takes its own in-flight rows back at once, other nodes' only when their lease ends.
    node: str = ""
    batch: int = 500
    poll_interval: float = 1.0
    # Expired leases are looked for at every maintenance pass and at least 4 times per lease,
    # so the rows of a node that died are retried soon after their lease ends.
    maintenance_interval: float = 60.0
    keep_finished: float = 7 * 86400.0  # delivered/bounced rows kept for `queue show`
    tlsrpt_interval: float = TLSRPT_INTERVAL


class QueueWorkers:
    """Runs the outbound queue of one process; ``start`` after the listeners, ``stop`` before
    the store closes."""

    def __init__(
        self,
        store: Store,
        router: Router,
        client: Client,
        signer: Signer | None,
        settings: WorkerSettings,
        *,
        clock: Callable[[], float] = time.time,
        tlsrpt: TlsRptCounters | None = None,
        sealer: Sealer | None = None,
        srs: Srs | None = None,
    ) -> None:
        """``tlsrpt``: the counters the client and MTA-STS cache fill; logged and restarted
        every ``settings.tlsrpt_interval`` seconds and at ``stop``. ``sealer``: ARC-seals
        mail an alias forwards (issue 9) before it is DKIM-signed. ``srs``: SRS0 recipients
        and DSN senders of ours are resolved to the sender they stand for."""
        self._store = store
        self._router = router
        self._client = client
        self._signer = signer
        self._sealer = sealer
        self._settings = settings
        self._policy = settings.policy
        self._clock = clock
        self._resolver = RecipientResolver(store, settings.hostname, srs)
        self._notifier = Notifier(store, settings.hostname, clock=clock, on_queued=self.wake,
                                  srs=srs)
        self._total = asyncio.Semaphore(settings.max_connections)
        self._domains: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._wake = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._job_rows: dict[asyncio.Task[None], list[QueueEntry]] = {}
        self._active_rows = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_maintenance = -math.inf
        self._last_recover = -math.inf
        self._recorder = Recorder(store, self._notifier, self._policy, clock=clock)
        self._tlsrpt = tlsrpt
        self._last_tlsrpt = clock()

    @property
    def notifier(self) -> Notifier:
        """Sends DSNs through this queue: delivery's success notices for local recipients."""
        return self._notifier

    # Life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recovers rows a previous process left in flight, then starts the loop."""
        # With the embedded store no other process serves this queue at start-up, so every
        # lease is stale. A shared store's "active" rows may belong to a live node: only
        # expired leases and this node's own rows (claimed before it went down) come back.
        shared = bool(getattr(self._store, "networked", False))
        recovered = await self._store.recover_active(
            self._clock() if shared else math.inf, self._settings.node or None
        )
        if recovered:
            log_event(
                log,
                "queue.recovered",
                rows=recovered,
                note="attempts interrupted by the last shutdown are retried",
            )
        self._loop_task = asyncio.create_task(self._loop(), name="queue-loop")

    def wake(self) -> None:
        """New mail was queued: look for due rows now rather than at the next poll."""
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stops claiming; in-flight attempts get ``grace`` seconds to finish, the rest are
        cancelled: their rows stay "active" until the next start recovers them (embedded
        store) or are made due at once for every node (shared store)."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._jobs:
            _done, pending = await asyncio.wait(set(self._jobs), timeout=grace)
            rows = [e for task in pending for e in self._job_rows.get(task, [])]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                shared = bool(getattr(self._store, "networked", False))
                if shared:
                    await self._release(rows)
                log_event(
                    log,
                    "queue.stopped_in_flight",
                    jobs=len(pending),
                    note="due again now" if shared else "retried at the next start",
                )
        close = getattr(self._client, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        await self.flush_tls()
        self.report_tls()

    async def _release(self, rows: Sequence[QueueEntry]) -> None:
        """Gives the leases of interrupted attempts back (due now, as deferred), so that with
        a shared store the other nodes, or this one once restarted, retry them at once rather
        than after the lease: a node that starts takes back only expired leases."""
        now = self._clock()
        updates = [QueueUpdate(e.id, "deferred", now, "interrupted by a shutdown") for e in rows]
        try:
            await self._store.update_queue(updates)
        except StoreError as exc:  # the leases run out instead
            log_event(log, "queue.release_failed", rows=len(updates), error=str(exc))

    async def flush_tls(self) -> None:
        """Adds the TLS sessions counted since the last flush to the store's daily counts
        (RFC 8460 reports are built from them); on a store error they wait for the next."""
        if self._tlsrpt is None:
            return
        rows = self._tlsrpt.drain_results()
        if not rows:
            return
        try:
            await self._store.add_tls_results(rows)
        except StoreError as exc:
            self._tlsrpt.restore_results(rows)
            log_event(log, "tlsrpt.store_failed", rows=len(rows), error=str(exc))

    def report_tls(self) -> None:
        """Logs the TLS-RPT counters gathered since the last report (one structured line per
        policy domain, RFC 8460 section 4.4's summary numbers) and restarts them."""
        self._last_tlsrpt = self._clock()
        if self._tlsrpt is not None:
            self._tlsrpt.log_and_reset()

    async def run_due(self) -> int:
        """Claims and processes every due row once, waiting for the attempts (tests, CLI)."""
        claimed = await self._claim()
        while self._jobs:
            await asyncio.wait(set(self._jobs))
        return claimed

    # The loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        s = self._settings
        while not self._stopping:
            try:
                await self._maintenance()
                window = s.max_connections * 4 - self._active_rows
                claimed = await self._claim(min(s.batch, window)) if window > 0 else 0
            except StoreError as exc:
                log_event(log, "queue.store_error", error=str(exc))
                claimed = 0
            except Exception:
                log.exception("queue loop failed; continuing")
                claimed = 0
            if claimed and self._active_rows < s.max_connections * 4:
                continue  # more may be due right now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), s.poll_interval)

    async def _maintenance(self) -> None:
        now = self._clock()
        s = self._settings
        if now - self._last_recover >= min(s.maintenance_interval, s.lease / 4):
            self._last_recover = now
            recovered = await self._store.recover_active(now)
            if recovered:
                log_event(log, "queue.lease_expired", rows=recovered)
        if now - self._last_maintenance < s.maintenance_interval:
            return
        self._last_maintenance = now
        purged = await self._store.purge_finished(now - self._settings.keep_finished)
        if purged:
            log_event(log, "queue.purged", rows=purged)
        if now - self._last_tlsrpt >= self._settings.tlsrpt_interval:
            self.report_tls()

    async def _claim(self, limit: int | None = None) -> int:
        s = self._settings
        rows = await self._store.claim_due(self._clock(), limit or s.batch, s.lease, s.node)
        groups: dict[tuple[str, str], list[QueueEntry]] = {}
        for row in rows:
            groups.setdefault((row.queue_id, domain_of(row.rcpt_to)), []).append(row)
        for (_qid, domain), entries in groups.items():
            self._active_rows += len(entries)
            task = asyncio.create_task(self._job(domain, entries))
            self._jobs.add(task)
            self._job_rows[task] = entries
            task.add_done_callback(self._job_done)
        return len(rows)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._job_rows.pop(task, None)
        self._wake.set()  # a slot is free

    @contextlib.asynccontextmanager
    async def _slot(self, domain: str) -> Any:
        sem, users = self._domains.get(domain, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self._settings.max_per_domain)
        self._domains[domain] = (sem, users + 1)
        try:
            async with self._total, sem:
                yield
        finally:
            sem, users = self._domains[domain]
            if users <= 1:
                del self._domains[domain]
            else:
                self._domains[domain] = (sem, users - 1)

    async def _job(self, domain: str, entries: list[QueueEntry]) -> None:
        try:
            async with self._slot(domain):
                started = time.monotonic()
                outcomes, peer, tls = await self._attempt(domain, entries)
            self._log_attempt(domain, entries, outcomes, peer, tls, time.monotonic() - started)
            # Stored before the outcome, so a finished row means its sessions are counted.
            await self.flush_tls()
            await self._recorder.finish(entries[0], outcomes)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill the loop; the lease brings the rows back
            log.exception("queue job for %s failed", domain)
        finally:
            self._active_rows -= len(entries)

    # One attempt -------------------------------------------------------------------------------

    async def _attempt(
        self, domain: str, entries: list[QueueEntry]
    ) -> tuple[list[Outcome], str | None, str | None]:
        first = entries[0]
        try:
            data = await self._store.read_blob(first.blob)
        except StoreError as exc:
            log_event(log, "queue.blob_unreadable", queue_id=first.queue_id, error=str(exc))
            return self._all(entries, None, f"message body unreadable: {exc}"), None, None
        if received_count(data) > MAX_HOPS:
            return [Outcome(e, "bounced", R_LOOP) for e in entries], None, None
        try:
            if await self._store.is_local_domain(domain):
                outcomes = await deliver_local(self._resolver, self._notifier, entries, data,
                                               lambda rows, why: self._all(rows, None, why))
                return outcomes, None, None
        except StoreError as exc:
            return self._all(entries, None, f"local delivery failed: {exc}"), None, None
        try:
            route = await self._router.route(domain)
        except Exception as exc:  # RouteTemporary and any DNS trouble: try again later
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            return self._all(entries, None, f"routing {domain}: {reason}"), None, None
        if route.kind == "null_mx":
            return [Outcome(e, "bounced", R_NULL_MX) for e in entries], None, None
        if route.kind == "no_domain":
            return [Outcome(e, "bounced", R_NO_DOMAIN) for e in entries], None, None
        policy_tls = bool(getattr(route, "tls_required", False))
        if policy_tls and not first.requiretls and _tls_not_required(data):
            # RFC 8689 sections 3 and 4.2.2: "TLS-Required: No" asks that TLS policies
            # (MTA-STS) be set aside for this message, delivery mattering more than
            # confidentiality; TLS is still used when offered. With REQUIRETLS the header
            # field is ignored (section 3).
            route = dataclasses.replace(route, tls_required=False)
        try:
            # RFC 8617 section 5.1: the forwarder's ARC set, then its DKIM signature.
            sealed = await self._seal(data) + data
            signed = await self._sign(first, sealed)
        except Exception as exc:  # never send unsigned because of a store hiccup
            return self._all(entries, None, f"DKIM/ARC signing failed: {exc}"), None, None
        rcpts = [e.rcpt_to for e in entries]
        try:
            result = await self._client.deliver(
                route,
                first.mail_from,
                rcpts,
                signed + sealed,
                smtputf8=needs_smtputf8(first.mail_from, rcpts, data),
                eight_bit=not data.isascii(),
                dsn=Requests({e.rcpt_to: e.dsn for e in entries if e.dsn is not None},
                             first.envelope_dsn, first.requiretls),
            )
        except Exception as exc:
            log.debug("delivery to %s raised", domain, exc_info=True)
            return self._all(entries, None, f"delivery to {domain} failed: {exc}"), None, None
        peer: str | None = getattr(result, "peer", None) or None
        tls: str | None = getattr(result, "tls", None)
        passed = bool(getattr(result, "dsn", False))
        by_rcpt: dict[str, RcptResult] = {r.rcpt: r for r in rcpt_results(result)}
        outcomes = []
        for e in entries:
            r = by_rcpt.get(e.rcpt_to)
            if r is None:
                outcomes.append(self._defer(e, None, "no reply for this recipient", peer))
            elif r.reply.is_positive:
                outcomes.append(Outcome(e, "delivered", r.reply, remote_mta=peer,
                                        dsn_passed=passed))
            elif r.permanent:
                outcomes.append(Outcome(e, "bounced", r.reply, remote_mta=peer))
            else:
                outcomes.append(self._defer(e, r.reply, None, peer))
        return outcomes, peer, tls

    def _all(
        self, entries: Iterable[QueueEntry], reply: Reply | None, reason: str
    ) -> list[Outcome]:
        return [self._defer(e, reply, reason, None) for e in entries]

    def _defer(
        self, entry: QueueEntry, reply: Reply | None, reason: str | None, peer: str | None
    ) -> Outcome:
        """A temporary failure: deferred on the schedule, or bounced once expired."""
        now = self._clock()
        when = self._policy.next_attempt(entry, now)
        if when is None:
            return Outcome(entry, "bounced", reply, reason or "", remote_mta=peer)
        warn = self._policy.should_warn(entry, now)
        return Outcome(entry, "deferred", reply, reason, peer, next_attempt=when, warn=warn)

    async def _sign(self, entry: QueueEntry, data: bytes) -> bytes:
        """DKIM by the author's domain when it is ours, else by the envelope sender's; none
        for mail relayed from outside (an alias or a Sieve redirect forwarding it)."""
        if self._signer is None:
            return b""
        if _relayed(data, self._settings.hostname):
            # Our signature would vouch for a From: field that no user of ours wrote: an
            # outsider's "From: ceo@our.domain" forwarded by an alias would pass DMARC
            # (RFC 7489 section 3.1) under our key. As OpenDKIM signs only mail of internal
            # or authenticated senders, forwarded mail keeps its own signatures and gets
            # our ARC set instead (RFC 8617 section 5.1).
            return b""
        header, _ = split_header(data)
        domain = ""
        authors = from_addresses(header) or []
        if authors and await self._store.is_local_domain(authors[0].domain):
            domain = authors[0].domain
        elif entry.mail_from:
            domain = domain_of(entry.mail_from)
        if not domain or not await self._store.is_local_domain(domain):
            return b""
        return await self._signer.sign(data, domain)

    async def _seal(self, data: bytes) -> bytes:
        """The ARC set of a forwarded message (an alias or a Sieve redirect), as the domain
        of the recipient that forwarded it (named by the ``for`` clause of our Received
        field, else the first local To/Cc address, else the local domain our hostname is in:
        a redirect of list mail sent to several of our users names none of them); b"" for
        other mail (the sealer wants our Authentication-Results)."""
        if self._sealer is None:
            return b""
        header, _ = split_header(data)
        if b"authentication-results" not in header.lower():
            return b""
        labels = self._settings.hostname.lower().rstrip(".").split(".")
        own = [".".join(labels[i:]) for i in range(len(labels) - 1)]
        tried: set[str] = set()
        for domain in [*_alias_domains(header), *own]:
            if domain in tried:
                continue
            tried.add(domain)
            if await self._store.is_local_domain(domain):
                sealed = await self._sealer.seal(data, domain)
                if sealed:  # b"": no key for this domain, try the next candidate
                    return sealed
        return b""

    def _log_attempt(
        self,
        domain: str,
        entries: Sequence[QueueEntry],
        outcomes: Sequence[Outcome],
        peer: str | None,
        tls: str | None,
        seconds: float,
    ) -> None:
        counts = {"delivered": 0, "deferred": 0, "bounced": 0}
        for o in outcomes:
            counts[o.state] = counts.get(o.state, 0) + 1
        worst = next((o for o in outcomes if o.state != "delivered"), None)
        log_event(
            log,
            "queue.attempt",
            queue_id=entries[0].queue_id,
            domain=domain,
            rcpts=len(entries),
            attempt=entries[0].attempts + 1,
            peer=peer,
            tls=tls,
            ms=round(seconds * 1000),
            **counts,
            reply=worst.error_text if worst else None,
        )


_RECEIVED_FOR = re.compile(rb"^Received:(?:[^\r\n]|\r\n[ \t])*?\bfor\s+<([^<>\s]+)>",
                           re.IGNORECASE)


def _tls_not_required(data: bytes) -> bool:
    """Whether the header section has ``TLS-Required: No`` (RFC 8689 section 3)."""
    return any(v.strip().lower() == "no" for v in parse_header(data).values("tls-required"))


def _relayed(data: bytes, hostname: str) -> bool:
    """Whether ``data`` came in from outside: our inbound checks left their
    Authentication-Results field (RFC 8601 section 2.2: it starts with our authserv-id, and
    inbound delivery removes any such field the sender wrote, section 5)."""
    ours = hostname.lower().rstrip(".")
    for value in parse_header(data).values("authentication-results"):
        authserv = value.split(";", 1)[0].split(None, 1)
        if authserv and authserv[0].lower().rstrip(".") == ours:
            return True
    return False


def _alias_domains(header: bytes) -> list[str]:
    """Candidate alias domains of a forwarded message: the recipient our own (topmost)
    Received field names (RFC 5321 section 4.4 "for"), then the To and Cc addresses."""
    out: list[str] = []
    m = _RECEIVED_FOR.match(header)
    if m is not None:
        out.append(domain_of(m.group(1).decode("utf-8", "replace")))
    listed = header_values(header, "To") + header_values(header, "Cc")
    out += [domain_of(addr) for _, addr in email.utils.getaddresses(listed) if "@" in addr]
    return list(dict.fromkeys(d for d in out if d))
