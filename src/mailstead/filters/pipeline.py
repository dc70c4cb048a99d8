"""The filter pipeline: ordered stages, each looking at one message and returning a verdict.

A stage accepts, adds header fields, removes header fields, files the message into a mailbox,
or refuses it with the reply the client gets (permanent) or asks it to try again (temporary).
``DeliveryService.deliver`` runs the pipeline for port-25 mail before anything is stored, so a
refusal is an SMTP reply at end of DATA and never a bounce (RFC 5321 section 6.2 frowns on
accept-then-bounce).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from mailstead.core.reply import Reply
from mailstead.mailauth.deadline import bounded

if TYPE_CHECKING:
    from mailstead.delivery.service import SessionInfo
    from mailstead.mailauth.verify import AuthResults

log = logging.getLogger("mailstead.filters")

# A stage that takes longer than this is treated as failed (temporary failure, never a hang).
STAGE_TIMEOUT = 60.0
R_FILTER_FAILURE = Reply(451, "4.3.0", "Temporary failure in message filtering, try again later")
# RFC 5322 section 3.6.8: field-name = 1*ftext (printable US-ASCII except the colon).
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_VALID_FIELD = re.compile(rb"^[!-9;-~]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*\Z")


class Action(Enum):
    """What happens to the message after a stage."""

    ACCEPT = "accept"  # go on with the next stage
    REJECT = "reject"  # refuse now with a permanent (5xx) reply
    TEMPFAIL = "tempfail"  # refuse now with a temporary (4xx) reply


@dataclass(frozen=True, slots=True)
class Verdict:
    """One stage's decision.

    ``headers``: complete fields (CRLF-terminated, folded) to prepend; ``drop``: indexes into
    ``FilterContext.fields`` of fields to remove; ``mailbox``: file every local copy there
    (a later stage's mailbox wins); ``reply``: the refusal, required for REJECT and TEMPFAIL.
    """

    action: Action = Action.ACCEPT
    reply: Reply | None = None
    headers: tuple[bytes, ...] = ()
    drop: frozenset[int] = frozenset()
    mailbox: str | None = None

    def __post_init__(self) -> None:
        if self.action is not Action.ACCEPT:
            if self.reply is None:
                raise ValueError(f"a {self.action.value} verdict needs a reply")
            if self.action is Action.REJECT and not self.reply.is_permanent:
                raise ValueError("a reject verdict needs a 5xx reply")
            if self.action is Action.TEMPFAIL and self.reply.code // 100 != 4:
                raise ValueError("a tempfail verdict needs a 4xx reply")
        for h in self.headers:
            if not _VALID_FIELD.match(h):
                raise ValueError(f"not a complete header field: {h[:60]!r}")

    @classmethod
    def accept(cls, *headers: bytes, drop: frozenset[int] = frozenset()) -> Verdict:
        """Go on, optionally adding ``headers`` and removing the fields ``drop``."""
        return cls(headers=headers, drop=drop)

    @classmethod
    def file_into(cls, mailbox: str, *headers: bytes,
                  drop: frozenset[int] = frozenset()) -> Verdict:
        """Deliver the local copies into ``mailbox`` (e.g. "Junk") instead of INBOX."""
        return cls(headers=headers, drop=drop, mailbox=mailbox)

    @classmethod
    def reject(cls, reply: Reply) -> Verdict:
        return cls(Action.REJECT, reply)

    @classmethod
    def tempfail(cls, reply: Reply) -> Verdict:
        return cls(Action.TEMPFAIL, reply)


def parse_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """The header block as (lower-case name, raw field with continuation lines and CRLF).

    Joining the raw parts gives ``header`` back exactly; a line that is not a field start
    (malformed, or a continuation before any field) becomes its own entry with name b"".
    """
    fields: list[tuple[bytes, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields and fields[-1][0]:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        m = _FIELD.match(line)
        fields.append((m.group(1).lower() if m else b"", line))
    return fields


@dataclass(slots=True)
class FilterContext:
    """What every stage sees: envelope, session, the message as received, its parsed header
    block, and what earlier stages found (``auth`` is set by the authentication stage)."""

    session: SessionInfo
    mail_from: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    accounts: tuple[int, ...]  # local accounts that get a copy
    data: bytes  # the message as received, CRLF line endings
    header: bytes  # data's header block, with its final CRLF
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    auth: AuthResults | None = None

    def __post_init__(self) -> None:
        if not self.fields:
            self.fields = parse_fields(self.header)


class Stage(Protocol):
    """One filter. ``check`` must not raise for any message; if it does anyway the pipeline
    answers with a temporary failure (the client retries, nothing is lost)."""

    name: str

    async def check(self, ctx: FilterContext) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The pipeline's outcome: a refusal (``reply``), or the message to store."""

    reply: Reply | None
    data: bytes  # the message with the stages' header changes
    mailbox: str | None = None  # None: INBOX (or wherever delivery would put it)
    stage: str = ""  # the stage that refused
    # data's header fields as ``parse_fields`` gives them (the ones added, then the ones
    # kept), for later steps that look at the header (Sieve): parsed once. Empty on refusal.
    fields: Sequence[tuple[bytes, bytes]] = ()


class Pipeline:
    """Stages run in order; the first refusal stops the run."""

    def __init__(self, stages: Sequence[Stage], *, timeout: float = STAGE_TIMEOUT) -> None:
        self.stages = tuple(stages)
        self._timeout = timeout

    async def run(self, ctx: FilterContext) -> PipelineResult:
        """Runs every stage over ``ctx``. Never raises: a failing or hanging stage is a
        temporary failure reply."""
        added: list[bytes] = []
        drop: set[int] = set()
        mailbox: str | None = None
        for stage in self.stages:
            try:
                verdict = await bounded(stage.check(ctx), self._timeout)
            except Exception:
                log.exception("filter stage %s failed", stage.name)
                return PipelineResult(R_FILTER_FAILURE, ctx.data, stage=stage.name)
            if verdict.action is not Action.ACCEPT:
                return PipelineResult(verdict.reply, ctx.data, stage=stage.name)
            added.extend(verdict.headers)
            drop.update(i for i in verdict.drop if 0 <= i < len(ctx.fields))
            if verdict.mailbox is not None:
                mailbox = verdict.mailbox
        if not added and not drop:
            return PipelineResult(None, ctx.data, mailbox, fields=ctx.fields)
        # A Verdict's fields are valid and unfolded at the name: the name ends at the colon.
        fields = [(h[:h.index(b":")].lower(), h) for h in added]
        # One copy of the message: the new fields, then the kept ones (all of them: the
        # message as it is) and the rest.
        if not drop:
            fields.extend(ctx.fields)
            return PipelineResult(None, b"".join([*added, ctx.data]), mailbox, fields=fields)
        kept = [f for i, f in enumerate(ctx.fields) if i not in drop]
        fields.extend(kept)
        rest = memoryview(ctx.data)[len(ctx.header):]
        data = b"".join([*added, *(raw for _, raw in kept), rest])
        return PipelineResult(None, data, mailbox, fields=fields)
