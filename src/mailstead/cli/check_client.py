"""``mailstead check-client``: behaves like a mail client being set up for an address, on any
server, and reports what works, why the rest fails, and the settings to use."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast, get_args

from mailstead.cli.context import CommandError, Context
from mailstead.config.values import BadValue, parse_nameserver
from mailstead.core.secret import Secret
from mailstead.diagnostics.check_client import plan, render, render_json, run
from mailstead.diagnostics.discovery import discover
from mailstead.diagnostics.lookup import Lookup
from mailstead.diagnostics.probe import Credentials, ProbeSettings, Protocol, Security, Target
from mailstead.dns.resolver import DnsError

_TRY = re.compile(r"(imap|pop3|smtp):(\d{1,5}):(ssl|starttls|none)", re.IGNORECASE)


def _password(ctx: Context, args: argparse.Namespace) -> Secret | None:
    if args.password_stdin:
        line = ctx.stdin.readline().rstrip("\n").rstrip("\r")
        if not line:
            raise CommandError("no password on standard input")
        return Secret(line)
    if ctx.stdin.isatty():
        typed = ctx.getpass(f"Password for {args.email} (empty: do not test the login): ")
        return Secret(typed) if typed else None
    return None


def _ports(values: list[str]) -> dict[int, int]:
    out: dict[int, int] = {}
    for value in values:
        left, sep, right = value.partition("=")
        if not sep or not left.isdigit() or not right.isdigit() \
                or not 0 < int(left) < 65536 or not 0 < int(right) < 65536:
            raise CommandError(f"--port {value!r}: expected STANDARD=ACTUAL, e.g. 993=10993")
        out[int(left)] = int(right)
    return out


def _tries(values: list[str], host: str, address: str | None) -> list[Target]:
    out = []
    for value in values:
        match = _TRY.fullmatch(value)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise CommandError(f"--try {value!r}: expected PROTOCOL:PORT:SECURITY, e.g. "
                               "imap:993:ssl (security ssl, starttls or none)")
        protocol = match.group(1).lower()
        security = match.group(3).lower()
        assert protocol in get_args(Protocol)
        assert security in get_args(Security)
        out.append(Target(cast(Protocol, protocol), host, int(match.group(2)),
                          cast(Security, security), address))
    return out


async def _resolved(lookup: Lookup, targets: list[tuple[int, Target]]
                    ) -> list[tuple[int, Target]]:
    """With --nameserver, server names are resolved there too, not by the system: IPv4
    first, as a client on a network without IPv6 would end up using."""
    addresses: dict[str, str | None] = {}
    for host in {t.host for _, t in targets}:
        try:
            found = await lookup.addresses(host)
        except DnsError:
            addresses[host] = None
            continue
        addresses[host] = next((a for a in found if ":" not in a), found[0] if found else None)
    return [(std, replace(t, address=addresses.get(t.host) or t.address))
            for std, t in targets]


def check_client(ctx: Context, args: argparse.Namespace) -> int:
    email = args.email.strip()
    if email.count("@") != 1 or not all(email.split("@")):
        raise CommandError(f"--email {email!r}: expected a full address like alice@example.org")
    try:
        nameservers = [parse_nameserver(n) for n in args.nameserver or []]
    except BadValue as exc:
        raise CommandError(f"--nameserver: {exc}") from None
    if args.ca_file is not None and not Path(args.ca_file).is_file():
        raise CommandError(f"--ca-file {args.ca_file}: no such file")
    secret = _password(ctx, args)
    creds = Credentials(args.username or email, secret) if secret is not None else None
    settings = ProbeSettings(timeout=args.timeout,
                             ca_file=Path(args.ca_file) if args.ca_file else None,
                             source=args.source)
    ports = _ports(args.port or [])
    server = (args.server or "").strip().lower().rstrip(".")

    async def go() -> str:
        lookup = Lookup([(n.host, n.port) for n in nameservers] or None,
                        timeout=min(args.timeout, 5.0), lifetime=args.timeout)
        found = None
        if not server:
            found = await discover(email, lookup, timeout=args.timeout,
                                   ssl_context=settings.context(),
                                   autoconfig_urls=tuple(args.autoconfig_url or ()))
            if not found.targets:
                raise CommandError(
                    f"no settings found for {email.rpartition('@')[2]} (no autoconfig, no "
                    "SRV records, no mail./imap./smtp. names): give the server with --server")
        targets = plan(server, address=args.connect, ports=ports, discovered=found,
                       extra=_tries(args.try_ or [], server or email.rpartition("@")[2],
                                    args.connect))
        if nameservers and not args.connect:
            targets = await _resolved(lookup, targets)
        report = await run(email, targets, creds, settings)
        if found is not None:
            report.notes = found.notes
        status["ok"] = report.ok()
        return render_json(report) if args.json else render(report)

    status: dict[str, bool] = {}
    ctx.stdout.write(asyncio.run(go()))
    return 0 if status.get("ok") else 1


Adder = Callable[..., argparse.ArgumentParser]


def register(sub: Any, adder: Adder) -> None:
    """Add ``check-client``."""
    p = adder(
        sub, "check-client", check_client,
        "test the mail settings of an address like a mail client would, on any server",
        description="Find the servers of ADDRESS (autoconfig, then RFC 6186 SRV records, then "
        "common names like mail.DOMAIN) or use --server, try IMAP 993 SSL/TLS and 143 "
        "STARTTLS, POP3 995 and 110, SMTP 465, 587 and 25, and report what works and why "
        "the rest fails (refused, timed out, SSL/STARTTLS mismatch, certificate, wrong "
        "password, app password needed, blocked...), then the settings to use. The password "
        "is never sent unencrypted, and logins go one at a time: after the first refusal of "
        "the password it is not sent again (one typo costs one failed login). Exit status 0 "
        "when receiving and sending both work.",
        epilog="example:\n  echo 'secret' | mailstead check-client --email alice@example.org "
        "--password-stdin",
    )
    p.add_argument("--email", required=True, metavar="ADDRESS", help="the e-mail address")
    p.add_argument("--server", metavar="HOST", help="the server name (skips discovery)")
    p.add_argument("--username", metavar="NAME",
                   help="the user name to log in with (default: the address)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    p.add_argument("--connect", metavar="IP",
                   help="connect to this address instead of resolving the server name (the "
                   "certificate is still checked against the name)")
    p.add_argument("--source", metavar="IP",
                   help="connect from this local address (a server lets clients on its own "
                   "host log in without TLS, so check from an address others would use)")
    p.add_argument("--port", action="append", metavar="STANDARD=ACTUAL",
                   help="the service usually on port STANDARD is on ACTUAL (repeatable)")
    p.add_argument("--try", dest="try_", action="append", metavar="PROTOCOL:PORT:SECURITY",
                   help="also try exactly this setting, e.g. imap:10993:ssl (repeatable)")
    p.add_argument("--nameserver", action="append", metavar="IP[:PORT]",
                   help="DNS server for discovery (default: the system's)")
    p.add_argument("--autoconfig-url", action="append", metavar="URL",
                   help="fetch the autoconfig document from URL instead of the usual places")
    p.add_argument("--ca-file", metavar="FILE",
                   help="trust these certificate authorities instead of the system's")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="per network step (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
