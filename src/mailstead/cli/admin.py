"""The administration commands: domain, user, alias and card. Each opens the store, calls
the accounts service and prints; the store handles concurrency with a running server."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mailstead.accounts.service import AccountService
from mailstead.cli.card import render_card
from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.core.errors import NotFound
from mailstead.storage.interfaces import Store

Action = Callable[[AccountService], Awaitable[None]]
StoreAction = Callable[[AccountService, Store], Awaitable[None]]


def _run(ctx: Context, args: argparse.Namespace, action: Action) -> int:
    async def both(svc: AccountService, store: Store) -> None:
        await action(svc)

    return _run_with_store(ctx, args, both)


def _run_with_store(ctx: Context, args: argparse.Namespace, action: StoreAction) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    # [security] sets the argon2 parameters of new hashes; DATA/security.key protects
    # second factors and app passwords (accounts/keys.py).
    config = load_config(data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            svc = await AccountService.open(store, config, need_key=False)
            try:
                await action(svc, store)
            finally:
                await svc.close()
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

    async def action(svc: AccountService, store: Store) -> None:
        account = await svc.add_user(args.address, password)
        if getattr(args, "admin", False):
            await store.set_admin(account.address, True)
            ctx.out(f"added user {account.address} (administrator)")
        else:
            ctx.out(f"added user {account.address}")

    args.data_dir = str(data_dir)
    return _run_with_store(ctx, args, action)


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
        enabled, _ = await svc.security.two_factor_status(args.address)
        if enabled:
            ctx.out("two-factor authentication is on: mail clients keep using their "
                    "app-specific passwords")

    args.data_dir = str(data_dir)
    return _run(ctx, args, action)


def user_admin(ctx: Context, args: argparse.Namespace) -> int:
    """``user admin ADDRESS [--off]``: grant or take away the web admin pages."""

    async def action(svc: AccountService, store: Store) -> None:
        account = await svc.get_user(args.address)
        if account is None:
            raise NotFound(f"no account {args.address.strip()}")
        await store.set_admin(account.address, not args.off)
        state = "no longer an administrator" if args.off else "an administrator"
        ctx.out(f"{account.address} is {state}")

    return _run_with_store(ctx, args, action)


def admin_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--admin`` to ``user add``."""
    parser.add_argument("--admin", action="store_true",
                        help="let the account use the web admin pages (/admin)")


def register(users: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Registers ``user admin ADDRESS [--off]`` under the ``user`` command group."""
    p = add(users, "admin", user_admin, "grant (or with --off take away) administrator rights",
            description="Administrators may use the web admin pages (/admin): domains, "
            "users, aliases, the outbound queue and blocked addresses.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--off", action="store_true", help="take the rights away")


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


run_service = _run  # for the security commands (cli/twofactor.py, apppasswords.py, security.py)


def card(ctx: Context, args: argparse.Namespace) -> int:
    config = load_config(ctx.existing_data_dir(args.data_dir))
    password = _card_password(args)

    async def action(svc: AccountService) -> None:
        account = await svc.get_user(args.address)
        if account is None:
            raise NotFound(f"no account {args.address} (add it with: mailstead user add)")
        ctx.stdout.write(render_card(config, account.address, password))

    return _run(ctx, args, action)
