"""``mailstead tlsrpt send|show``: SMTP TLS reports (RFC 8460). ``send`` sends one day's
reports about our outbound sessions now (the server does it daily for the day before);
``show`` prints the reports other senders mailed to our ``tls-reports@`` addresses."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Callable

from mailstead.cli.context import CommandError, Context
from mailstead.config.loader import load_config
from mailstead.dns.resolver import DnsPythonResolver
from mailstead.queue.tlsreport import reporter_from_config, utc_day

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(text: str | None) -> str:
    if text is None:
        return utc_day(time.time() - 86400)
    if text == "today":
        return utc_day(time.time())
    if not _DAY.fullmatch(text):
        raise CommandError(f"--day: expected YYYY-MM-DD or today, got {text!r}")
    return text


def tlsrpt_send(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)
    config = load_config(data_dir)
    day = _day(args.day)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            nameservers = [(ns.host, ns.port) for ns in config.dns.nameservers] or None
            reporter = reporter_from_config(config, store, DnsPythonResolver(nameservers))
            summary = await reporter.send_day(day)
        finally:
            await store.close()
        for domain, where in sorted(summary.sent.items()):
            ctx.out(f"{day} {domain}: report sent to {', '.join(where) or 'nobody'}")
        for domain in summary.already:
            ctx.out(f"{day} {domain}: sent before, not again")
        for domain in summary.not_asked:
            ctx.out(f"{day} {domain}: publishes no _smtp._tls record, no report")
        for error in summary.errors:
            ctx.out(f"{day} {error} (not sent)")
        ctx.out(f"{len(summary.sent)} report(s) sent for {day}")

    asyncio.run(go())
    return 0


def _describe(report_json: str) -> list[str]:
    """Plain-words lines for each policy of a stored report (bad fields are skipped)."""
    try:
        report = json.loads(report_json)
    except ValueError:
        return []
    lines: list[str] = []
    for entry in report.get("policies", []) if isinstance(report, dict) else []:
        if not isinstance(entry, dict):
            continue
        policy = entry.get("policy")
        summary = entry.get("summary")
        policy = policy if isinstance(policy, dict) else {}
        summary = summary if isinstance(summary, dict) else {}
        lines.append(f"  policy {policy.get('policy-type', '?')} for "
                     f"{policy.get('policy-domain', '?')}: "
                     f"{summary.get('total-successful-session-count', 0)} sessions with TLS, "
                     f"{summary.get('total-failure-session-count', 0)} failed")
        for detail in entry.get("failure-details", []) or []:
            if isinstance(detail, dict):
                where = detail.get("receiving-mx-hostname") or detail.get("receiving-ip") or "?"
                lines.append(f"    {detail.get('failed-session-count', '?')} x "
                             f"{detail.get('result-type', '?')} at {where}")
    return lines


def tlsrpt_show(ctx: Context, args: argparse.Namespace) -> int:
    data_dir = ctx.existing_data_dir(args.data_dir)

    async def go() -> None:
        store = await ctx.open_store(data_dir)
        try:
            reports = await store.received_tls_reports(args.limit)
        finally:
            await store.close()
        if not reports:
            ctx.out("no TLS reports received")
        for r in reports:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.received_at))
            ctx.out(f"{r.organization} about {r.policy_domain}, {r.start_time} to {r.end_time} "
                    f"(report {r.report_id}, received {when} UTC): {r.successes} sessions "
                    f"with TLS, {r.failures} failed")
            for line in _describe(r.report):
                ctx.out(line)

    asyncio.run(go())
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[..., argparse.ArgumentParser],
    group: Callable[..., argparse._SubParsersAction[argparse.ArgumentParser]],
) -> None:
    """Adds the ``tlsrpt`` command group to the parser tree of cli/main.py."""
    tlsrpt = group(sub, "tlsrpt", "SMTP TLS reports (RFC 8460): send ours, show those received")
    p = add(
        tlsrpt,
        "send",
        tlsrpt_send,
        "send one day's TLS reports about our outgoing mail now",
        description="For each recipient domain our mail went to on DAY (UTC) that publishes "
        "an _smtp._tls TXT record, send the RFC 8460 report of our TLS sessions to its "
        "rua addresses (mail through the outbound queue, or an HTTPS POST). The server does "
        "this once a day for the day before; a report already sent is not sent again.",
        epilog="examples:\n  mailstead tlsrpt send\n  mailstead tlsrpt send --day 2026-12-07\n",
    )
    p.add_argument("--day", metavar="YYYY-MM-DD", default=None,
                   help="the UTC day to report (default: yesterday; 'today' for so far)")
    p = add(
        tlsrpt,
        "show",
        tlsrpt_show,
        "print the TLS reports other senders mailed to us",
        description="The reports mailed to tls-reports@ your domains (the rua= that "
        "mailstead dns publishes), newest first: who sent it, the period, and how many "
        "sessions to us used TLS or failed, and why.",
        epilog="examples:\n  mailstead tlsrpt show\n  mailstead tlsrpt show --limit 5\n",
    )
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
