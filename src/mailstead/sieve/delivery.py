"""The per-account Sieve step of delivery: each local account's active script decides what
happens to its copy, and the follow-up mail (vacation replies, reject notices) goes out.

``DeliveryService`` calls ``plan`` once the recipients are known and the filters have run.
The plan's local copies and redirect targets join the message's one atomic
``accept_message`` (DESIGN rule 6); ``send_followups`` runs after the message is durable.
A broken script, a store hiccup or a limit never loses mail: that account keeps its copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailstead.core.address import AddressError, parse_address
from mailstead.core.errors import AlreadyExists, LimitExceeded, StoreError
from mailstead.core.message import summarize
from mailstead.delivery.recipients import RecipientResolver, Verdict
from mailstead.sieve.actions import FileInto, Keep, Redirect, Reject, Vacation
from mailstead.sieve.compile import Script, compile_script
from mailstead.sieve.interpreter import Envelope, Interpreter, SieveEnvironment
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.message import MessageView
from mailstead.sieve.parser import SieveError
from mailstead.sieve.replies import (
    budget_notice,
    reject_notice,
    vacation_message,
    vacation_refusal,
)
from mailstead.sieve.senders import mime_problem, sender_unverified, unowned
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Store, address_key

if TYPE_CHECKING:
    from mailstead.mailauth.verify import AuthResults

log = logging.getLogger("mailstead.sieve")

DAY = 86400.0
# RFC 5228 section 4.2 asks for loop prevention on redirect: a message that has already
# crossed this many hops (Received: fields) is kept rather than sent on again.
MAX_REDIRECT_HOPS = 25
# Compiled scripts kept per process, keyed by their text (compiling is cheap but not free).
_CACHE_SIZE = 256
# fileinto targets remembered as existing, (account id, name), before the memory starts over.
_KNOWN_MAILBOXES = 10_000
# A script stopped by its budget is reported to its owner at most once in this many seconds.
NOTICE_PERIOD = 30 * DAY
# The window of the account's sending limit (the submission limit, [queue]
# sender_hourly_limit), which vacation replies, reject notices and redirects count against.
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A message Sieve sends on behalf of ``account_id`` after delivery."""

    account_id: int
    kind: str  # "vacation" | "reject" | "notice" (to the account itself)
    to: str
    data: bytes
    log_key: str | None = None  # the sieve_log key recorded once it is queued


@dataclass(slots=True)
class SievePlan:
    local: list[LocalDelivery] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)  # redirect targets outside
    rejected: dict[int, str] = field(default_factory=dict)  # account -> reason
    followups: list[FollowUp] = field(default_factory=list)
    redirected: dict[int, int] = field(default_factory=dict)  # account -> redirects made
    # (account, mailbox) of fileinto :create targets, for ``SieveRunner.settle_missing``.
    creatable: set[tuple[int, str]] = field(default_factory=set)
    # What sender authentication found (None: no checks ran, e.g. submission).
    auth: AuthResults | None = None

    def sends(self, account_id: int) -> int:
        """Messages this plan sends out for ``account_id``: redirects and follow-ups."""
        return self.redirected.get(account_id, 0) + sum(
            1 for f in self.followups if f.account_id == account_id and f.kind != "notice")


class SieveRunner:
    """Runs each account's active script at delivery."""

    def __init__(
        self,
        store: Store,
        hostname: str,
        *,
        limits: SieveLimits | None = None,
        redirects_per_day: int = 100,
        sender_hourly_limit: int = 0,
        clock: Callable[[], float] = time.time,
        environment: SieveEnvironment | None = None,
        max_mailboxes: int | None = None,
    ) -> None:
        """``environment``: what the RFC 5183 environment test sees (by default derived
        from ``hostname``); ``sender_hourly_limit``: the account's sending limit per hour
        (0: none), shared with submission; ``max_mailboxes``: the most an account may have,
        past which fileinto :create files into INBOX instead."""
        self._hourly_limit = sender_hourly_limit
        self._store = store
        self._max_mailboxes = max_mailboxes
        self._hostname = hostname
        self._limits = limits or SieveLimits()
        # time.thread_time: the CPU budget counts the run's own thread, not the others'.
        self._interpreter = Interpreter(
            self._limits, environment or SieveEnvironment.for_host(hostname),
            cpu_clock=time.thread_time)
        self._redirects_per_day = redirects_per_day
        self._clock = clock
        self._resolver = RecipientResolver(store, hostname)
        self._cache: dict[str, Script | None] = {}
        # fileinto targets seen to exist, so a busy rule does not look its mailbox up for
        # every message (each lookup is a database read on the delivery path). A mailbox
        # removed since makes the store refuse the delivery; ``settle_missing`` then forgets
        # them all and looks again.
        self._existing: set[tuple[int, str]] = set()
        # Scripts (by identity) that may use mailboxexists: a cheap over-estimate from the text.
        self._lists_mailboxes: set[int] = set()

    def _compiled(self, text: str) -> Script | None:
        if text in self._cache:
            return self._cache[text]
        try:
            script: Script | None = compile_script(text, self._limits)
        except SieveError as exc:
            log.warning("stored sieve script does not compile: %s", exc)
            script = None
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
            self._lists_mailboxes.clear()
        self._cache[text] = script
        if script is not None and "mailboxexists" in text.lower():
            self._lists_mailboxes.add(id(script))
        return script

    async def plan(
        self, accounts: dict[int, str], mail_from: str, data: bytes, default_mailbox: str,
        *, fields: Sequence[tuple[bytes, bytes]] | None = None,
        scripts: Mapping[int, str | None] | None = None,
        auth: AuthResults | None = None,
    ) -> SievePlan:
        """What each account's script does with its copy of ``data``; never raises.
        ``fields``: data's header fields when the filters have parsed them already;
        ``scripts``: the active script (None: none) of accounts whose script was read with
        the recipient lookup; the others' is read here; ``auth``: what sender
        authentication found, which decides whether the sender may get a vacation reply."""
        out = SievePlan(auth=auth)
        view: MessageView | None = None
        for account_id, address in accounts.items():
            keep = LocalDelivery(account_id, default_mailbox)
            try:
                if scripts is not None and account_id in scripts:
                    text = scripts[account_id]
                else:
                    stored = await self._store.active_sieve_script(account_id)
                    text = stored.content if stored is not None else None
                script = self._compiled(text) if text is not None else None
                if script is None or text is None:
                    out.local.append(keep)
                    continue
                if view is None:
                    view = MessageView(data, self._limits.max_body_scan, fields=fields)
                await self._run_one(out, script, view, account_id, address, mail_from,
                                    default_mailbox, text)
            except (StoreError, AddressError) as exc:
                log.warning("sieve for account %s failed, keeping: %s", account_id, exc)
                out.local.append(keep)
        return out

    async def _run_one(self, out: SievePlan, script: Script, view: MessageView, account_id: int,
                       address: str, mail_from: str, default_mailbox: str, text: str) -> None:
        # Mailbox existence is looked up per fileinto target rather than by listing the
        # account's mailboxes (with their message counts) for every delivery; only a script
        # using the RFC 5490 mailboxexists test, which the interpreter asks synchronously,
        # gets the full list up front.
        known: dict[str, bool] = {}
        if id(script) in self._lists_mailboxes:
            for m in await self._store.list_mailboxes(account_id):
                known[m.name] = True

        def listed(name: str) -> bool:
            return known.get("INBOX" if name.upper() == "INBOX" else name, False)

        async def exists(name: str) -> bool:
            key = "INBOX" if name.upper() == "INBOX" else name
            if key not in known:
                known[key] = ((account_id, key) in self._existing
                              or await self._mailbox_exists(account_id, key))
            return known[key]

        # The clock is read only for scripts that can look at it (RFC 5260 currentdate).
        now = self._clock() if "date" in script.extensions else None
        # Off the event loop: a run may take up to its CPU budget, and the other sessions
        # must be answered meanwhile.
        outcome = await asyncio.to_thread(
            self._interpreter.run, script, view, Envelope(mail_from, address), listed,
            now=now)
        if outcome.exhausted:
            log.warning("sieve script of account %s stopped, message kept: %s", account_id,
                        outcome.error)
            await self._notice(out, account_id, address, text, outcome.error or "")
        elif outcome.error:
            log.info("sieve runtime error for account %s, keeping: %s", account_id,
                     outcome.error)
        copies: list[LocalDelivery] = []
        for action in outcome.actions:
            if isinstance(action, Keep):
                copies.append(LocalDelivery(account_id, default_mailbox, action.flags))
            elif isinstance(action, FileInto):
                mailbox = action.mailbox
                if not await exists(mailbox):
                    if action.create and await self._create_mailbox(account_id, mailbox):
                        known[mailbox] = True
                    elif action.create:
                        # Past the account's mailbox limit: kept, like a missing mailbox.
                        mailbox = default_mailbox
                    else:
                        # RFC 5228 section 4.1: a missing mailbox must not lose the message.
                        log.info("sieve fileinto %r: no such mailbox, keeping", mailbox)
                        mailbox = default_mailbox
                if action.create:
                    out.creatable.add((account_id, mailbox))
                copies.append(LocalDelivery(account_id, mailbox, action.flags))
            elif isinstance(action, Redirect):
                if not await self._redirect(out, account_id, action.address, view):
                    copies.append(LocalDelivery(account_id, default_mailbox))
            elif isinstance(action, Reject):
                out.rejected[account_id] = action.reason
                # The notice goes to the envelope sender: only a verified one, and within
                # the account's sending limit (else it is backscatter at a forged address).
                why = "null sender" if not mail_from else sender_unverified(out.auth, mail_from)
                if why is None and not await self._may_send(out, account_id):
                    why = "hourly sending limit reached"
                if why is not None:
                    log.info("reject notice for account %s not sent: %s", account_id, why)
                else:
                    notice = reject_notice(action.reason, view, mail_from, address,
                                           self._hostname, self._clock())
                    out.followups.append(FollowUp(account_id, "reject", mail_from, notice))
            elif isinstance(action, Vacation):
                await self._vacation(out, action, view, account_id, address, mail_from)
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for copy in copies:
            key = (copy.mailbox.lower(), copy.flags)
            if key not in seen:
                seen.add(key)
                out.local.append(copy)

    async def _notice(self, out: SievePlan, account_id: int, address: str, text: str,
                      why: str) -> None:
        """Tells the account, once per script per NOTICE_PERIOD, that its script was stopped
        (a message from the postmaster in its INBOX)."""
        key = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]
        now = self._clock()
        if await self._store.count_sieve_events(account_id, "notice", key, now - NOTICE_PERIOD):
            return
        if any(f.kind == "notice" and f.account_id == account_id for f in out.followups):
            return
        data = budget_notice(address, self._hostname, now, why)
        out.followups.append(FollowUp(account_id, "notice", address, data, key))

    async def _mailbox_exists(self, account_id: int, name: str) -> bool:
        """Looks ``name`` up (INBOX spelled as the store does) and remembers it if found."""
        # The backend's cheap probe when it has one (SQLite: on the loop thread).
        probe = getattr(self._store, "sieve_mailbox_exists", None)
        if probe is not None:
            found = bool(await probe(account_id, name))
        else:
            found = await self._store.get_mailbox(account_id, name) is not None
        if found:
            self._remember(account_id, name)
        return found

    async def _create_mailbox(self, account_id: int, name: str) -> bool:
        """Creates ``name``; False when the account has as many mailboxes as it may have
        (then the message is kept instead: RFC 5228 section 2.10.6, nothing is lost)."""
        # Another delivery to this account may have created it meanwhile (RFC 5490 section
        # 3.2 :create: then it is simply used).
        try:
            with contextlib.suppress(AlreadyExists):
                await self._store.create_mailbox(account_id, name, limit=self._max_mailboxes)
        except LimitExceeded:
            log.info("sieve fileinto :create %r: account %s has too many mailboxes, keeping",
                     name, account_id)
            return False
        self._remember(account_id, name)
        return True

    def _remember(self, account_id: int, name: str) -> None:
        if len(self._existing) >= _KNOWN_MAILBOXES:
            self._existing.clear()
        self._existing.add((account_id, name))

    async def settle_missing(self, plan: SievePlan) -> list[LocalDelivery]:
        """The plan's local copies once the store has refused them for a missing mailbox
        (removed or renamed since it was remembered): every remembered mailbox is forgotten
        and each target looked up again; a missing one is created when its fileinto said
        :create, else the copy goes to INBOX (RFC 5228 section 4.1: nothing is lost)."""
        self._existing.clear()
        out: list[LocalDelivery] = []
        seen: set[tuple[int, str, tuple[str, ...]]] = set()
        for copy in plan.local:
            mailbox = "INBOX" if copy.mailbox.upper() == "INBOX" else copy.mailbox
            if mailbox != "INBOX" and not await self._mailbox_exists(copy.account_id, mailbox):
                if (copy.account_id, copy.mailbox) in plan.creatable:
                    if not await self._create_mailbox(copy.account_id, mailbox):
                        mailbox = "INBOX"
                else:
                    log.info("mailbox %r of account %s is gone, delivering to INBOX",
                             mailbox, copy.account_id)
                    mailbox = "INBOX"
            key = (copy.account_id, mailbox.lower(), copy.flags)
            if key not in seen:
                seen.add(key)
                out.append(LocalDelivery(copy.account_id, mailbox, copy.flags))
        return out

    async def _redirect(self, out: SievePlan, account_id: int, target: str,
                        view: MessageView) -> bool:
        """Adds the redirect target to the plan; False when it may not go (then keep)."""
        if len(view.raw_headers("received")) >= MAX_REDIRECT_HOPS:
            log.info("sieve redirect skipped for account %s: too many hops", account_id)
            return False
        since = self._clock() - DAY
        done = await self._store.count_sieve_events(account_id, "redirect", None, since)
        if done + out.redirected.get(account_id, 0) >= self._redirects_per_day:
            log.warning("sieve redirect limit reached for account %s", account_id)
            return False
        if not await self._may_send(out, account_id):
            log.warning("sieve redirect for account %s kept: hourly sending limit reached",
                        account_id)
            return False
        try:
            parsed = parse_address(target)
        except AddressError:
            return False
        res = await self._resolver.resolve(parsed)
        if res.verdict not in (Verdict.LOCAL, Verdict.NOT_LOCAL):
            return False
        out.local.extend(LocalDelivery(a) for a in res.accounts)
        out.remote.extend(res.remote)
        out.redirected[account_id] = out.redirected.get(account_id, 0) + 1
        return True

    async def _vacation(self, out: SievePlan, action: Vacation, view: MessageView,
                        account_id: int, address: str, mail_from: str) -> None:
        own = {address_key(address), *(address_key(a) for a in action.addresses)}
        why = vacation_refusal(view, mail_from, own) or sender_unverified(out.auth, mail_from)
        if why is None:
            # RFC 5230 section 4.2, checked again at run time: an alias may be gone since
            # the upload, and a value built from variables is only known now.
            bad = await unowned(self._store, address,
                                ((action.from_,) if action.from_ else ()) + action.addresses)
            if bad is not None:
                why = f"{bad[:80]!r} is not an address of the account"
        if why is None and action.mime:
            why = mime_problem(action.reason)
        if why is not None:
            log.info("vacation for account %s not sent: %s", account_id, why)
            return
        key = f"{action.handle}\n{address_key(mail_from)}"
        since = self._clock() - action.days * DAY
        # RFC 5230 section 4.1: at most one reply per sender (and handle) per :days.
        if await self._store.count_sieve_events(account_id, "vacation", key, since):
            return
        if not await self._may_send(out, account_id):
            log.warning("vacation for account %s not sent: hourly sending limit reached",
                        account_id)
            return
        data = vacation_message(action, view, mail_from, address, self._hostname, self._clock())
        out.followups.append(FollowUp(account_id, "vacation", mail_from, data, key))

    async def _may_send(self, out: SievePlan, account_id: int) -> bool:
        """Whether the account may send one more message this hour: what it submitted and
        what its scripts sent (follow-ups are queued under its name, redirects logged),
        plus what this plan sends, stays under the submission limit."""
        if self._hourly_limit <= 0:
            return True
        since = self._clock() - HOUR
        sent = (await self._store.count_sent_since(account_id, since)
                + await self._store.count_sieve_events(account_id, "redirect", None, since))
        return sent + out.sends(account_id) < self._hourly_limit

    async def send_followups(self, plan: SievePlan, new_queue_id: Callable[[], str]) -> bool:
        """Queues the plan's follow-up mail (null sender, RFC 5230 section 5.1) and records
        the send log; True when something went to the outbound queue. Never raises."""
        queued = False
        now = self._clock()
        for account_id, count in plan.redirected.items():
            for _ in range(count):
                try:
                    await self._store.add_sieve_event(account_id, "redirect", "", now)
                except StoreError:
                    log.exception("could not record a sieve redirect")
        for item in plan.followups:
            try:
                res = await self._resolver.resolve(parse_address(item.to))
                summary = summarize(item.data)
                await self._store.accept_message(IncomingMessage(
                    data=item.data, queue_id=new_queue_id(), mail_from="",
                    local=[LocalDelivery(a) for a in res.accounts], remote=list(res.remote),
                    internal_date=now, envelope=summary.envelope,
                    bodystructure=summary.bodystructure,
                    thread_keys=summary.thread_keys,
                    # Replies and notices count against the account's sending limit.
                    auth_account_id=item.account_id if item.kind != "notice" else None,
                ))
                queued = queued or bool(res.remote)
                if item.log_key is not None:
                    await self._store.add_sieve_event(item.account_id, item.kind,
                                                      item.log_key, now)
                log.info("sieve %s for account %s queued to %s", item.kind, item.account_id,
                         item.to)
            except (StoreError, AddressError):
                log.exception("could not queue a sieve %s", item.kind)
        return queued
