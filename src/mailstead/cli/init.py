"""``mailstead init``: a new data directory with a config, a store, a domain and a certificate.

Everything is validated before anything is written, and a failure half-way removes what was
created, so a retry starts clean (init refuses a non-empty directory). With ``--store
postgresql://...`` the config points at that database and the domain is created there; a
database another node initialised already is joined (its domain is kept as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
from pathlib import Path

from mailstead.accounts import installkey
from mailstead.accounts.keys import KEY_FILE, read_key_file
from mailstead.accounts.names import DomainNameError, normalise_domain
from mailstead.accounts.service import AccountService
from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.config.model import CONFIG_FILE_NAME, StoreConfig
from mailstead.config.template import dev_listen, render_config, standard_listen
from mailstead.config.values import BadValue, parse_dsn, parse_hostname
from mailstead.core.certs import generate_self_signed
from mailstead.core.errors import AlreadyExists
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import Store


def _prepare_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CommandError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise CommandError(
            f"{path} is not empty; refusing to initialise over existing files "
            "(choose a new directory)"
        )
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # it will hold the private key and all mail


def _write_config(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean(path: Path) -> None:
    """Remove what init created inside ``path`` (it was empty when init started)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def _join_key(
    store: Store, data_dir: Path, key_file: Path | None, passphrase: Secret | None
) -> None:
    """Installs the installation's key from a copied file or from the copy an admin sealed
    in the store; with neither, a joining node gets none (and init says so)."""
    if key_file is not None:
        await installkey.install_key(store, data_dir, read_key_file(key_file))
    elif passphrase is not None:
        await installkey.fetch_key(store, data_dir, passphrase)


def parse_store(value: str | None) -> StoreConfig:
    """``--store``: "sqlite" (the default, embedded in the data directory) or a PostgreSQL
    connection URI."""
    if value is None or value.strip().lower() == "sqlite":
        return StoreConfig()
    try:
        dsn = parse_dsn(value)
    except BadValue as exc:
        raise CommandError(f"--store: {exc}") from None
    if not dsn:
        raise CommandError('--store: expected "sqlite" or a URI like postgresql://USER@HOST/DB')
    return StoreConfig(backend="postgresql", dsn=dsn)


def init(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.data_dir(args.data_dir)
    try:
        hostname = parse_hostname(args.hostname)
    except BadValue as exc:
        raise CommandError(f"--hostname: {exc}") from None
    try:
        domain = normalise_domain(args.domain)
    except DomainNameError as exc:
        raise CommandError(f"--domain: {exc}") from None
    store_config = parse_store(args.store)
    key_file = Path(args.key_file) if getattr(args, "key_file", None) else None
    if key_file is not None and not key_file.is_file():
        raise CommandError(f"--key-file: {key_file} is not a readable file")
    passphrase = ctx.read_password(True) if getattr(args, "key_passphrase_stdin", False) else None
    listen = dev_listen() if args.dev else standard_listen()
    _prepare_dir(data_dir)
    try:
        _write_config(
            data_dir / CONFIG_FILE_NAME, render_config(hostname, listen, store_config)
        )
        config = load_config(data_dir)
        loopback = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
        generate_self_signed(
            hostname, config.tls.cert, config.tls.key, ip_addresses=loopback if args.dev else ()
        )

        async def create_store() -> bool:
            """Creates the domain and the security key; True when a shared database had the
            domain already (this node joins, and gets the installation's key)."""
            store = await ctx.open_store(data_dir)
            try:
                try:
                    await AccountService(store).add_domain(domain)
                except AlreadyExists:
                    # Only a shared database can hold the domain before init: another node
                    # made it, and this one joins the installation.
                    if not store.networked:
                        raise
                    await _join_key(store, data_dir, key_file, passphrase)
                    return True
                if key_file is None and passphrase is None:
                    await installkey.create_key(store, data_dir)
                else:
                    await _join_key(store, data_dir, key_file, passphrase)
            finally:
                await store.close()
            return False

        joined = asyncio.run(create_store())
    except BaseException:
        _clean(data_dir)
        raise
    if joined:
        ctx.out(
            f"Initialised {data_dir} for {hostname}, joining the installation in the "
            f"database (it serves {domain} already)."
        )
        if not (data_dir / KEY_FILE).exists():
            ctx.out(
                "This node does not have the installation's security key yet, and serve "
                "refuses to start without it: on a node that has it run `mailstead security "
                "share-key --passphrase-stdin`, then here `mailstead security fetch-key "
                f"--passphrase-stdin --data-dir {data_dir}` (or copy its security.key to "
                f"{data_dir}, mode 0600)."
            )
    else:
        ctx.out(f"Initialised {data_dir} for {hostname}, with local domain {domain}.")
    ctx.out("Next steps:")
    ctx.out(f"  mailstead user add you@{domain} --admin --data-dir {data_dir}")
    ctx.out(f"  (postmaster@{domain}, abuse@{domain} and the report addresses of mailstead dns "
            "reach the first administrator unless an alias says otherwise)")
    ctx.out(f"  mailstead serve --data-dir {data_dir}")
    if not args.dev:
        ctx.out(
            "The certificate in tls/ is self-signed: for real use set [tls] cert and key in "
            f"{data_dir / CONFIG_FILE_NAME} (e.g. Let's Encrypt)."
        )
    return 0
