"""The decisions behind an SMTP transaction: who may send, who may receive, and delivery.

The SMTP server asks this service at MAIL, RCPT and end of data and sends back the reply it
gets. Delivery is two-phase (DESIGN rule 6): the checks happen first, then one atomic
``Store.accept_message`` makes every local copy and outbound queue row durable, and only then
is ``250`` returned.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from mailstead.accounts.quotawarn import QuotaWarner
from mailstead.core.address import Address
from mailstead.core.dsn import MessageDsn, RecipientDsn
from mailstead.core.errors import CorruptData, DiskFull, NotFound, StoreError
from mailstead.core.message import ParsedHeader, parse_header, summarize
from mailstead.core.reply import Reply
from mailstead.core.roles import TLSRPT
from mailstead.delivery.authorship import Authors, authors, naming
from mailstead.delivery.headers import (
    protocol_keyword,
    received_header,
    split_header,
    submission_fixups,
)
from mailstead.delivery.recipients import RecipientResolver, Verdict, account_owns
from mailstead.delivery.tlsreports import ReportError, parse_report, report_bodies
from mailstead.filters.pipeline import FilterContext, Pipeline
from mailstead.mailauth.srs import Srs, SrsError
from mailstead.sieve.delivery import SievePlan, SieveRunner
from mailstead.storage.interfaces import Account, IncomingMessage, LocalDelivery, Store, address_key

if TYPE_CHECKING:
    from mailstead.mailauth.verify import AuthResults

log = logging.getLogger("mailstead.delivery")

_QUEUE_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"


def _base30(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, len(_QUEUE_ID_ALPHABET))
        out = _QUEUE_ID_ALPHABET[r] + out
        if not n:
            return out


class QueueIds:
    """Short, unique, log-friendly transaction ids: milliseconds since the epoch, then a
    per-process sequence that starts at a random point so two processes rarely collide."""

    def __init__(self, clock: Callable[[], float], start: int) -> None:
        self._clock = clock
        self._seq = start

    def next(self) -> str:
        self._seq = (self._seq + 1) % 30**5
        return _base30(int(self._clock() * 1000)) + _base30(self._seq).rjust(5, "0")


@dataclass(slots=True)
class SessionInfo:
    """What the policy knows about the client behind a session."""

    client_ip: str
    submission: bool
    helo: str | None = None
    esmtp: bool = False
    tls: str | None = None  # TLSInfo.describe(), None for plaintext
    account: Account | None = None


@dataclass(slots=True)
class Transaction:
    """The recipients accepted so far in one MAIL transaction, already resolved."""

    sender: Address | None
    smtputf8: bool = False
    size: int | None = None  # the SIZE= the client declared (RFC 1870), None when it did not
    rcpts: list[str] = field(default_factory=list)  # as the client named them
    accounts: dict[int, str] = field(default_factory=dict)
    remote: dict[str, str] = field(default_factory=dict)  # key -> address
    # The active Sieve script (None: none) of the accounts the recipient lookup read it for,
    # so delivery neither reads it again nor runs the Sieve step when no account has one;
    # like the recipients themselves, it is resolved once per transaction.
    scripts: dict[int, str | None] = field(default_factory=dict)
    # The accounts the recipient lookup found without a quota: delivery reads no quota for them.
    unlimited: set[int] = field(default_factory=set)
    # A recipient is a local tls-reports@ address: TLS reports in the message are kept.
    tls_reports: bool = False
    dsn: MessageDsn | None = None  # RET= / ENVID= (RFC 3461 sections 4.3, 4.4)
    requiretls: bool = False  # MAIL FROM ... REQUIRETLS (RFC 8689 section 4)
    # NOTIFY/ORCPT of the RCPT each remote target came from, by ``remote`` key.
    remote_dsn: dict[str, RecipientDsn] = field(default_factory=dict)
    # Recipients that asked for NOTIFY=SUCCESS and get it from us: (recipient, request,
    # "delivered" when delivered here or "expanded" when an alias made several of it;
    # RFC 3461 sections 6.2.2.1 and 6.2.7.3).
    local_success: list[tuple[str, RecipientDsn, str]] = field(default_factory=list)

    def may_run_sieve(self) -> bool:
        """Whether some account has an active script, or one whose script is not known."""
        return any(a not in self.scripts or self.scripts[a] is not None for a in self.accounts)


class SuccessNotices(Protocol):
    """Sends "delivered" DSNs (RFC 3464 Action: delivered) for local recipients that asked
    NOTIFY=SUCCESS; the queue's notifier, wired in app.py (delivery cannot import it)."""

    async def delivered(
        self, queue_id: str, mail_from: str, arrival: float, data: bytes,
        recipients: Sequence[tuple[str, RecipientDsn, str]], envelope_dsn: MessageDsn | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    reply: Reply
    queue_id: str
    size: int
    local: int
    remote: int


R_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
R_RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
R_RELAY_DENIED = Reply(
    554, "5.7.1", "Relay access denied: this server only accepts mail for its own domains"
)
R_RELAY_TRICK = Reply(
    554, "5.7.1", "Relay access denied: routing characters in the local part are not accepted"
)
R_UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
R_LOOP = Reply(550, "5.4.6", "Alias expansion loop for this recipient")
# A role address (postmaster, abuse) with no account yet to hold its mail: temporary, so the
# sender retries once the administrator has created one (RFC 5321 section 4.5.1).
R_NO_MAILBOX = Reply(451, "4.3.0", "This address has no mailbox yet: the administrator must "
                     "create an account first; try again later")
# An SRS0 address in our domain that we did not make (its keyed hash does not match) or that
# is older than 21 days: nobody to return the bounce to.
R_SRS_FORGED = Reply(550, "5.1.1", "Not a valid SRS address of this server (forged or "
                     "expired)")
R_NOT_YOUR_SENDER = Reply(553, "5.7.1", "Sender address is not owned by the authenticated account")
R_NOT_YOUR_FROM = Reply(
    553, "5.7.1", "{name}: header address is not owned by the authenticated account"
)
# A display name (or comment) that shows another address in front of the user's: the trick
# that makes a reader see someone else as the author (RFC 7489 section 6.6.1 is why DMARC
# alone does not catch it).
R_SHOWN_NOT_YOURS = Reply(
    550, "5.7.1", "The {name}: header names an address the authenticated account does not "
    "own (in its display name or comment); write only your own address there"
)
R_MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full")
# RFC 5321 section 4.2.2 (552: exceeded storage allocation) and RFC 3463 section 3.3 (X.2.2,
# mailbox full): this message does not fit in what is left of the recipient's quota.
R_NO_ROOM = Reply(552, "5.2.2", "Mailbox full: this message would take the recipient's "
                  "mailbox over its storage quota")
# One reply answers the data for every recipient (RFC 5321 section 4.1.1.4), so when only some
# have no room the whole message is deferred rather than stored past a quota or bounced for
# all; a client that declares SIZE= gets the full ones refused at RCPT on its next try.
R_SOME_NO_ROOM = Reply(452, "4.2.2", "Mailbox full for some recipients: this message would "
                       "take their mailbox over its storage quota; try again later")
R_TEMP_FAILURE = Reply(451, "4.3.0", "Temporary storage failure, please try again later")
# RFC 3463 section 3.4, X.3.0 "other or undefined mail system status", permanent (5.x.x): the
# store is damaged and a retry cannot succeed until the administrator repairs it. The sender
# keeps the message and is told at once, instead of retrying into a 4xx for days.
R_STORE_DAMAGED = Reply(554, "5.3.0", "Mail system error: the mail store is damaged")
# RFC 5321 section 4.2.3, 452 "insufficient system storage"; RFC 3463 section 3.4, 4.3.1
# "mail system full": the store is below its free-space reserve; the sender retries later.
R_DISK_FULL = Reply(452, "4.3.1", "Insufficient system storage, please try again later")
# RFC 3463 4.7.1 (delivery not authorized, temporary): the per-sender hourly limit (issue 5).
R_RATE_LIMITED = Reply(
    451,
    "4.7.1",
    "Sending limit reached: this account may send to at most {limit} outside recipients per "
    "hour; try again later, and tell your administrator if you did not send this mail",
)
# The window of the per-sender limit, in seconds.
RATE_WINDOW = 3600.0


class DeliveryService:
    """Policy and delivery for SMTP transactions on the MX and submission ports."""

    def __init__(
        self,
        store: Store,
        hostname: str,
        *,
        clock: Callable[[], float] = time.time,
        sender_hourly_limit: int = 0,
        on_queued: Callable[[], None] | None = None,
        filters: Pipeline | None = None,
        sieve: SieveRunner | None = None,
        notices: SuccessNotices | None = None,
        srs: Srs | None = None,
        quota_warner: QuotaWarner | None = None,
    ) -> None:
        """``sender_hourly_limit``: outside recipients one account may submit per hour (0: no
        limit); ``on_queued`` is called after a message with outside recipients is stored
        (it wakes the queue workers); ``filters`` run on MX mail before it is stored;
        ``sieve`` runs each local account's script over its copy (issue 9); ``notices`` sends
        the success DSNs local recipients ask for (RFC 3461); ``srs`` rewrites the envelope
        sender of forwarded mail and resolves bounces to it; ``quota_warner`` tells users
        whose mailbox passes 80% or 95% of its quota."""
        self._notices = notices
        self._srs = srs
        self._sieve = sieve
        self._quota_warner = quota_warner
        self._filters = filters
        self._store = store
        self._hourly_limit = sender_hourly_limit
        self._on_queued = on_queued
        self._hostname = hostname
        self._resolver = RecipientResolver(store, hostname, srs)
        self._clock = clock
        self._ids = QueueIds(clock, secrets.randbelow(30**5))

    async def check_sender(self, session: SessionInfo, sender: Address | None) -> Reply:
        """MX: any sender (SPF and friends come later). Submission: only the account's own
        addresses (RFC 6409 section 6.1 lets the MSA enforce this)."""
        if not session.submission:
            return R_SENDER_OK
        if sender is None or session.account is None:
            return R_NOT_YOUR_SENDER
        if await self._owns(session.account, sender):
            return R_SENDER_OK
        return R_NOT_YOUR_SENDER

    async def check_recipient(
        self, session: SessionInfo, txn: Transaction, rcpt: Address,
        dsn: RecipientDsn | None = None,
    ) -> Reply:
        """Resolves ``rcpt`` and adds it to ``txn`` when accepted, with its DSN request
        (NOTIFY/ORCPT, RFC 3461), which its remote targets carry on."""
        res = await self._resolver.resolve(rcpt)
        if res.verdict is Verdict.RELAY_TRICK:
            return R_RELAY_TRICK
        if res.verdict is Verdict.NOT_LOCAL:
            if session.account is None:
                return R_RELAY_DENIED
        elif res.verdict is Verdict.UNKNOWN_USER:
            return R_UNKNOWN_USER
        elif res.verdict is Verdict.LOOP:
            return R_LOOP
        elif res.verdict is Verdict.NO_MAILBOX:
            return R_NO_MAILBOX
        elif res.verdict is Verdict.SRS_FORGED:
            return R_SRS_FORGED
        # Quota (issue 3): accounts over their quota get no copy; a recipient that reaches
        # only such accounts is refused for now (RFC 3463 4.2.2, mailbox full).
        if res.remote and session.account is not None:
            limited = await self._rate_limited(session.account, txn, len(res.remote))
            if limited is not None:
                return limited
        # The lookup already told the quota state of the accounts it found (one read).
        unknown = [a for a in res.accounts if a not in res.states]
        full = {a for a, state in res.states.items() if state.full}
        full |= await self._without_room(dict.fromkeys(unknown, 0))
        tight: set[int] = set()
        if txn.size:
            # RFC 1870 section 6.2 lets a server refuse a declared size it cannot take; for
            # one recipient's quota that answer belongs to its RCPT.
            tight = {a for a, state in res.states.items()
                     if a not in full and state.room is not None and state.room < txn.size}
            tight |= await self._without_room(
                dict.fromkeys((a for a in unknown if a not in full), txn.size))
            full |= tight
        if full and len(full) == len(res.accounts) and not res.remote:
            return R_NO_ROOM if tight else R_MAILBOX_FULL
        txn.unlimited.update(a for a, state in res.states.items() if state.room is None)
        txn.rcpts.append(str(rcpt))
        if res.verdict is Verdict.LOCAL and rcpt.local.partition("+")[0].lower() == TLSRPT:
            txn.tls_reports = True  # the rua= that mailstead dns publishes (RFC 8460 3)
        txn.accounts.update({a: v for a, v in res.accounts.items() if a not in full})
        txn.scripts.update((a, state.script) for a, state in res.states.items())
        onward = dsn
        reached = sum(a not in full for a in res.accounts) + len(res.remote)
        if dsn is not None and dsn.notify is not None and dsn.wants("SUCCESS"):
            if reached > 1:
                # RFC 3461 section 6.2.7.3: an address expanded to several gets one
                # "expanded" notice, and SUCCESS is not asked of the addresses it became.
                rest = tuple(k for k in dsn.notify if k != "SUCCESS")
                onward = RecipientDsn(rest or ("NEVER",), dsn.orcpt)
                txn.local_success.append((str(rcpt), dsn, "expanded"))
            elif reached == 1 and not res.remote:
                txn.local_success.append((str(rcpt), dsn, "delivered"))
        for addr in res.remote:
            key = address_key(addr)
            txn.remote.setdefault(key, addr)
            if onward is not None:
                txn.remote_dsn.setdefault(key, onward)
        return R_RCPT_OK

    async def _rate_limited(self, account: Account, txn: Transaction, adding: int) -> Reply | None:
        """The per-sender hourly limit on outside recipients (issue 5): rows the account
        queued in the last hour plus those of this transaction, before adding ``adding``."""
        if self._hourly_limit <= 0:
            return None
        since = self._clock() - RATE_WINDOW
        sent = await self._store.count_sent_since(account.id, since)
        if sent + len(txn.remote) + adding > self._hourly_limit:
            log.warning("hourly sending limit reached for account %s", account.id)
            limit = self._hourly_limit
            return Reply(R_RATE_LIMITED.code, R_RATE_LIMITED.enhanced,
                         R_RATE_LIMITED.text.format(limit=limit))
        return None

    async def _without_room(self, adding: Mapping[int, int]) -> set[int]:
        """The accounts whose quota cannot take ``adding[account]`` more octets, or (for 0)
        whose stored mail has reached it (RFC 9208 section 5.1, as APPEND checks); none when
        the backend keeps no quotas."""
        get_quota = getattr(self._store, "get_quota", None) if adding else None
        if get_quota is None:
            return set()
        full: set[int] = set()
        for account_id, size in adding.items():
            quota = await get_quota(account_id)
            if quota.limit is None:
                continue
            if (quota.used + size > quota.limit) if size else (quota.used >= quota.limit):
                full.add(account_id)
        return full

    async def deliver(self, session: SessionInfo, txn: Transaction, data: bytes) -> DeliveryOutcome:
        """Checks the content, adds our headers, and makes the message durable."""
        queue_id = self._ids.next()
        now = self._clock()
        header, _rest = split_header(data)
        mail_from = str(txn.sender) if txn.sender is not None else ""  # "" for <>
        extra = b""
        mailbox = "INBOX"
        fields: Sequence[tuple[bytes, bytes]] | None = None  # data's header, when parsed
        auth: AuthResults | None = None
        if not session.submission and self._filters is not None:
            # Issue 9: sender authentication and filters on MX mail only, before storing
            # (DESIGN rule 6), so a refusal is an SMTP reply rather than a bounce.
            ctx = FilterContext(
                session=session,
                mail_from=mail_from,
                recipients=tuple(txn.rcpts),
                accounts=tuple(txn.accounts),
                data=data,
                header=header,
            )
            filtered = await self._filters.run(ctx)
            auth = ctx.auth
            if filtered.reply is not None:
                log.info("message %s refused by filter %s: %s", queue_id, filtered.stage,
                         filtered.reply)
                return DeliveryOutcome(filtered.reply, queue_id, len(data), 0, 0)
            data = filtered.data
            fields = filtered.fields
            mailbox = filtered.mailbox or mailbox
        if session.submission:
            parsed = parse_header(data)  # the one parse the checks and the fix-ups read
            reply = await self._check_from(session, parsed)
            if reply is not None:
                return DeliveryOutcome(reply, queue_id, len(data), 0, 0)
            extra = submission_fixups({f.name for f in parsed.fields}, hostname=self._hostname,
                                      queue_id=queue_id, now=now)
        trace = received_header(
            helo=session.helo,
            client_ip=session.client_ip,
            hostname=self._hostname,
            protocol=protocol_keyword(
                esmtp=session.esmtp,
                tls=session.tls is not None,
                auth=session.account is not None,
                utf8=txn.smtputf8,
            ),
            queue_id=queue_id,
            tls=session.tls,
            auth_user=session.account.address if session.account else None,
            recipients=txn.rcpts,
            now=now,
        )
        stored = trace + header + extra + data[len(header):] if extra else trace + data
        local = [LocalDelivery(account_id=a, mailbox=mailbox) for a in txn.accounts]
        remote = list(txn.remote.values())
        plan: SievePlan | None = None
        if self._sieve is not None and txn.may_run_sieve():
            plan, refusal = await self._sieve_step(txn, mail_from, data, mailbox, fields, auth)
            if refusal is not None:
                return DeliveryOutcome(refusal, queue_id, len(data), 0, 0)
            local = plan.local
            remote += [r for r in plan.remote if r not in remote]
            if not local and not remote:
                # Every copy was discarded (or rejected with a notice): nothing to store.
                await self._followups(plan)
                return DeliveryOutcome(Reply(250, "2.0.0", f"Ok: queued as {queue_id}"),
                                       queue_id, len(stored), 0, 0)
        per_account = Counter(d.account_id for d in local)
        no_room = await self._without_room({a: n * len(stored) for a, n in per_account.items()
                                            if a not in txn.unlimited})
        if no_room:
            # Checked with the final size, as APPEND does: the quota is never overshot.
            log.info("message %s refused: no room in the quota of accounts %s", queue_id,
                     sorted(no_room))
            everyone = len(no_room) == len(per_account) and not remote
            return DeliveryOutcome(R_NO_ROOM if everyone else R_SOME_NO_ROOM, queue_id,
                                   len(stored), 0, 0)
        summary = summarize(stored)
        queued_from = await self._forward_sender(session, txn, mail_from) if remote else mail_from
        message = IncomingMessage(
            data=stored,
            queue_id=queue_id,
            mail_from=queued_from,
            local=local,
            remote=remote,
            internal_date=now,
            envelope=summary.envelope,
            bodystructure=summary.bodystructure,
            thread_keys=summary.thread_keys,
            auth_account_id=session.account.id if session.account else None,
            dsn={addr: txn.remote_dsn[k] for k, addr in txn.remote.items()
                 if k in txn.remote_dsn and addr in remote},
            envelope_dsn=txn.dsn,
            requiretls=txn.requiretls,
        )
        try:
            try:
                await self._store.accept_message(message)
            except NotFound:
                if all(d.mailbox == "INBOX" for d in local):
                    raise
                if plan is not None and self._sieve is not None:
                    # A target removed since Sieve remembered it, or the filter's Junk.
                    retry = await self._sieve.settle_missing(plan)
                else:
                    # The user removed the filter's target mailbox (Junk): INBOX, not 451.
                    log.warning("mailbox %s missing for message %s, delivering to INBOX",
                                mailbox, queue_id)
                    retry = list({(d.account_id, d.flags): LocalDelivery(d.account_id,
                                                                           flags=d.flags)
                                  for d in local}.values())
                message = replace(message, local=retry)
                await self._store.accept_message(message)
        except DiskFull as exc:  # logged by the store, rate-limited
            log.debug("message %s refused: %s", queue_id, exc)
            return DeliveryOutcome(R_DISK_FULL, queue_id, len(stored), 0, 0)
        except CorruptData as exc:  # counted and logged by the store with the advice
            log.error("could not store message %s: %s", queue_id, exc)
            return DeliveryOutcome(R_STORE_DAMAGED, queue_id, len(stored), 0, 0)
        except StoreError:
            log.exception("could not store message %s", queue_id)
            return DeliveryOutcome(R_TEMP_FAILURE, queue_id, len(stored), 0, 0)
        if remote and self._on_queued is not None:
            self._on_queued()
        if self._quota_warner is not None:
            # Only accounts with a quota (the lookup told which have none).
            limited = {a: n * len(stored) for a, n in per_account.items()
                       if a not in txn.unlimited}
            if limited:
                await self._quota_warner.added(limited)
        if plan is not None:
            await self._followups(plan)
        if txn.tls_reports:
            await self._keep_tls_reports(stored, summary.bodystructure, queue_id, now)
        if txn.local_success and mail_from and self._notices is not None:
            try:
                await self._notices.delivered(queue_id, mail_from, now, stored,
                                              txn.local_success, txn.dsn)
            except StoreError as exc:  # the message is stored; only the notice is lost
                log.warning("success notice for message %s failed: %s", queue_id, exc)
        reply = Reply(250, "2.0.0", f"Ok: queued as {queue_id}")
        copies = len({d.account_id for d in local})
        return DeliveryOutcome(reply, queue_id, len(stored), copies, len(remote))

    async def _keep_tls_reports(self, data: bytes, bodystructure: str, queue_id: str,
                                now: float) -> None:
        """Stores the TLS reports (RFC 8460 section 5.3) of a message to tls-reports@, once
        it is delivered; a broken report is logged and skipped, never refused (the message
        is in the mailbox for a person to read)."""
        try:
            for raw in report_bodies(data, bodystructure):
                report = parse_report(raw, now)
                kept = await self._store.add_received_tls_report(report)
                log.info("tls report %s from %s about %s: %d ok, %d failed%s", report.report_id,
                         report.organization, report.policy_domain, report.successes,
                         report.failures, "" if kept else " (had it already)")
        except ReportError as exc:
            log.warning("message %s to tls-reports: not a usable TLS report: %s", queue_id, exc)
        except StoreError as exc:
            log.warning("message %s: could not keep its TLS report: %s", queue_id, exc)
    async def _forward_sender(self, session: SessionInfo, txn: Transaction, mail_from: str
                              ) -> str:
        """The envelope sender of the queue rows: on port 25 every remote recipient is a
        forward (an alias or a Sieve redirect), so an outside sender is rewritten with SRS
        under the forwarding recipient's domain, which SPF at the next hop then checks (RFC
        7208 section 1.2); the null sender and our own senders stay as they are."""
        if self._srs is None or session.submission or not mail_from or not txn.rcpts:
            return mail_from
        if await self._store.is_local_domain(mail_from.rpartition("@")[2]):
            return mail_from
        try:
            return self._srs.forward(mail_from, txn.rcpts[0].rpartition("@")[2].lower())
        except SrsError as exc:  # too long to rewrite: sent as it is, SPF may fail
            log.info("envelope sender not rewritten with SRS: %s", exc)
            return mail_from

    # Sieve (issue 9): the per-account step, after the recipients are known -------------

    async def _sieve_step(
        self, txn: Transaction, mail_from: str, data: bytes, mailbox: str,
        fields: Sequence[tuple[bytes, bytes]] | None, auth: AuthResults | None,
    ) -> tuple[SievePlan, Reply | None]:
        """Each account's script over its copy. When every recipient of the transaction
        rejects, the refusal is the SMTP reply (RFC 5429 section 2.1: reject at SMTP time
        is preferred); otherwise rejecting accounts send a notice after delivery."""
        assert self._sieve is not None
        plan = await self._sieve.plan(txn.accounts, mail_from, data, mailbox, fields=fields,
                                      scripts=txn.scripts, auth=auth)
        if (plan.rejected and len(plan.rejected) == len(txn.accounts) and not txn.remote
                and not plan.local and not plan.remote):
            reason = " ".join(next(iter(plan.rejected.values())).split())[:400]
            plan.followups.clear()  # the SMTP client reports the refusal itself
            # RFC 5429 section 2.1.1: 550 5.7.1 with the script's reason.
            return plan, Reply(550, "5.7.1", reason or "Message rejected by the recipient")
        return plan, None

    async def _followups(self, plan: SievePlan) -> None:
        assert self._sieve is not None
        if await self._sieve.send_followups(plan, self._ids.next) and self._on_queued:
            self._on_queued()

    async def _check_from(self, session: SessionInfo, header: ParsedHeader) -> Reply | None:
        """RFC 6409 section 6.1: the MSA may refuse an author the user does not own; every
        address a reader may take for the author is checked (see ``delivery.authorship``)."""
        assert session.account is not None
        found = authors(header)
        if not isinstance(found, Authors):
            return found
        for name, addr, shown in found.named:
            if not await self._owns(session.account, addr):
                return naming(R_SHOWN_NOT_YOURS if shown else R_NOT_YOUR_FROM, name)
        return None

    async def _owns(self, account: Account, address: Address) -> bool:
        """The account's own address (with or without a +tag), or an alias that reaches it."""
        return await account_owns(self._store, account.address, address)
