"""OutboundClient against aiosmtpd peers on loopback: per-recipient replies, target order,
opportunistic and required STARTTLS with a test CA, SMTPUTF8/SIZE decisions, hostile peers."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstead.core.secret import Secret
from mailstead.queue.client import AttemptResult, OutboundClient
from mailstead.queue.mtasts import TlsRptCounters
from mailstead.queue.routing import Route, Smarthost, Target

# -- a test CA ------------------------------------------------------------------------------


@dataclass
class LocalCA:
    """A CA and server certificates it issues, as PEM files under ``directory``."""

    directory: Path
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(
        ec.SECP256R1()))

    def __post_init__(self) -> None:
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
        self.ca_path = self.directory / "ca.pem"
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

    def client_factory(self) -> Callable[[bool], ssl.SSLContext]:
        def factory(verify: bool) -> ssl.SSLContext:
            if not verify:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                return context
            return ssl.create_default_context(cafile=str(self.ca_path))
        return factory


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a scripted aiosmtpd peer ---------------------------------------------------------------


class Peer:
    """aiosmtpd on 127.0.0.1; RCPT replies come from ``rcpt_replies`` by recipient."""

    def __init__(self, rcpt_replies: dict[str, str] | None = None, **smtp: Any) -> None:
        self.rcpt_replies = rcpt_replies or {}
        self.mails: list[str] = []
        self.received: list[tuple[str, list[str], bytes, list[str]]] = []
        self.port = free_port()
        peer = self

        class Handler:
            async def handle_MAIL(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: list[str]) -> str:
                peer.mails.append(address)
                envelope.mail_from = address
                envelope.mail_options.extend(options)
                return "250 2.1.0 OK"

            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: Any) -> str:
                reply = peer.rcpt_replies.get(address, "250 2.1.5 OK")
                if reply.startswith("250"):
                    envelope.rcpt_tos.append(address)
                return reply

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                peer.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                      bytes(envelope.original_content),
                                      list(envelope.mail_options)))
                return "250 2.0.0 queued"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **smtp)
        self.controller.start()

    def target(self, host: str = "mx.b.test") -> Target:
        return Target(host, "127.0.0.1", self.port)

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    started: list[Peer] = []

    def start(*args: Any, **kwargs: Any) -> Peer:
        started.append(Peer(*args, **kwargs))
        return started[-1]

    yield start
    for peer in started:
        peer.stop()


def run(coro: Coroutine[Any, Any, AttemptResult]) -> AttemptResult:
    return asyncio.run(coro)


def client(ca: LocalCA, **kwargs: Any) -> OutboundClient:
    kwargs.setdefault("connect_timeout", 5.0)
    kwargs.setdefault("command_timeout", 5.0)
    return OutboundClient("a.test", tls_context_factory=ca.client_factory(), **kwargs)


MESSAGE = b"From: alice@a.test\nSubject: hi\n\n.starts with a dot\r\nbare\rcr\r\n"


def test_per_recipient_replies_in_one_pipelined_transaction(ca: LocalCA, peers: Any) -> None:
    peer = peers({"later@b.test": "451 4.2.1 try later", "gone@b.test": "550 5.1.1 no such user"},
                 tls_context=ca.server_context("mx.b.test"))
    route = Route("mx", [peer.target()])
    result = run(client(ca).deliver(route, "alice@a.test",
                                    ["bob@b.test", "later@b.test", "gone@b.test"], MESSAGE))
    assert [(r.rcpt, r.reply.code, r.permanent) for r in result.results] == [
        ("bob@b.test", 250, False), ("later@b.test", 451, False), ("gone@b.test", 550, True)]
    assert result.results[2].reply.enhanced == "5.1.1"
    assert result.peer == f"mx.b.test[127.0.0.1]:{peer.port}"
    assert result.tls is not None
    assert result.tls.endswith("unverified")  # opportunistic STARTTLS (RFC 7435)
    [(sender, rcpts, content, options)] = peer.received
    assert sender == "alice@a.test"
    assert rcpts == ["bob@b.test"]
    # Every line ending became CRLF; the leading dot survived the round trip.
    assert content == (b"From: alice@a.test\r\nSubject: hi\r\n\r\n.starts with a dot\r\n"
                       b"bare\r\ncr\r\n")
    assert f"SIZE={len(MESSAGE)}" in options


def test_targets_tried_in_order_until_one_answers(ca: LocalCA, peers: Any) -> None:
    peer = peers()
    dead = Target("mx1.b.test", "127.0.0.1", free_port())
    route = Route("mx", [dead, peer.target("mx2.b.test")])
    result = run(client(ca).deliver(route, "", ["bob@b.test"], b"Subject: x\r\n\r\nbody\r\n"))
    assert result.results[0].reply.code == 250
    assert result.peer.startswith("mx2.b.test[")
    assert result.tls is None  # this peer offers no STARTTLS: plaintext is fine here
    assert peer.mails == ["<>"]  # the null reverse-path of a bounce


def test_all_targets_down_is_a_temporary_failure(ca: LocalCA) -> None:
    route = Route("mx", [Target("mx.b.test", "127.0.0.1", free_port())])
    result = run(client(ca).deliver(route, "alice@a.test", ["bob@b.test"], b"x"))
    [r] = result.results
    assert r.reply.code == 451
    assert not r.permanent
    assert "connection failed" in r.reply.text


def test_required_tls_with_a_mismatching_certificate_sends_nothing(
        ca: LocalCA, peers: Any) -> None:
    peer = peers(tls_context=ca.server_context("evil.test"))
    counters = TlsRptCounters()
    route = Route("mx", [peer.target("mx.b.test")], tls_required=True,
                  tls_names=("mx.b.test",), policy_domain="b.test", mta_sts_mode="enforce")
    result = run(client(ca, tlsrpt=counters).deliver(route, "alice@a.test", ["bob@b.test"],
                                                     b"secret\r\n"))
    [r] = result.results
    assert r.reply.code == 451
    assert r.reply.enhanced == "4.7.5"
    assert not r.permanent
    assert "certificate" in r.reply.text
    assert peer.mails == []
    assert peer.received == []
    [(key, counts)] = counters.snapshot().items()
    assert key == ("b.test", "sts")
    assert counts.failures == {"certificate-host-mismatch": 1}


def test_required_tls_verified_against_the_mx_name(ca: LocalCA, peers: Any) -> None:
    peer = peers(tls_context=ca.server_context("mx.b.test"))
    counters = TlsRptCounters()
    route = Route("mx", [peer.target("mx.b.test")], tls_required=True, policy_domain="b.test")
    result = run(client(ca, tlsrpt=counters).deliver(route, "alice@a.test", ["bob@b.test"],
                                                     b"x\r\n"))
    assert result.results[0].reply.code == 250
    assert result.tls is not None
    assert result.tls.endswith(" verified")
    assert counters.snapshot()[("b.test", "sts")].successes == 1


def test_required_tls_without_starttls_is_temporary(ca: LocalCA, peers: Any) -> None:
    peer = peers()
    route = Route("mx", [peer.target()], tls_required=True)
    [r] = run(client(ca).deliver(route, "alice@a.test", ["bob@b.test"], b"x")).results
    assert r.reply.enhanced == "4.7.10"
    assert not r.permanent
    assert peer.mails == []


def test_smtputf8_needed_but_not_offered_bounces_with_a_clear_reason(
        ca: LocalCA, peers: Any) -> None:
    peer = peers(enable_SMTPUTF8=False)
    route = Route("mx", [peer.target()])
    [r] = run(client(ca).deliver(route, "álice@a.test", ["bob@b.test"], b"x")).results
    assert r.permanent
    assert r.reply.enhanced == "5.6.7"
    assert "SMTPUTF8" in r.reply.text
    assert peer.mails == []


def test_smtputf8_sent_when_offered_and_idn_domains_as_a_labels_otherwise(
        ca: LocalCA, peers: Any) -> None:
    utf8 = peers(enable_SMTPUTF8=True)
    route = Route("mx", [utf8.target()])
    result = run(client(ca).deliver(route, "alice@a.test", ["bøb@b.test"], b"x",
                                    smtputf8=True))
    assert result.results[0].reply.code == 250
    assert "SMTPUTF8" in utf8.received[0][3]
    plain = peers(enable_SMTPUTF8=False)
    result = run(client(ca).deliver(Route("mx", [plain.target()]), "alice@a.test",
                                    ["bob@bücher.test"], b"x"))
    assert result.results[0].reply.code == 250
    assert plain.received[0][1] == ["bob@xn--bcher-kva.test"]


def test_message_over_the_announced_size_is_refused_without_sending(
        ca: LocalCA, peers: Any) -> None:
    peer = peers(data_size_limit=100)
    [r] = run(client(ca).deliver(Route("mx", [peer.target()]), "alice@a.test",
                                 ["bob@b.test"], b"x" * 500)).results
    assert r.permanent
    assert r.reply.enhanced == "5.3.4"
    assert peer.mails == []


def test_null_mx_no_domain_and_unsafe_recipients_need_no_connection(ca: LocalCA) -> None:
    c = client(ca)
    [r] = run(c.deliver(Route("null_mx", [], reason="b.test accepts no mail"),
                        "a@a.test", ["b@b.test"], b"x")).results
    assert (r.reply.code, r.reply.enhanced, r.permanent) == (556, "5.1.10", True)
    [r] = run(c.deliver(Route("no_domain", [], reason="nx"), "a@a.test", ["b@b.test"],
                        b"x")).results
    assert (r.reply.enhanced, r.permanent) == ("5.1.2", True)
    [r] = run(c.deliver(Route("mx", []), "a@a.test", ["b@b.test>\r\nDATA"], b"x")).results
    assert (r.reply.enhanced, r.permanent) == ("5.1.3", True)


def test_smarthost_implicit_tls_and_auth(ca: LocalCA, peers: Any) -> None:
    seen: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        seen.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    peer = peers(ssl_context=ca.server_context("relay.a.test"), authenticator=authenticator,
                 auth_require_tls=False, server_hostname="relay.a.test")
    for password, code in (("s3cret", 250), ("wrong", 451)):
        relay = Smarthost("relay.a.test", peer.port, "implicit", "alice", Secret(password))
        route = Route("smarthost", [Target("relay.a.test", "127.0.0.1", peer.port)],
                      tls_required=True, smarthost=relay)
        result = run(client(ca).deliver(route, "alice@a.test", ["bob@b.test"], b"x"))
        assert result.results[0].reply.code == code
        if code == 250:
            assert result.tls is not None
            assert result.tls.endswith(" verified")
        else:
            assert result.results[0].reply.enhanced == "4.7.8"  # our config: retry, no bounce
            assert "authentication failed" in result.results[0].reply.text
    assert seen == [("alice", "s3cret"), ("alice", "wrong")]
    assert len(peer.received) == 1


async def _scripted_server(script: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                            Coroutine[Any, Any, None]]
                           ) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("behaviour", ["garbage", "silent", "close_after_mail",
                                       "starttls_injection"])
def test_hostile_peers_give_temporary_failures(ca: LocalCA, behaviour: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if behaviour == "silent":
                await asyncio.sleep(3)
                return
            if behaviour == "garbage":
                writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                return
            writer.write(b"220 hostile.test ESMTP\r\n")
            await reader.readline()
            writer.write(b"250-hostile.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            if behaviour == "starttls_injection":
                await reader.readline()
                writer.write(b"220 go ahead\r\n250 injected\r\n")
                await writer.drain()
                await asyncio.sleep(1)
                return
            await reader.readline()  # STARTTLS
            writer.write(b"454 4.7.0 TLS not available\r\n")
            await reader.readline()  # MAIL
            writer.close()
        finally:
            writer.close()

    async def main() -> AttemptResult:
        server, port = await _scripted_server(script)
        try:
            c = client(ca, command_timeout=0.5)
            return await c.deliver(Route("mx", [Target("hostile.test", "127.0.0.1", port)]),
                                   "alice@a.test", ["bob@b.test"], b"x")
        finally:
            server.close()
            await server.wait_closed()

    [r] = asyncio.run(main()).results
    assert r.reply.code // 100 == 4
    assert not r.permanent


def test_failed_opportunistic_handshake_retries_the_host_in_plaintext(
        ca: LocalCA, peers: Any) -> None:
    server_context = ca.server_context("mx.b.test")
    server_context.minimum_version = ssl.TLSVersion.TLSv1_3
    peer = peers(tls_context=server_context)

    def old_client(verify: bool) -> ssl.SSLContext:
        context = ca.client_factory()(verify)
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # no common version: handshake fails
        return context

    c = OutboundClient("a.test", connect_timeout=5, command_timeout=5,
                       tls_context_factory=old_client)
    result = run(c.deliver(Route("mx", [peer.target()]), "alice@a.test", ["bob@b.test"],
                           b"x\r\n"))
    assert result.results[0].reply.code == 250
    assert result.tls is None  # RFC 7435: delivered without TLS after the failed handshake
    assert len(peer.received) == 1
    # The same failure where TLS is required is a deferral, and nothing is sent.
    result = run(c.deliver(Route("mx", [peer.target()], tls_required=True), "alice@a.test",
                           ["bob@b.test"], b"x\r\n"))
    assert result.results[0].reply.enhanced == "4.7.5"
    assert len(peer.received) == 1
