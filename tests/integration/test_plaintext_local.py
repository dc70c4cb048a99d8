"""A password may come before TLS only from the server's own host (the client connects from
the address it connects to) or from ``[security] trusted_networks``: local tools and a
webmail on the same machine log in without TLS, as with Dovecot, over IMAP, POP3,
submission and ManageSieve; a client anywhere else must use TLS first."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
from collections.abc import Iterator

import pytest
from helpers import (
    REMOTE_CLIENT,
    Harness,
    Server,
    Users,
    init_data_dir,
    rewrite_tables,
)

USER = "local@example.test"
PASSWORD = "Local-pass-1234"
TRUSTED = "127.0.0.3"  # stands for a webmail host listed in trusted_networks
FAST = {"argon2_time_cost": 1, "argon2_memory_cost": 8192, "argon2_parallelism": 1}


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("plaintext") / "data"
    init_data_dir(data_dir, Users({USER: PASSWORD}))
    rewrite_tables(data_dir / "mailstead.toml", {
        "security": {**FAST, "trusted_networks": [f"{TRUSTED}/32"]}})
    server = Server(data_dir).start(timeout=20)
    try:
        yield Harness(server)
    finally:
        assert server.stop() == 0


class IMAPFrom(imaplib.IMAP4):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


class POP3From(poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


@pytest.mark.parametrize("source", ["127.0.0.1", TRUSTED])
def test_imap_login_without_tls_from_this_host_or_a_trusted_network(
    h: Harness, source: str
) -> None:
    with IMAPFrom(h.port("imap"), source) as imap:
        caps = set(imap.capabilities)
        assert "LOGINDISABLED" not in caps
        assert {"AUTH=PLAIN", "STARTTLS"} <= caps  # TLS stays on offer
        assert imap.login(USER, PASSWORD)[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"


def test_imap_from_elsewhere_must_use_tls_first(h: Harness) -> None:
    with IMAPFrom(h.port("imap"), REMOTE_CLIENT) as imap:
        assert {"LOGINDISABLED", "STARTTLS"} <= set(imap.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            imap.login(USER, PASSWORD)


@pytest.mark.parametrize(("source", "allowed"),
                         [("127.0.0.1", True), (TRUSTED, True), (REMOTE_CLIENT, False)])
def test_pop3_and_submission_without_tls(h: Harness, source: str, allowed: bool) -> None:
    pop = POP3From(h.port("pop3"), source)
    try:
        pop.user(USER)
        if allowed:
            assert pop.pass_(PASSWORD).startswith(b"+OK")
        else:
            with pytest.raises(poplib.error_proto):
                pop.pass_(PASSWORD)
    except poplib.error_proto:
        assert not allowed  # USER itself may be refused before TLS
    finally:
        pop.quit()

    smtp = smtplib.SMTP("127.0.0.1", h.port("submission"), timeout=15,
                        source_address=(source, 0))
    try:
        smtp.ehlo("client.example.test")
        assert ("auth" in smtp.esmtp_features) is allowed
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        code, _ = smtp.docmd("AUTH", "PLAIN " + token)
        assert code == (235 if allowed else 538)
    finally:
        smtp.quit()


@pytest.mark.parametrize(("source", "allowed"), [("127.0.0.1", True), (REMOTE_CLIENT, False)])
def test_managesieve_without_tls(h: Harness, source: str, allowed: bool) -> None:
    with socket.create_connection(("127.0.0.1", h.port("managesieve")), timeout=15,
                                  source_address=(source, 0)) as sock:
        stream = sock.makefile("rwb")
        lines = []
        while not (line := stream.readline()).startswith(b"OK"):
            lines.append(line)
        sasl = next(line for line in lines if line.startswith(b'"SASL"'))
        assert (b"PLAIN" in sasl) is allowed, sasl  # an empty list until TLS elsewhere
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
        stream.write(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
        stream.flush()
        answer = stream.readline()
        assert answer.startswith(b"OK") is allowed, answer
        stream.write(b"LOGOUT\r\n")
        stream.flush()
