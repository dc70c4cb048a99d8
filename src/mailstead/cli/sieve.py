"""``mailstead sieve put|get|list|activate|delete``: an account's Sieve scripts (RFC 5228)
from the command line, the same store ManageSieve (port 4190) edits."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mailstead.cli.context import CommandError, Context
from mailstead.config import load_config
from mailstead.proto.managesieve.framing import valid_script_name
from mailstead.sieve.compile import compile_script
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.parser import SieveError
from mailstead.sieve.senders import upload_problem
from mailstead.storage.interfaces import Store

StoreAction = Callable[[Store, int], Awaitable[None]]


def _run(ctx: Context, args: argparse.Namespace, action: StoreAction) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            account = await store.get_account(args.address)
            if account is None:
                raise CommandError(f"no account {args.address}")
            await action(store, account.id)
        finally:
            await store.close()

    asyncio.run(go())
    return 0


def _name(text: str) -> str:
    name = valid_script_name(text.encode("utf-8", "surrogateescape"))
    if name is None:
        raise CommandError(f"invalid script name {text!r}: 1 to 128 characters, no controls")
    return name


def put(ctx: Context, args: argparse.Namespace) -> int:
    """Store (and by default activate) a script after compiling it."""
    name = _name(args.name)
    data_dir = ctx.existing_data_dir(args.data_dir)
    sieve = load_config(data_dir).sieve
    raw = (ctx.stdin.read().encode("utf-8", "surrogateescape") if args.file == "-"
           else Path(args.file).read_bytes())
    try:
        script = compile_script(raw, SieveLimits(max_script_size=sieve.max_script_size,
                                        max_actions=sieve.max_actions,
                                        max_redirects=sieve.max_redirects))
    except SieveError as exc:
        raise CommandError(f"{args.file}: {exc}") from None
    text = raw.decode("utf-8")

    async def action(store: Store, account_id: int) -> None:
        # The rule ManageSieve applies: vacation may only speak for the account's own
        # addresses (RFC 5230 section 4.2).
        account = await store.get_account_by_id(account_id)
        problem = (await upload_problem(store, account.address, script)
                   if account is not None else None)
        if problem is not None:
            raise CommandError(f"{args.file}: {problem}")
        await store.put_sieve_script(account_id, name, text)
        if not args.inactive:
            await store.set_active_sieve_script(account_id, name)
        ctx.out(f"stored sieve script {name!r} for {args.address}"
                + ("" if args.inactive else " (active)"))

    return _run(ctx, args, action)


def get(ctx: Context, args: argparse.Namespace) -> int:
    name = _name(args.name)

    async def action(store: Store, account_id: int) -> None:
        script = await store.get_sieve_script(account_id, name)
        if script is None:
            raise CommandError(f"{args.address} has no sieve script {name!r}")
        ctx.stdout.write(script.content)

    return _run(ctx, args, action)


def list_(ctx: Context, args: argparse.Namespace) -> int:
    async def action(store: Store, account_id: int) -> None:
        scripts = await store.list_sieve_scripts(account_id)
        if not scripts:
            ctx.out(f"no sieve scripts for {args.address}")
        for sc in scripts:
            ctx.out(f"{sc.name}{'  (active)' if sc.active else ''}")

    return _run(ctx, args, action)


def activate(ctx: Context, args: argparse.Namespace) -> int:
    name = _name(args.name) if args.name else None

    async def action(store: Store, account_id: int) -> None:
        await store.set_active_sieve_script(account_id, name)
        ctx.out(f"active sieve script of {args.address}: {name or 'none'}")

    return _run(ctx, args, action)


def delete(ctx: Context, args: argparse.Namespace) -> int:
    name = _name(args.name)

    async def action(store: Store, account_id: int) -> None:
        active = await store.active_sieve_script(account_id)
        if active is not None and active.name == name:
            await store.set_active_sieve_script(account_id, None)
        await store.delete_sieve_script(account_id, name)
        ctx.out(f"deleted sieve script {name!r} of {args.address}")

    return _run(ctx, args, action)


def register(sub: Any, adder: Callable[..., argparse.ArgumentParser],
             group: Callable[..., Any]) -> None:
    """Add ``sieve put|get|list|activate|delete``."""
    sieve = group(sub, "sieve", "manage the Sieve filter scripts of an account")
    p = adder(sieve, "put", put, "store a Sieve script (checked first) and activate it",
              epilog="example:\n  mailstead sieve put alice@example.org main filters.sieve")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", help="the script, or - for standard input")
    p.add_argument("--inactive", action="store_true", help="store without activating")
    p = adder(sieve, "get", get, "print a script")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("name", metavar="NAME")
    p = adder(sieve, "list", list_, "list an account's scripts, marking the active one")
    p.add_argument("address", metavar="ADDRESS")
    p = adder(sieve, "activate", activate, "make a script the active one (no NAME: none)")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("name", metavar="NAME", nargs="?")
    p = adder(sieve, "delete", delete, "delete a script (deactivating it first)")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("name", metavar="NAME")
