"""Outbound delivery test kit: a DNS server on loopback (dnslib), Mailstead instances on
chosen loopback addresses, scripted aiosmtpd peers, and mailbox polling.

Free of pytest so bench/ can import it (like helpers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.server
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from helpers import (
    REPO,
    Server,
    ServerError,
    child_env,
    read_mailbox,
    read_queue,
    rewrite_tables,
    run_cli,
    store_args,
)

PASSWORD = "Correct-Horse-9"


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from in-memory records: ``records[(name, type)] = [values]``; names absent
    from every record are NXDOMAIN, present names without the type are NODATA."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}
        self.lock = threading.Lock()

    def add(self, name: str, rtype: str, value: Any) -> None:
        with self.lock:
            self.records.setdefault((name.lower().rstrip("."), rtype), []).append(value)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            values = list(self.records.get((qname, qtype), []))
            known = any(name == qname for name, _ in self.records)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in values:
            if qtype == "A":
                rdata: Any = A(value)
            elif qtype == "AAAA":
                rdata = AAAA(value)
            elif qtype == "MX":
                rdata = MX(value[1], value[0])
            else:
                chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
                rdata = TXT(chunks)
            reply.add_answer(RR(request.q.qname, QTYPE.reverse[qtype], rdata=rdata, ttl=60))
        return reply


class DnsFixture:
    """A UDP+TCP DNS server for ``zone`` on 127.0.0.1 at a free port."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        port = free_port("127.0.0.1")
        self.port = port
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data",
                          prefix=False)
        self.udp = DNSServer(zone, address="127.0.0.1", port=port, logger=quiet)
        self.tcp = DNSServer(zone, address="127.0.0.1", port=port, tcp=True, logger=quiet)
        self.udp.start_thread()
        self.tcp.start_thread()

    def stop(self) -> None:
        self.udp.stop()
        self.tcp.stop()
        self.udp.server.server_close()
        self.tcp.server.server_close()


def free_port(*hosts: str) -> int:
    """A TCP (and UDP) port free on every one of ``hosts`` right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind((host, port))
        except OSError:
            continue
        return port
    raise ServerError("no common free port")


@dataclass
class Instance:
    """One Mailstead installation serving ``domain`` as ``hostname`` on address ``ip``."""

    data_dir: Path
    domain: str
    hostname: str
    ip: str
    server: Server | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        assert self.server is not None
        return self.server.ports

    def start(self) -> Instance:
        self.server = Server(self.data_dir).start(timeout=30)
        return self

    def stop(self) -> int | None:
        return self.server.stop() if self.server is not None else None

    def log(self) -> str:
        return self.server.log_text() if self.server is not None else ""

    def inbox(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        return read_mailbox(self.data_dir, address, mailbox)

    def queue(self) -> list[Any]:
        return read_queue(self.data_dir)

    def dkim_records(self) -> list[tuple[str, str]]:
        """(selector, TXT value) of every DKIM key of the domain, from ``mailstead dns``."""
        out = run_cli("dkim", "list", self.domain, "--data-dir", str(self.data_dir))
        del out
        return _dkim_from_store(self.data_dir, self.domain)


def _dkim_from_store(data_dir: Path, domain: str) -> list[tuple[str, str]]:
    async def go() -> list[tuple[str, str]]:
        from mailstead.storage import open_store

        store = await open_store(data_dir)
        try:
            keys = await store.dkim_keys(domain)
        finally:
            await store.close()
        out = []
        for k in keys:
            kind = "rsa" if k.algorithm.startswith("rsa") else "ed25519"
            out.append((k.selector, f"v=DKIM1; k={kind}; p={k.public_key}"))
        return out

    return asyncio.run(go())


def make_instance(
    root: Path,
    domain: str,
    ip: str,
    *,
    dns_port: int,
    smtp_port: int,
    queue: Mapping[str, Any] | None = None,
    users: Mapping[str, str] | None = None,
) -> Instance:
    """``mailstead init`` for ``domain`` (host ``mail.DOMAIN``) with the store under test
    (``helpers.store_backend``), listeners on ``ip``: smtp on ``smtp_port``, the others on
    free ports; DNS from the test server; ``[queue]`` merged."""
    hostname = f"mail.{domain}"
    data_dir = root / domain
    run_cli("init", "--data-dir", str(data_dir), "--hostname", hostname, "--domain", domain,
            "--dev", *store_args())
    config_path = data_dir / "mailstead.toml"
    tomllib.loads(config_path.read_text(encoding="utf-8"))
    listen = {"smtp": f"{ip}:{smtp_port}", "submission": f"{ip}:0", "imaps": f"{ip}:0"}
    q: dict[str, Any] = {"remote_port": smtp_port, "retry_schedule": [1, 2],
                         "connect_timeout": 3, "command_timeout": 10}
    q.update(queue or {})
    rewrite_tables(config_path, {
        "listen": listen,
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
        "queue": q,
    })
    inst = Instance(data_dir, domain, hostname, ip)
    for address, password in (users or {}).items():
        run_cli("user", "add", address, "--password-stdin", "--data-dir", str(data_dir),
                stdin=password + "\n")
        inst.users[address] = password
    if not _dkim_from_store(data_dir, domain):
        run_cli("dkim", "rotate", domain, "--activate", "--data-dir", str(data_dir))
    return inst


def publish(zone: Zone, inst: Instance, *, dkim: bool = True) -> None:
    """MX, A, SPF, DKIM and DMARC records of ``inst``'s domain."""
    zone.add(inst.domain, "MX", (10, inst.hostname))
    zone.add(inst.hostname, "A", inst.ip)
    zone.add(inst.domain, "TXT", "v=spf1 mx -all")
    zone.add(f"_dmarc.{inst.domain}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{inst.domain}")
    if dkim:
        for selector, value in inst.dkim_records():
            zone.add(f"{selector}._domainkey.{inst.domain}", "TXT", value)


def wait_for(check: Callable[[], Any], timeout: float, what: str, *,
             log: Callable[[], str] | None = None) -> Any:
    """Polls ``check`` until it returns something truthy; fails with ``what`` (and a log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log()[-6000:] if log is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.1)


def submit(inst: Instance, sender: str, rcpts: list[str], message: bytes) -> None:
    """Authenticated submission over STARTTLS on ``inst``'s submission port (587's role)."""
    import smtplib

    from helpers import tls_context

    assert inst.server is not None
    with smtplib.SMTP(inst.ip, inst.ports["submission"], timeout=20) as smtp:
        smtp.starttls(context=tls_context(inst.server.cert_path, inst.hostname))
        smtp.login(sender, inst.users[sender])
        smtp.sendmail(sender, rcpts, message)


def make_mail(sender: str, rcpt: str, subject: str, body: str = "Hello Bob.\r\n") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nMessage-ID: <{subject}@test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
    ).encode()


class _RequireTlsSMTP(AioSMTP):  # type: ignore[misc]
    """aiosmtpd's server taking the MAIL parameter REQUIRETLS (RFC 8689), which it does not
    know; the handler offers the keyword in EHLO on TLS sessions."""

    def _getparams(self, params: Any) -> Any:
        found = super()._getparams(params)
        if found is not None:
            found.pop("REQUIRETLS", None)
        return found


class _ClosingController(Controller):
    """aiosmtpd's Controller that closes every open connection when it stops: its own stop()
    only cancels tasks, so a connection accepted at that moment (a retry arriving as the test
    ends) leaks its socket: asyncio's accept task is cancelled after it closed the transport
    but before the close ran, and garbage collection later reports a ResourceWarning in
    whatever test runs then."""

    def __init__(self, *args: Any, requiretls: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requiretls = requiretls
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()

    def factory(self) -> Any:
        if self._requiretls:
            session = _RequireTlsSMTP(self.handler, **self.SMTP_kwargs)
        else:
            session = super().factory()
        self._sessions.add(session)
        return session

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None:
            closed = threading.Event()

            def close_all() -> None:
                if self.server is not None:
                    self.server.close()  # no new connections from here on
                for session in list(self._sessions):
                    # After STARTTLS, transport is the TLS layer over _original_transport.
                    for transport in (session.transport, session._original_transport):
                        if transport is not None:
                            transport.close()
                closed.set()

            # Twice: a connection accepted just before the server closed gets its session in
            # a task step that runs after the first pass.
            for _ in range(2):
                closed.clear()
                self.loop.call_soon_threadsafe(close_all)
                closed.wait(10)
        super().stop(no_assert)


class ScriptedPeer:
    """An aiosmtpd server on ``ip:port`` whose RCPT replies come from ``script`` (a list of
    replies used in turn; the last repeats); accepted messages are kept in ``received``.
    With ``tls_context`` it offers STARTTLS; ``mails`` has the MAIL commands it saw (their
    parameters in ``mail_options``) and ``tls`` whether each accepted message came over TLS.
    With ``requiretls`` it offers REQUIRETLS (RFC 8689) once TLS is up."""

    def __init__(self, ip: str, port: int, script: list[str],
                 tls_context: ssl.SSLContext | None = None, *, requiretls: bool = False) -> None:
        self.script = list(script)
        self.received: list[tuple[str, list[str], bytes]] = []
        self.mails: list[str] = []
        self.mail_options: list[list[str]] = []
        self.tls: list[bool] = []
        self.rcpt_calls = 0
        peer = self

        class Handler:
            async def handle_MAIL(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: list[str]) -> str:
                peer.mails.append(address)
                peer.mail_options.append(list(options))
                envelope.mail_from = address
                envelope.mail_options.extend(options)
                return "250 2.1.0 Ok"

            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: Any) -> str:
                reply = peer.script[min(peer.rcpt_calls, len(peer.script) - 1)]
                peer.rcpt_calls += 1
                if reply.startswith("250"):
                    envelope.rcpt_tos.append(address)
                return reply

            async def handle_EHLO(self, server: Any, session: Any, envelope: Any,
                                  hostname: str, responses: list[str]) -> list[str]:
                session.host_name = hostname
                if requiretls and session.ssl is not None:
                    responses.insert(-1, "250-REQUIRETLS")
                return responses

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                peer.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                      bytes(envelope.original_content)))
                peer.tls.append(session.ssl is not None)
                return "250 2.0.0 Ok: queued"

        extra: dict[str, Any] = {"tls_context": tls_context} if tls_context else {}
        self.controller = _ClosingController(Handler(), hostname=ip, port=port,
                                             requiretls=requiretls, **extra)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class FastSink:
    """A minimal asyncio SMTP sink (not aiosmtpd, so it is never the bottleneck) on ``ip:port``
    in a thread of its own: PIPELINING, 8BITMIME, SMTPUTF8, no TLS; every message is accepted
    and the value of its ``X-Token`` header is appended to ``tokens``. With ``dsn`` it also
    offers DSN (RFC 3461); ``commands`` has every MAIL and RCPT line it saw."""

    def __init__(self, ip: str, port: int, *, dsn: bool = False) -> None:
        self.ip, self.port = ip, port
        self.dsn = dsn
        self.commands: list[str] = []
        self._sessions: set[asyncio.Task[Any]] = set()
        self.tokens: list[str] = []
        self.signed = 0  # messages carrying two DKIM-Signature fields
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise ServerError("sink did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._session, self.ip, self.port, limit=1 << 24))
        self._ready.set()
        self._loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            writer.write(b"220 sink.test ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"MAIL", b"RCPT"):
                    with self.lock:
                        self.commands.append(line.decode("utf-8", "replace").rstrip("\r\n"))
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 + (b"250-DSN\r\n" if self.dsn else b"")
                                 + b"250-SMTPUTF8\r\n250 SIZE 100000000\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    token = b""
                    for header_line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                        if header_line.lower().startswith(b"x-token:"):
                            token = header_line[8:].strip()
                    with self.lock:
                        self.tokens.append(token.decode())
                        self.signed += data.count(b"\r\nDKIM-Signature:") + data.startswith(
                            b"DKIM-Signature:") >= 2
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 ok\r\n")
                if not reader._buffer:  # type: ignore[attr-defined]  # flush per pipeline group
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    def count(self) -> int:
        with self.lock:
            return len(self.tokens)

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            # Sessions still open (a client's QUIT on its way) end now, their sockets closed.
            live = list(self._sessions)
            for task in live:
                task.cancel()
            await asyncio.gather(*live, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def queue_directly(data_dir: Path, sender: str, rcpt: str, count: int, size: int = 1024, *,
                   burst: bool = True) -> None:
    """Puts ``count`` messages of about ``size`` bytes for ``rcpt`` straight into the queue of
    a stopped (or running) instance, as submission would; each carries ``X-Token: N``.

    ``burst``: all at once, as concurrent submissions would (PostgreSQL then numbers the rows
    in whatever order the transactions commit); without it one after another, so the queue
    listing shows them in queue-ID order on every backend."""
    from mailstead.storage.interfaces import IncomingMessage

    async def go() -> None:
        from mailstead.storage import open_store

        store = await open_store(data_dir)
        try:
            async def one(i: int) -> None:
                head = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: load {i}\r\n"
                        f"Message-ID: <load{i}@test>\r\nX-Token: {i}\r\n\r\n")
                body = ("x" * 70 + "\r\n") * max(1, (size - len(head)) // 72)
                await store.accept_message(IncomingMessage(
                    data=(head + body).encode(), queue_id=f"L{i:06d}", mail_from=sender,
                    local=[], remote=[rcpt], internal_date=time.time(), envelope="{}",
                    bodystructure="{}"))

            if not burst:
                for i in range(count):
                    await one(i)
                return
            for start in range(0, count, 500):
                await asyncio.gather(*(one(i) for i in range(start, min(count, start + 500))))
        finally:
            await store.close()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# The CLI with its exit status, a test CA, and an HTTPS server for MTA-STS policies


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def cli(*args: str, timeout: float = 60) -> CliResult:
    """``python -m mailstead ARGS`` with its exit status and both streams (run_cli raises on
    a failure; these tests look at failures too)."""
    proc = subprocess.run([sys.executable, "-m", "mailstead", *args], capture_output=True,
                          text=True, timeout=timeout, env=child_env(), cwd=REPO, check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


class LocalCA:
    """A certificate authority for the test and the server certificates it issues, as PEM
    files under ``directory`` (``ca_path`` is what ``[queue] tls_ca_file`` points at)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mailstead Test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, *names: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        cert_path = self.directory / f"{names[0]}.pem"
        key_path = self.directory / f"{names[0]}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.issue(*names))
        return context


class PolicyServer:
    """HTTPS on ``ip:port`` serving ``policy`` at /.well-known/mta-sts.txt (RFC 8461 section
    3.3) with a certificate for ``host``; counts the fetches in ``fetches``."""

    def __init__(self, ip: str, port: int, host: str, policy: str, ca: LocalCA) -> None:
        self.policy = policy
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                owner.fetches += 1
                body = owner.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer((ip, port), Handler)
        self.httpd.socket = ca.server_context(host).wrap_socket(self.httpd.socket,
                                                                server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
