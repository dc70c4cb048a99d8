"""The server's life cycle against a real ``mailstead serve`` process: graceful SIGTERM (idle
clients told 421, a DATA transfer in flight finished and stored), SIGHUP certificate reload
(good and broken files), administration while running, start-up errors, and the ``--dev``
configuration as ``mailstead init`` writes it.

Each test runs its own server, because most of them stop it on purpose.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers import (
    DEFAULT_SMTP,
    HOSTNAME,
    PASSWORDS,
    REPO,
    RawSMTP,
    Server,
    Users,
    child_env,
    dot_stuff,
    init_data_dir,
    make_message,
    read_mailbox,
    rewrite_tables,
    rich_message,
    run_cli,
    split_received,
    store_args,
    tls_context,
    with_token,
)

from mailstead.core.certs import generate_self_signed

ALICE = "alice@example.test"
BOB = "bob@example.test"
SENDER = "sender@remote.test"
# RFC 5321 section 3.8 / RFC 3463: a server that is going away answers 421 with 4.3.2.
SHUTDOWN_CODE = (421, "4.3.2")
EXIT_WITHIN = 5.0  # seconds from SIGTERM to exit once no transaction is in flight
# A log line: "2024-01-01 10:00:00,123 INFO mailstead.app event key=value ...".
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \S+")
DEV_PORTS = {
    "smtp": 2525, "submission": 2587, "submissions": 2465,
    "imap": 2143, "imaps": 2993, "pop3": 2110, "pop3s": 2995, "http": 8080,
    "managesieve": 24190,
}
NOT_YET_LISTENERS: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Fixtures and small helpers


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data directory: alice and bob, every listener on loopback port 0."""
    path = tmp_path / "data"
    init_data_dir(path, Users(passwords=PASSWORDS), DEFAULT_SMTP)
    return path


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    """A running server; killed at the end if the test did not stop it itself."""
    srv = Server(data_dir).start(timeout=20)
    try:
        yield srv
    finally:
        srv.kill()


def send_signal(server: Server, sig: signal.Signals) -> None:
    os.kill(server.pid, sig)


def wait_exit(server: Server, timeout: float) -> tuple[int | None, float]:
    """Wait for the (already signalled) process to exit; its exit code and how long it took."""
    assert server.proc is not None
    start = time.monotonic()
    try:
        server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail(f"the server did not exit within {timeout} s\n{server.log_text()[-5000:]}")
    elapsed = time.monotonic() - start
    return server.stop(), elapsed  # the process is gone: stop() only reaps it


def wait_for_log(server: Server, needle: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while needle not in server.log_text():
        if time.monotonic() > deadline:
            pytest.fail(f"{needle!r} never appeared in the log:\n{server.log_text()[-5000:]}")
        time.sleep(0.02)


def assert_clean_log(server: Server) -> None:
    log = server.log_text()
    assert "Traceback" not in log, log[-10000:]
    assert "session crashed" not in log, log[-10000:]


def assert_shutdown_reply(client: RawSMTP) -> None:
    """The next reply is the 421 4.3.2 goodbye, and then the server closes the connection."""
    reply = client.read_reply()
    assert (reply.code, reply.enhanced) == SHUTDOWN_CODE, reply
    client.expect_closed(timeout=EXIT_WITHIN)


def assert_refused(port: int) -> None:
    """A new connection is refused, or closed without a greeting (never a 220)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return
    with sock:
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            return
    assert data == b"" or data.startswith(b"421"), f"new connection after SIGTERM got {data!r}"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def peer_der(client: RawSMTP) -> bytes:
    sock = client.sock
    assert isinstance(sock, ssl.SSLSocket), "not a TLS connection"
    der_bytes = sock.getpeercert(binary_form=True)
    assert der_bytes is not None
    return der_bytes


def new_certificate(tmp: Path, data_dir: Path, name: str) -> x509.Certificate:
    """A second self-signed certificate for the same host name, moved over DATA/tls/*.pem
    (each rename atomic, key first, as a renewal tool does)."""
    fresh = tmp / name
    cert = generate_self_signed(HOSTNAME, fresh / "cert.pem", fresh / "key.pem")
    os.replace(fresh / "key.pem", data_dir / "tls" / "key.pem")
    os.replace(fresh / "cert.pem", data_dir / "tls" / "cert.pem")
    return cert


def current_der(data_dir: Path) -> bytes:
    return der(x509.load_pem_x509_certificate((data_dir / "tls" / "cert.pem").read_bytes()))


def submissions_client(server: Server, trust: Path) -> RawSMTP:
    """A new implicit-TLS connection (port 465 role) that trusts only ``trust``; greeting read."""
    client = RawSMTP(server.ports["submissions"], tls=tls_context(trust, HOSTNAME))
    assert client.read_reply().code == 220
    return client


def auth_plain(client: RawSMTP, address: str, password: str) -> None:
    token = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
    reply = client.command(f"AUTH PLAIN {token}")
    assert reply.code == 235, reply


def send_mail(client: RawSMTP, sender: str, rcpt: str, message: bytes) -> None:
    """One complete transaction that must succeed."""
    for line, code in ((f"MAIL FROM:<{sender}>", 250), (f"RCPT TO:<{rcpt}>", 250), ("DATA", 354)):
        reply = client.command(line)
        assert reply.code == code, f"{line}: {reply}"
    client.send(dot_stuff(message))
    reply = client.read_reply()
    assert reply.code == 250, reply


def stored(data_dir: Path, address: str, token: str) -> list[bytes]:
    """The messages of ``address`` with ``token``, without our Received: header(s)."""
    found = with_token(read_mailbox(data_dir, address), token)
    return [split_received(m)[1] for m in found]


def serve_cmd(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mailstead", "serve", "--data-dir", str(data_dir)]


def config_of(data_dir: Path) -> dict[str, Any]:
    return tomllib.loads((data_dir / "mailstead.toml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# 1. SIGTERM with idle clients


def test_sigterm_says_goodbye_to_idle_clients_and_exits_promptly(server: Server) -> None:
    after_ehlo = RawSMTP(server.ports["smtp"])
    assert after_ehlo.read_reply().code == 220
    after_ehlo.ehlo()
    just_greeted = RawSMTP(server.ports["submission"])
    assert just_greeted.read_reply().code == 220
    over_tls = submissions_client(server, server.cert_path)
    over_tls.ehlo()
    try:
        send_signal(server, signal.SIGTERM)
        for client in (after_ehlo, just_greeted, over_tls):
            assert_shutdown_reply(client)
        code, elapsed = wait_exit(server, EXIT_WITHIN)
    finally:
        for client in (after_ehlo, just_greeted, over_tls):
            client.close()
    assert code == 0, server.log_text()[-5000:]
    assert elapsed < EXIT_WITHIN
    assert "server.stopped" in server.log_text()
    assert_clean_log(server)


# ---------------------------------------------------------------------------------------------
# 2. SIGTERM in the middle of DATA


def test_sigterm_during_data_finishes_the_transaction(
    server: Server, data_dir: Path, token: str
) -> None:
    message = rich_message(token, to=ALICE)
    payload = dot_stuff(message)
    first, rest = payload[: len(payload) // 2], payload[len(payload) // 2 :]
    smtp_port = server.ports["smtp"]

    busy = RawSMTP(smtp_port, timeout=15)
    idle = RawSMTP(smtp_port)
    try:
        assert busy.read_reply().code == 220
        busy.ehlo()
        assert busy.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert busy.command(f"RCPT TO:<{ALICE}>").code == 250
        assert busy.command("DATA").code == 354
        busy.send(first)
        assert idle.read_reply().code == 220
        idle.ehlo()
        time.sleep(0.2)  # let the server read the first half before the signal

        send_signal(server, signal.SIGTERM)
        wait_for_log(server, "server.stopping")
        # The idle client is told goodbye at once, while the transfer is still open...
        assert_shutdown_reply(idle)
        # ...the listening sockets are closed to newcomers...
        for port in server.ports.values():
            assert_refused(port)
        # ...and the process waits for the transaction in flight.
        time.sleep(0.3)
        assert server.alive(), "the server exited in the middle of a DATA transfer"

        busy.send(rest)
        reply = busy.read_reply()
        assert reply.code == 250, f"the transaction was cut by SIGTERM: {reply}"
        assert_shutdown_reply(busy)
        code, elapsed = wait_exit(server, EXIT_WITHIN)
    finally:
        busy.close()
        idle.close()
    assert code == 0, server.log_text()[-5000:]
    assert elapsed < EXIT_WITHIN
    assert_clean_log(server)
    assert stored(data_dir, ALICE, token) == [message]


# ---------------------------------------------------------------------------------------------
# 3. SIGHUP reloads the certificate


def test_sighup_reloads_the_certificate(server: Server, data_dir: Path, tmp_path: Path) -> None:
    old_pem = tmp_path / "old-cert.pem"
    old_pem.write_bytes(server.cert_path.read_bytes())
    old_der = current_der(data_dir)

    old = submissions_client(server, old_pem)
    try:
        assert peer_der(old) == old_der
        old.ehlo()

        cert = new_certificate(tmp_path, data_dir, "second")
        assert der(cert) != old_der
        send_signal(server, signal.SIGHUP)
        wait_for_log(server, "tls.reloaded")

        # A new connection on 465 verifies against the new certificate, and only it.
        with submissions_client(server, server.cert_path) as new:
            assert peer_der(new) == der(cert)
            new.ehlo()
            auth_plain(new, BOB, PASSWORDS[BOB])
        with pytest.raises(ssl.SSLCertVerificationError):
            submissions_client(server, old_pem)
        # STARTTLS on 587 uses the same, reloaded, context.
        with RawSMTP(server.ports["submission"]) as plain:
            assert plain.read_reply().code == 220
            plain.ehlo()
            plain.starttls(tls_context(server.cert_path, HOSTNAME))
            assert peer_der(plain) == der(cert)

        # The connection opened before the reload keeps its session and works to the end.
        assert peer_der(old) == old_der
        old.ehlo()
        auth_plain(old, ALICE, PASSWORDS[ALICE])
        token = f"tok-reload-{os.urandom(6).hex()}"
        message = make_message(token, sender=ALICE, to=BOB)
        send_mail(old, ALICE, BOB, message)
        assert old.command("QUIT").code == 221
    finally:
        old.close()
    assert stored(data_dir, BOB, token) == [message]
    code = server.stop()
    assert code == 0, server.log_text()[-5000:]
    assert_clean_log(server)


def test_sighup_with_a_broken_certificate_keeps_the_old_one(
    server: Server, data_dir: Path, tmp_path: Path
) -> None:
    good_pem = tmp_path / "good-cert.pem"
    good_pem.write_bytes(server.cert_path.read_bytes())
    good_der = current_der(data_dir)

    server.cert_path.write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    send_signal(server, signal.SIGHUP)
    wait_for_log(server, "tls.reload_failed")
    assert "tls.reloaded" not in server.log_text()
    assert server.alive()

    with submissions_client(server, good_pem) as client:
        assert peer_der(client) == good_der
        client.ehlo()
        assert client.command("NOOP").code == 250

    # A truncated (empty) file, as a copy interrupted half-way leaves it: the same.
    server.cert_path.write_bytes(b"")
    send_signal(server, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while server.log_text().count("tls.reload_failed") < 2:
        assert time.monotonic() < deadline, server.log_text()[-5000:]
        time.sleep(0.02)
    with submissions_client(server, good_pem) as client:
        assert peer_der(client) == good_der

    # Once the files are fixed, the next SIGHUP installs them: a failure does not stick.
    cert = new_certificate(tmp_path, data_dir, "fixed")
    send_signal(server, signal.SIGHUP)
    wait_for_log(server, "tls.reloaded")
    with submissions_client(server, server.cert_path) as client:
        assert peer_der(client) == der(cert)
        client.ehlo()
    code = server.stop()
    assert code == 0, server.log_text()[-5000:]
    assert_clean_log(server)


def test_sighup_with_a_new_cert_but_broken_key_keeps_serving(
    server: Server, data_dir: Path, tmp_path: Path
) -> None:
    good_pem = tmp_path / "good-cert.pem"
    good_pem.write_bytes(server.cert_path.read_bytes())
    good_der = current_der(data_dir)

    # The renewal tool wrote the new certificate, but the key file is garbage.
    fresh = tmp_path / "renewed"
    generate_self_signed(HOSTNAME, fresh / "cert.pem", fresh / "key.pem")
    os.replace(fresh / "cert.pem", server.cert_path)
    (data_dir / "tls" / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    )
    send_signal(server, signal.SIGHUP)
    wait_for_log(server, "tls.reload_failed")
    assert server.alive()
    with submissions_client(server, good_pem) as client:
        assert peer_der(client) == good_der
        client.ehlo()
    code = server.stop()
    assert code == 0, server.log_text()[-5000:]


# ---------------------------------------------------------------------------------------------
# 4. Administration while the server runs


def _rcpt(client: RawSMTP, rcpt: str) -> tuple[int, str]:
    """MAIL + RCPT on a long-lived connection, then RSET; the RCPT reply."""
    assert client.command(f"MAIL FROM:<{SENDER}>").code == 250
    reply = client.command(f"RCPT TO:<{rcpt}>")
    assert client.command("RSET").code == 250
    return reply.code, reply.enhanced


def test_admin_commands_take_effect_while_running(
    server: Server, data_dir: Path, token: str
) -> None:
    d = ("--data-dir", str(data_dir))
    new_user, alias, far_user = "new@example.test", "team@example.test", "carol@newdomain.test"

    # One connection opened before any change: nothing may be cached per connection either.
    with RawSMTP(server.ports["smtp"]) as client:
        assert client.read_reply().code == 220
        client.ehlo()
        assert _rcpt(client, new_user) == (550, "5.1.1")
        assert _rcpt(client, far_user) == (554, "5.7.1")

        run_cli("user", "add", new_user, "--password-stdin", *d, stdin="new-user-Secret-9\n")
        run_cli("alias", "add", alias, new_user, *d)
        run_cli("domain", "add", "newdomain.test", *d)
        run_cli("user", "add", far_user, "--password-stdin", *d, stdin="carol-Secret-77\n")

        to_user = make_message(f"{token}-user", to=new_user)
        to_alias = make_message(f"{token}-alias", to=alias)
        to_far = make_message(f"{token}-far", to=far_user)
        send_mail(client, SENDER, new_user, to_user)
        send_mail(client, SENDER, alias, to_alias)
        send_mail(client, SENDER, far_user, to_far)
        assert stored(data_dir, new_user, f"{token}-user") == [to_user]
        assert stored(data_dir, new_user, f"{token}-alias") == [to_alias]
        assert stored(data_dir, far_user, f"{token}-far") == [to_far]

        run_cli("alias", "remove", alias, *d)
        run_cli("user", "remove", new_user, *d)
        assert _rcpt(client, new_user) == (550, "5.1.1")
        assert _rcpt(client, alias) == (550, "5.1.1")
        assert _rcpt(client, far_user) == (250, "2.1.5")

        run_cli("user", "remove", far_user, *d)
        run_cli("domain", "remove", "newdomain.test", *d)
        assert _rcpt(client, far_user) == (554, "5.7.1")
        assert _rcpt(client, "anyone@newdomain.test") == (554, "5.7.1")
        assert _rcpt(client, ALICE) == (250, "2.1.5")
        assert client.command("QUIT").code == 221
    code = server.stop()
    assert code == 0, server.log_text()[-5000:]
    assert_clean_log(server)


# ---------------------------------------------------------------------------------------------
# 5. Start-up errors


def _port_in_use(data_dir: Path, busy: socket.socket) -> str:
    port = busy.getsockname()[1]
    listen = dict(config_of(data_dir)["listen"])
    listen["smtp"] = f"127.0.0.1:{port}"
    rewrite_tables(data_dir / "mailstead.toml", {"listen": listen})
    return str(port)


def _unknown_key(data_dir: Path, _busy: socket.socket) -> str:
    smtp = {**config_of(data_dir).get("smtp", {}), "max_mesage_size": 1000}
    rewrite_tables(data_dir / "mailstead.toml", {"smtp": smtp})
    return "max_mesage_size"


def _missing_cert(data_dir: Path, _busy: socket.socket) -> str:
    missing = data_dir / "tls" / "missing-cert.pem"
    rewrite_tables(
        data_dir / "mailstead.toml",
        {"tls": {"cert": str(missing), "key": str(data_dir / "tls" / "key.pem")}},
    )
    return "missing-cert.pem"


@pytest.mark.parametrize(
    "breakage",
    [_port_in_use, _unknown_key, _missing_cert],
    ids=["port-in-use", "unknown-config-key", "missing-certificate"],
)
def test_startup_error_is_one_line_and_exit_1(data_dir: Path, breakage: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))  # no SO_REUSEADDR, and listening: really in use
        busy.listen()
        needle: str = breakage(data_dir, busy)
        proc = subprocess.run(
            serve_cmd(data_dir),
            capture_output=True,
            text=True,
            timeout=20,
            env=child_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "ready" not in proc.stdout, proc.stdout
    # Apart from the structured log lines, stderr holds exactly one line: the error.
    errors = [line for line in proc.stderr.splitlines() if not LOG_LINE_RE.match(line)]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("mailstead: "), proc.stderr
    assert needle in errors[0], proc.stderr
    assert not [
        line
        for line in proc.stderr.splitlines()
        if LOG_LINE_RE.match(line) and line.split()[2] in ("ERROR", "CRITICAL")
    ]


# ---------------------------------------------------------------------------------------------
# 6. The --dev configuration as written by `mailstead init --dev`


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the server binds: SO_REUSEADDR, so a TIME_WAIT left by an earlier run is no
        # obstacle, while a socket listening there still is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# The --dev ports are fixed: one run at a time, and the store has nothing to do with them.
@pytest.mark.backends("sqlite", reason="about the fixed --dev listener ports, not the store")
def test_dev_config_starts_as_is(tmp_path: Path) -> None:
    busy = [p for p in DEV_PORTS.values() if not _port_free(p)]
    if busy:
        pytest.skip(f"the --dev ports {busy} are in use on this machine")
    data = tmp_path / "dev"
    run_cli("init", "--data-dir", str(data), "--hostname", HOSTNAME, "--domain", "example.test",
            "--dev", *store_args())
    server = Server(data)
    try:
        server.start(timeout=20)
        assert server.ports == DEV_PORTS
        printed = [line.strip() for line in server.stdout_lines]
        for name, port in DEV_PORTS.items():
            assert f"mailstead: {name} listening on 127.0.0.1:{port}" in printed, printed
        reported = re.findall(r"listener\.not_implemented listener=(\w+)", server.log_text())
        assert sorted(reported) == sorted(NOT_YET_LISTENERS), server.log_text()
        with RawSMTP(DEV_PORTS["smtp"]) as client:
            greeting = client.read_reply()
            assert greeting.code == 220, greeting
            assert HOSTNAME in greeting.text, greeting
            assert client.command("QUIT").code == 221
        code = server.stop()
    finally:
        server.kill()
    assert code == 0, server.log_text()[-5000:]
    assert_clean_log(server)
