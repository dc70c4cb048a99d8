"""``mailstead security share-key|fetch-key``: hand the installation's security key to a node
that joins, through the store, sealed by a passphrase the admin types on both nodes.

The key protects second factors and app passwords (accounts/keys.py); every node needs the
same one, and accounts/installkey.py refuses to run a node whose key differs from the store's
record of it.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from mailstead.accounts import installkey
from mailstead.cli.context import Context


def share_key(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    passphrase = ctx.read_password(args.passphrase_stdin)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            await installkey.share_key(store, data_dir, passphrase)
        finally:
            await store.close()

    asyncio.run(go())
    ctx.out("the security key is in the store, sealed by the passphrase; on a new node run "
            "`mailstead security fetch-key --passphrase-stdin` (or `init ... "
            "--key-passphrase-stdin`), then `mailstead security forget-key` here")
    return 0


def forget_key(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            await store.set_sealed_security_key(None)
        finally:
            await store.close()

    asyncio.run(go())
    ctx.out("the sealed copy of the security key is gone from the store")
    return 0


def fetch_key(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    passphrase = ctx.read_password(args.passphrase_stdin)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            await installkey.fetch_key(store, data_dir, passphrase)
        finally:
            await store.close()

    asyncio.run(go())
    ctx.out(f"wrote {data_dir / 'security.key'}: this node has the installation's key")
    return 0


def register(sec: Any, adder: Any) -> None:
    """Add ``security share-key|forget-key|fetch-key`` to the ``security`` group."""
    p = adder(sec, "share-key", share_key,
              "leave this node's security key in the store, sealed by a passphrase",
              description="Seal this node's security key (which protects second factors and "
              "app passwords) with a passphrase of at least 12 characters and keep it in the "
              "store, so that a node joining the installation can fetch it. Without the "
              "passphrase the sealed copy is useless; remove it with forget-key once the new "
              "nodes have it.",
              epilog="example:\n  mailstead security share-key --passphrase-stdin "
              "< passphrase.txt")
    _passphrase(p)
    adder(sec, "forget-key", forget_key, "remove the sealed security key from the store")
    p = adder(sec, "fetch-key", fetch_key,
              "install the security key shared in the store on this node",
              description="Open the security key an admin shared with share-key, using its "
              "passphrase, and write it to DIR/security.key (mode 0600). Refused when the "
              "node already has another key.",
              epilog="example:\n  mailstead security fetch-key --passphrase-stdin "
              "< passphrase.txt")
    _passphrase(p)


def _passphrase(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-stdin", action="store_true",
                   help="read the passphrase from the first line of standard input")
