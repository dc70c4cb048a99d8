"""``mailstead user 2fa enable|disable|status|verify`` and ``user logins``.

``enable`` prints the secret, its ``otpauth://`` URI and a QR code drawn with text blocks,
then reads a first code from standard input: two-factor authentication takes effect only once
the authenticator app has proved it holds the secret. The ten recovery codes are shown once.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import segno

from mailstead.accounts.service import AccountService
from mailstead.accounts.twofactor import CodeCheck
from mailstead.cli.admin import run_service
from mailstead.cli.context import CommandError, Context


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read_code(ctx: Context, prompt: str) -> str:
    if ctx.stdin.isatty():
        ctx.stdout.write(prompt)
        ctx.stdout.flush()
    line = ctx.stdin.readline()
    if not line.strip():
        raise CommandError("no code given on standard input; nothing was changed")
    return line.strip()[:100]


def qr_text(uri: str) -> str:
    """The QR code of ``uri`` as lines of Unicode half blocks (two modules per character)."""
    out = io.StringIO()
    segno.make(uri, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def enable(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        setup = await svc.security.begin_two_factor(args.address)
        ctx.out(f"Two-factor authentication for {setup.address}")
        ctx.out("Scan this QR code with an authenticator app (or type the secret in):\n")
        ctx.stdout.write(qr_text(setup.uri))
        ctx.out(f"\nsecret: {setup.secret}")
        ctx.out(f"uri:    {setup.uri}\n")
        code = _read_code(ctx, "Code shown by the app: ")
        codes = await svc.security.confirm_two_factor(setup, code)
        ctx.out(f"two-factor authentication is on for {setup.address}.")
        ctx.out("Recovery codes (each works once; keep them somewhere safe, they are not "
                "shown again):")
        for item in codes:
            ctx.out(f"  {item}")
        ctx.out("Mail clients now need an app-specific password: "
                f"mailstead app-password add {setup.address} --name DEVICE")

    return run_service(ctx, args, action)


def disable(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        if await svc.security.disable_two_factor(args.address):
            ctx.out(f"two-factor authentication is off for {args.address}; app passwords "
                    "still work (revoke them with: mailstead app-password revoke)")
        else:
            ctx.out(f"two-factor authentication was not on for {args.address}")

    return run_service(ctx, args, action)


def status(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        enabled, left = await svc.security.two_factor_status(args.address)
        ctx.out(f"on, {left} recovery code(s) left" if enabled else "off")

    return run_service(ctx, args, action)


def verify(ctx: Context, args: argparse.Namespace) -> int:
    code = args.code or _read_code(ctx, "Code (or recovery code): ")
    result: list[CodeCheck] = []

    async def action(svc: AccountService) -> None:
        account = await svc.security.account(args.address)
        result.append(await svc.check_second_factor(account, code))

    run_service(ctx, args, action)
    if result[0] is CodeCheck.REUSED:
        raise CommandError("the code is not valid: it was already used; wait for the next one")
    if result[0] is not CodeCheck.OK:
        raise CommandError("the code is not valid (wrong, expired, already used, or "
                           "two-factor authentication is off)")
    ctx.out("valid")
    return 0


def logins(ctx: Context, args: argparse.Namespace) -> int:
    async def action(svc: AccountService) -> None:
        rows = await svc.security.logins(args.address, args.limit)
        if not rows:
            ctx.out(f"no logins recorded for {args.address}")
            return
        for r in rows:
            result = "ok" if r.success else "FAILED"
            app = f" app-password={_printable(r.app_password)!r}" if r.app_password else ""
            ctx.out(f"{_when(r.at)}  {result:6}  {r.protocol:5} {r.client_ip:39} "
                    f"{_printable(r.mechanism)} {r.reason}{app}")

    return run_service(ctx, args, action)


def _printable(text: str) -> str:
    """Client-supplied text without control characters for the terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


Adder = Callable[..., argparse.ArgumentParser]
Grouper = Callable[..., "argparse._SubParsersAction[argparse.ArgumentParser]"]


def register(users: Any, add: Adder, group: Grouper) -> None:
    """Add ``user 2fa ...`` and ``user logins`` to the ``user`` command group."""
    p = add(users, "logins", logins, "show recent login attempts of an account",
            description="Print the newest login attempts of ADDRESS (kept 90 days by default, "
            "[security] audit_retention): time, result, protocol, client address, mechanism, "
            "reason and the app password used.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (50)")
    tfa = group(users, "2fa", "two-factor authentication (TOTP) of an account")
    p = add(tfa, "enable", enable, "turn on two-factor authentication",
            description="Print a new TOTP secret, its otpauth:// URI and a QR code, then read "
            "the code the authenticator app shows from standard input; only a matching code "
            "turns two-factor authentication on. Prints ten one-time recovery codes. Mail "
            "clients then need app-specific passwords (mailstead app-password add).")
    p.add_argument("address", metavar="ADDRESS")
    p = add(tfa, "disable", disable, "turn off two-factor authentication")
    p.add_argument("address", metavar="ADDRESS")
    p = add(tfa, "status", status, "say whether two-factor authentication is on")
    p.add_argument("address", metavar="ADDRESS")
    p = add(tfa, "verify", verify, "check a TOTP or recovery code (a recovery code is used up)",
            description="Exit 0 and print 'valid' when CODE (or the first line of standard "
            "input) is a current TOTP code or an unused recovery code of ADDRESS; exit 1 "
            "otherwise. Each TOTP code and each recovery code is accepted once.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("code", metavar="CODE", nargs="?")
