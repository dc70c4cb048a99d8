"""Drive a real ``mailstead serve`` process from tests and benchmarks: data dir set-up, start and
stop, raw SMTP over plain and TLS sockets, store reads, and an asyncio SMTP load generator.

Kept free of pytest so ``bench/`` scripts can import it (they put this folder on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import imaplib
import json
import math
import os
import poplib
import queue
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pyotp

if TYPE_CHECKING:
    from mailstead.storage.interfaces import Store

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
HOSTNAME = "mail.example.test"
DOMAIN = "example.test"
READY_LINE = "mailstead: ready"
LISTENING_RE = re.compile(r"^mailstead: (\S+) listening on (\S+):(\d+)\s*$")
# The listeners a test may use; every key of [listen] is rewritten to loopback port 0 anyway.
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http", "https")


class ServerError(RuntimeError):
    """The server process could not be set up, started or stopped; the text has its stderr."""


@dataclass(frozen=True)
class Runtime:
    """Which Mailstead a child process runs: an interpreter and the ``src`` tree it imports.
    The default is this checkout; the upgrade tests run an earlier release's tree
    (tests/integration/releases.py)."""

    python: str = sys.executable
    src: Path = SRC


CURRENT = Runtime()


# ---------------------------------------------------------------------------------------------
# Running the CLI and rewriting the config


def child_env(extra: Mapping[str, str] | None = None,
              runtime: Runtime = CURRENT) -> dict[str, str]:
    """The environment of a mailstead child process: the runtime's ``src`` first on
    PYTHONPATH (another release's tree replaces ours, never sits beside it)."""
    env = dict(os.environ)
    inherited = env.get("PYTHONPATH", "") if runtime == CURRENT else ""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(runtime.src), inherited) if p)
    env.pop("MAILSTEAD_DATA_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_cli(*args: str, stdin: str | None = None, timeout: float = 60,
            runtime: Runtime = CURRENT) -> str:
    """Run ``python -m mailstead ARGS``; return stdout, raise ServerError with stderr on failure."""
    proc = subprocess.run(
        [runtime.python, "-m", "mailstead", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(runtime=runtime),
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise ServerError(
            f"`mailstead {' '.join(args)}` exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc.stdout


# Runs commands in one interpreter: ``main`` is what ``python -m mailstead`` calls, and each
# command opens and closes the store as it would in a process of its own.
_BATCH_SCRIPT = """
import io, json, os, sys
from mailstead.cli.context import Context
from mailstead.cli.main import main
for argv, stdin in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, Context(io.StringIO(stdin), out, err, os.environ))
    if code != 0:
        sys.exit(f"`mailstead {' '.join(argv)}` exited {code}\\nstdout:\\n{out.getvalue()}"
                 f"\\nstderr:\\n{err.getvalue()}")
"""


def run_cli_batch(commands: Sequence[tuple[Sequence[str], str]], timeout: float = 120,
                  runtime: Runtime = CURRENT) -> None:
    """Run ``mailstead ARGV`` with ``STDIN`` for each ``(ARGV, STDIN)`` in order, in one child
    process: setting up a data dir's users and aliases then pays Python's start-up once, not
    once per command (a large share of the suite's CPU time). Raises ServerError at the
    first failure."""
    if not commands:
        return
    proc = subprocess.run(
        [runtime.python, "-c", _BATCH_SCRIPT],
        input=json.dumps([[list(argv), stdin] for argv, stdin in commands]),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(runtime=runtime),
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise ServerError(proc.stderr.strip() or f"batch exited {proc.returncode}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    """TOML for the scalar, array and inline-table values a mailstead config uses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def rewrite_tables(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace whole top-level tables of a TOML file (and their sub-tables) with ``tables``.

    Other tables, comments and order are kept; the replaced ones are appended at the end with
    sub-tables written inline, and the result is parsed again to prove it is valid TOML.
    """
    names = set(tables)
    kept: list[str] = []
    skipping = False
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _HEADER_RE.match(line)
        if match:
            top = match.group(1).split(".")[0].strip().strip('"')
            skipping = top in names
        if not skipping:
            kept.append(line)
    out = "\n".join(kept).rstrip("\n") + "\n"
    for name, values in tables.items():
        out += f"\n[{_toml_key(name)}]\n"
        out += "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in values.items())
    tomllib.loads(out)
    path.write_text(out, encoding="utf-8")


def _loopback_port0(value: Any) -> Any:
    """The same listener setting, moved to 127.0.0.1 port 0, in whatever shape it had."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return 0
    if isinstance(value, list):
        return ["127.0.0.1:0"] if value else []
    if isinstance(value, dict):
        new = dict(value)
        for key in ("address", "host", "bind", "addr"):
            if key in new:
                new[key] = "127.0.0.1"
        if "port" in new:
            new["port"] = 0
        for key in ("listen", "addresses"):
            if key in new:
                new[key] = _loopback_port0(new[key])
        return new
    return "127.0.0.1:0"


# Test servers hash with the cheapest argon2id the config accepts (8 KiB, one pass: well
# under a millisecond instead of ~0.1-0.3 s of CPU per login and per `user add`); what the
# tests prove about logins does not depend on the cost. The login cache stays on (its
# default) as in production. bench/auth.py and tests/unit/accounts/test_login_cache.py keep
# the real cost: pass ``security=REAL_ARGON2``.
FAST_ARGON2: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 8,
    "argon2_parallelism": 1,
}
REAL_ARGON2: dict[str, Any] = {}


def configure(data_dir: Path, smtp: Mapping[str, Any] | None = None,
              security: Mapping[str, Any] | None = None) -> None:
    """Put every listener on 127.0.0.1 port 0, merge ``smtp`` into the ``[smtp]`` table and
    ``security`` (default: FAST_ARGON2) into ``[security]``."""
    config_path = data_dir / "mailstead.toml"
    config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    listen = {key: _loopback_port0(value) for key, value in dict(config.get("listen", {})).items()}
    for name in LISTENERS:
        listen.setdefault(name, "127.0.0.1:0")
    tables: dict[str, dict[str, Any]] = {"listen": listen}
    if smtp:
        tables["smtp"] = {**dict(config.get("smtp", {})), **smtp}
    extra = FAST_ARGON2 if security is None else security
    if extra:
        tables["security"] = {**dict(config.get("security", {})), **extra}
    rewrite_tables(config_path, tables)


@dataclass(frozen=True)
class Users:
    """Who the harness creates: passwords by address, aliases, catch-all targets."""

    passwords: Mapping[str, str]
    domains: Sequence[str] = ()
    aliases: Mapping[str, Sequence[str]] = field(default_factory=dict)


# The store backend of the data directories the harness makes: "sqlite" (the default) or
# "postgresql" (a fresh database of the private test server, tests/pgserver.py, per data
# directory). tests/integration/conftest.py sets it for each backend the suite runs against;
# a benchmark may set it in the environment.
STORE_BACKEND_ENV = "MAILSTEAD_TEST_STORE"
STORE_BACKENDS = ("sqlite", "postgresql")


def store_backend() -> str:
    """The backend ``init_data_dir`` and ``store_args`` use now."""
    name = os.environ.get(STORE_BACKEND_ENV, "sqlite")
    if name not in STORE_BACKENDS:
        raise ServerError(f"{STORE_BACKEND_ENV}={name!r}: expected one of {STORE_BACKENDS}")
    return name


def new_database() -> str:
    """The URI of a fresh, empty database on the private test PostgreSQL server."""
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:  # bench/ scripts put only tests/integration on the path
        sys.path.append(tests_dir)
    from pgserver import shared_server

    return shared_server().new_database()


def store_args() -> list[str]:
    """The ``--store`` arguments of ``mailstead init`` for the backend under test: none for
    the embedded store, a fresh database for PostgreSQL (so data dirs never share state)."""
    if store_backend() == "postgresql":
        return ["--store", new_database()]
    return []


def init_data_dir(
    data_dir: Path, users: Users, smtp: Mapping[str, Any] | None = None,
    security: Mapping[str, Any] | None = None, runtime: Runtime = CURRENT,
) -> None:
    """``mailstead init --dev`` into ``data_dir`` with the store of ``store_backend()``,
    loopback port 0 listeners (and cheap argon2 unless ``security`` says otherwise, see
    FAST_ARGON2), then the users."""
    run_cli(
        "init", "--data-dir", str(data_dir), "--hostname", HOSTNAME, "--domain", DOMAIN, "--dev",
        *store_args(), runtime=runtime,
    )
    configure(data_dir, smtp, security)
    where = ("--data-dir", str(data_dir))
    run_cli_batch([
        *((("domain", "add", domain, *where), "") for domain in users.domains),
        *((("user", "add", address, "--password-stdin", *where), password + "\n")
          for address, password in users.passwords.items()),
        *((("alias", "add", source, *targets, *where), "")
          for source, targets in users.aliases.items()),
    ], runtime=runtime)


@dataclass(frozen=True)
class TwoFactor:
    """What ``mailstead user 2fa enable`` printed and was answered with."""

    secret: str
    typed: str  # the TOTP code that confirmed it (spent now)
    output: str  # everything it printed
    recovery_codes: list[str]


def enable_2fa(data_dir: Path, address: str, runtime: Runtime = CURRENT) -> TwoFactor:
    """``user 2fa enable ADDRESS``, confirmed with a code of the secret it prints."""
    with subprocess.Popen(
        [runtime.python, "-m", "mailstead", "user", "2fa", "enable", address,
         "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(runtime=runtime), cwd=REPO,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stderr is not None
        printed = []
        secret = ""
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("secret:"):
                secret = line.split()[1]
                break
        assert secret, "".join(printed)
        typed = pyotp.TOTP(secret).now()
        proc.stdin.write(typed + "\n")
        proc.stdin.close()
        rest = proc.stdout.read()
        errors = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, errors
    return TwoFactor(secret, typed, "".join(printed) + rest,
                     re.findall(r"^  ([a-z2-9]{5}-[a-z2-9]{5})$", rest, re.M))


# ---------------------------------------------------------------------------------------------
# The server process


class Server:
    """One ``mailstead serve`` child process; ``ports`` maps listener name to its TCP port."""

    def __init__(self, data_dir: Path, log_path: Path | None = None,
                 runtime: Runtime = CURRENT) -> None:
        self.data_dir = data_dir
        self.runtime = runtime
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-serve.log"
        self.ports: dict[str, int] = {}
        self.stdout_lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._log_file: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def start(self, timeout: float = 20) -> Server:
        """Start ``serve`` and wait for ``mailstead: ready``; raise ServerError with its stderr
        if it exits or is not ready within ``timeout`` seconds."""
        self.ports = {}
        self._lines = queue.Queue()
        self._log_file = self.log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [self.runtime.python, "-m", "mailstead", "serve", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=child_env(runtime=self.runtime),
            cwd=REPO,
        )
        self._reader = threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._abort(f"not ready after {timeout} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._abort("exited before it was ready")
            assert line is not None
            match = LISTENING_RE.match(line)
            if match:
                self.ports[match.group(1)] = int(match.group(3))
            elif line.strip() == READY_LINE:
                return self

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _abort(self, why: str) -> None:
        code = self._reap(kill=True)
        raise ServerError(
            f"mailstead serve {why} (exit code {code})\nstdout:\n{''.join(self.stdout_lines)}"
            f"\nstderr:\n{self.log_text()[-20000:]}"
        )

    def _reap(self, *, kill: bool, timeout: float = 15) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if kill and proc.poll() is None:
            proc.kill()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.proc = None
        return code

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self._reap(kill=False, timeout=timeout)

    def kill(self) -> int | None:
        """SIGKILL: the crash the durability check simulates."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self._reap(kill=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process so far (``/proc/PID/stat``)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # After "pid (comm) ", field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# TLS and raw SMTP


class PinnedContext(ssl.SSLContext):
    """Verifies the server certificate against one file and always checks one host name, so
    clients connecting to 127.0.0.1 (smtplib, raw sockets) still check ``mail.example.test``."""

    pinned_hostname: str = HOSTNAME

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.pinned_hostname
        return super().wrap_socket(sock, *args, **kwargs)


def tls_context(cert_path: Path, hostname: str = HOSTNAME) -> ssl.SSLContext:
    """A client context that trusts only the server's self-signed certificate."""
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.pinned_hostname = hostname
    ctx.load_verify_locations(cafile=str(cert_path))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True)
class SMTPReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code at the start of the last line, or ""."""
        match = re.match(r"\d\.\d{1,3}\.\d{1,3}\b", self.lines[-1]) if self.lines else None
        return match.group(0) if match else ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


# A client on another machine, as far as the server can tell: a loopback address other than
# the one it connects to (a password may come before TLS only from the server's own host,
# core.network.secure_for_auth).
REMOTE_CLIENT = "127.0.0.2"


class RemoteIMAP4(imaplib.IMAP4):
    """imaplib without TLS from REMOTE_CLIENT: port 143 as a client elsewhere sees it."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(REMOTE_CLIENT, 0))


class RemotePOP3(poplib.POP3):
    """poplib without TLS from REMOTE_CLIENT: port 110 as a client elsewhere sees it."""

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(REMOTE_CLIENT, 0))


class RawSMTP:
    """A blocking SMTP client that sends exactly the bytes it is given (for hostile input)."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 10,
                 tls: ssl.SSLContext | None = None, source: str | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        try:
            self.sock: socket.socket = tls.wrap_socket(sock) if tls is not None else sock
        except BaseException:
            sock.close()
            raise
        self.buffer = b""

    def __enter__(self) -> RawSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return chunk

    def read_reply(self) -> SMTPReply:
        """One (possibly multi-line) reply; raises ConnectionError at EOF, TimeoutError."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buffer:
                if not self._recv():
                    raise ConnectionError(f"connection closed; partial reply {self.buffer!r}")
            raw, self.buffer = self.buffer.split(b"\r\n", 1)
            line = raw.decode("utf-8", "replace")
            if not re.match(r"^\d{3}[ -]", line + " "):
                raise AssertionError(f"malformed reply line {line!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return SMTPReply(int(line[:3]), tuple(lines))

    def command(self, line: str | bytes) -> SMTPReply:
        data = line if isinstance(line, bytes) else line.encode()
        self.send(data + b"\r\n")
        return self.read_reply()

    def ehlo(self, name: str = "client.example.test") -> SMTPReply:
        reply = self.command(f"EHLO {name}")
        assert reply.code == 250, reply
        return reply

    def starttls(self, ctx: ssl.SSLContext) -> None:
        reply = self.command("STARTTLS")
        assert reply.code == 220, reply
        assert not self.buffer, f"server sent data after 220 to STARTTLS: {self.buffer!r}"
        self.sock = ctx.wrap_socket(self.sock)

    def wrap_tls(self, ctx: ssl.SSLContext) -> None:
        """Start TLS on the connection now (after a 220 to STARTTLS read by the caller)."""
        self.sock = ctx.wrap_socket(self.sock)

    def expect_silence(self, seconds: float) -> None:
        """Assert the server sends nothing for ``seconds`` (the connection stays open)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(seconds)
        try:
            got = self._recv()
        except (TimeoutError, ssl.SSLWantReadError):
            return
        finally:
            self.sock.settimeout(old)
        raise AssertionError(f"unexpected data from server: {got!r} (buffer {self.buffer!r})")

    def expect_closed(self, timeout: float = 10) -> None:
        """Assert the server closes the connection (after any buffered replies were read)."""
        assert not self.buffer, f"unread data before close: {self.buffer!r}"
        self.sock.settimeout(timeout)
        try:
            data = self._recv()
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return
        assert data == b"", f"expected the server to close, got {data!r}"


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 section 4.5.2: double a leading "." on every line; end with CRLF.CRLF."""
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


# ---------------------------------------------------------------------------------------------
# Messages and the store


def make_message(token: str, *, sender: str = "sender@remote.test",
                 to: str = "alice@example.test", body: bytes | None = None,
                 date: bool = True, message_id: bool = True,
                 extra_headers: Sequence[str] = ()) -> bytes:
    """A CRLF message with a unique ``token`` in its Message-ID and an ``X-Token`` header."""
    headers = [f"From: <{sender}>", f"To: <{to}>", f"Subject: test {token}"]
    if date:
        headers.append("Date: Mon, 01 Jan 2024 10:00:00 +0000")
    if message_id:
        headers.append(f"Message-ID: <{token}@client.example.test>")
    headers.append(f"X-Token: {token}")
    headers.extend(extra_headers)
    text = body if body is not None else f"token {token}\r\n".encode()
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + text


def rich_message(token: str, *, sender: str = "sender@remote.test",
                 to: str = "alice@example.test") -> bytes:
    """A MIME message with UTF-8 8-bit text, lines starting with "." (one a lone "."), trailing
    spaces, and a base64 attachment of every byte value: the bytes must arrive untouched."""
    attachment = base64.encodebytes(bytes(range(256)) * 8).replace(b"\n", b"\r\n")
    body = (
        b"This is a multi-part message in MIME format.\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße aus Köln, 日本語のテキスト, émoji 📬\r\n".encode()
        + b".a line starting with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"a line with trailing spaces   \r\n"
        b"\tand a tab\r\n"
        + f"token {token}\r\n".encode()
        + b"--b1\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="blob.bin"\r\n\r\n'
        + attachment
        + b"--b1--\r\n"
    )
    return make_message(
        token, sender=sender, to=to, body=body,
        extra_headers=("MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b1"'),
    )


# Fields the server prepends to a stored message: the trace (RFC 5321 section 4.4), the
# sender-authentication verdict (RFC 8601) and the spam filter's tags.
ADDED_FIELDS = (b"received:", b"authentication-results:", b"x-spam-")


def split_received(stored: bytes) -> tuple[list[bytes], bytes]:
    """The leading fields the server added (``Received:``, ``Authentication-Results:``,
    ``X-Spam-*``, with folded lines) and the bytes after them: what the client sent."""
    fields: list[bytes] = []
    rest = stored
    while rest[:24].lower().startswith(ADDED_FIELDS):
        end = 0
        while True:
            nl = rest.find(b"\r\n", end)
            if nl < 0:
                return fields, rest
            end = nl + 2
            if rest[end:end + 1] not in (b" ", b"\t"):
                break
        fields.append(rest[:end])
        rest = rest[end:]
    return fields, rest


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _open_store(data_dir: Path) -> Store:
    """The server's own store, opened read-write from this process (SQLite WAL allows it; a
    PostgreSQL store is shared anyway): whichever backend the data dir's config names."""
    from mailstead.storage import open_store

    store: Store = await open_store(data_dir)
    return store


async def _mailbox(data_dir: Path, address: str, mailbox: str) -> list[bytes]:
    store = await _open_store(data_dir)
    try:
        account = await store.get_account(address)
        if account is None:
            raise AssertionError(f"no account {address}")
        infos = await store.list_messages(account.id, mailbox)
        return [await store.read_blob(info.blob) for info in infos]
    finally:
        await store.close()


def read_mailbox(data_dir: Path, address: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every stored message of one mailbox, oldest first, read through the store API."""
    result: list[bytes] = _run(_mailbox(data_dir, address, mailbox))
    return result


async def _queue(data_dir: Path) -> list[Any]:
    store = await _open_store(data_dir)
    try:
        return list(await store.list_queue())
    finally:
        await store.close()


def read_queue(data_dir: Path) -> list[Any]:
    """The outbound queue entries (``QueueEntry``)."""
    result: list[Any] = _run(_queue(data_dir))
    return result


def with_token(messages: Iterable[bytes], token: str) -> list[bytes]:
    needle = token.encode()
    return [m for m in messages if needle in m]


# ---------------------------------------------------------------------------------------------
# The test suite's users and server


PASSWORDS = {
    "alice@example.test": "alice-Secret-1",
    "bob@example.test": "bob-Secret-2",
}
USERS = Users(
    passwords=PASSWORDS,
    domains=("catchall.test",),
    aliases={
        "info@example.test": ("alice@example.test",),
        "sales@example.test": ("bob@example.test",),
        "@catchall.test": ("alice@example.test",),
    },
)

# Generous limits, so that only the tests meant to hit a limit do (see limited_server).
DEFAULT_SMTP: dict[str, Any] = {
    "max_message_size": 2 * 1024 * 1024,
    "max_recipients": 100,
    "max_errors": 20,
    "idle_timeout": 60,
    "max_connections": 200,
    "max_connections_per_ip": 100,
}
LIMITED_SMTP: dict[str, Any] = {
    "max_message_size": 64 * 1024,
    "max_recipients": 100,
    "max_errors": 3,
    "idle_timeout": 2,
    "max_connections": 50,
    "max_connections_per_ip": 3,
}


@dataclass
class Harness:
    """A running server as the tests see it: ports, data dir, clients and store reads."""

    server: Server

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def smtp_port(self) -> int:
        return self.port("smtp")

    @property
    def submission_port(self) -> int:
        return self.port("submission")

    @property
    def submissions_port(self) -> int:
        return self.port("submissions")

    @property
    def cert_path(self) -> Path:
        return self.server.cert_path

    def port(self, name: str) -> int:
        if name not in self.server.ports:
            raise ServerError(f"the server announced no {name!r} listener: {self.server.ports}")
        return self.server.ports[name]

    def tls(self) -> ssl.SSLContext:
        """Trusts only D/tls/cert.pem and checks the name mail.example.test."""
        return tls_context(self.cert_path, HOSTNAME)

    def raw(self, name: str = "smtp", *, implicit_tls: bool = False,
            timeout: float = 10, source: str | None = None) -> RawSMTP:
        return RawSMTP(self.port(name), tls=self.tls() if implicit_tls else None,
                       timeout=timeout, source=source)

    def client(self, name: str = "smtp") -> smtplib.SMTP:
        """A connected smtplib client; port 465 ("submissions") speaks TLS from the start."""
        if name == "submissions":
            return smtplib.SMTP_SSL("127.0.0.1", self.port(name), context=self.tls(),
                                   timeout=15)
        return smtplib.SMTP("127.0.0.1", self.port(name), timeout=15)

    def mailbox(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        return read_mailbox(self.data_dir, address, mailbox)

    def find(self, address: str, token: str, mailbox: str = "INBOX") -> list[bytes]:
        """The stored messages of ``address`` that contain ``token``."""
        return with_token(self.mailbox(address, mailbox), token)

    def queue(self) -> list[Any]:
        return read_queue(self.data_dir)

    def log(self) -> str:
        return self.server.log_text()


# ---------------------------------------------------------------------------------------------
# Asyncio load generator (benchmark and durability check)


@dataclass
class LoadStats:
    sent: int = 0
    accepted: list[str] = field(default_factory=list)  # tokens acknowledged with 250
    latencies: list[float] = field(default_factory=list)  # seconds, "\r\n.\r\n" -> 250
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(what)


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """Read one reply; returns its last line (code in the first 3 bytes)."""
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return line


async def load_client(
    port: int,
    jobs: Iterable[tuple[str, str, str, bytes]],
    stats: LoadStats,
    stop: asyncio.Event,
) -> None:
    """Send ``(token, sender, recipient, payload)`` jobs over one reused connection, pipelining
    MAIL/RCPT/DATA (RFC 2920); ``payload`` is already dot-stuffed and ends with CRLF.CRLF.
    Reconnects after a connection error until ``stop`` is set or the jobs run out."""
    it = iter(jobs)
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    loop = asyncio.get_running_loop()
    try:
        for token, sender, rcpt, payload in it:
            if stop.is_set():
                break
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    if not (await _reply(reader)).startswith(b"220"):
                        raise ConnectionError("no 220 greeting")
                    writer.write(b"EHLO load.example.test\r\n")
                    if not (await _reply(reader)).startswith(b"250"):
                        raise ConnectionError("EHLO refused")
                writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
                stats.sent += 1
                mail = await _reply(reader)
                rcpt_reply = await _reply(reader)
                data = await _reply(reader)
                if not (mail.startswith(b"250") and rcpt_reply.startswith(b"250")
                        and data.startswith(b"354")):
                    stats.error(f"{mail!r} {rcpt_reply!r} {data!r}")
                    if data.startswith(b"354"):
                        writer.write(b".\r\n")
                        await _reply(reader)
                    writer.write(b"RSET\r\n")
                    await _reply(reader)
                    continue
                t0 = loop.time()
                writer.write(payload)
                final = await _reply(reader)
                if final.startswith(b"250"):
                    stats.latencies.append(loop.time() - t0)
                    stats.accepted.append(token)
                else:
                    stats.error(final.decode(errors="replace").strip())
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                stats.error(f"connection: {exc!r}")
                if writer is not None:
                    writer.close()
                writer = reader = None
                if stop.is_set():
                    break
                await asyncio.sleep(0.05)
        if writer is not None and reader is not None and not stop.is_set():
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(_reply(reader), 5)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


async def _messages_by_token(
    data_dir: Path, addresses: Sequence[str], pattern: re.Pattern[bytes]
) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    store = await _open_store(data_dir)
    try:
        for address in addresses:
            account = await store.get_account(address)
            if account is None:
                raise AssertionError(f"no account {address}")
            for info in await store.list_messages(account.id, "INBOX"):
                blob = await store.read_blob(info.blob)
                match = pattern.search(blob)
                if match:
                    found.setdefault(match.group(1).decode(), []).append(blob)
    finally:
        await store.close()
    return found


def messages_by_token(
    data_dir: Path, addresses: Sequence[str], pattern: bytes = rb"X-Token: (\S+)"
) -> dict[str, list[bytes]]:
    """Every INBOX message of ``addresses``, grouped by the token ``pattern`` captures."""
    result: dict[str, list[bytes]] = _run(
        _messages_by_token(data_dir, addresses, re.compile(pattern))
    )
    return result


@dataclass
class Verification:
    acknowledged: int
    found: int
    missing: list[str]
    corrupt: list[str]

    def summary(self) -> str:
        text = f"acknowledged {self.acknowledged}, found {self.found}, missing {len(self.missing)}"
        return text + (f", corrupt {len(self.corrupt)}" if self.corrupt else "")


def verify_stored(
    data_dir: Path, addresses: Sequence[str], sent: Mapping[str, bytes], tokens: Iterable[str]
) -> Verification:
    """Check every token in ``tokens`` is stored: our Received header(s), then exactly the bytes
    of ``sent[token]`` (the message before dot-stuffing)."""
    stored = messages_by_token(data_dir, addresses)
    wanted = list(tokens)
    missing: list[str] = []
    corrupt: list[str] = []
    for token in wanted:
        copies = stored.get(token)
        if not copies:
            missing.append(token)
            continue
        received, rest = split_received(copies[0])
        if not received or rest != sent[token] or len(copies) != 1:
            corrupt.append(token)
    return Verification(len(wanted), len(wanted) - len(missing), missing, corrupt)


# ---------------------------------------------------------------------------------------------
# The SIGKILL durability check (bench/durability.py and test_durability.py)

DURABILITY_USERS = Users(passwords=PASSWORDS)


@dataclass
class DurabilityResult:
    verification: Verification
    stats: LoadStats
    restarted: bool


def _durability_jobs(client: int, sent: dict[str, bytes],
                     recipients: Sequence[str]) -> Iterator[tuple[str, str, str, bytes]]:
    """An endless stream of distinct messages for one client; ``sent`` remembers each one."""
    n = 0
    while True:
        token = f"dur-{client}-{n}-{os.urandom(4).hex()}"
        rcpt = recipients[(client + n) % len(recipients)]
        body = f"token {token}\r\n".encode() + b"durable payload line\r\n" * (20 + n % 50)
        message = make_message(token, to=rcpt, body=body)
        sent[token] = message
        yield token, "sender@remote.test", rcpt, dot_stuff(message)
        n += 1


async def _load_then_kill(server: Server, clients: int, kill_after: float,
                          sent: dict[str, bytes], recipients: Sequence[str]) -> LoadStats:
    stats = LoadStats()
    stop = asyncio.Event()
    port = server.ports["smtp"]
    tasks = [asyncio.create_task(load_client(port, _durability_jobs(i, sent, recipients),
                                             stats, stop))
             for i in range(clients)]
    await asyncio.sleep(kill_after)
    stop.set()
    server.kill()  # SIGKILL while transactions are in flight
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    return stats


def durability_check(data_dir: Path, *, clients: int = 20, kill_after: float = 1.5,
                     restart: bool = True) -> DurabilityResult:
    """Load port 25 with ``clients`` connections, SIGKILL the server after ``kill_after`` s,
    optionally start it again (crash recovery must work), then check every message that got
    a 250 is stored byte for byte."""
    recipients = list(DURABILITY_USERS.passwords)
    init_data_dir(data_dir, DURABILITY_USERS,
                  {"max_connections": clients * 2 + 20,
                   "max_connections_per_ip": clients * 2 + 20})
    server = Server(data_dir).start()
    sent: dict[str, bytes] = {}
    try:
        stats = asyncio.run(_load_then_kill(server, clients, kill_after, sent, recipients))
    finally:
        server.kill()
    if restart:
        server.start()
        code = server.stop()
        if code != 0:
            raise ServerError(f"restart after SIGKILL: exit code {code}\n{server.log_text()}")
    verification = verify_stored(data_dir, recipients, sent, stats.accepted)
    return DurabilityResult(verification, stats, restart)


# ---------------------------------------------------------------------------------------------
# IMAP (issue 3): config, quotas, a raw client for hostile input, an asyncio client for benches

# Generous limits for the IMAP tests; a test that needs a limit sets its own.
DEFAULT_IMAP: dict[str, Any] = {
    "idle_timeout": 1800,
    "max_bad_commands": 5,
    "max_connections_per_account": 50,
    "max_connections": 10000,
    "max_connections_per_ip": 200,
}


def configure_imap(data_dir: Path, imap: Mapping[str, Any]) -> None:
    """Merge ``imap`` into the ``[imap]`` table of the data dir's config."""
    config_path = data_dir / "mailstead.toml"
    config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    rewrite_tables(config_path, {"imap": {**dict(config.get("imap", {})), **imap}})


async def _set_quota(data_dir: Path, address: str, limit: int | None) -> None:
    store = await _open_store(data_dir)
    try:
        account = await store.get_account(address)
        if account is None:
            raise AssertionError(f"no account {address}")
        await store.set_quota(account.id, limit)  # type: ignore[attr-defined]
    finally:
        await store.close()


def set_quota(data_dir: Path, address: str, limit: int | None) -> None:
    """Give ``address`` a storage quota of ``limit`` bytes (None: unlimited), through the store."""
    _run(_set_quota(data_dir, address, limit))


async def _create_mailboxes(data_dir: Path, address: str, names: Sequence[str]) -> None:
    store = await _open_store(data_dir)
    try:
        account = await store.get_account(address)
        if account is None:
            raise AssertionError(f"no account {address}")
        for start in range(0, len(names), 200):
            await asyncio.gather(*(store.create_mailbox(account.id, name)
                                   for name in names[start:start + 200]))
    finally:
        await store.close()


def create_mailboxes(data_dir: Path, address: str, names: Sequence[str]) -> None:
    """Create mailboxes ``names`` of ``address`` through the store (works while the server
    runs), 200 at a time: thousands in a second or two, far faster than CREATE one by one."""
    _run(_create_mailboxes(data_dir, address, names))


def add_user(data_dir: Path, address: str, password: str) -> None:
    """Create one account with the CLI (works while the server runs)."""
    run_cli("user", "add", address, "--password-stdin", "--data-dir", str(data_dir),
            stdin=password + "\n")


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ServerError(f"no VmRSS for pid {pid}")


_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\r\n$")


@dataclass(frozen=True)
class IMAPResponse:
    """Everything the server sent for one command: untagged lines (literals inline, CRLF
    stripped) and the tagged completion line."""

    tag: bytes
    untagged: tuple[bytes, ...]
    tagged: bytes

    @property
    def status(self) -> bytes:
        """OK, NO or BAD (or b"" if the line was cut short)."""
        parts = self.tagged.split(b" ", 2)
        return parts[1].upper() if len(parts) > 1 else b""

    def code(self) -> bytes:
        """The response code of the tagged line without brackets, e.g. b"TOOBIG", or b""."""
        match = re.match(rb"\S+ \S+ \[([^\]]*)\]", self.tagged)
        return match.group(1) if match else b""

    def starting(self, prefix: bytes) -> list[bytes]:
        """The untagged lines that start with ``* PREFIX`` (case-insensitive)."""
        want = b"* " + prefix.upper()
        return [line for line in self.untagged if line[: len(want)].upper() == want]


class RawIMAP:
    """A blocking IMAP client that sends exactly the bytes it is given: for hostile input,
    COMPRESS=DEFLATE and checks of the exact response bytes."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 10,
                 tls: ssl.SSLContext | None = None, source: str | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        try:
            self.sock: socket.socket = tls.wrap_socket(sock) if tls is not None else sock
        except BaseException:
            sock.close()
            raise
        self.buffer = b""
        self.counter = 0
        self._compress: Any = None
        self._decompress: Any = None
        self.greeting = self.read_line()

    def __enter__(self) -> RawIMAP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def next_tag(self) -> bytes:
        self.counter += 1
        return b"t%d" % self.counter

    def send(self, data: bytes) -> None:
        if self._compress is not None:
            import zlib

            data = self._compress.compress(data) + self._compress.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if chunk and self._decompress is not None:
            chunk = self._decompress.decompress(chunk)
            if not chunk:
                return b"\0"  # compressed bytes that produced no output yet: not EOF
        self.buffer += chunk
        return chunk

    def _read_exact_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > 64 * 1024 * 1024:
                raise AssertionError("no line end in 64 MiB")
            if not self._recv():
                raise ConnectionError(f"connection closed; partial line {self.buffer!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_line(self) -> bytes:
        """One logical response line: literals read and kept inline, final CRLF removed."""
        out = b""
        while True:
            piece = self._read_exact_line()
            out += piece
            match = _LITERAL_AT_END.search(piece)
            if not match:
                return out[:-2]
            size = int(match.group(1))
            while len(self.buffer) < size:
                if not self._recv():
                    raise ConnectionError("connection closed inside a literal")
            out += self.buffer[:size]
            self.buffer = self.buffer[size:]

    def read_until(self, tag: bytes) -> IMAPResponse:
        untagged: list[bytes] = []
        while True:
            line = self.read_line()
            if line.startswith(tag + b" "):
                return IMAPResponse(tag, tuple(untagged), line)
            untagged.append(line)

    def command(self, text: str | bytes) -> IMAPResponse:
        """Send ``TAG text CRLF`` and read to the tagged response."""
        tag = self.next_tag()
        body = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + body + b"\r\n")
        return self.read_until(tag)

    def command_literal(self, head: bytes, literal: bytes, tail: bytes = b"") -> IMAPResponse:
        """``TAG head {n}``, wait for ``+``, then ``literal tail CRLF``; when the server
        refuses the literal, its tagged answer is returned at once."""
        tag = self.next_tag()
        self.send(tag + b" " + head + b" {%d}\r\n" % len(literal))
        line = self.read_line()
        if line.startswith(tag + b" "):
            return IMAPResponse(tag, (), line)
        if not line.startswith(b"+"):
            raise AssertionError(f"expected a continuation request, got {line!r}")
        self.send(literal + tail + b"\r\n")
        return self.read_until(tag)

    def login(self, user: str, password: str) -> IMAPResponse:
        response = self.command(f'LOGIN "{user}" "{password}"')
        assert response.status == b"OK", response
        return response

    def starttls(self, ctx: ssl.SSLContext) -> None:
        response = self.command("STARTTLS")
        assert response.status == b"OK", response
        assert not self.buffer, f"server sent data after OK to STARTTLS: {self.buffer!r}"
        self.sock = ctx.wrap_socket(self.sock)

    def compress(self) -> IMAPResponse:
        """RFC 4978: COMPRESS DEFLATE, then raw deflate (no zlib header) both ways."""
        import zlib

        response = self.command("COMPRESS DEFLATE")
        if response.status == b"OK":
            self._compress = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._decompress = zlib.decompressobj(-15)
            if self.buffer:
                self.buffer = self._decompress.decompress(self.buffer)
        return response

    def expect_closed(self, timeout: float = 10) -> bytes:
        """Read until the server closes; return what it sent meanwhile."""
        self.sock.settimeout(timeout)
        got = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return self.buffer + got
                got += chunk
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return self.buffer + got


class AsyncIMAP:
    """A minimal asyncio IMAP client for the benchmarks: tagged commands, literals inline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.counter = 0

    @classmethod
    async def connect(cls, port: int, *, tls: ssl.SSLContext | None = None,
                      host: str = "127.0.0.1") -> AsyncIMAP:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=HOSTNAME if tls is not None else None,
            limit=64 * 1024 * 1024,
        )
        client = cls(reader, writer)
        greeting = await client.read_line()
        if not greeting.startswith(b"* OK"):
            raise ConnectionError(f"bad greeting {greeting!r}")
        return client

    async def read_line(self) -> bytes:
        out = b""
        while True:
            piece = await self.reader.readline()
            if not piece.endswith(b"\n"):
                raise ConnectionError(f"connection closed; partial line {out + piece!r}")
            out += piece
            match = _LITERAL_AT_END.search(piece)
            if not match:
                return out[:-2]
            out += await self.reader.readexactly(int(match.group(1)))

    async def read_until(self, tag: bytes) -> IMAPResponse:
        untagged: list[bytes] = []
        while True:
            line = await self.read_line()
            if line.startswith(tag + b" "):
                return IMAPResponse(tag, tuple(untagged), line)
            untagged.append(line)

    async def command(self, text: str | bytes) -> IMAPResponse:
        self.counter += 1
        tag = b"a%d" % self.counter
        body = text.encode() if isinstance(text, str) else text
        self.writer.write(tag + b" " + body + b"\r\n")
        return await self.read_until(tag)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            await self.writer.wait_closed()


# The session cookie of the web pages over HTTPS (web/sessions.py COOKIE_HTTPS).
WEB_COOKIE = "__Host-mailstead"


class Browser:
    """A tiny HTTPS client with one session cookie (pinned to the server's certificate).
    ``servers``: more nodes to send requests to in turn, as a round-robin load balancer
    would (each pinned to its own certificate)."""

    def __init__(self, server: Server, *servers: Server) -> None:
        self.servers = [server, *servers]
        self.turn = 0
        self.cookie = ""
        self.seen: list[int] = []  # which server answered each request

    def request(self, method: str, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], str]:
        index = self.turn % len(self.servers)
        server = self.servers[index]
        self.turn += 1
        self.seen.append(index)
        conn = http.client.HTTPSConnection(
            "127.0.0.1", server.ports["https"],
            context=tls_context(server.cert_path, HOSTNAME), timeout=15)
        headers = {"host": HOSTNAME}
        body = None
        if self.cookie:
            headers["cookie"] = f"{WEB_COOKIE}={self.cookie}"
        if form is not None:
            body = urlencode(form)
            headers["content-type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            got = {k.lower(): v for k, v in response.getheaders()}
            for value in response.headers.get_all("set-cookie") or []:
                match = re.match(rf"{re.escape(WEB_COOKIE)}=([^;]*)", value)
                if match:
                    self.cookie = match.group(1)
            return response.status, got, text
        finally:
            conn.close()

    def csrf(self, path: str = "/account") -> str:
        status, _, html = self.request("GET", path)
        assert status == 200, html[:500]
        match = re.search(r'name="csrf" value="([^"]+)"', html)
        assert match, html[:1000]
        return match.group(1)

    def sign_in(self, username: str, password: str) -> int:
        token = self.csrf("/login")
        status, headers, _ = self.request("POST", "/login", {
            "csrf": token, "username": username, "password": password})
        assert status == 303, status
        return 303 if headers["location"] == "/account" else 0
