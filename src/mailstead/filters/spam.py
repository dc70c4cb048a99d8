"""Spam filtering behind one small interface (``SpamFilter``), the pipeline stage that applies
its result, the built-in filter, and the learner fed by IMAP moves into and out of Junk.

Two filters implement the interface: ``BuiltinSpamFilter`` (authentication results, DNS
blocklists, greylisting, a per-account Bayesian classifier) and ``rspamd.RspamdFilter``. The
stage owns every decision that does not depend on which filter ran: the ``X-Spam-*`` header
fields (incoming ones are removed first, so nobody can pre-label their own mail), the junk and
reject thresholds, and what happens when the filter is down (accepted and tagged "unchecked",
or a temporary failure: the message is never lost).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from mailstead.core.reply import Reply
from mailstead.filters.bayes import BayesClassifier
from mailstead.filters.dnsbl import DnsblChecker
from mailstead.filters.greylist import Greylist, GreyResult
from mailstead.filters.pipeline import FilterContext, Verdict
from mailstead.mailauth.deadline import bounded
from mailstead.storage.interfaces import MailboxInfo, MessageInfo

log = logging.getLogger("mailstead.filters.spam")

JUNK = "Junk"
CLASSIFY_TIMEOUT = 30.0  # below the pipeline's 60 s, so a slow filter counts as "down"
MAX_SYMBOLS = 50
# X-Spam-Level (SpamAssassin's convention): one "*" per whole point of a positive score, so
# a Sieve rule needs no numeric comparison (`header :contains "X-Spam-Level" "******"`),
# which the scores below zero that X-Spam-Score carries would defeat under i;ascii-numeric.
MAX_LEVEL = 50
MAX_LEARN_SIZE = 20 * 1024 * 1024
R_SPAM = Reply(550, "5.7.1", "Message refused as spam")
# RFC 6647 section 2.1: greylisting answers with a temporary failure; 4.7.1 (RFC 3463
# "delivery not authorized") is what the common implementations send.
R_GREYLIST = Reply(451, "4.7.1", "Greylisted: please try again in a few minutes")
R_UNAVAILABLE = Reply(451, "4.7.1", "The spam filter is unavailable, try again later")
_SYMBOL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class SpamAction(IntEnum):
    """What a filter advises, weakest first (the stage applies the strongest of the filter's
    advice and its own thresholds)."""

    NO_ACTION = 0
    ADD_HEADER = 1  # mark as spam in X-Spam-Status, leave in the inbox
    JUNK = 2  # file into Junk
    GREYLIST = 3  # temporary failure (greylisting, rate limits): the client retries
    REJECT = 4  # 550 5.7.1 at end of DATA


class FilterUnavailable(Exception):
    """The filter could not give an answer (daemon down, timeout, garbage reply)."""


@dataclass(frozen=True, slots=True)
class Symbol:
    """One rule that matched and what it added to the score."""

    name: str
    score: float

    def render(self) -> str:
        return f"{self.name}({self.score:.2f})"


@dataclass(frozen=True, slots=True)
class SpamResult:
    """A filter's opinion of one message."""

    score: float
    symbols: tuple[Symbol, ...] = ()
    action: SpamAction = SpamAction.NO_ACTION


class SpamFilter(Protocol):
    """A spam classifier: ``classify`` raises ``FilterUnavailable`` when it cannot decide;
    ``learn`` tells it that the user judged ``message`` to be spam (or not)."""

    name: str

    async def classify(self, ctx: FilterContext) -> SpamResult: ...

    async def learn(self, account_id: int, message: bytes, spam: bool) -> None: ...


def clean_symbol(name: str) -> str:
    """A symbol name safe for a header field (letters, digits, ``_.-``; at most 64)."""
    return _SYMBOL_CHARS.sub("_", name)[:64] or "_"


def _fold(name: str, items: Sequence[str]) -> bytes:
    """``name: a, b, c`` folded before an item when a line would pass 78 characters
    (RFC 5322 section 2.1.1)."""
    lines = [f"{name}:"]
    for i, item in enumerate(items):
        piece = " " + item + ("," if i < len(items) - 1 else "")
        if len(lines[-1]) + len(piece) > 78 and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += piece
    if lines == [f"{name}:"]:
        lines[0] += " none"
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class SpamPolicy:
    """The stage's own decisions (config ``[spam]``)."""

    junk_score: float = 6.0
    reject_score: float = 15.0
    reject_to_junk: bool = False  # file into Junk what would be refused
    tempfail_when_down: bool = False  # 451 instead of accept-and-tag when the filter is down
    junk_mailbox: str = JUNK
    timeout: float = CLASSIFY_TIMEOUT


class SpamStage:
    """The pipeline stage around one ``SpamFilter``."""

    name = "spam"

    def __init__(self, spam_filter: SpamFilter, policy: SpamPolicy = SpamPolicy()) -> None:
        self.filter = spam_filter
        self._policy = policy
        self._required = f"required={policy.junk_score:.2f}"  # the same on every message

    def _threshold_action(self, score: float) -> SpamAction:
        if score >= self._policy.reject_score:
            return SpamAction.REJECT
        if score >= self._policy.junk_score:
            return SpamAction.JUNK
        return SpamAction.NO_ACTION

    async def check(self, ctx: FilterContext) -> Verdict:
        drop: frozenset[int] = frozenset()
        if b"x-spam-" in ctx.header.lower():  # rarely: then find the fields
            drop = frozenset(i for i, (name, _) in enumerate(ctx.fields)
                             if name.startswith(b"x-spam-"))
        try:
            result = await bounded(self.filter.classify(ctx), self._policy.timeout)
        except Exception as exc:  # down, timed out or broken: never lose the message
            log.warning("spam filter %s unavailable: %s", self.filter.name, exc)
            if self._policy.tempfail_when_down:
                return Verdict.tempfail(R_UNAVAILABLE)
            return Verdict.accept(b"X-Spam-Status: unchecked\r\n", drop=drop)
        action = max(result.action, self._threshold_action(result.score))
        if action is SpamAction.REJECT and self._policy.reject_to_junk:
            action = SpamAction.JUNK
        if action is SpamAction.REJECT:
            log.info("spam refused score=%.2f from=%s", result.score, ctx.mail_from or "<>")
            return Verdict.reject(Reply(
                R_SPAM.code, R_SPAM.enhanced,
                f"{R_SPAM.text} (score {result.score:.1f}); contact the postmaster if this "
                "is wrong"))
        if action is SpamAction.GREYLIST:
            return Verdict.tempfail(R_GREYLIST)
        spam = action >= SpamAction.ADD_HEADER
        symbols = sorted(result.symbols, key=lambda s: (-abs(s.score), s.name))[:MAX_SYMBOLS]
        score = f"{result.score:.2f}"
        headers = (
            f"X-Spam-Status: {'Yes' if spam else 'No'}, score={score} {self._required}\r\n"
            .encode("ascii"),
            f"X-Spam-Score: {score}\r\n".encode("ascii"),
            b"X-Spam-Level: " + b"*" * min(MAX_LEVEL, max(0, int(result.score))) + b"\r\n",
            _fold("X-Spam-Symbols", [s.render() for s in symbols]),
        )
        if action is SpamAction.JUNK:
            return Verdict.file_into(self._policy.junk_mailbox, *headers, drop=drop)
        return Verdict.accept(*headers, drop=drop)


@dataclass(frozen=True, slots=True)
class BuiltinWeights:
    """Scores of the built-in rules (positive: spammy)."""

    dmarc_fail: float = 3.0
    dmarc_pass: float = -1.0
    spf_fail: float = 2.0
    spf_softfail: float = 1.0
    spf_pass: float = -0.5
    dkim_invalid: float = 1.0
    dkim_valid: float = -0.5
    dnsbl: float = 3.0  # per listing zone
    bayes: float = 5.0  # at probability 1.0 (and minus this at 0.0)


def _auth_table(w: BuiltinWeights) -> dict[tuple[str, str], Symbol]:
    """The symbol of each (method, result) the authentication results score."""
    return {
        ("dmarc", "fail"): Symbol("DMARC_FAIL", w.dmarc_fail),
        ("dmarc", "pass"): Symbol("DMARC_PASS", w.dmarc_pass),
        ("spf", "fail"): Symbol("SPF_FAIL", w.spf_fail),
        ("spf", "softfail"): Symbol("SPF_SOFTFAIL", w.spf_softfail),
        ("spf", "pass"): Symbol("SPF_PASS", w.spf_pass),
        ("dkim", "pass"): Symbol("DKIM_VALID", w.dkim_valid),
        ("dkim", "fail"): Symbol("DKIM_INVALID", w.dkim_invalid),
    }


def auth_symbols(ctx: FilterContext, w: BuiltinWeights,
                 table: dict[tuple[str, str], Symbol] | None = None) -> list[Symbol]:
    """Scores from the authentication stage's results (none when it did not run);
    ``table``: ``_auth_table(w)`` made once by the caller (symbols are immutable)."""
    auth = ctx.auth
    if auth is None:
        return []
    symbols = table if table is not None else _auth_table(w)
    found = [symbols.get(("dmarc", str(auth.dmarc.result))),
             symbols.get(("spf", str(auth.spf.result)))]
    results = {d.result for d in auth.dkim}
    if "pass" in results:
        found.append(symbols[("dkim", "pass")])
    elif "fail" in results:
        found.append(symbols[("dkim", "fail")])
    return [s for s in found if s is not None]


class BuiltinSpamFilter:
    """Scores from authentication results, DNS blocklists and the recipients' Bayesian
    classifiers; optional greylisting."""

    name = "builtin"

    def __init__(
        self,
        *,
        dnsbl: DnsblChecker | None = None,
        greylist: Greylist | None = None,
        bayes: BayesClassifier | None = None,
        weights: BuiltinWeights = BuiltinWeights(),
    ) -> None:
        self._dnsbl = dnsbl
        self._greylist = greylist
        self._bayes = bayes
        self._w = weights
        self._auth_table = _auth_table(weights)

    async def _bayes_symbol(self, ctx: FilterContext) -> Symbol | None:
        if self._bayes is None or not ctx.accounts:
            return None
        # One verdict per message: the mean over the recipients whose classifier is trained.
        probs = []
        for account in ctx.accounts[:10]:
            verdict = await self._bayes.classify(account, ctx.data)
            if verdict.probability is not None:
                probs.append(verdict.probability)
        if not probs:
            return None
        p = sum(probs) / len(probs)
        if p >= 0.8:
            return Symbol("BAYES_SPAM", round(self._w.bayes * (p - 0.5) * 2, 2))
        if p <= 0.2:
            return Symbol("BAYES_HAM", round(self._w.bayes * (p - 0.5) * 2, 2))
        return None

    async def classify(self, ctx: FilterContext) -> SpamResult:
        symbols = auth_symbols(ctx, self._w, self._auth_table)
        if self._dnsbl is not None:
            for listing in await self._dnsbl.lookup(ctx.session.client_ip):
                name = "RBL_" + clean_symbol(listing.zone.upper().replace(".", "_"))
                symbols.append(Symbol(name, self._w.dnsbl))
        bayes = await self._bayes_symbol(ctx)
        if bayes is not None:
            symbols.append(bayes)
        action = SpamAction.NO_ACTION
        if self._greylist is not None:
            grey = await self._greylist.check(ctx.session.client_ip, ctx.mail_from,
                                              ctx.recipients)
            if grey is GreyResult.DEFER:
                action = SpamAction.GREYLIST
                symbols.append(Symbol("GREYLIST", 0.0))
        score = round(sum([s.score for s in symbols]), 2)
        return SpamResult(score, tuple(symbols), action)

    async def learn(self, account_id: int, message: bytes, spam: bool) -> None:
        if self._bayes is not None:
            await self._bayes.learn(account_id, message, spam)


class LearnSource(Protocol):
    """What the learner reads from the store (a subset of ``Store``)."""

    async def mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None: ...

    async def get_messages(
        self,
        mailbox_id: int,
        uids: Sequence[int] | None,
        *,
        envelope: bool = True,
        bodystructure: bool = True,
    ) -> list[MessageInfo]: ...

    async def read_blob(self, blob: str) -> bytes: ...


CopyHook = Callable[[int, int, int, Sequence[int]], Awaitable[None]]


class JunkLearner:
    """Turns IMAP copies and moves into training: into Junk is spam, out of Junk (but not
    into Trash) is ham. Learning runs in the background so the IMAP reply never waits for a
    filter; ``drain`` waits for it (tests, shutdown)."""

    def __init__(self, store: LearnSource, filters: Sequence[SpamFilter]) -> None:
        self._store = store
        self._filters = tuple(filters)
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_copy(self, account_id: int, src_mailbox_id: int, dst_mailbox_id: int,
                      dst_uids: Sequence[int]) -> None:
        """The IMAP hook (``IMAPContext.copy_hook``): messages ``dst_uids`` of the
        destination came from the source mailbox. Returns at once; never raises."""
        if not self._filters or not dst_uids:
            return
        task = asyncio.get_running_loop().create_task(
            self._learn(account_id, src_mailbox_id, dst_mailbox_id, list(dst_uids)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _learn(self, account_id: int, src_id: int, dst_id: int,
                     uids: list[int]) -> None:
        try:
            src = await self._store.mailbox_by_id(src_id)
            dst = await self._store.mailbox_by_id(dst_id)
            if src is None or dst is None:
                return
            into_junk = dst.special_use == "\\Junk" and src.special_use != "\\Junk"
            out_of_junk = (src.special_use == "\\Junk"
                           and dst.special_use not in ("\\Junk", "\\Trash"))
            if not into_junk and not out_of_junk:
                return
            # Only the moved rows, without the JSON the learner does not need: a move into
            # a Junk folder of 100 000 messages must not read all of them.
            found = await self._store.get_messages(dst_id, sorted(set(uids)), envelope=False,
                                                   bodystructure=False)
            messages = [m for m in found if m.size <= MAX_LEARN_SIZE]
            for m in messages:
                data = await self._store.read_blob(m.blob)
                for f in self._filters:
                    try:
                        await f.learn(account_id, data, into_junk)
                    except Exception as exc:
                        log.warning("learning %s by %s failed: %s",
                                    "spam" if into_junk else "ham", f.name, exc)
            log.info("learned %d message(s) as %s for account %d", len(messages),
                     "spam" if into_junk else "ham", account_id)
        except Exception:
            log.exception("spam learning failed for account %d", account_id)
