"""What every HTTP response and request goes through: security headers, a request body limit
and deadline, one structured log line per request, and the HTTP-to-HTTPS redirect.

Written as plain ASGI (no Starlette middleware classes) so it wraps the whole application,
error pages included. The form reader used by every account and admin page is here too: it
refuses anything but a small URL-encoded body and checks the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from mailstead.observability.log import log_event, log_event_at

log = logging.getLogger("mailstead.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Nothing we serve takes more than a small XML request (autodiscover); larger bodies are
# refused before they are read (RFC 9110 section 15.5.14: 413 Content Too Large).
MAX_BODY = 64 * 1024
# RFC 9112 section 3 recommends supporting request lines of at least 8000 octets; longer
# targets get 414 (RFC 9110 section 15.5.15), a larger header section 431 (RFC 6585 section 5).
MAX_TARGET = 8192
MAX_HEADERS = 16 * 1024
# A body must arrive within this time, or the request gets 408 (RFC 9110 section 15.5.9).
BODY_TIMEOUT = 20.0

# Content-Security-Policy (CSP Level 3): only our own resources; no framing (clickjacking),
# no plugins, forms post only to us, no <base> rewriting.
CSP = (
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
# RFC 6797 section 6.1: HSTS only over a secure transport; one year, not includeSubDomains
# (the mail hostname's parent domain may host sites we know nothing about).
HSTS = "max-age=31536000"
_BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # for browsers without CSP frame-ancestors
    (b"referrer-policy", b"no-referrer"),  # addresses in our URLs stay here
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    """The headers added to every response; HSTS only on HTTPS."""
    headers = list(_BASE_HEADERS)
    if https:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", []) if key.lower() == name]


async def _plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = (text + "\n").encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
            *headers,
        ],
    })
    await send({"type": "http.response.body", "body": body})


class WebGuard:
    """ASGI wrapper: reads the body within ``max_body`` bytes and ``body_timeout`` seconds,
    adds the security headers, turns a crash into a plain 500, and logs each request as
    ``http.request`` (path only: query strings are not logged)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        listener: str,
        https: bool,
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self._app = app
        self._listener = listener
        self._headers = security_headers(https)
        self._max_body = max_body
        self._body_timeout = body_timeout

    @property
    def app(self) -> ASGIApp:
        """The wrapped application (tests enumerate its routes)."""
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        started = time.monotonic()
        state: dict[str, Any] = {"status": 0, "bytes": 0}

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
                ours = {name for name, _ in self._headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                message = {**message, "headers": [*kept, *self._headers]}
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if isinstance(body, tuple):
                status, why = body
                await _plain(guarded_send, status, why, [])
                return
            replay = _Replay(body, receive)
            await self._app(scope, replay, guarded_send)
        except Exception:
            log.exception("web request failed (listener=%s path=%s)", self._listener,
                          scope.get("path", ""))
            if not state["status"]:
                await _plain(guarded_send, 500, "Internal error; the details are logged.", [])
        finally:
            client = scope.get("client") or ("", 0)
            log_event(
                log, "http.request", listener=self._listener, client=client[0],
                method=scope.get("method", ""), path=scope.get("path", ""),
                status=state["status"], bytes=state["bytes"],
                ms=round((time.monotonic() - started) * 1000, 1),
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | tuple[int, str]:
        """The whole request body, or (status, reason) when it must be refused."""
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        if target > MAX_TARGET:
            return 414, "URI too long."
        if sum(len(k) + len(v) + 4 for k, v in scope.get("headers", [])) > MAX_HEADERS:
            return 431, "Request header fields too large."
        lengths = _header(scope, b"content-length")
        if lengths:
            # RFC 9110 section 8.6: the server parsed it already; refuse oversize at once.
            try:
                declared = int(lengths[0])
            except ValueError:
                return 400, "Bad Content-Length."
            if declared > self._max_body:
                return 413, f"Request body too large (limit {self._max_body} bytes)."
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self._body_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except TimeoutError:
                return 408, "The request body did not arrive in time."
            if message["type"] == "http.disconnect":
                return 400, "The client went away."
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return 413, f"Request body too large (limit {self._max_body} bytes)."
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Replay:
    """A ``receive`` that yields the already-read body once, then defers to the real one
    (which reports the disconnect)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


# A Host header we may echo into a Location: a DNS name, an IPv4 address or a bracketed IPv6
# literal, with an optional port (RFC 9110 section 7.2; RFC 3986 section 3.2.2).
_HOST_RE = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?"
)


def redirect_host(host_header: bytes | None, fallback: str) -> str:
    """The host part for an HTTPS redirect: the request's own Host when it is well-formed
    (clients fetch autoconfig.DOMAIN, not our hostname), else ``fallback``."""
    if host_header:
        try:
            text = host_header.decode("ascii")
        except UnicodeDecodeError:
            return fallback
        match = _HOST_RE.fullmatch(text)
        if match:
            return match.group("host").lower()
    return fallback


def https_redirect(https_port: int, fallback_host: str) -> ASGIApp:
    """The plain-HTTP app when HTTPS also listens: every request is sent to the same path on
    HTTPS (301 for GET/HEAD; 308 keeps the method and body of a POST, RFC 9110 section
    15.4.9). ACME challenges are not served (certificates come from outside: [tls])."""
    port = "" if https_port == 443 else f":{https_port}"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        hosts = _header(scope, b"host")
        host = redirect_host(hosts[0] if len(hosts) == 1 else None, fallback_host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        raw = scope.get("raw_path") or scope.get("path", "/").encode()
        path = raw.decode("latin-1") if raw.startswith(b"/") else "/"
        query = scope.get("query_string", b"").decode("latin-1")
        location = f"https://{host}{port}{path}" + (f"?{query}" if query else "")
        status = 301 if scope.get("method") in ("GET", "HEAD") else 308
        body = b"Moved to HTTPS.\n"
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        })
        await send({"type": "http.response.body", "body": body})

    return app


def log_slow_client(listener: str, client: str, what: str) -> None:
    """One line when the server closes a connection that was too slow (header deadline)."""
    log_event_at(log, logging.INFO, "http.timeout", listener=listener, client=client, what=what)


# ---------------------------------------------------------------------------------------------
# HTML forms


FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 64
MAX_FIELD = 4096  # characters of one value; no form of ours needs more
CSRF_FIELD = "csrf"


class FormRefused(Exception):
    """A form that must not be acted on; ``status`` is the HTTP answer (400, 403, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Form:
    """The fields of one URL-encoded form (HTML 5, section 4.10.21.6). A field may appear
    once, except those named in ``multi`` (checkbox groups)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return list(self._fields.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return name in self._fields


def parse_form(
    content_type: str, body: bytes, *, multi: frozenset[str] = frozenset()
) -> Form:
    """Parses a POSTed form. Raises FormRefused for another media type (415, RFC 9110
    section 15.5.16), bytes that are not UTF-8 or not form syntax, a repeated field (two
    values could be checked on one and used on the other), or too many or too long fields."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        raise FormRefused(415, "Send the form as application/x-www-form-urlencoded.")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=MAX_FIELDS, separator="&")
    except (UnicodeDecodeError, ValueError):
        raise FormRefused(400, "The form data is malformed.") from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        if len(value) > MAX_FIELD or len(name) > 64:
            raise FormRefused(400, f"The form field {name[:64]!r} is too long.")
        if "\x00" in value:
            raise FormRefused(400, "The form data contains a NUL character.")
        if name in fields and name not in multi:
            raise FormRefused(400, f"The form field {name!r} is given more than once.")
        fields.setdefault(name, []).append(value)
    return Form(fields)


def csrf_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of a form's CSRF token with the session's."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
