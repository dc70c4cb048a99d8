"""``mailstead doctor``: checks this installation from the outside in (listeners, certificate,
DNS, blocklists, outbound port 25, queue, disk, clock) and prints PASS/WARN/FAIL with the fix;
exit status 1 when anything FAILed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from mailstead.cli.context import Context
from mailstead.config.loader import load_config
from mailstead.diagnostics.doctor import run_doctor
from mailstead.diagnostics.model import Check, exit_status, render_json, render_text


def doctor(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    config = load_config(data_dir)

    async def go() -> list[Check]:
        store = await ctx.open_store(data_dir)
        try:
            return await run_doctor(config, store, timeout=args.timeout)
        finally:
            await store.close()

    checks = asyncio.run(go())
    ctx.stdout.write(render_json(checks) if args.json else render_text(checks))
    return exit_status(checks)


Adder = Callable[..., argparse.ArgumentParser]


def register(sub: Any, adder: Adder) -> None:
    """Add ``doctor``."""
    p = adder(
        sub, "doctor", doctor, "check this server and its DNS, and say how to fix problems",
        description="Check every listener (it answers like a mail server, with STARTTLS where "
        "expected), the certificate (name, chain, expiry, self-signed), DNS through [dns] "
        "(A/AAAA, MX, SPF, DKIM, DMARC, MTA-STS, SRV and autoconfig names, PTR), DNS "
        "blocklists ([doctor] dnsbl_zones), outbound port 25 ([doctor] probe_host), the queue, "
        "disk space and the clock ([doctor] time_server). Each line is PASS, WARN or FAIL "
        "with the fix; the exit status is 1 when anything FAILed.",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="per network step (default 10)")
