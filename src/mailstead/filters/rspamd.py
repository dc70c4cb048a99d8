"""rspamd as the spam filter, over its HTTP protocol: ``POST /checkv2`` on the normal worker
(headers IP, Helo, From, Rcpt, User; a JSON answer with action, score and symbols) and
``POST /learnspam`` / ``/learnham`` on the controller.

The HTTP client is a small asyncio HTTP/1.1 one written here rather than httpx: rspamd runs on
loopback and the exchange is one request with Content-Length and one response per
connection, which takes 80 lines; a runtime dependency (with its own connection pools, TLS
and proxy logic) would be more code to trust than this, and httpx is only a test dependency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailstead.filters.pipeline import FilterContext
from mailstead.filters.spam import FilterUnavailable, SpamAction, SpamResult, Symbol, clean_symbol

log = logging.getLogger("mailstead.filters.rspamd")

TIMEOUT = 20.0
MAX_RESPONSE = 4 * 1024 * 1024  # a check result is a few KB; anything huge is garbage
MAX_HEAD = 64 * 1024
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")

# rspamd's actions (rspamd.com/doc/faq.html#what-are-rspamd-actions) mapped to ours. "greylist"
# only means "tempfail" when its greylist module really greylisted (symbol GREYLIST present):
# without that module's state a retry would be refused the same way for ever.
_ACTIONS = {
    "no action": SpamAction.NO_ACTION,
    "greylist": SpamAction.NO_ACTION,
    "add header": SpamAction.JUNK,
    "rewrite subject": SpamAction.JUNK,
    "soft reject": SpamAction.GREYLIST,
    "reject": SpamAction.REJECT,
}


class HttpError(Exception):
    """The HTTP exchange failed (connection, timeout, malformed or oversized answer)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An ``http://host:port`` base URL."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str, default_port: int) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"expected http://HOST[:PORT], got {url!r}")
        return cls(parts.hostname, parts.port or default_port)


def _header_value(value: str) -> str:
    # Values come from the client (HELO, addresses): no CR/LF may smuggle another header.
    return _UNSAFE.sub("", value)[:998]


async def http_post(
    endpoint: Endpoint,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    *,
    timeout: float = TIMEOUT,
) -> tuple[int, bytes]:
    """One ``POST`` over a fresh connection (``Connection: close``); (status, body)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {endpoint.host}:{endpoint.port}",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {_header_value(v)}" for k, v in headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                raise HttpError("response header too large")
            match = _STATUS.match(head)
            if match is None:
                raise HttpError(f"not an HTTP/1.x response: {head[:40]!r}")
            fields = {}
            for line in head.split(b"\r\n")[1:]:
                name, sep, value = line.partition(b":")
                if sep:
                    fields[name.strip().lower()] = value.strip()
            if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                data = await _read_chunked(reader)
            elif b"content-length" in fields:
                try:
                    length = int(fields[b"content-length"])
                except ValueError as exc:
                    raise HttpError("bad Content-Length") from exc
                if not 0 <= length <= MAX_RESPONSE:
                    raise HttpError(f"response body of {length} octets refused")
                data = await reader.readexactly(length)
            else:
                data = await reader.read(MAX_RESPONSE + 1)
                if len(data) > MAX_RESPONSE:
                    raise HttpError("response body too large")
            return int(match.group(1)), data
    except HttpError:
        raise
    except asyncio.LimitOverrunError as exc:
        raise HttpError("response header too large") from exc
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise HttpError(f"{endpoint.host}:{endpoint.port}: {type(exc).__name__} {exc}") from exc
    finally:
        if writer is not None:
            writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    # RFC 9112 section 7.1: chunk-size in hex, optional extensions, CRLF, data, CRLF.
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError as exc:
            raise HttpError("bad chunk size") from exc
        if size == 0:
            await reader.readuntil(b"\r\n")  # trailer section ends with an empty line
            return bytes(out)
        if size < 0 or len(out) + size > MAX_RESPONSE:
            raise HttpError("response body too large")
        out += await reader.readexactly(size)
        await reader.readexactly(2)


def parse_check(body: bytes) -> SpamResult:
    """A ``/checkv2`` JSON answer as a ``SpamResult``; raises FilterUnavailable on garbage."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FilterUnavailable("rspamd answered with invalid JSON") from exc
    if not isinstance(doc, dict):
        raise FilterUnavailable("rspamd answered with a JSON value that is not an object")
    action = doc.get("action")
    score = doc.get("score")
    if not isinstance(action, str) or action not in _ACTIONS:
        raise FilterUnavailable(f"rspamd answered with an unknown action {action!r}")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise FilterUnavailable("rspamd answered without a valid score")
    symbols: list[Symbol] = []
    raw = doc.get("symbols")
    if isinstance(raw, dict):
        for name, info in raw.items():
            value = info.get("score", 0.0) if isinstance(info, dict) else 0.0
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                value = 0.0
            if not math.isfinite(value):
                value = 0.0
            symbols.append(Symbol(clean_symbol(str(name)), float(value)))
    mapped = _ACTIONS[action]
    if action == "greylist" and any(s.name == "GREYLIST" for s in symbols):
        mapped = SpamAction.GREYLIST
    return SpamResult(round(float(score), 2), tuple(symbols), mapped)


class RspamdFilter:
    """A ``SpamFilter`` asking rspamd. ``controller`` (port 11334) takes learn requests;
    ``password`` is the controller's enable password when it is not trusting loopback."""

    name = "rspamd"

    def __init__(
        self,
        url: str,
        *,
        controller: str | None = None,
        password: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self._normal = Endpoint.parse(url, 11333)
        self._controller = (Endpoint.parse(controller, 11334) if controller
                            else Endpoint(self._normal.host, 11334))
        self._password = password
        self._timeout = timeout

    async def classify(self, ctx: FilterContext) -> SpamResult:
        headers = [("IP", ctx.session.client_ip)]
        if ctx.session.helo:
            headers.append(("Helo", ctx.session.helo))
        headers.append(("From", ctx.mail_from))  # "" is the null reverse-path
        headers += [("Rcpt", r) for r in ctx.recipients]
        if ctx.session.account is not None:
            headers.append(("User", ctx.session.account.address))
        try:
            status, body = await http_post(self._normal, "/checkv2", headers, ctx.data,
                                           timeout=self._timeout)
        except HttpError as exc:
            raise FilterUnavailable(f"rspamd: {exc}") from exc
        if status != 200:
            raise FilterUnavailable(f"rspamd answered HTTP {status}")
        return parse_check(body)

    async def learn(self, account_id: int, message: bytes, spam: bool) -> None:
        path = "/learnspam" if spam else "/learnham"
        headers = [("Password", self._password)] if self._password else []
        try:
            status, body = await http_post(self._controller, path, headers, message,
                                           timeout=self._timeout)
        except HttpError as exc:
            raise FilterUnavailable(f"rspamd controller: {exc}") from exc
        # rspamd had learned this very message already (208, or 404 with "already learned"
        # in rspamd 3.x): the goal is reached.
        already = status in (208, 404) and b"already learned" in body
        if status != 200 and not already:
            raise FilterUnavailable(
                f"rspamd {path} answered HTTP {status}: {body[:200]!r}")
        log.info("rspamd %s for account %d: HTTP %d", path, account_id, status)
