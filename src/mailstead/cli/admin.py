"""The administration commands: domain, user, alias and card. Each opens the store, calls
the accounts service and prints; the store handles concurrency with a running server."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailstead.accounts.service import DEFAULT_QUOTA, AccountService
from mailstead.cli.card import render_card
from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.core.errors import NotFound
from mailstead.core.sizes import format_size, parse_size
from mailstead.storage.interfaces import Quota, Store

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

    quota = DEFAULT_QUOTA if args.quota is None else _size(args.quota, "--quota")

    async def action(svc: AccountService, store: Store) -> None:
        account = await svc.add_user(args.address, password, quota)
        if getattr(args, "admin", False):
            await store.set_admin(account.address, True)
            ctx.out(f"added user {account.address} (administrator)")
        else:
            ctx.out(f"added user {account.address}")

    args.data_dir = str(data_dir)
    return _run_with_store(ctx, args, action)


def _size(text: str, what: str) -> int | None:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise CommandError(f"{what}: {exc}") from None


def describe_quota(quota: Quota) -> str:
    """ "12 MiB of 2 GiB (1%)", or "12 MiB (no quota)"."""
    used = format_size(quota.used)
    if quota.limit is None:
        return f"{used} (no quota)"
    return f"{used} of {format_size(quota.limit)} ({quota.used * 100 // quota.limit}%)"


def user_list(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        for account in await svc.list_users(args.domain):
            if args.long:
                ctx.out(f"{account.address:40} {describe_quota(await svc.quota(account.address))}")
            else:
                ctx.out(account.address)

    return _run(ctx, args, action)


def user_show(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService, store: Store) -> None:
        account = await svc.get_user(args.address)
        if account is None:
            raise NotFound(f"no account {args.address.strip()}")
        quota = await svc.quota(account.address)
        created = datetime.fromtimestamp(account.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        ctx.out(f"address:        {account.address}")
        ctx.out(f"created:        {created}")
        ctx.out(f"administrator:  {'yes' if await store.is_admin(account.id) else 'no'}")
        ctx.out(f"storage:        {describe_quota(quota)}, {quota.messages} messages")
        apps = await store.list_app_passwords(account.id)
        factor = await store.get_second_factor(account.id)
        ctx.out(f"two-factor:     {'on' if factor is not None else 'off'}")
        ctx.out(f"app passwords:  {len(apps)}")

    return _run_with_store(ctx, args, action)


def user_quota(ctx: Context, args: argparse.Namespace) -> int:
    """``user quota ADDRESS [SIZE]``: show, set or (with none) remove the storage quota."""
    limit = None if args.size is None else _size(args.size, "SIZE")

    async def action(svc: AccountService) -> None:
        if args.size is None:
            quota = await svc.quota(args.address)
        else:
            quota = await svc.set_quota(args.address, limit)
            ctx.out(f"quota of {args.address.strip()} set to "
                    f"{'none' if limit is None else format_size(limit)}")
        ctx.out(f"using {describe_quota(quota)}")

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
    """Adds ``--admin`` and ``--quota`` to ``user add``."""
    parser.add_argument("--admin", action="store_true",
                        help="let the account use the web admin pages (/admin)")
    parser.add_argument("--quota", metavar="SIZE",
                        help="storage quota such as 2G, 500M or none (default: [limits] "
                        "default_quota)")


def register(users: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Registers ``user admin ADDRESS [--off]`` under the ``user`` command group."""
    p = add(users, "admin", user_admin, "grant (or with --off take away) administrator rights",
            description="Administrators may use the web admin pages (/admin): domains, "
            "users, aliases, the outbound queue and blocked addresses.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--off", action="store_true", help="take the rights away")
    p = add(users, "quota", user_quota, "show or set the storage quota of an account",
            description="Without SIZE, show how much the account stores and its quota. With "
            "SIZE (2G, 500M, 800K, a number of bytes, or none), set it: mail that would take "
            "the account past it is refused for now, and the user is warned by mail when "
            "the mailbox passes 80% and 95%. Mail already stored stays.",
            epilog="examples:\n  mailstead user quota alice@example.org 2G\n"
            "  mailstead user quota alice@example.org none")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("size", metavar="SIZE", nargs="?")
    p = add(users, "show", user_show, "show an account: storage and quota, 2FA, admin",
            epilog="example:\n  mailstead user show alice@example.org")
    p.add_argument("address", metavar="ADDRESS")


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
