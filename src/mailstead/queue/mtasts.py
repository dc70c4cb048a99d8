"""MTA-STS (RFC 8461): discover, fetch, cache and apply a recipient domain's TLS policy, and
TLS-RPT (RFC 8460) counters of what happened when we applied it.

The policy tells us which MX hosts may receive the domain's mail and whether TLS with a
certificate valid for the MX name is mandatory ("enforce") or only reported ("testing").
The routing layer filters MX hosts with ``MtaStsPolicy.matches``; the SMTP client enforces
the certificate; ``TlsRptCounters`` keeps the per-policy-domain tallies in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailstead.dns.resolver import DnsError, DnsTemporary, Resolver
from mailstead.observability.log import log_event, log_event_at
from mailstead.storage.interfaces import TlsResult

log = logging.getLogger(__name__)

# RFC 8461 section 3.2: max_age is at most 31557600 seconds (about a year).
MAX_AGE_LIMIT = 31_557_600
# RFC 8461 section 3.3: senders should bound the policy body (64 KiB) and the fetch time.
MAX_POLICY_BODY = 64 * 1024
MAX_HEADERS = 16 * 1024
_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_FIELD = re.compile(r"([A-Za-z0-9_]+):[ \t]*(.*?)[ \t]*")


class PolicyError(Exception):
    """A policy could not be fetched or parsed; ``result_type`` is the RFC 8460 section 4.3
    failure type to count (``sts-policy-fetch-error``, ``sts-policy-invalid``,
    ``sts-webpki-invalid``)."""

    def __init__(self, result_type: str, detail: str) -> None:
        super().__init__(f"{result_type}: {detail}")
        self.result_type = result_type
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MtaStsPolicy:
    """A parsed policy (RFC 8461 section 3.2) with the TXT ``id`` it was fetched under."""

    mode: str  # "enforce" | "testing" | "none"
    mx: tuple[str, ...]  # lower-case patterns, "*." allowed as the leftmost label only
    max_age: int
    id: str = ""
    fetched_at: float = 0.0

    def expires(self) -> float:
        return self.fetched_at + self.max_age

    def lines(self) -> tuple[str, ...]:
        """The policy as lines, the ``policy-string`` of a TLS report (RFC 8460 section
        4.4)."""
        return ("version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx),
                f"max_age: {self.max_age}")

    def matches(self, host: str) -> bool:
        """RFC 8461 section 4.1: an MX host matches a pattern exactly, or ``*.example.com``
        matches exactly one extra leftmost label (``mx.example.com``, not ``a.b.example.com``)."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_policy(text: str) -> MtaStsPolicy:
    """Parses a policy body; lines end in CRLF or LF (RFC 8461 section 3.2). Unknown keys are
    ignored; missing or invalid required keys raise PolicyError("sts-policy-invalid")."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            continue
        match = _FIELD.fullmatch(raw)
        if match is None:
            raise PolicyError("sts-policy-invalid", f"bad line {raw[:60]!r}")
        key, value = match.group(1), match.group(2)
        if key == "mx":
            pattern = value.lower().rstrip(".")
            if not pattern or "*" in pattern[1:] or (pattern.startswith("*") and
                                                     not pattern.startswith("*.")):
                raise PolicyError("sts-policy-invalid", f"bad mx pattern {value!r}")
            mx.append(pattern)
        else:
            fields.setdefault(key, value)  # RFC 8461 section 3.2: the first occurrence wins
    if fields.get("version") != "STSv1":
        raise PolicyError("sts-policy-invalid", "version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError("sts-policy-invalid", f"bad mode {mode!r}")
    max_age_text = fields.get("max_age", "")
    if not max_age_text.isdigit() or len(max_age_text) > 10:
        raise PolicyError("sts-policy-invalid", f"bad max_age {max_age_text!r}")
    max_age = min(int(max_age_text), MAX_AGE_LIMIT)
    if mode != "none" and not mx:
        raise PolicyError("sts-policy-invalid", "no mx patterns")
    return MtaStsPolicy(mode, tuple(mx), max_age)


def parse_txt(records: list[str]) -> str | None:
    """The ``id`` of the single ``v=STSv1`` TXT record (RFC 8461 section 3.1), or None when
    there is none, more than one, or it is malformed (all mean "no policy")."""
    ours = [r for r in records if r.startswith("v=STSv1")]
    if len(ours) != 1:
        return None
    fields: dict[str, str] = {}
    for part in ours[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    policy_id = fields.get("id", "")
    return policy_id if fields.get("v") == "STSv1" and _TXT_ID.fullmatch(policy_id) else None


class PolicyFetcher(Protocol):
    """Fetches the policy text of a domain; raises PolicyError."""

    async def fetch(self, domain: str) -> str: ...


class HttpsPolicyFetcher:
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 section 3.3) with a
    WebPKI-verified certificate for that name, no redirects, a size cap and a timeout.
    ``port`` and ``ssl_context`` (the trusted CAs) exist so tests can use a local server."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        port: int = 443,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._resolver = resolver
        self._port = port
        self._context = ssl_context or ssl.create_default_context()
        self._timeout = timeout

    async def fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        try:
            return await asyncio.wait_for(self._fetch(host), self._timeout)
        except TimeoutError as exc:
            raise PolicyError("sts-policy-fetch-error", f"{host}: timed out") from exc

    async def _fetch(self, host: str) -> str:
        try:
            addresses = await self._resolver.addresses(host)
        except DnsError as exc:
            raise PolicyError("sts-policy-fetch-error", str(exc)) from exc
        last = "no address"
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, self._port, ssl=self._context, server_hostname=host
                )
            except ssl.SSLCertVerificationError as exc:
                raise PolicyError("sts-webpki-invalid", f"{host}: {exc.verify_message}") from exc
            except (OSError, ssl.SSLError) as exc:
                last = f"{host}[{address}]: {exc}"
                continue
            try:
                request = (f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                           "User-Agent: Mailstead\r\nAccept: text/plain\r\n"
                           "Connection: close\r\n\r\n")
                writer.write(request.encode("ascii"))
                await writer.drain()
                raw = await reader.read(MAX_HEADERS + MAX_POLICY_BODY + 1)
                while raw and len(raw) <= MAX_HEADERS + MAX_POLICY_BODY:
                    more = await reader.read(MAX_HEADERS + MAX_POLICY_BODY + 1 - len(raw))
                    if not more:
                        break
                    raw += more
            except (OSError, ssl.SSLError) as exc:
                raise PolicyError("sts-policy-fetch-error", f"{host}: {exc}") from exc
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
            return _parse_http(host, raw)
        raise PolicyError("sts-policy-fetch-error", last)


def _parse_http(host: str, raw: bytes) -> str:
    """The body of a ``200 text/plain`` response; anything else is a fetch error."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEADERS:
        raise PolicyError("sts-policy-fetch-error", f"{host}: malformed HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1."):
        raise PolicyError("sts-policy-fetch-error", f"{host}: malformed status line")
    if status[1] != "200":
        # RFC 8461 section 3.3: redirects (3xx) MUST NOT be followed; only 200 is a policy.
        raise PolicyError("sts-policy-fetch-error", f"{host}: HTTP status {status[1]}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/plain":
        # RFC 8461 section 3.2: the policy is served as text/plain.
        raise PolicyError("sts-policy-invalid", f"{host}: content type {media or 'missing'}")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(host, body)
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit() or int(length) > len(body):
            raise PolicyError("sts-policy-fetch-error", f"{host}: truncated body")
        body = body[: int(length)]
    if len(body) > MAX_POLICY_BODY:
        raise PolicyError("sts-policy-invalid", f"{host}: policy larger than 64 KiB")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError("sts-policy-invalid", f"{host}: policy is not UTF-8") from exc


def _dechunk(host: str, body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, body = body.partition(b"\r\n")
        size_text = size_line.split(b";")[0].strip()
        if not sep or not size_text or len(size_text) > 8:
            raise PolicyError("sts-policy-fetch-error", f"{host}: bad chunked encoding")
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise PolicyError("sts-policy-fetch-error", f"{host}: bad chunk size") from exc
        if size == 0:
            return bytes(out)
        if len(body) < size + 2 or len(out) + size > MAX_POLICY_BODY:
            raise PolicyError("sts-policy-fetch-error", f"{host}: truncated chunked body")
        out += body[:size]
        body = body[size + 2 :]


@dataclass(slots=True)
class _Entry:
    policy: MtaStsPolicy | None
    checked_at: float


class MtaStsCache:
    """The policy of each recipient domain, refreshed as RFC 8461 section 5.1 describes:
    the TXT ``id`` is checked on every use (cheap, DNS-cached); the policy is fetched again
    only when the id changed or the cached copy expired. A failed TXT lookup or fetch falls
    back to an unexpired cached policy, so an attacker who blocks DNS or HTTPS cannot
    downgrade a domain we already know to plaintext."""

    def __init__(
        self,
        resolver: Resolver,
        fetcher: PolicyFetcher,
        *,
        clock: Callable[[], float] = time.time,
        tlsrpt: TlsRptCounters | None = None,
    ) -> None:
        self._resolver = resolver
        self._fetcher = fetcher
        self._clock = clock
        self._tlsrpt = tlsrpt
        self._cache: dict[str, MtaStsPolicy] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def policy(self, domain: str) -> MtaStsPolicy | None:
        """The domain's policy in force, or None when it has none (deliver as usual)."""
        domain = domain.lower().rstrip(".")
        lock = self._locks.setdefault(domain, asyncio.Lock())
        try:
            async with lock:  # one fetch per domain at a time, whatever the concurrency
                return await self._policy(domain)
        finally:
            if not lock.locked():  # nobody holds it: drop it, so the dict stays small
                self._locks.pop(domain, None)

    async def _policy(self, domain: str) -> MtaStsPolicy | None:
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires() <= now:
            del self._cache[domain]
            cached = None
        try:
            policy_id = parse_txt(await self._resolver.txt(f"_mta-sts.{domain}"))
        except DnsTemporary:
            return cached
        except DnsError:
            policy_id = None
        if policy_id is None:
            # RFC 8461 section 5.1: no TXT record, but a cached policy: keep using it.
            return cached
        if cached is not None and cached.id == policy_id:
            return cached
        try:
            policy = parse_policy(await self._fetcher.fetch(domain))
        except PolicyError as exc:
            log.warning("mta-sts policy fetch for %s failed: %s", domain, exc)
            if self._tlsrpt is not None:
                self._tlsrpt.failure(domain, "sts", exc.result_type)
            return cached
        policy = MtaStsPolicy(policy.mode, policy.mx, policy.max_age, policy_id, now)
        self._cache[domain] = policy
        log.info("mta-sts policy for %s: mode=%s id=%s max_age=%d", domain, policy.mode,
                 policy_id, policy.max_age)
        return policy


@dataclass(slots=True)
class TlsRptCounts:
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # RFC 8460 result type -> count


class TlsRptCounters:
    """Successful and failed TLS sessions per (policy domain, policy type), RFC 8460 section
    4.3's summary numbers; kept in memory and logged. The same sessions are also kept per UTC
    day, policy, MX host and receiving address until ``drain_results`` hands them to the
    store, the raw material of the daily reports (queue.tlsreport). ``policy_type`` is "sts"
    or "no-policy-found"."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._counts: dict[tuple[str, str], TlsRptCounts] = {}
        self._clock = clock
        self._results: dict[tuple[str, str, str, str, str, str, str], int] = {}

    def _entry(self, domain: str, policy_type: str) -> TlsRptCounts:
        return self._counts.setdefault((domain.lower(), policy_type), TlsRptCounts())

    def _result(self, domain: str, policy_type: str, result_type: str, policy: Sequence[str],
                mx_host: str, ip: str) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(self._clock()))
        key = (day, domain.lower(), policy_type, "\n".join(policy), result_type,
               mx_host.lower().rstrip("."), ip)
        self._results[key] = self._results.get(key, 0) + 1

    def success(self, domain: str, policy_type: str, *, policy: Sequence[str] = (),
                mx_host: str = "", ip: str = "") -> None:
        self._entry(domain, policy_type).successes += 1
        self._result(domain, policy_type, "", policy, mx_host, ip)

    def failure(self, domain: str, policy_type: str, result_type: str, *,
                policy: Sequence[str] = (), mx_host: str = "", ip: str = "") -> None:
        failures = self._entry(domain, policy_type).failures
        failures[result_type] = failures.get(result_type, 0) + 1
        self._result(domain, policy_type, result_type, policy, mx_host, ip)
        log_event_at(log, logging.WARNING, "tlsrpt.failure", domain=domain, policy=policy_type,
                     result=result_type)

    def drain_results(self) -> list[TlsResult]:
        """The per-day session counts gathered since the last call (then forgotten)."""
        results, self._results = self._results, {}
        return [TlsResult(*key, sessions=n) for key, n in results.items()]

    def restore_results(self, rows: Sequence[TlsResult]) -> None:
        """Puts back counts the store could not take, for the next ``drain_results``."""
        for r in rows:
            key = (r.day, r.policy_domain, r.policy_type, r.policy_string, r.result_type,
                   r.mx_host, r.receiving_ip)
            self._results[key] = self._results.get(key, 0) + r.sessions

    def snapshot(self) -> dict[tuple[str, str], TlsRptCounts]:
        return {k: TlsRptCounts(v.successes, dict(v.failures)) for k, v in self._counts.items()}

    def log_and_reset(self) -> dict[tuple[str, str], TlsRptCounts]:
        """Logs one structured line per (policy domain, policy type) with the RFC 8460
        section 4.4 summary numbers (``total-successful-session-count``,
        ``total-failure-session-count`` and the failures by result type), starts counting
        afresh, and returns what was logged. Nothing is logged when nothing was counted."""
        counts, self._counts = self._counts, {}
        for (domain, policy_type), c in sorted(counts.items()):
            log_event(
                log,
                "tlsrpt.summary",
                domain=domain,
                policy=policy_type,
                success=c.successes,
                failure=sum(c.failures.values()),
                results=",".join(f"{k}={v}" for k, v in sorted(c.failures.items())) or "none",
            )
        return counts
