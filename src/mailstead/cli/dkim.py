"""``mailstead dkim list|rotate|activate|remove DOMAIN``: the DKIM keys of a local domain.

Rotation is two steps unless asked otherwise: ``rotate`` adds a new key pair that does not
sign yet and prints its DNS records; once they are published, ``activate`` switches signing
to it. The old keys stay in the store and in ``mailstead dns`` so mail signed with them
still verifies while it is in transit or re-checked, until ``remove`` deletes a retired one
(never a key that signs).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mailstead.accounts.names import DomainNameError, domain_forms
from mailstead.cli.context import CommandError, Context
from mailstead.mailauth.dkim import activate_dkim_keys, remove_dkim_key, rotate_dkim_keys
from mailstead.mailauth.records import Record, dkim_record_value, txt_rdata
from mailstead.storage.interfaces import DkimKey, Store

StoreAction = Callable[[Store], Awaitable[None]]


def local_domain(text: str) -> tuple[str, str]:
    """(ascii, unicode) forms of a domain argument. Raises CommandError."""
    try:
        return domain_forms(text)
    except DomainNameError as exc:
        raise CommandError(str(exc)) from None


def with_store(ctx: Context, args: argparse.Namespace, domain: str, action: StoreAction) -> int:
    """Open the store, check that ``domain`` is local, run ``action``, close the store."""
    data_dir = ctx.existing_data_dir(args.data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            if not await store.is_local_domain(domain):
                raise CommandError(
                    f"{domain} is not a local domain (add it first: mailstead domain add {domain})"
                )
            await action(store)
        finally:
            await store.close()

    asyncio.run(go())
    return 0


def _describe(key: DkimKey) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(key.created_at))
    state = "signing" if key.active else "published, not signing"
    return f"{key.selector}\t{key.algorithm}\tcreated {day}\t{state}"


def dkim_list(ctx: Context, args: argparse.Namespace) -> int:
    _, domain = local_domain(args.domain)

    async def action(store: Store) -> None:
        keys = await store.dkim_keys(domain)
        if not keys:
            ctx.out(f"{domain} has no DKIM keys (create them: mailstead dkim rotate {domain})")
        for key in keys:
            ctx.out(_describe(key))

    return with_store(ctx, args, domain, action)


def dkim_rotate(ctx: Context, args: argparse.Namespace) -> int:
    ascii_name, domain = local_domain(args.domain)

    async def action(store: Store) -> None:
        before = {k.selector for k in await store.dkim_keys(domain)}
        keys = await rotate_dkim_keys(store, domain, time.time(), activate=args.activate)
        new = [k for k in keys if k.selector not in before]
        ctx.out(f"new DKIM keys for {domain}:")
        for key in new:
            ctx.out("  " + _describe(key))
        ctx.out("publish these records (mailstead dns prints them all):")
        for key in new:
            name = f"{key.selector}._domainkey.{ascii_name}."
            ctx.out(Record(name, "TXT", txt_rdata(dkim_record_value(key))).line())
        if all(k.active for k in new):
            ctx.out("the new keys sign from now on; the old ones stay published")
        else:
            ctx.out(
                "once they are visible in DNS, switch signing to them with:\n"
                f"  mailstead dkim activate {domain}"
            )

    return with_store(ctx, args, domain, action)


def dkim_activate(ctx: Context, args: argparse.Namespace) -> int:
    _, domain = local_domain(args.domain)

    async def action(store: Store) -> None:
        selectors = await activate_dkim_keys(store, domain, args.selectors)
        ctx.out(f"{domain} now signs with {', '.join(selectors)}")

    return with_store(ctx, args, domain, action)


def dkim_remove(ctx: Context, args: argparse.Namespace) -> int:
    ascii_name, domain = local_domain(args.domain)

    async def action(store: Store) -> None:
        key = await remove_dkim_key(store, domain, args.selector)
        ctx.out(f"removed DKIM key {key.selector} ({key.algorithm}) of {domain}")
        ctx.out(f"its DNS record can go too: {key.selector}._domainkey.{ascii_name}. TXT")

    return with_store(ctx, args, domain, action)


def register_remove(keys: argparse._SubParsersAction[argparse.ArgumentParser],
                    add: Callable[..., Any]) -> None:
    """Adds ``dkim remove DOMAIN SELECTOR`` to the ``dkim`` group of cli/main.py."""
    p = add(
        keys,
        "remove",
        dkim_remove,
        "delete a retired DKIM key of a domain",
        description="Delete the key SELECTOR of DOMAIN (see 'mailstead dkim list'). A key that "
        "still signs is refused: switch signing to other keys first with 'mailstead dkim "
        "rotate' or 'activate'. Remove its DNS record afterwards.",
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("selector", metavar="SELECTOR")
