"""The settings card: what a person types into a mail client to use an account, and the
``mailstead client-setup`` command (``mailstead card`` is its older name) that prints it.

The settings themselves come from ``mailstead.web.client_settings``, shared with the card web
page, autoconfig, autodiscover and the Apple profile, so all of them say the same thing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

from mailstead.accounts.service import AccountService
from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.config.model import Config
from mailstead.core.errors import NotFound
from mailstead.web.client_settings import (
    ClientSettings,
    Endpoint,
    certificate_info,
    client_settings,
    notes,
    web_base_url,
)
from mailstead.web.mobileconfig import ProfileError, ProfileSigner, build_profile


def _lines(title: str, endpoints: tuple[Endpoint, ...]) -> list[str]:
    if not endpoints:
        return []
    out = [title]
    for ep in endpoints:
        port = "(any free port)" if ep.port == 0 else str(ep.port)
        out.append(f"  Server: {ep.host:<24} Port: {port:<6} Security: {ep.security_label}")
    return [*out, ""]


def render_settings(
    config: Config, settings: ClientSettings, password: str | None = None,
    bound: Mapping[str, int] | None = None,
) -> str:
    """The card as text for ``settings``; ``password`` is shown when given (the demo account),
    otherwise the card says to use the password that was set."""
    out = [
        f"Mail client settings for {settings.address}",
        "",
        f"  Username: {settings.username}   (always the full address)",
        f"  Password: {password if password is not None else '(the one you set)'}",
        "",
    ]
    out += _lines("Incoming mail: IMAP (recommended; keeps mail on the server)", settings.imap)
    out += _lines("Incoming mail: POP3 (downloads mail to one device)", settings.pop3)
    outgoing = _lines(
        "Outgoing mail: SMTP (authentication: normal password, same username and password)",
        settings.smtp,
    )
    out += outgoing or ["Outgoing mail: no submission listener is configured", ""]
    web = web_base_url(config, bound)
    if web is not None and not web.endswith(":0"):
        out += ["Your account on the web (change the password, turn on two-factor login, make "
                "app passwords for mail clients):", f"  {web}/account", ""]
    hints = notes(config)
    fingerprint: str | None = None
    try:
        cert = certificate_info(config.tls.cert)
    except (OSError, ValueError):
        hints.append("The certificate file cannot be read right now; check [tls] cert.")
    else:
        if cert.self_signed:
            hints.append(
                "The certificate is self-signed (made by mailstead init): your mail client "
                "will warn once; accept it only if its SHA-256 fingerprint is the one below."
            )
            fingerprint = cert.fingerprint
    if hints:
        out.append("Notes")
        for note in hints:
            out += textwrap.wrap(note, 88, initial_indent="  - ", subsequent_indent="    ")
        if fingerprint is not None:
            out.append(f"    {fingerprint}")
    return "\n".join(out).rstrip("\n") + "\n"


def render_card(
    config: Config,
    address: str,
    password: str | None = None,
    bound: Mapping[str, int] | None = None,
) -> str:
    """The card for ``address`` (an account's address as stored)."""
    return render_settings(config, client_settings(config, address, bound), password, bound)


def _password(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read the password: {exc}") from None
    return text.splitlines()[0] if text else ""


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` (mode 0644) through a temporary file, so a reader never sees half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def client_setup(ctx: Context, args: argparse.Namespace) -> int:
    """``mailstead client-setup ADDRESS [--mobileconfig FILE] [--password-file FILE]``."""
    data_dir = ctx.existing_data_dir(args.data_dir)
    config = load_config(data_dir)
    password = _password(getattr(args, "password_file", None))

    async def find() -> str:
        store = await ctx.open_store(data_dir)
        try:
            account = await AccountService(store).get_user(args.address)
        finally:
            await store.close()
        if account is None:
            raise NotFound(f"no account {args.address} (add it with: mailstead user add)")
        return account.address

    address = asyncio.run(find())
    settings = client_settings(config, address)
    ctx.stdout.write(render_settings(config, settings, password))
    target: str | None = getattr(args, "mobileconfig", None)
    if target is not None:
        try:
            profile = build_profile(settings)
        except ProfileError as exc:
            raise CommandError(str(exc)) from None
        signed = ProfileSigner(config.tls.cert, config.tls.key).sign(profile)
        _write_atomic(Path(target), signed.data)
        how = "signed with the server certificate" if signed.signed else (
            "unsigned: the certificate is self-signed, so the device will say 'Not Verified'"
        )
        ctx.out(f"wrote the Apple configuration profile to {target} ({how})")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``client-setup`` and of its alias ``card``."""
    parser.add_argument("address", metavar="ADDRESS")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="show the password from the first line of FILE (for the demo account)",
    )
    parser.add_argument(
        "--mobileconfig",
        metavar="FILE",
        help="also write an Apple configuration profile (iPhone, iPad, macOS Mail) to FILE",
    )
