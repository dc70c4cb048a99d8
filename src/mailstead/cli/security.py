"""``mailstead security blocked|unblock``: the networks blocked after repeated failed logins.

Blocks live in the store, so these commands see and change what the running server uses
(it re-reads the block list every couple of seconds).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mailstead.accounts.service import AccountService
from mailstead.cli import securitykey
from mailstead.cli.admin import run_service
from mailstead.cli.context import Context


def blocked(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        blocks = await svc.security.blocked()
        if not blocks:
            ctx.out("no blocked addresses")
            return
        now = time.time()
        for b in blocks:
            until = datetime.fromtimestamp(b.until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            ctx.out(f"{b.network:40} until {until} ({max(0, int(b.until - now))} s left): "
                    f"{b.reason}")

    return run_service(ctx, args, action)


def unblock(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        network = await svc.security.unblock(args.address)
        ctx.out(f"unblocked {network} (the server notices within a few seconds)")

    return run_service(ctx, args, action)


Adder = Callable[..., argparse.ArgumentParser]
Grouper = Callable[..., "argparse._SubParsersAction[argparse.ArgumentParser]"]


def register(sub: Any, adder: Adder, group: Grouper) -> None:
    """Add ``security blocked|unblock``."""
    sec = group(sub, "security", "blocked client addresses; the security key shared by the nodes")
    adder(sec, "blocked", blocked, "list the client addresses blocked after failed logins")
    p = adder(sec, "unblock", unblock, "lift the block of a client address at once",
              description="Lift the block of IP (an IPv4 address, or an IPv6 address, which "
              "lifts its whole /64).")
    p.add_argument("address", metavar="IP")
    securitykey.register(sec, adder)
