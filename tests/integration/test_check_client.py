"""``mailstead check-client`` against a running Mailstead: every fault the issue names is
induced for real (closed port, SSL/STARTTLS mismatch both ways, expired certificate and one
for another name, wrong password, wrong user name form, 2FA with the account password, a
blocked address, a port that accepts and never answers) and the exact diagnosis asserted."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import (
    HOSTNAME,
    REMOTE_CLIENT,
    REPO,
    Server,
    Users,
    _open_store,
    child_env,
    enable_2fa,
    init_data_dir,
    rewrite_tables,
    run_cli,
)

ALICE, ALICE_PW = "alice@example.test", "Alice-pass-123"
BOB, BOB_PW = "bob@example.test", "Bob-pass-4567"
STANDARD = {993: "imaps", 143: "imap", 995: "pop3s", 110: "pop3", 465: "submissions",
            587: "submission", 25: "smtp"}
# Failed logins must neither slow these tests down nor block 127.0.0.1 by themselves.
SECURITY = {"max_failures": 1000, "failure_delay": 0, "max_failure_delay": 0}


def start_server(data_dir: Path, tls: dict[str, str] | None = None) -> Server:
    init_data_dir(data_dir, Users({ALICE: ALICE_PW, BOB: BOB_PW}))
    tables: dict[str, dict[str, Any]] = {"security": SECURITY, "pop3": {"auth_failure_delay": 0}}
    if tls:
        tables["tls"] = tls
    rewrite_tables(data_dir / "mailstead.toml", tables)
    return Server(data_dir).start()


def stop_server(server: Server) -> None:
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("checkclient") / "data")
    try:
        yield srv
    finally:
        stop_server(srv)


def check_client(server: Server, *, password: str | None, email: str = ALICE,
                 ports: dict[int, int] | None = None, extra: tuple[str, ...] = (),
                 ca_file: Path | None = None, timeout: float = 2) -> tuple[int, dict[str, Any]]:
    """Run the command with every standard port mapped to the server's real one."""
    mapping = {std: server.ports[name] for std, name in STANDARD.items()}
    mapping.update(ports or {})
    # From an address other than the server's: its own host may log in without TLS.
    args = ["check-client", "--email", email, "--server", HOSTNAME, "--connect", "127.0.0.1",
            "--source", REMOTE_CLIENT, "--ca-file", str(ca_file or server.cert_path),
            "--timeout", str(timeout), "--json",
            *(f"--port={std}={port}" for std, port in mapping.items()), *extra]
    if password is not None:
        args.append("--password-stdin")
    proc = subprocess.run([sys.executable, "-m", "mailstead", *args],
                          input=(password + "\n") if password is not None else "",
                          capture_output=True, text=True, env=child_env(), cwd=REPO,
                          timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def row(report: dict[str, Any], protocol: str, port: int, security: str) -> dict[str, Any]:
    for item in report["results"]:
        if (item["protocol"], item["port"], item["security"]) == (protocol, port, security):
            return item
    raise AssertionError(f"no row {protocol} {port} {security} in {report['results']}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_finds_working_settings(server: Server) -> None:
    code, report = check_client(server, password=ALICE_PW)
    assert code == 0
    assert report["ok"] is True
    for protocol, port, security in (("imap", 993, "ssl"), ("imap", 143, "starttls"),
                                     ("pop3", 995, "ssl"), ("pop3", 110, "starttls"),
                                     ("smtp", 465, "ssl"), ("smtp", 587, "starttls")):
        assert row(report, protocol, port, security)["cause"] == "ok"
    # The password is never sent in the clear: plain settings are diagnosed, not tried.
    for protocol, port in (("imap", 143), ("pop3", 110), ("smtp", 587)):
        assert row(report, protocol, port, "none")["cause"] == "login_before_tls"
    assert row(report, "smtp", 25, "starttls")["cause"] == "no_auth"
    assert report["use"] == {
        "imap": {"host": HOSTNAME, "port": 993, "security": "ssl", "username": ALICE},
        "pop3": {"host": HOSTNAME, "port": 995, "security": "ssl", "username": ALICE},
        "smtp": {"host": HOSTNAME, "port": 465, "security": "ssl", "username": ALICE},
    }


def test_text_report_ends_with_the_settings(server: Server) -> None:
    mapping = [f"--port={std}={server.ports[name]}" for std, name in STANDARD.items()]
    out = run_cli("check-client", "--email", ALICE, "--server", HOSTNAME, "--connect",
                  "127.0.0.1", "--source", REMOTE_CLIENT, "--ca-file", str(server.cert_path),
                  "--timeout", "2",
                  "--password-stdin", *mapping, stdin=ALICE_PW + "\n")
    assert "login refused before TLS" in out
    assert out.rstrip().endswith(
        f"outgoing (SMTP): server {HOSTNAME}, port 465, security SSL/TLS, user name {ALICE}")


def test_wrong_port_is_refused(server: Server) -> None:
    _, report = check_client(server, password=ALICE_PW, ports={993: free_port()})
    assert row(report, "imap", 993, "ssl")["cause"] == "refused"
    assert report["use"]["imap"]["port"] == 143  # the STARTTLS port still works


def test_ssl_on_a_starttls_port(server: Server) -> None:
    _, report = check_client(server, password=ALICE_PW,
                             ports={993: server.ports["imap"], 465: server.ports["submission"],
                                    995: server.ports["pop3"]})
    for protocol, port in (("imap", 993), ("smtp", 465), ("pop3", 995)):
        item = row(report, protocol, port, "ssl")
        assert item["cause"] == "expects_starttls", item
        assert "turn SSL/TLS off and STARTTLS on" in item["fix"]


def test_starttls_on_an_ssl_port(server: Server) -> None:
    _, report = check_client(server, password=ALICE_PW,
                             ports={143: server.ports["imaps"], 587: server.ports["submissions"],
                                    110: server.ports["pop3s"]})
    for protocol, port in (("imap", 143), ("smtp", 587), ("pop3", 110)):
        item = row(report, protocol, port, "starttls")
        assert item["cause"] == "expects_ssl", item
        assert "turn SSL/TLS on (not STARTTLS)" in item["fix"]


def test_wrong_password(server: Server) -> None:
    """The password is sent once: the first definite refusal stands for every setting, so
    two runs with a typo do not block the checking machine (max_failures is 10)."""
    before = _failed_logins(server)
    code, report = check_client(server, password="not-the-password")
    assert code == 1
    for protocol, port, security in (("imap", 993, "ssl"), ("pop3", 110, "starttls"),
                                     ("smtp", 587, "starttls")):
        assert row(report, protocol, port, security)["cause"] == "wrong_password"
    assert report["use"] == {"imap": None, "pop3": None, "smtp": None}
    deadline = time.monotonic() + 10  # the audit is written in batches, within a second
    while (after := _failed_logins(server)) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after == before + 1
    first = row(report, "imap", 993, "ssl")
    assert "not sent again" not in first["detail"], first
    assert "not sent again: refused on IMAP" in row(report, "smtp", 587, "starttls")["detail"]


def _failed_logins(server: Server) -> int:
    """Alice's failed logins in the audit log."""
    out = run_cli("user", "logins", ALICE, "--limit", "1000", "--data-dir",
                  str(server.data_dir))
    return sum(1 for line in out.splitlines() if "bad_credentials" in line)


def test_username_without_domain(server: Server) -> None:
    _, report = check_client(server, password=ALICE_PW, extra=("--username", "alice"))
    item = row(report, "imap", 993, "ssl")
    assert item["cause"] == "username_form"
    assert item["fix"] == "use the full e-mail address as the user name"


def test_dropped_port(server: Server) -> None:
    """A listener that accepts and never answers: the greeting never comes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        _, report = check_client(server, password=ALICE_PW,
                                 ports={587: listener.getsockname()[1]}, timeout=1)
    finally:
        stop.set()
        thread.join()
        for sock in held:
            sock.close()
        listener.close()
    item = row(report, "smtp", 587, "starttls")
    assert item["cause"] == "dropped", item
    assert "465 instead of 587" in item["fix"]


def test_two_factor_wants_an_app_password(server: Server) -> None:
    rest = enable_2fa(server.data_dir, BOB).output
    assert "two-factor authentication is on" in rest
    _, report = check_client(server, password=BOB_PW, email=BOB)
    for protocol, port, security in (("imap", 993, "ssl"), ("pop3", 995, "ssl"),
                                     ("smtp", 465, "ssl")):
        item = row(report, protocol, port, security)
        assert item["cause"] == "app_password", item
        assert "app-specific password" in item["detail"]


async def _block(data_dir: Path, network: str) -> None:
    from mailstead.storage.interfaces import IpBlock

    store = await _open_store(data_dir)
    try:
        now = time.time()
        await store.add_block(IpBlock(network, now + 600, 10, now, "test"))
    finally:
        await store.close()


def test_blocked_address(server: Server) -> None:
    asyncio.run(_block(server.data_dir, REMOTE_CLIENT))
    time.sleep(2.5)  # the server re-reads its block list every 2 s
    try:
        _, report = check_client(server, password=ALICE_PW)
    finally:
        run_cli("security", "unblock", REMOTE_CLIENT, "--data-dir", str(server.data_dir))
        time.sleep(2.5)
    for protocol, port, security in (("imap", 993, "ssl"), ("pop3", 995, "ssl"),
                                     ("smtp", 587, "starttls")):
        item = row(report, protocol, port, security)
        assert item["cause"] == "blocked", item


def make_cert(directory: Path, name: str, *, expired: bool) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else \
        (now - dt.timedelta(days=1), now + dt.timedelta(days=90))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return {"cert": str(cert_path), "key": str(key_path)}


@pytest.mark.parametrize(("expired", "name", "cause"), [
    (True, HOSTNAME, "cert_expired"),
    (False, "other.example.test", "cert_name"),
])
def test_certificate_faults(tmp_path: Path, expired: bool, name: str, cause: str) -> None:
    tls = make_cert(tmp_path / "tls", name, expired=expired)
    srv = start_server(tmp_path / "data", tls)
    try:
        _, report = check_client(srv, password=ALICE_PW, ca_file=Path(tls["cert"]))
        for protocol, port, security in (("imap", 993, "ssl"), ("imap", 143, "starttls"),
                                         ("smtp", 465, "ssl"), ("pop3", 110, "starttls")):
            item = row(report, protocol, port, security)
            assert item["cause"] == cause, item
        # Untrusted: the same server checked against the system's authorities.
        _, report = check_client(srv, password=ALICE_PW, ca_file=Path("/etc/ssl/certs/"
                                                                      "ca-certificates.crt"))
        assert row(report, "imap", 993, "ssl")["cause"] in ("cert_untrusted", cause)
    finally:
        stop_server(srv)


def test_discovers_settings_through_srv_records(server: Server) -> None:
    """No --server: the RFC 6186 SRV records in a loopback DNS server lead to the ports."""
    from dnslib import SRV, A
    from dnslib.server import DNSLogger, DNSServer
    from test_doctor import Zone

    zone = Zone({(HOSTNAME, "A"): [A("127.0.0.1")]})
    for name, listener in (("_imaps._tcp", "imaps"), ("_imap._tcp", "imap"),
                           ("_submission._tcp", "submission")):
        zone.records[(f"{name}.example.test", "SRV")] = [
            SRV(priority=0, weight=1, port=server.ports[listener], target=HOSTNAME + ".")]
    zone.records[("_pop3s._tcp.example.test", "SRV")] = [SRV(0, 0, 0, ".")]  # not offered
    dns_server = DNSServer(zone, port=0, address="127.0.0.1",
                           logger=DNSLogger(logf=lambda _: None))
    dns_server.start_thread()
    try:
        out = run_cli("check-client", "--email", ALICE, "--nameserver",
                      f"127.0.0.1:{dns_server.server.server_address[1]}", "--autoconfig-url",
                      "http://127.0.0.1:9/none", "--ca-file", str(server.cert_path),
                      "--timeout", "2", "--json", "--password-stdin", stdin=ALICE_PW + "\n")
    finally:
        dns_server.stop()
        dns_server.server.server_close()
    report = json.loads(out)
    assert report["found_through"] == ["SRV records of example.test (RFC 6186)"]
    assert report["use"]["imap"] == {"host": HOSTNAME, "port": server.ports["imaps"],
                                     "security": "ssl", "username": ALICE}
    assert report["use"]["smtp"]["port"] == server.ports["submission"]
    assert report["use"]["smtp"]["security"] == "starttls"
