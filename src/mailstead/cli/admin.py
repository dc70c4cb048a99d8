"""The administration commands: domain, user, alias and card. Each opens the store, calls
the accounts service and prints; the store handles concurrency with a running server."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailstead.accounts.service import AccountService
from mailstead.cli.card import render_card
from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.core.errors import NotFound

Action = Callable[[AccountService], Awaitable[None]]


def _run(ctx: Context, args: argparse.Namespace, action: Action) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            await action(AccountService(store))
        finally:
            await store.close()

    asyncio.run(go())
    return 0


def domain_add(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        ctx.out(f"added domain {await svc.add_domain(args.name)}")

    return _run(ctx, args, action)


def domain_list(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        for name in await svc.list_domains():
            ctx.out(name)

    return _run(ctx, args, action)


def domain_remove(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        await svc.remove_domain(args.name)
        ctx.out(f"removed domain {args.name}")

    return _run(ctx, args, action)


def user_add(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)  # fail before asking for a password
    password = ctx.read_password(args.password_stdin)

    async def action(svc: AccountService) -> None:
        account = await svc.add_user(args.address, password)
        ctx.out(f"added user {account.address}")

    args.data_dir = str(data_dir)
    return _run(ctx, args, action)


def user_list(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        for account in await svc.list_users(args.domain):
            ctx.out(account.address)

    return _run(ctx, args, action)


def user_passwd(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    password = ctx.read_password(args.password_stdin)

    async def action(svc: AccountService) -> None:
        await svc.set_password(args.address, password)
        ctx.out(f"changed the password of {args.address}")

    args.data_dir = str(data_dir)
    return _run(ctx, args, action)


def user_remove(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        await svc.remove_user(args.address)
        ctx.out(f"removed user {args.address} and all its mail")

    return _run(ctx, args, action)


def alias_add(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        alias = await svc.add_alias(args.source, args.targets)
        ctx.out(f"{alias.source} -> {', '.join(alias.targets)}")

    return _run(ctx, args, action)


def alias_list(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        for alias in await svc.list_aliases():
            ctx.out(f"{alias.source} -> {', '.join(alias.targets)}")

    return _run(ctx, args, action)


def alias_remove(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        await svc.remove_alias(args.source, args.targets)
        what = f"{', '.join(args.targets)} from alias" if args.targets else "alias"
        ctx.out(f"removed {what} {args.source}")

    return _run(ctx, args, action)


def _card_password(args: argparse.Namespace) -> str | None:
    if args.password_file is None:
        return None
    try:
        text = Path(args.password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{args.password_file}: cannot read the password: {exc}") from None
    return text.splitlines()[0] if text else ""


def card(ctx: Context, args: argparse.Namespace) -> int:
    config = load_config(ctx.existing_data_dir(args.data_dir))
    password = _card_password(args)

    async def action(svc: AccountService) -> None:
        account = await svc.get_user(args.address)
        if account is None:
            raise NotFound(f"no account {args.address} (add it with: mailstead user add)")
        ctx.stdout.write(render_card(config, account.address, password))

    return _run(ctx, args, action)
