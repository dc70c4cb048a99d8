"""Daily SMTP TLS reports (RFC 8460) about our outbound sessions, for every recipient domain
that asks for them with an ``_smtp._tls`` TXT record.

``TlsReporter.send_day`` takes one UTC day's session counts from the store (the queue workers
put them there, queue.mtasts.TlsRptCounters), builds the RFC 8460 section 4 JSON of each
policy domain, gzips it and sends it to each ``rua``: ``mailto:`` through the normal outbound
queue as a multipart/report (section 5.3; DKIM-signed by the workers like all our mail),
``https:`` as a POST (section 3). A store mark makes each (day, domain) report go out once,
whichever node or command builds it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

from mailstead.config.model import Config
from mailstead.core.address import AddressError, parse_address
from mailstead.dns.resolver import DnsError, DnsTemporary, Resolver
from mailstead.observability.log import log_event
from mailstead.storage.interfaces import Store, TlsResult

log = logging.getLogger("mailstead.queue.tlsreport")

# RFC 8460 section 3: the record starts with this version; rua= lists the report URIs.
VERSION = "v=TLSRPTv1"
MAX_RUA = 5  # more destinations than this in one record are ignored (a hostile record)
HTTPS_TIMEOUT = 60.0
# RFC 8460 section 5.3: the media type of the gzip'd JSON report.
GZIP_TYPE = "application/tlsrpt+gzip"


def parse_tlsrpt_record(records: Sequence[str]) -> tuple[str, ...]:
    """The ``rua`` URIs (mailto: and https: only) of the single ``v=TLSRPTv1`` TXT record
    (RFC 8460 section 3); none when there is no such record, several, or no usable URI."""
    ours = [r for r in records if r.strip().startswith(VERSION)]
    if len(ours) != 1:
        return ()
    fields: dict[str, str] = {}
    for part in ours[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    if fields.get("v") != "TLSRPTv1":
        return ()
    uris = [u.strip() for u in fields.get("rua", "").split(",") if u.strip()]
    usable = [u for u in uris if u.lower().startswith(("mailto:", "https://"))]
    return tuple(usable[:MAX_RUA])


def mailto_address(uri: str) -> str | None:
    """The address of a ``mailto:`` URI (no query; RFC 8460 section 3 allows none), or None
    when it is not one we can send to."""
    text = uri[len("mailto:"):].split("?", 1)[0].strip()
    try:
        address = parse_address(urllib.parse.unquote(text))
    except AddressError:
        return None
    return None if address.is_address_literal else str(address)


def report_json(day: str, domain: str, rows: Sequence[TlsResult], *, organization: str,
                contact: str, report_id: str) -> dict[str, Any]:
    """The report of ``domain`` for ``day`` (RFC 8460 section 4.4): one policy entry per
    applied policy with its summary and failure details."""
    groups: dict[tuple[str, str], list[TlsResult]] = {}
    for r in rows:
        groups.setdefault((r.policy_type, r.policy_string), []).append(r)
    policies: list[dict[str, Any]] = []
    for (policy_type, policy_string), results in groups.items():
        lines = policy_string.split("\n") if policy_string else []
        policy: dict[str, Any] = {"policy-type": policy_type, "policy-string": lines,
                                  "policy-domain": domain}
        mx = [line[4:] for line in lines if line.startswith("mx: ")]
        if mx:
            policy["mx-host"] = mx
        details: list[dict[str, Any]] = []
        for r in results:
            if not r.result_type:
                continue
            detail: dict[str, Any] = {"result-type": r.result_type}
            if r.receiving_ip:
                detail["receiving-ip"] = r.receiving_ip
            if r.mx_host:
                detail["receiving-mx-hostname"] = r.mx_host
            detail["failed-session-count"] = r.sessions
            details.append(detail)
        entry: dict[str, Any] = {
            "policy": policy,
            "summary": {
                "total-successful-session-count":
                    sum(r.sessions for r in results if not r.result_type),
                "total-failure-session-count": sum(r.sessions for r in results if r.result_type),
            },
        }
        if details:
            entry["failure-details"] = details
        policies.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }


def report_message(report: dict[str, Any], gz: bytes, *, domain: str, submitter: str,
                   sender: str, rcpts: Sequence[str], now: float) -> bytes:
    """The report as mail (RFC 8460 section 5.3): multipart/report; report-type="tlsrpt"
    with the TLS-Report-Domain and TLS-Report-Submitter fields and the RFC's Subject."""
    report_id = report["report-id"]
    day = report["date-range"]["start-datetime"][:10]
    begin = int(datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp())
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg["From"] = sender
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg.attach(MIMEText(
        f"This is an SMTP TLS report (RFC 8460) for {domain} about {day} (UTC), from "
        f"{submitter}.\n", "plain", "us-ascii"))
    # RFC 8460 section 5.1: submitter!policy-domain!begin-timestamp!end-timestamp.json.gz
    filename = f"{submitter}!{domain}!{begin}!{begin + 86399}.json.gz"
    part = MIMEApplication(gz, "tlsrpt+gzip", name=filename)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    msg.attach(part)
    return msg.as_bytes(policy=SMTP)


class Injector(Protocol):
    """Puts a message into the store for local accounts and the outbound queue
    (queue.dsn.Notifier)."""

    async def inject(self, data: bytes, mail_from: str, accounts: dict[int, str],
                     remote: Sequence[str]) -> str: ...


def _post(url: str, body: bytes, context: ssl.SSLContext, timeout: float) -> int:
    """POSTs the gzip'd report (RFC 8460 section 3); the HTTP status."""
    if not url.lower().startswith("https://"):
        raise ValueError(f"not an https URL: {url[:80]}")  # RFC 8460 section 3: https only
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 (https)
                                     headers={"Content-Type": GZIP_TYPE,
                                              "User-Agent": "Mailstead"})
    try:
        with urllib.request.urlopen(  # noqa: S310 (checked https above)
                request, timeout=timeout, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass(slots=True)
class DaySummary:
    """What ``send_day`` did: reports sent by domain, domains without a record, errors."""

    sent: dict[str, list[str]] = field(default_factory=dict)  # domain -> destinations
    not_asked: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class TlsReporter:
    """Builds and sends the reports of one day (see the module docstring)."""

    def __init__(self, store: Store, resolver: Resolver, injector: Injector, *,
                 hostname: str, organization: str = "", contact: str = "",
                 https_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._resolver = resolver
        self._injector = injector
        self._hostname = hostname.lower().rstrip(".")
        self._organization = organization or self._hostname
        self._contact = contact
        self._https_context = https_context or ssl.create_default_context()
        self._clock = clock

    async def _sender(self) -> str:
        """``[tls_reports] contact``, else tls-reports@ the first local domain."""
        if self._contact:
            return self._contact
        domains = sorted(await self._store.list_domains())
        return f"tls-reports@{domains[0] if domains else self._hostname}"

    async def send_day(self, day: str) -> DaySummary:
        """Sends the report of ``day`` ("YYYY-MM-DD", UTC) to every domain that asks for one
        and has not had it yet."""
        summary = DaySummary()
        by_domain: dict[str, list[TlsResult]] = {}
        for row in await self._store.tls_results(day):
            by_domain.setdefault(row.policy_domain, []).append(row)
        for domain, rows in sorted(by_domain.items()):
            try:
                rua = parse_tlsrpt_record(await self._resolver.txt(f"_smtp._tls.{domain}"))
            except DnsTemporary as exc:
                summary.errors.append(f"{domain}: {exc}")  # asked again at the next round
                continue
            except DnsError:
                rua = ()
            if not rua:
                summary.not_asked.append(domain)
                continue
            if not await self._store.claim_tls_report(day, domain, self._clock()):
                summary.already.append(domain)
                continue
            try:
                summary.sent[domain] = await self._send(day, domain, rows, rua)
            except Exception as exc:  # one domain's failure must not stop the others
                log.warning("tls report for %s failed", domain, exc_info=True)
                summary.errors.append(f"{domain}: {exc}")
        log_event(log, "tlsrpt.day", day=day, sent=len(summary.sent),
                  not_asked=len(summary.not_asked), errors=len(summary.errors))
        return summary

    async def _send(self, day: str, domain: str, rows: Sequence[TlsResult],
                    rua: Sequence[str]) -> list[str]:
        sender = await self._sender()
        report = report_json(day, domain, rows, organization=self._organization,
                             contact=sender, report_id=f"{day}.{domain}@{self._hostname}")
        gz = gzip.compress(json.dumps(report, indent=1).encode("utf-8"), mtime=0)
        done: list[str] = []
        mailto = [a for a in (mailto_address(u) for u in rua if u.lower().startswith(
            "mailto:")) if a is not None]
        if mailto:
            data = report_message(report, gz, domain=domain, submitter=self._hostname,
                                  sender=sender, rcpts=mailto, now=self._clock())
            await self._injector.inject(data, sender, {}, mailto)
            done += [f"mailto:{a}" for a in mailto]
        for url in (u for u in rua if u.lower().startswith("https://")):
            status = await asyncio.to_thread(_post, url, gz, self._https_context,
                                             HTTPS_TIMEOUT)
            if 200 <= status < 300:
                done.append(url)
            else:
                log_event(log, "tlsrpt.post_failed", url=url, status=status)
        return done


def utc_day(when: float) -> str:
    """The UTC day of Unix time ``when``, "YYYY-MM-DD"."""
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def reporter_from_config(config: Config, store: Store, resolver: Resolver, *,
                         on_queued: Callable[[], None] | None = None) -> TlsReporter:
    """The reporter of ``[tls_reports]``, queueing mail reports through a ``Notifier`` (whose
    ``on_queued`` wakes the queue workers) and POSTing with ``[queue] tls_ca_file``'s CAs."""
    from mailstead.queue.dsn import Notifier

    ca = config.queue.tls_ca_file
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    return TlsReporter(store, resolver, Notifier(store, config.hostname, on_queued=on_queued),
                       hostname=config.hostname, organization=config.tls_reports.organization,
                       contact=config.tls_reports.contact, https_context=context)
