"""Queue rows whose recipient domain is local: delivered in-process, never over the network.

They appear when a domain became local after the mail was queued, or for a DSN to a local
sender; they go through the same recipient resolution and atomic store write as inbound
mail (DESIGN rule 6), so aliases, catch-alls and loops behave exactly as at RCPT time.
"""

from __future__ import annotations

from collections.abc import Callable

from mailstead.core.address import AddressError, parse_address
from mailstead.core.errors import StoreError
from mailstead.core.reply import Reply
from mailstead.delivery.recipients import RecipientResolver, Verdict
from mailstead.queue.dsn import Notifier
from mailstead.queue.outcome import (
    R_BAD_ADDRESS,
    R_LOCAL_LOOP,
    R_LOCAL_TRICK,
    R_UNKNOWN_LOCAL,
    Outcome,
)
from mailstead.storage.interfaces import QueueEntry

R_DELIVERED_LOCALLY = Reply(250, "2.0.0", "Delivered locally")

# What to do with rows whose delivery hit a store error: the workers' retry schedule.
Defer = Callable[[list[QueueEntry], str], list[Outcome]]


async def deliver_local(
    resolver: RecipientResolver,
    notifier: Notifier,
    entries: list[QueueEntry],
    data: bytes,
    defer: Defer,
) -> list[Outcome]:
    """One outcome per entry: delivered (one atomic write for all accepted rows), bounced
    (unknown user, alias loop, routing tricks, bad address) or, on a store error, ``defer``."""
    outcomes: list[Outcome] = []
    accounts: dict[int, str] = {}
    remote: dict[str, str] = {}
    accepted: list[QueueEntry] = []
    for e in entries:
        try:
            address = parse_address(e.rcpt_to)
        except AddressError:
            outcomes.append(Outcome(e, "bounced", R_BAD_ADDRESS))
            continue
        res = await resolver.resolve(address)
        if res.verdict in (Verdict.UNKNOWN_USER, Verdict.NOT_LOCAL, Verdict.SRS_FORGED):
            outcomes.append(Outcome(e, "bounced", R_UNKNOWN_LOCAL))
        elif res.verdict is Verdict.LOOP:
            outcomes.append(Outcome(e, "bounced", R_LOCAL_LOOP))
        elif res.verdict is Verdict.RELAY_TRICK:
            outcomes.append(Outcome(e, "bounced", R_LOCAL_TRICK))
        elif res.verdict is Verdict.NO_MAILBOX:
            # A role address before any account exists: kept until one does.
            outcomes += defer([e], "no account exists yet to receive this role address")
        else:
            accounts.update(res.accounts)
            for target in res.remote:
                remote.setdefault(target.lower(), target)
            accepted.append(e)
    if accepted:
        try:
            await notifier.inject(data, accepted[0].mail_from, accounts, list(remote.values()))
        except StoreError as exc:
            outcomes += defer(accepted, f"local delivery failed: {exc}")
        else:
            outcomes += [Outcome(e, "delivered", R_DELIVERED_LOCALLY, local=True)
                         for e in accepted]
    return outcomes
