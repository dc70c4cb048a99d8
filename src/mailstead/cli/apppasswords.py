"""``mailstead app-password add|list|revoke``: app-specific passwords for mail clients."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mailstead.accounts import apppasswords
from mailstead.accounts.service import AccountService
from mailstead.cli.admin import run_service
from mailstead.cli.context import Context


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def add(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        app, text = await svc.security.add_app_password(args.address, args.name, args.protocols)
        where = ", ".join(app.protocols) if app.protocols else "IMAP, POP3, SMTP and ManageSieve"
        ctx.out(f"app password {app.name!r} for {args.address} ({where}):")
        ctx.out(f"  {text}")
        ctx.out("Type it into the mail client as the password; it is not shown again.")

    return run_service(ctx, args, action)


def list_(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        apps = await svc.security.list_app_passwords(args.address)
        if not apps:
            ctx.out(f"no app passwords for {args.address}")
            return
        ctx.out(f"{'NAME':24} {'PROTOCOLS':15} {'CREATED':16}  {'LAST USED':16}  FROM")
        for a in apps:
            ctx.out(f"{a.name[:24]:24} {','.join(a.protocols) or 'all':15} "
                    f"{_when(a.created_at):16}  {_when(a.last_used):16}  {a.last_ip or '-'}")

    return run_service(ctx, args, action)


def revoke(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        await svc.security.revoke_app_password(args.address, args.name)
        ctx.out(f"revoked app password {args.name!r} of {args.address}; it stops working at "
                "once")

    return run_service(ctx, args, action)


Adder = Callable[..., argparse.ArgumentParser]
Grouper = Callable[..., "argparse._SubParsersAction[argparse.ArgumentParser]"]


def register(sub: Any, adder: Adder, group: Grouper) -> None:
    """Add ``app-password add|list|revoke``."""
    apps = group(sub, "app-password", "manage app-specific passwords of an account")
    p = adder(apps, "add", add, "create an app-specific password and print it once",
              description="Create a password for one mail client or device: 16 random letters "
              "shown once in groups of four. With two-factor authentication on, only these "
              "open IMAP, POP3, SMTP and ManageSieve (never the web pages).",
              epilog='example:\n  mailstead app-password add alice@example.org --name "iPhone" '
              "--protocols imap,smtp")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--name", required=True, help="what it is for, e.g. iPhone")
    p.add_argument("--protocols", metavar="LIST",
                   help=f"comma-separated: {', '.join(apppasswords.PROTOCOLS)} (default: all)")
    p = adder(apps, "list", list_, "print the app passwords of an account (never the passwords)")
    p.add_argument("address", metavar="ADDRESS")
    p = adder(apps, "revoke", revoke, "delete an app password; it stops working at once")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("name", metavar="NAME")
