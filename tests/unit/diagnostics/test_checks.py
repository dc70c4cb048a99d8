"""Server-side checks without a server: certificates made here, the queue summary, disk
space, the [doctor] config keys, autoconfig parsing, the plan of settings, and probes against
hostile in-process servers."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstead.config import parse_config
from mailstead.config.model import Config, HostPort
from mailstead.core.errors import ConfigError
from mailstead.core.secret import Secret
from mailstead.diagnostics import checks_server as srv
from mailstead.diagnostics.check_client import Report, Row, plan, render
from mailstead.diagnostics.classify import Cause
from mailstead.diagnostics.discovery import Discovered, parse_autoconfig
from mailstead.diagnostics.model import Status
from mailstead.diagnostics.probe import Credentials, ProbeResult, ProbeSettings, Target, probe
from mailstead.storage.interfaces import QueueEntry

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
HOST = "mail.example.test"


def _config(tmp_path: Path, extra: str = "") -> Config:
    text = f'hostname = "{HOST}"\n[tls]\ncert = "cert.pem"\nkey = "key.pem"\n{extra}'
    return parse_config(text, tmp_path / "mailstead.toml", tmp_path)


def _cert(subject: str, issuer_key: ec.EllipticCurvePrivateKey | None = None,
          issuer: str | None = None, *, days: float = 90, ca: bool = False,
          names: tuple[str, ...] = (HOST,)) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                          issuer or subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=10))
               .not_valid_after(NOW + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def _write(tmp_path: Path, *certs: x509.Certificate) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp_path / "cert.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))


def _by_name(checks: list[srv.Check]) -> dict[str, srv.Check]:
    return {c.name: c for c in checks}


def test_self_signed_certificate_warns(tmp_path: Path) -> None:
    cert, _ = _cert(HOST)
    _write(tmp_path, cert)
    checks = _by_name(srv.check_certificate(_config(tmp_path), NOW, roots=[]))
    assert checks["certificate name"].status is Status.PASS
    assert checks["certificate expiry"].status is Status.PASS
    assert checks["certificate chain"].status is Status.WARN
    assert "cannot verify server identity" in checks["certificate chain"].why


def test_certificate_for_another_name_expiring_soon(tmp_path: Path) -> None:
    cert, _ = _cert("other", names=("other.example.test",), days=5)
    _write(tmp_path, cert)
    checks = _by_name(srv.check_certificate(_config(tmp_path), NOW, roots=[]))
    assert checks["certificate name"].status is Status.FAIL
    assert "issued for other.example.test, not mail.example.test" in \
        checks["certificate name"].why
    assert checks["certificate expiry"].status is Status.WARN
    assert checks["certificate expiry"].why == "expires on 2030-01-06, in 5 days"


def test_expired_certificate_fails(tmp_path: Path) -> None:
    cert, _ = _cert(HOST, days=-2)
    _write(tmp_path, cert)
    checks = _by_name(srv.check_certificate(_config(tmp_path), NOW, roots=[]))
    assert checks["certificate expiry"].status is Status.FAIL
    assert checks["certificate expiry"].why.startswith("expired on 2029-12-30")


def test_chain_complete_and_incomplete(tmp_path: Path) -> None:
    root, root_key = _cert("Test Root", ca=True, days=3000)
    inter, inter_key = _cert("Test Intermediate", root_key, "Test Root", ca=True, days=2000)
    leaf, _ = _cert(HOST, inter_key, "Test Intermediate")
    _write(tmp_path, leaf, inter)
    checks = _by_name(srv.check_certificate(_config(tmp_path), NOW, roots=[root]))
    assert checks["certificate chain"].status is Status.PASS, checks["certificate chain"]
    _write(tmp_path, leaf)  # the leaf alone: cert.pem instead of fullchain.pem
    checks = _by_name(srv.check_certificate(_config(tmp_path), NOW, roots=[root]))
    assert checks["certificate chain"].status is Status.FAIL
    assert "fullchain.pem" in checks["certificate chain"].fix


def test_unreadable_certificate(tmp_path: Path) -> None:
    checks = srv.check_certificate(_config(tmp_path), NOW, roots=[])
    assert [c.status for c in checks] == [Status.FAIL]


def _entry(state: str, created: float, error: str | None) -> QueueEntry:
    return QueueEntry(1, "q1", "a@example.test", "b@remote.test", "blob", state, 1,
                      created + 60, created, error)


def test_queue_summary() -> None:
    assert srv.check_queue([], now=1e6).status is Status.PASS
    entries = [_entry("deferred", 1e6 - 7200, "421 4.7.0 try later"),
               _entry("deferred", 1e6 - 100, "421 4.7.0 try later"),
               _entry("deferred", 1e6 - 50, "connection timed out"),
               _entry("delivered", 0, None)]
    check = srv.check_queue(entries, now=1e6)
    assert check.status is Status.WARN
    assert check.why == ("3 deferred recipient(s), oldest 2.0 h; most common error (2x): "
                         "421 4.7.0 try later")


def test_disk_space(tmp_path: Path) -> None:
    assert srv.check_disk(tmp_path).status in (Status.PASS, Status.WARN, Status.FAIL)
    assert srv.check_disk(tmp_path / "missing").status is Status.FAIL
    # A reserve of the whole filesystem: under it now, so mail is refused (452 4.3.1).
    under = srv.check_disk(tmp_path, reserve_mb=1024 * 1024 * 1024, reserve_percent=100)
    assert under.status is Status.FAIL
    assert "reserve" in under.why


def test_doctor_config(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.doctor.time_server == HostPort("pool.ntp.org", 123)
    config = _config(tmp_path, '[doctor]\ndnsbl_zones = ["Bl.Test"]\nprobe_host = ""\n'
                     'time_server = "127.0.0.1"\n')
    assert config.doctor.dnsbl_zones == ("bl.test",)
    assert config.doctor.probe_host is None
    assert config.doctor.time_server == HostPort("127.0.0.1", 123)
    with pytest.raises(ConfigError, match=r"mailstead.toml:6: doctor.probe_host: expected"):
        _config(tmp_path, '[doctor]\nprobe_host = "a:b:c"\n')
    with pytest.raises(ConfigError, match="unknown"):
        _config(tmp_path, "[doctor]\nprobe = 1\n")


def test_outbound_port25_blocked(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = _config(tmp_path, f'[doctor]\nprobe_host = "127.0.0.1:{port}"\n')
    check = asyncio.run(srv.check_outbound_port25(config, 2))
    assert check is not None
    assert check.status is Status.WARN
    assert '[queue.smarthost."*"]' in check.fix


def test_parse_autoconfig() -> None:
    doc = b"""<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="x">
      <incomingServer type="imap"><hostname>Mail.Example.test</hostname><port>993</port>
        <socketType>SSL</socketType></incomingServer>
      <incomingServer type="pop3"><hostname>mail.example.test</hostname><port>110</port>
        <socketType>STARTTLS</socketType></incomingServer>
      <incomingServer type="exchange"><hostname>x</hostname><port>1</port>
        <socketType>SSL</socketType></incomingServer>
      <outgoingServer type="smtp"><hostname>mail.example.test</hostname><port>99999</port>
        <socketType>SSL</socketType></outgoingServer>
    </emailProvider></clientConfig>"""
    assert parse_autoconfig(doc) == [Target("imap", HOST, 993, "ssl"),
                                     Target("pop3", HOST, 110, "starttls")]
    assert parse_autoconfig(b"<not xml") == []
    assert parse_autoconfig(b"<a>" + b"x" * 70000 + b"</a>") == []


def test_plan_remaps_and_deduplicates() -> None:
    found = Discovered([Target("imap", HOST, 993, "ssl"), Target("smtp", "smtp.x.test", 2465,
                                                                  "ssl")])
    pairs = plan("", address="127.0.0.1", ports={993: 10993}, discovered=found)
    targets = [t for _, t in pairs]
    assert targets[0] == Target("imap", HOST, 993, "ssl", "127.0.0.1")
    assert Target("imap", HOST, 10993, "ssl", "127.0.0.1") in targets
    assert Target("smtp", "smtp.x.test", 587, "starttls", "127.0.0.1") in targets
    assert not any(t.protocol == "pop3" for t in targets)  # nothing discovered for POP3
    assert len(targets) == len(set(targets))


def test_render_recommends_ssl_first() -> None:
    report = Report("a@example.test")
    for port, security, cause in ((143, "starttls", Cause.OK), (993, "ssl", Cause.OK),
                                  (587, "starttls", Cause.WRONG_PASSWORD)):
        protocol = "smtp" if port == 587 else "imap"
        report.rows.append(Row(port, ProbeResult(Target(protocol, HOST, port, security),  # type: ignore[arg-type]
                                                 cause), "a@example.test"))
    text = render(report)
    assert f"incoming (IMAP): server {HOST}, port 993, security SSL/TLS" in text
    assert "outgoing (SMTP): nothing works; the server refused the user name or password" in text
    assert not report.ok()


async def _hostile(payload: bytes, *, close: bool) -> ProbeResult:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(payload)
            await writer.drain()
            if not close:
                await asyncio.sleep(3)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await probe(Target("imap", HOST, port, "starttls", "127.0.0.1"),
                           Credentials("a", Secret("b")), ProbeSettings(timeout=1))


@pytest.mark.parametrize(("payload", "close", "cause"), [
    (b"x" * 100_000, False, Cause.PROTOCOL_ERROR),   # an endless line
    (b"* OK hi\r\n" + b"* junk\r\n" * 500, True, Cause.PROTOCOL_ERROR),  # no tagged answer
    (b"220 smtp here\r\n", True, Cause.WRONG_PROTOCOL),
    (b"* BYE go away, too many connections\r\n", True, Cause.REJECTED),
    (b"\x15\x03\x03\x00\x02\x02\x46", False, Cause.EXPECTS_SSL),
    (b"", True, Cause.CLOSED),
    (b"* OK ready\r\n", True, Cause.CLOSED),
])
def test_hostile_servers_end_as_findings(payload: bytes, close: bool, cause: Cause) -> None:
    result = asyncio.run(_hostile(payload, close=close))
    assert result.cause is cause, result


def test_every_listener_the_config_can_hold_has_a_check() -> None:
    """A listener without a probe used to end the whole listeners check with a KeyError."""
    import dataclasses

    from mailstead.config.model import ListenConfig

    for item in dataclasses.fields(ListenConfig):
        assert item.name in srv._LISTENERS or item.name in ("http", "https"), item.name
