"""``mailstead queue list|show|retry|delete|bounce``: look at and act on the outbound queue.

Each command opens the store (safe while the server runs: the store serialises writers across
processes) and calls the store's queue operations; a bounce sends its DSN through the same
``Notifier`` the workers use.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.queue.dsn import DsnRecipient, Notifier
from mailstead.storage.interfaces import QueueEntry, QueueUpdate, Store

Action = Callable[[Store], Awaitable[None]]


def _run(ctx: Context, args: argparse.Namespace, action: Action) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            await action(store)
        finally:
            await store.close()

    asyncio.run(go())
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _printable(text: str) -> str:
    """Network-supplied text (remote replies) without control characters for the terminal."""
    return "".join(c if c.isprintable() else " " for c in text)


async def _entries(store: Store, queue_id: str) -> list[QueueEntry]:
    entries = await store.queue_entries(queue_id)
    if not entries:
        raise CommandError(f"no message {queue_id} in the queue (see: mailstead queue list)")
    return entries


def queue_list(ctx: Context, args: argparse.Namespace) -> int:
    async def action(store: Store) -> None:
        rows = await store.list_queue()
        if not args.all:
            rows = [r for r in rows if r.waiting]
        if not rows:
            ctx.out("the queue is empty" if not args.all else "no queue rows")
            return
        ctx.out(f"{'QUEUE ID':<16} {'STATE':<9} {'TRIES':>5} {'NEXT ATTEMPT':<19}  RECIPIENT")
        for r in rows:
            nxt = _when(r.next_attempt) if r.state in ("queued", "deferred") else "-"
            ctx.out(
                f"{r.queue_id:<16} {r.state:<9} {r.attempts:>5} {nxt:<19}  "
                f"{_printable(r.rcpt_to)}"
            )
        ctx.out(f"{len(rows)} recipient(s) in {len({r.queue_id for r in rows})} message(s)")

    return _run(ctx, args, action)


def queue_show(ctx: Context, args: argparse.Namespace) -> int:
    async def action(store: Store) -> None:
        rows = await _entries(store, args.id)
        first = rows[0]
        ctx.out(f"queue id:  {first.queue_id}")
        ctx.out(f"sender:    {_printable(first.mail_from) or '<> (null sender)'}")
        ctx.out(f"queued at: {_when(first.created_at)}")
        ctx.out(f"body:      {first.blob}")
        for r in rows:
            ctx.out(f"  {_printable(r.rcpt_to)}")
            ctx.out(f"    state {r.state}, {r.attempts} attempt(s), last {_when(r.last_attempt)}")
            if r.state in ("queued", "deferred"):
                ctx.out(f"    next attempt {_when(r.next_attempt)}")
            if r.last_error:
                ctx.out(f"    last result: {_printable(r.last_error)}")
            if r.warned:
                ctx.out("    delay warning sent")
        if args.body:
            data = await store.read_blob(first.blob)
            ctx.out("")
            ctx.out(data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n"))

    return _run(ctx, args, action)


def queue_retry(ctx: Context, args: argparse.Namespace) -> int:
    async def action(store: Store) -> None:
        if args.id is not None:
            await _entries(store, args.id)
        count = await store.retry_queue(args.id, time.time())
        ctx.out(f"{count} recipient(s) due now")

    return _run(ctx, args, action)


def queue_delete(ctx: Context, args: argparse.Namespace) -> int:
    async def action(store: Store) -> None:
        await _entries(store, args.id)
        count = await store.delete_queue(args.id)
        ctx.out(f"deleted {args.id} ({count} recipient row(s)); no notice was sent")

    return _run(ctx, args, action)


def queue_bounce(ctx: Context, args: argparse.Namespace) -> int:
    """Gives up on the undelivered recipients of a message and tells the sender (a DSN)."""
    data_dir = ctx.existing_data_dir(args.data_dir)
    hostname = load_config(data_dir).hostname

    async def action(store: Store) -> None:
        rows = await _entries(store, args.id)
        active = [r for r in rows if r.state == "active"]
        pending = [r for r in rows if r.state in ("queued", "deferred")]
        if active:
            raise CommandError(
                f"{len(active)} recipient(s) of {args.id} are being delivered right now; "
                "try again in a minute"
            )
        if not pending:
            raise CommandError(f"{args.id} has no undelivered recipients")
        reason = "The postmaster removed the message from the queue"
        recipients = [
            DsnRecipient(
                rcpt=r.rcpt_to,
                action="failed",
                status="5.0.0",
                diagnostic=None,
                last_attempt=r.last_attempt,
                reason=f"{reason}; last result: {r.last_error}" if r.last_error else reason,
            )
            for r in pending
        ]
        dsn = await Notifier(store, hostname).send(pending[0], recipients)
        await store.update_queue(
            [QueueUpdate(r.id, "bounced", None, "bounced by the postmaster") for r in pending]
        )
        note = f"notice {dsn} sent to the sender" if dsn else "no notice (null sender)"
        ctx.out(f"bounced {len(pending)} recipient(s) of {args.id}; {note}")

    return _run(ctx, args, action)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
    group: Callable[..., argparse._SubParsersAction[argparse.ArgumentParser]],
) -> None:
    """Adds the ``queue`` command group to the parser tree of cli/main.py."""
    queue = group(sub, "queue", "look at and act on the outbound mail queue")
    p = add(
        queue,
        "list",
        queue_list,
        "print the undelivered recipients",
        description="One line per recipient still queued, in flight or deferred: queue ID, "
        "state, attempts so far, next attempt (UTC) and address.",
    )
    p.add_argument("--all", action="store_true", help="include delivered and bounced rows")
    p = add(queue, "show", queue_show, "print one message's recipients and their history")
    p.add_argument("id", metavar="ID", help="the queue ID (from 'queue list' or the logs)")
    p.add_argument("--body", action="store_true", help="print the message too")
    p = add(
        queue,
        "retry",
        queue_retry,
        "make deferred recipients due now",
        description="Deferred recipients of message ID (or of every message) are tried at the "
        "next queue run, within a second when the server runs.",
    )
    p.add_argument("id", metavar="ID", nargs="?", default=None)
    p = add(
        queue,
        "delete",
        queue_delete,
        "remove a message from the queue without telling the sender",
    )
    p.add_argument("id", metavar="ID")
    p = add(
        queue,
        "bounce",
        queue_bounce,
        "give up on a message and send the sender a non-delivery notice",
    )
    p.add_argument("id", metavar="ID")
