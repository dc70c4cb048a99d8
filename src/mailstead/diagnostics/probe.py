"""Connects to one mail server port the way a mail client would (SSL/TLS from the first byte,
STARTTLS, or plain) and logs in, collecting what happened for ``classify`` to explain.

Hostile or broken servers are expected: every read has a timeout and a line-length cap, and
``probe`` never raises; whatever goes wrong ends as a ``ProbeResult`` with a cause.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailstead.core.certs import client_context
from mailstead.core.secret import Secret
from mailstead.diagnostics.classify import (
    Cause,
    LoginReply,
    classify_connect_error,
    classify_login,
    classify_tls_error,
    greeting_protocol,
    greeting_refusal,
    looks_like_tls,
)
from mailstead.diagnostics.model import printable

Protocol = Literal["imap", "pop3", "smtp", "managesieve"]
Security = Literal["ssl", "starttls", "none"]

# RFC 5321 section 4.5.3.1.5 allows SMTP reply lines of 512 octets, RFC 9051 and RFC 2449
# have no hard limit for responses; 8 KiB per line and 200 lines per reply is generous for
# capability lists and still bounds what a hostile server can make us buffer.
MAX_LINE = 8192
MAX_LINES = 200


class _Ended(Exception):
    """The probe has its answer; carries the cause and detail to report."""

    def __init__(self, cause: Cause, detail: str = "") -> None:
        super().__init__(cause.value)
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Target:
    """One setting to try: protocol, server name (checked against the certificate), port and
    security; ``address`` connects elsewhere than ``host`` (like curl's --connect-to)."""

    protocol: Protocol
    host: str
    port: int
    security: Security
    address: str | None = None

    def label(self) -> str:
        security = {"ssl": "SSL/TLS", "starttls": "STARTTLS", "none": "none"}[self.security]
        return f"{self.protocol.upper()} {self.host}:{self.port} {security}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The user name and password to log in with."""

    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What trying ``target`` found: a cause and the server's own words (or the error)."""

    target: Target
    cause: Cause
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Timeouts and trust: ``ca_file`` replaces the system's authorities when set."""

    timeout: float = 10.0
    ca_file: Path | None = None
    verify: bool = True  # False: the doctor checks the certificate on its own
    # Servers slow failed logins down on purpose (Dovecot: 2 s, doubling to 15 s; ours:
    # [security] failure_delay): the answer to a login gets this long, not ``timeout``.
    login_timeout: float = 30.0
    # The local address to connect from (a machine with several; the server lets its own
    # host send passwords before TLS, so a check from there would not see what others see).
    source: str | None = None

    def context(self, *, verify: bool = True) -> ssl.SSLContext:
        """A client TLS context; unverified only for the "does this port speak TLS" test."""
        if not verify or not self.verify:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return client_context(self.ca_file)


class _Conn:
    """A connection read line by line with a timeout per read and a cap per line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.buffer = b""

    async def first_bytes(self) -> bytes:
        """Wait for the first data; raises TimeoutError or _Ended(CLOSED)."""
        chunk = await asyncio.wait_for(self.reader.read(MAX_LINE), self.timeout)
        if not chunk:
            raise _Ended(Cause.CLOSED)
        self.buffer += chunk
        return self.buffer

    async def line(self) -> bytes:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise _Ended(Cause.PROTOCOL_ERROR, f"a line longer than {MAX_LINE} bytes")
            chunk = await asyncio.wait_for(self.reader.read(MAX_LINE), self.timeout)
            if not chunk:
                raise _Ended(Cause.CLOSED, "the server closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        if len(line) > MAX_LINE:
            raise _Ended(Cause.PROTOCOL_ERROR, f"a line longer than {MAX_LINE} bytes")
        return line.rstrip(b"\r")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def start_tls(self, ctx: ssl.SSLContext, server_hostname: str) -> None:
        if self.buffer:
            # RFC 3207 section 5 / RFC 2595 section 4: nothing may follow the "go ahead".
            raise _Ended(Cause.PROTOCOL_ERROR, "the server sent data after agreeing to TLS")
        try:
            await asyncio.wait_for(
                self.writer.start_tls(ctx, server_hostname=server_hostname), self.timeout
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise _Ended(classify_tls_error(exc), _tls_detail(exc)) from None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


def _tls_detail(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "no answer to the TLS handshake"
    return printable(str(exc) or type(exc).__name__)


def _text(line: bytes) -> str:
    return printable(line.decode("utf-8", "replace"))


async def _connect(target: Target, timeout: float, source: str | None) -> _Conn:
    host = target.address or target.host
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, target.port,
                                    local_addr=(source, 0) if source else None), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise _Ended(classify_connect_error(exc), printable(str(exc) or "timed out")) from None
    return _Conn(reader, writer, timeout)


async def _connect_tls(target: Target, settings: ProbeSettings) -> _Conn:
    """Connect with TLS from the first byte (RFC 8314 section 3.3). The handshake must start
    on a fresh socket: a greeting read before it would be lost to the TLS layer."""
    host = target.address or target.host
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, target.port, ssl=settings.context(),
                                    server_hostname=target.host,
                                    local_addr=(settings.source, 0) if settings.source else None,
                                    ssl_handshake_timeout=settings.timeout),
            settings.timeout * 2,
        )
    except ssl.SSLError as exc:
        raise _Ended(classify_tls_error(exc), _tls_detail(exc)) from None
    except TimeoutError:
        # Either the connect or the handshake got no answer: a plain connect tells which.
        plain = await _connect(target, settings.timeout, settings.source)
        await plain.close()
        raise _Ended(Cause.DROPPED, "no answer to the TLS handshake") from None
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _Ended(Cause.TLS_FAILED, _tls_detail(exc)) from None
    except OSError as exc:
        raise _Ended(classify_connect_error(exc), printable(str(exc))) from None
    return _Conn(reader, writer, settings.timeout)


async def _plain_greeting(target: Target, settings: ProbeSettings) -> bytes | None:
    """The first line a fresh plain connection gets within the timeout, or None."""
    try:
        conn = await _connect(target, settings.timeout, settings.source)
    except _Ended:
        return None
    try:
        return await conn.line()
    except (_Ended, OSError, TimeoutError):
        return None
    finally:
        await conn.close()


async def _speaks_tls(target: Target, settings: ProbeSettings) -> bool:
    """Whether a fresh connection completes a TLS handshake (certificate not checked)."""
    try:
        conn = await _connect(target, settings.timeout, settings.source)
    except _Ended:
        return False
    try:
        await conn.start_tls(settings.context(verify=False), target.host)
        return True
    except (_Ended, OSError, TimeoutError):
        return False
    finally:
        await conn.close()


async def _open(target: Target, settings: ProbeSettings) -> tuple[_Conn, bytes]:
    """Connect (and handshake for SSL/TLS) and read the greeting line."""
    if target.security == "ssl":
        try:
            conn = await _connect_tls(target, settings)
        except _Ended as ended:
            if ended.cause in (Cause.EXPECTS_STARTTLS, Cause.TLS_FAILED, Cause.DROPPED):
                greeting = await _plain_greeting(target, settings)
                if greeting is not None and greeting_protocol(greeting) is not None:
                    raise _Ended(Cause.EXPECTS_STARTTLS,
                                 f"the port greets in plain text: {_text(greeting)}") from None
            raise
    else:
        conn = await _connect(target, settings.timeout, settings.source)
    try:
        try:
            first = await conn.first_bytes()
        except TimeoutError:
            if target.security != "ssl" and await _speaks_tls(target, settings):
                raise _Ended(Cause.EXPECTS_SSL,
                             "no greeting, but a TLS handshake succeeds") from None
            raise _Ended(Cause.DROPPED, f"no greeting within {settings.timeout:g} s") from None
        if looks_like_tls(first):
            raise _Ended(Cause.EXPECTS_SSL, "the server sent TLS records, not a greeting")
        greeting = await conn.line()
    except BaseException:
        await conn.close()
        raise
    kind = greeting_protocol(greeting)
    if kind != target.protocol:
        await conn.close()
        other = kind.upper() if kind else "something that is not a mail protocol"
        raise _Ended(Cause.WRONG_PROTOCOL, f"this port speaks {other}: {_text(greeting)}")
    if greeting_refusal(target.protocol, greeting):
        await conn.close()
        reply = LoginReply(False, "", _text(greeting))
        cause = Cause.BLOCKED if classify_login(reply) is Cause.BLOCKED else Cause.REJECTED
        raise _Ended(cause, _text(greeting))
    return conn, greeting


# ---------------------------------------------------------------------------------------------
# SMTP (RFC 5321, RFC 3207 STARTTLS, RFC 4954 AUTH)

async def _smtp_reply(conn: _Conn) -> tuple[int, list[str]]:
    lines: list[str] = []
    for _ in range(MAX_LINES):
        line = await conn.line()
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise _Ended(Cause.PROTOCOL_ERROR, f"not an SMTP reply: {_text(line)}")
        lines.append(line[4:].decode("utf-8", "replace"))
        if line[3:4] != b"-":
            return int(line[:3]), lines
    raise _Ended(Cause.PROTOCOL_ERROR, f"an SMTP reply longer than {MAX_LINES} lines")


async def _ehlo(conn: _Conn) -> dict[str, str]:
    sock = conn.writer.get_extra_info("sockname")
    ip = sock[0] if isinstance(sock, tuple) else "127.0.0.1"
    # RFC 5321 section 4.1.4: without a name of our own, an address literal.
    literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
    await conn.send(f"EHLO {literal}\r\n".encode("ascii"))
    code, lines = await _smtp_reply(conn)
    if code != 250:
        raise _Ended(Cause.PROTOCOL_ERROR, f"EHLO: {code} {printable(' '.join(lines))}")
    ext: dict[str, str] = {}
    for line in lines[1:]:
        keyword, _, params = line.partition(" ")
        ext[keyword.upper()] = params.upper()
    return ext


def _b64(data: str) -> bytes:
    return base64.b64encode(data.encode("utf-8"))


def _smtp_login_reply(code: int, lines: list[str]) -> LoginReply:
    text = printable(" ".join(lines))
    enhanced = text.split(" ", 1)[0] if text[:1].isdigit() and "." in text[:8] else ""
    return LoginReply(code == 235, f"{code} {enhanced}".strip(), text, temporary=code // 100 == 4)


async def _smtp(conn: _Conn, target: Target, creds: Credentials | None,
                settings: ProbeSettings) -> tuple[Cause, str]:
    ext = await _ehlo(conn)
    if target.security == "starttls":
        if "STARTTLS" not in ext:
            return Cause.NO_STARTTLS, "EHLO does not list STARTTLS"
        await conn.send(b"STARTTLS\r\n")
        code, lines = await _smtp_reply(conn)
        if code != 220:
            return Cause.NO_STARTTLS, f"STARTTLS: {code} {printable(' '.join(lines))}"
        await conn.start_tls(settings.context(), target.host)
        ext = await _ehlo(conn)
    elif target.security == "none":
        if "AUTH" in ext:
            return Cause.PLAINTEXT_LOGIN, f"AUTH {ext['AUTH']} offered without TLS"
        if "STARTTLS" in ext:
            return Cause.LOGIN_BEFORE_TLS, "AUTH is offered only after STARTTLS"
        return Cause.NO_AUTH, "EHLO lists no AUTH"
    if "AUTH" not in ext:
        return Cause.NO_AUTH, "EHLO lists no AUTH"
    if creds is None:
        return Cause.LOGIN_NOT_TESTED, f"AUTH {ext['AUTH']}"
    mechanisms = ext["AUTH"].split()
    secret = creds.password.reveal()
    conn.timeout = max(settings.timeout, settings.login_timeout)
    if "PLAIN" in mechanisms or "LOGIN" not in mechanisms:
        blob = _b64(f"\0{creds.username}\0{secret}").decode("ascii")
        await conn.send(f"AUTH PLAIN {blob}\r\n".encode("ascii"))
        code, lines = await _smtp_reply(conn)
    else:
        await conn.send(b"AUTH LOGIN\r\n")
        code, lines = await _smtp_reply(conn)
        for value in (creds.username, secret):
            if code != 334:
                break
            await conn.send(_b64(value) + b"\r\n")
            code, lines = await _smtp_reply(conn)
    reply = _smtp_login_reply(code, lines)
    with contextlib.suppress(Exception):
        await conn.send(b"QUIT\r\n")
    return classify_login(reply), f"{code} {reply.text}"


# ---------------------------------------------------------------------------------------------
# IMAP (RFC 9051 / RFC 3501; STARTTLS section 6.2.1, LOGINDISABLED, RFC 5530 response codes)

def _imap_code(text: str) -> tuple[str, str]:
    if text.startswith("["):
        end = text.find("]")
        if end > 0:
            return text[1:end].split(" ", 1)[0].upper(), text[end + 1 :].strip()
    return "", text


async def _imap_command(conn: _Conn, tag: str, command: bytes) -> tuple[str, str, list[str]]:
    """Send ``command``; (status, rest of the tagged line, untagged lines)."""
    await conn.send(tag.encode("ascii") + b" " + command + b"\r\n")
    untagged: list[str] = []
    for _ in range(MAX_LINES):
        line = _text(await conn.line())
        if line.startswith(tag + " "):
            status, _, rest = line[len(tag) + 1 :].partition(" ")
            return status.upper(), rest, untagged
        if line.startswith("+"):
            return "+", line[1:].strip(), untagged
        if line.upper().startswith("* BYE"):
            raise _Ended(Cause.CLOSED, line)
        untagged.append(line)
    raise _Ended(Cause.PROTOCOL_ERROR, f"more than {MAX_LINES} lines without a tagged answer")


async def _imap_caps(conn: _Conn, tag: str) -> set[str]:
    status, rest, untagged = await _imap_command(conn, tag, b"CAPABILITY")
    if status != "OK":
        raise _Ended(Cause.PROTOCOL_ERROR, f"CAPABILITY: {status} {rest}")
    caps: set[str] = set()
    for line in untagged:
        if line.upper().startswith("* CAPABILITY "):
            caps.update(word.upper() for word in line.split()[2:])
    return caps


def _quoted(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8") + b'"'


async def _imap(conn: _Conn, target: Target, creds: Credentials | None,
                settings: ProbeSettings) -> tuple[Cause, str]:
    caps = await _imap_caps(conn, "c1")
    if target.security == "starttls":
        if "STARTTLS" not in caps:
            return Cause.NO_STARTTLS, "CAPABILITY does not list STARTTLS"
        status, rest, _ = await _imap_command(conn, "c2", b"STARTTLS")
        if status != "OK":
            return Cause.NO_STARTTLS, f"STARTTLS: {status} {rest}"
        await conn.start_tls(settings.context(), target.host)
        caps = await _imap_caps(conn, "c3")
    elif target.security == "none":
        if "LOGINDISABLED" in caps:
            return Cause.LOGIN_BEFORE_TLS, "CAPABILITY lists LOGINDISABLED"
        return Cause.PLAINTEXT_LOGIN, "LOGIN is allowed without TLS"
    if creds is None:
        return Cause.LOGIN_NOT_TESTED, ""
    secret = creds.password.reveal()
    conn.timeout = max(settings.timeout, settings.login_timeout)
    if "AUTH=PLAIN" in caps:
        blob = _b64(f"\0{creds.username}\0{secret}")
        if "SASL-IR" in caps:  # RFC 4959: the response on the command line
            status, rest, _ = await _imap_command(conn, "c4", b"AUTHENTICATE PLAIN " + blob)
        else:
            status, rest, _ = await _imap_command(conn, "c4", b"AUTHENTICATE PLAIN")
            if status == "+":
                await conn.send(blob + b"\r\n")
                status, rest, _ = await _imap_command_tail(conn, "c4")
    else:
        status, rest, _ = await _imap_command(
            conn, "c4", b"LOGIN " + _quoted(creds.username) + b" " + _quoted(secret)
        )
    code, text = _imap_code(rest)
    reply = LoginReply(status == "OK", code, text, temporary=code == "UNAVAILABLE")
    with contextlib.suppress(Exception):
        await conn.send(b"c5 LOGOUT\r\n")
    return classify_login(reply), f"{status} {rest}".strip()


async def _imap_command_tail(conn: _Conn, tag: str) -> tuple[str, str, list[str]]:
    for _ in range(MAX_LINES):
        line = _text(await conn.line())
        if line.startswith(tag + " "):
            status, _, rest = line[len(tag) + 1 :].partition(" ")
            return status.upper(), rest, []
    raise _Ended(Cause.PROTOCOL_ERROR, "no tagged answer to AUTHENTICATE")


# ---------------------------------------------------------------------------------------------
# POP3 (RFC 1939; RFC 2449 CAPA and response codes; RFC 2595 STLS)

async def _pop3_caps(conn: _Conn) -> set[str] | None:
    await conn.send(b"CAPA\r\n")
    first = _text(await conn.line())
    if not first.upper().startswith("+OK"):
        return None
    caps: set[str] = set()
    for _ in range(MAX_LINES):
        line = _text(await conn.line())
        if line == ".":
            return caps
        caps.add(line.upper())
    raise _Ended(Cause.PROTOCOL_ERROR, f"a CAPA list longer than {MAX_LINES} lines")


def _pop3_reply(line: str) -> LoginReply:
    ok = line.upper().startswith("+OK")
    rest = line.split(" ", 1)[1] if " " in line else ""
    code, text = _imap_code(rest)
    return LoginReply(ok, code, text, temporary=code in ("SYS/TEMP", "IN-USE"))


async def _pop3(conn: _Conn, target: Target, creds: Credentials | None,
                settings: ProbeSettings) -> tuple[Cause, str]:
    caps = await _pop3_caps(conn)
    if target.security == "starttls":
        if caps is not None and "STLS" not in caps:
            return Cause.NO_STARTTLS, "CAPA does not list STLS"
        await conn.send(b"STLS\r\n")
        answer = _text(await conn.line())
        if not answer.upper().startswith("+OK"):
            return Cause.NO_STARTTLS, f"STLS: {answer}"
        await conn.start_tls(settings.context(), target.host)
        caps = await _pop3_caps(conn)
    elif target.security == "none":
        # A user name is not secret: the answer to USER tells whether a password would be
        # taken here, without sending one (RFC 2595 section 2.1 lets servers refuse).
        await conn.send(b"USER check-client\r\n")
        reply = _pop3_reply(_text(await conn.line()))
        with contextlib.suppress(Exception):
            await conn.send(b"QUIT\r\n")
        if reply.ok:
            return Cause.PLAINTEXT_LOGIN, "USER accepted without TLS"
        return Cause.LOGIN_BEFORE_TLS, reply.text
    if creds is None:
        return Cause.LOGIN_NOT_TESTED, ""
    secret = creds.password.reveal()
    conn.timeout = max(settings.timeout, settings.login_timeout)
    use_sasl = caps is not None and "USER" not in caps and any(
        c.startswith("SASL") and "PLAIN" in c.split() for c in caps
    )
    if use_sasl:
        blob = _b64(f"\0{creds.username}\0{secret}")
        await conn.send(b"AUTH PLAIN " + blob + b"\r\n")
        line = _text(await conn.line())
    else:
        await conn.send(b"USER " + creds.username.encode("utf-8") + b"\r\n")
        line = _text(await conn.line())
        if line.upper().startswith("+OK"):
            await conn.send(b"PASS " + secret.encode("utf-8") + b"\r\n")
            line = _text(await conn.line())
    reply = _pop3_reply(line)
    with contextlib.suppress(Exception):
        await conn.send(b"QUIT\r\n")
    return classify_login(reply), line


# ---------------------------------------------------------------------------------------------
# ManageSieve (RFC 5804: capability lines then OK, section 1.7; STARTTLS section 2.2)

def _sieve_status(line: str) -> LoginReply | None:
    """An OK/NO/BYE line as a login reply (response code in parentheses, section 1.3), or
    None for a capability line."""
    word, _, rest = line.partition(" ")
    if word.upper() not in ("OK", "NO", "BYE"):
        return None
    code = ""
    if rest.startswith("("):
        end = rest.find(")")
        if end > 0:
            code, rest = rest[1:end].strip('"').upper(), rest[end + 1 :].strip()
    return LoginReply(word.upper() == "OK", code, rest.strip('"'),
                      temporary=code in ("TRYLATER", "UNAVAILABLE"))


async def _sieve_caps(conn: _Conn, first: str | None = None) -> dict[str, str]:
    """The capability lines up to the closing OK: ``"NAME" ["value"]``."""
    caps: dict[str, str] = {}
    line = first
    for _ in range(MAX_LINES):
        if line is None:
            line = _text(await conn.line())
        status = _sieve_status(line)
        if status is not None:
            if not status.ok:
                raise _Ended(Cause.PROTOCOL_ERROR, f"capabilities: {line}")
            return caps
        name, _, value = line.partition(" ")
        caps[name.strip('"').upper()] = value.strip().strip('"')
        line = None
    raise _Ended(Cause.PROTOCOL_ERROR, f"more than {MAX_LINES} capability lines")


async def _managesieve(conn: _Conn, target: Target, creds: Credentials | None,
                       settings: ProbeSettings) -> tuple[Cause, str]:
    # ``_open`` consumed the first capability line; the rest follow up to OK.
    caps = await _sieve_caps(conn)
    if target.security == "starttls":
        if "STARTTLS" not in caps:
            return Cause.NO_STARTTLS, "the capabilities do not list STARTTLS"
        await conn.send(b"STARTTLS\r\n")
        answer = _text(await conn.line())
        reply = _sieve_status(answer)
        if reply is None or not reply.ok:
            return Cause.NO_STARTTLS, f"STARTTLS: {answer}"
        await conn.start_tls(settings.context(), target.host)
        caps = await _sieve_caps(conn)  # section 2.2: sent again after the handshake
    elif target.security == "none":
        if caps.get("SASL"):
            return Cause.PLAINTEXT_LOGIN, f"SASL {caps['SASL']} offered without TLS"
        return Cause.LOGIN_BEFORE_TLS, "SASL is offered only after STARTTLS"
    if not caps.get("SASL"):
        return Cause.NO_AUTH, "the capabilities list no SASL mechanism"
    if creds is None:
        return Cause.LOGIN_NOT_TESTED, f"SASL {caps['SASL']}"
    conn.timeout = max(settings.timeout, settings.login_timeout)
    blob = _b64(f"\0{creds.username}\0{creds.password.reveal()}")
    await conn.send(b'AUTHENTICATE "PLAIN" "' + blob + b'"\r\n')
    line = _text(await conn.line())
    reply = _sieve_status(line) or LoginReply(False, "", line)
    with contextlib.suppress(Exception):
        await conn.send(b"LOGOUT\r\n")
    return classify_login(reply), line


_DIALOGS: dict[str, Callable[[_Conn, Target, Credentials | None, ProbeSettings],
                             Awaitable[tuple[Cause, str]]]] = {
    "smtp": _smtp, "imap": _imap, "pop3": _pop3, "managesieve": _managesieve,
}


async def probe(target: Target, creds: Credentials | None,
                settings: ProbeSettings) -> ProbeResult:
    """Try ``target`` like a mail client; never raises (a bug in a server, or in us, is
    reported as a protocol error with the exception's text)."""
    if creds is not None and any(c in creds.username + creds.password.reveal()
                                 for c in "\r\n\0"):
        return ProbeResult(target, Cause.PROTOCOL_ERROR,
                           "the user name or password contains a line break or NUL")
    try:
        # A hard ceiling over the whole dialog: each step has its own timeout as well.
        async with asyncio.timeout(settings.timeout * 8 + settings.login_timeout):
            conn, _ = await _open(target, settings)
            try:
                cause, detail = await _DIALOGS[target.protocol](conn, target, creds, settings)
            finally:
                await conn.close()
    except _Ended as ended:
        return ProbeResult(target, ended.cause, ended.detail)
    except TimeoutError:
        return ProbeResult(target, Cause.DROPPED, "the server stopped answering mid-dialog")
    except (OSError, ssl.SSLError, EOFError) as exc:
        return ProbeResult(target, Cause.CLOSED, printable(str(exc) or type(exc).__name__))
    except Exception as exc:  # hostile input must end as a finding, never a traceback
        return ProbeResult(target, Cause.PROTOCOL_ERROR,
                           printable(f"{type(exc).__name__}: {exc}"))
    return ProbeResult(target, cause, printable(detail))
