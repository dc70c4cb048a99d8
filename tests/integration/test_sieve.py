"""Sieve end to end: scripts uploaded over ManageSieve (a plain socket client, STARTTLS,
AUTHENTICATE PLAIN, literals) file, flag and auto-reply as written; vacation replies once
per sender per period; reject is answered at SMTP time; the CLI sees the same scripts."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import imaplib
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest
from helpers import (
    DEFAULT_SMTP,
    HOSTNAME,
    REMOTE_CLIENT,
    Server,
    Users,
    _open_store,
    init_data_dir,
    read_mailbox,
    read_queue,
    rewrite_tables,
    run_cli,
    tls_context,
)
from outbound_helpers import (
    DnsFixture,
    Instance,
    ScriptedPeer,
    Zone,
    free_port,
    make_instance,
    make_mail,
    publish,
)
from outbound_helpers import wait_for as outbound_wait_for

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "correct horse battery staple"
SINK_IP = "127.0.0.4"

SCRIPT = '''require ["fileinto", "mailbox", "imap4flags", "variables", "vacation"];
# File list mail by its tag, flagged, and answer everything while away.
if header :matches "Subject" "[*] *" {
    setflag "\\\\Flagged $List";
    fileinto :create "Lists/${1}";
}
vacation :days 7 :subject "Out of office" text:
I am away until Monday.
..and this line started with a dot.
.
;
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("sieve") / "data"
    init_data_dir(data_dir, Users(passwords={ALICE: PASSWORD, BOB: PASSWORD}), DEFAULT_SMTP)
    # The senders' domain vouches for this client by SPF (vacation replies go only to
    # verified senders, RFC 3834 section 2); its MX refuses connections, so replies wait
    # in the queue where the tests look at them.
    zone = Zone()
    zone.add("remote.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("remote.test", "MX", (10, "mx.remote.test"))
    zone.add("mx.remote.test", "A", "127.0.0.9")
    dns_server = DnsFixture(zone)
    rewrite_tables(data_dir / "mailstead.toml",
                   {"dns": {"nameservers": [f"127.0.0.1:{dns_server.port}"]}})
    srv = Server(data_dir).start(timeout=20)
    try:
        yield srv
    finally:
        code = srv.stop()
        dns_server.stop()
        log = srv.log_text()
        assert code == 0, log[-5000:]
        assert "Traceback" not in log, log[-20000:]


class SieveClient:
    """A minimal ManageSieve client over a socket (RFC 5804)."""

    def __init__(self, port: int, cert: Path) -> None:
        # From another address than the server's: its own host may log in without TLS.
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(REMOTE_CLIENT, 0))
        self.buf = b""
        self.cert = cert

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self) -> list[bytes]:
        """Lines up to and including the OK/NO/BYE line; literals are inlined."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            if line.endswith(b"}") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1:-1].rstrip(b"+"))
                while len(self.buf) < size:
                    self.buf += self.sock.recv(65536)
                line = self.buf[:size]
                self.buf = self.buf[size:]
            lines.append(line)
            if line.split(b" ")[0] in (b"OK", b"NO", b"BYE"):
                return lines

    def command(self, data: bytes) -> list[bytes]:
        self.sock.sendall(data)
        return self.response()

    def starttls(self) -> list[bytes]:
        assert self.command(b"STARTTLS\r\n")[-1].startswith(b"OK")
        self.sock = tls_context(self.cert, HOSTNAME).wrap_socket(
            self.sock, server_hostname=HOSTNAME)
        return self.response()

    def login(self, user: str, password: str) -> list[bytes]:
        token = base64.b64encode(f"\0{user}\0{password}".encode())
        return self.command(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')

    def put(self, name: str, script: str) -> list[bytes]:
        raw = script.encode()
        return self.command(b'PUTSCRIPT "%s" {%d+}\r\n' % (name.encode(), len(raw))
                            + raw + b"\r\n")

    def close(self) -> None:
        self.sock.close()


def _upload(server: Server, user: str, name: str, script: str) -> None:
    client = SieveClient(server.ports["managesieve"], server.cert_path)
    try:
        greeting = client.response()
        assert b'"SASL" ""' in greeting
        assert b'"STARTTLS"' in greeting
        caps = client.starttls()
        assert b'"SASL" "PLAIN"' in caps
        assert b"vacation" in caps[2]
        assert client.login(user, PASSWORD)[-1] == b'OK "Logged in"'
        assert client.put(name, script)[-1].startswith(b"OK")
        assert client.command(b'SETACTIVE "%s"\r\n' % name.encode())[-1].startswith(b"OK")
        listing = client.command(b"LISTSCRIPTS\r\n")
        assert b'"%s" ACTIVE' % name.encode() in listing
        got = client.command(b'GETSCRIPT "%s"\r\n' % name.encode())
        assert got[0] == script.encode()
        assert client.command(b"LOGOUT\r\n")[-1].startswith(b"OK")
    finally:
        client.close()


def _flags(data_dir: Path, address: str, mailbox: str) -> list[tuple[str, ...]]:
    async def go() -> list[tuple[str, ...]]:
        store = await _open_store(data_dir)
        try:
            account = await store.get_account(address)
            assert account is not None
            return [m.flags for m in await store.list_messages(account.id, mailbox)]
        finally:
            await store.close()

    return asyncio.run(go())


def _send(server: Server, rcpts: list[str], subject: str, sender: str,
          extra: str = "") -> None:
    msg = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{abs(hash(subject + sender))}@remote.test>\r\n{extra}\r\nbody\r\n")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=15) as smtp:
        smtp.sendmail(sender, rcpts, msg.encode())


def test_managesieve_script_files_flags_and_replies_once(server: Server) -> None:
    _upload(server, ALICE, "main", SCRIPT)
    _send(server, [ALICE], "[dev] nightly build", "carol@remote.test")
    (stored,) = read_mailbox(server.data_dir, ALICE, "Lists/dev")
    assert b"nightly build" in stored
    assert _flags(server.data_dir, ALICE, "Lists/dev") == [("\\Flagged", "$List")]
    assert read_mailbox(server.data_dir, ALICE, "INBOX") == []
    replies = [q for q in read_queue(server.data_dir) if q.rcpt_to == "carol@remote.test"]
    assert len(replies) == 1
    assert replies[0].mail_from == ""
    # Once per sender per period (RFC 5230 section 4.1): the second message gets no reply,
    # and list mail never gets one.
    _send(server, [ALICE], "second", "carol@remote.test")
    _send(server, [ALICE], "list post", "dave@remote.test",
          extra="List-Id: <dev.lists.remote.test>\r\n")
    assert len(read_mailbox(server.data_dir, ALICE, "INBOX")) == 2
    assert [q.rcpt_to for q in read_queue(server.data_dir)
            if q.rcpt_to.endswith("@remote.test")] == ["carol@remote.test"]
    # The CLI sees the same script.
    listing = run_cli("sieve", "list", ALICE, "--data-dir", str(server.data_dir))
    assert "main  (active)" in listing


def _roundcube_script(first: dt.date, last: dt.date) -> str:
    """What Roundcube's managesieve plugin writes for a numeric rule and a vacation with a
    start and an end date (RFC 5231 relational, RFC 5260 currentdate)."""
    required = '"fileinto","mailbox","relational","comparator-i;ascii-numeric","vacation","date"'
    since = f'currentdate :zone "+0100" :value "ge" "date" "{first.isoformat()}"'
    until = f'currentdate :zone "+0100" :value "le" "date" "{last.isoformat()}"'
    return f"""require [{required}];
# rule:[urgent]
if header :value "ge" :comparator "i;ascii-numeric" "X-Urgency" "5"
{{
\tfileinto :create "Urgent";
}}
# rule:[away]
if allof ({since}, {until})
{{
\tvacation :days 1 :subject "Away" "Back soon.";
}}
"""


def test_roundcube_rules_with_dates_and_numbers(server: Server) -> None:
    """Uploaded over ManageSieve, run by the server at delivery: the numeric rule files by
    the number a field starts with, the vacation answers only between its dates."""
    carol = "carol@example.test"
    run_cli("user", "add", carol, "--password-stdin", "--data-dir", str(server.data_dir),
            stdin=PASSWORD + "\n")
    today = dt.datetime.now(dt.UTC).date()
    day = dt.timedelta(days=1)
    _upload(server, carol, "roundcube", _roundcube_script(today - day, today + day))
    _send(server, [carol], "please act", "erin@remote.test", extra="X-Urgency: 007\r\n")
    _send(server, [carol], "whenever", "erin@remote.test", extra="X-Urgency: 10x\r\n")
    _send(server, [carol], "no number", "frank@remote.test", extra="X-Urgency: -3\r\n")
    # 7, 10 and "-3": not a number, which RFC 4790 section 9.1 ranks above every number.
    assert len(read_mailbox(server.data_dir, carol, "Urgent")) == 3
    replied = sorted(q.rcpt_to for q in read_queue(server.data_dir)
                     if q.rcpt_to in ("erin@remote.test", "frank@remote.test"))
    assert replied == ["erin@remote.test", "frank@remote.test"]  # once per sender
    # The same vacation, over two days ago: nobody new gets a reply.
    _upload(server, carol, "ended", _roundcube_script(today - 9 * day, today - 2 * day))
    _send(server, [carol], "anyone there", "gina@remote.test", extra="X-Urgency: 1\r\n")
    assert not [q for q in read_queue(server.data_dir) if q.rcpt_to == "gina@remote.test"]
    assert any(b"anyone there" in m for m in read_mailbox(server.data_dir, carol, "INBOX"))


def test_reject_is_answered_at_smtp_time(server: Server) -> None:
    _upload(server, BOB, "no-spam", 'require "reject";\r\nif header :contains "subject" '
            '"lottery" { reject "I do not play the lottery."; }\r\n')
    with pytest.raises(smtplib.SMTPDataError) as info:
        _send(server, [BOB], "You won the lottery", "spammer@remote.test")
    assert info.value.smtp_code == 550
    assert b"5.7.1 I do not play the lottery." in info.value.smtp_error
    _send(server, [BOB], "hello", "friend@remote.test")
    assert len(read_mailbox(server.data_dir, BOB, "INBOX")) == 1


def test_putscript_with_an_error_is_refused(server: Server) -> None:
    client = SieveClient(server.ports["managesieve"], server.cert_path)
    try:
        client.response()
        client.starttls()
        assert client.login(ALICE, "wrong password")[-1].startswith(b"NO")
        client.login(ALICE, PASSWORD)
        answer = client.command(b'PUTSCRIPT "bad" "fileinto \\"x\\";"\r\n')
        assert answer[-1].startswith(b'NO "line 1: fileinto needs require')
        assert client.command(b'DELETESCRIPT "main"\r\n')[-1].startswith(b"NO (ACTIVE)")
        assert client.command(b'GETSCRIPT "nope"\r\n')[-1].startswith(b"NO (NONEXISTENT)")
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# App passwords limited to ManageSieve (issue 9, with issue 6's app passwords)


def _app_password(server: Server, address: str, name: str, protocols: str) -> str:
    out = run_cli("app-password", "add", address, "--name", name, "--protocols", protocols,
                  "--data-dir", str(server.data_dir))
    match = re.search(r"^  ([a-z]{4} [a-z]{4} [a-z]{4} [a-z]{4})$", out, re.M)
    assert match is not None, out
    return match.group(1)


def _managesieve_login(server: Server, user: str, password: str) -> list[bytes]:
    client = SieveClient(server.ports["managesieve"], server.cert_path)
    try:
        client.response()
        client.starttls()
        answer = client.login(user, password)
        if answer[-1].startswith(b"OK"):
            # Logged in for real: the session can read the account's scripts.
            assert client.command(b"LISTSCRIPTS\r\n")[-1].startswith(b"OK")
        return answer
    finally:
        client.close()


def test_managesieve_accepts_an_app_password_limited_to_it(server: Server) -> None:
    sieve_only = _app_password(server, BOB, "Thunderbird filters", "managesieve")
    assert _managesieve_login(server, BOB, sieve_only)[-1] == b'OK "Logged in"'
    # The same password opens nothing else...
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=15)
    try:
        imap.starttls(ssl_context=tls_context(server.cert_path, HOSTNAME))
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(BOB, sieve_only)
    finally:
        imap.shutdown()
    # ...and a password for the mail protocols does not open ManageSieve.
    mail_only = _app_password(server, BOB, "Phone", "imap,smtp")
    assert _managesieve_login(server, BOB, mail_only)[-1].startswith(b"NO")


# ---------------------------------------------------------------------------------------------
# Sieve redirect: the forwarded copy is ARC-sealed like an alias forward (RFC 8617)

REDIRECT = 'redirect "friend@remote.test";\r\n'


@pytest.fixture(scope="module")
def forwarder(tmp_path_factory: pytest.TempPathFactory, store_backend: str
              ) -> Iterator[tuple[Instance, ScriptedPeer, DnsFixture]]:
    root: Path = tmp_path_factory.mktemp("sieve-arc")
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", SINK_IP)
    a = make_instance(root, "a.test", "127.0.0.2", dns_port=dns_server.port, smtp_port=port,
                      users={"alice@a.test": PASSWORD, "bob@a.test": PASSWORD})
    rewrite_tables(a.data_dir / "mailstead.toml", {"auth_checks": {"enable": True}})
    script = root / "redirect.sieve"
    script.write_text(REDIRECT, encoding="utf-8")
    run_cli("sieve", "put", "alice@a.test", "forward", str(script),
            "--data-dir", str(a.data_dir))
    publish(zone, a)
    zone.add("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("_dmarc.sender.test", "TXT", "v=DMARC1; p=none")
    zone.add("remote.test", "MX", (10, "mx.remote.test"))
    zone.add("mx.remote.test", "A", SINK_IP)
    sink = ScriptedPeer(SINK_IP, port, ["250 2.1.5 Ok"])
    a.start()
    try:
        yield a, sink, dns_server
    finally:
        code = a.stop()
        sink.stop()
        dns_server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def _sealed_at_sink(forwarder: tuple[Instance, ScriptedPeer, DnsFixture], rcpts: list[str],
                    data: bytes, token: bytes) -> bytes:
    a, sink, dns_server = forwarder
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("client.sender.test")
        client.sendmail("news@sender.test", rcpts, data)
    found = outbound_wait_for(lambda: [m for _, r, m in sink.received
                                       if token in m and r == ["friend@remote.test"]],
                              30, f"the redirected message {token!r}", log=a.log)
    message: bytes = found[0]
    header = message.split(b"\r\n\r\n", 1)[0]
    unfolded = b" ".join(header.split())
    for name in (b"ARC-Seal: i=1;", b"ARC-Message-Signature: i=1;",
                 b"ARC-Authentication-Results: i=1; mail.a.test;"):
        assert header.count(name.split(b":")[0] + b":") == 1, header.decode()
        assert name in header, header.decode()
    assert b"d=a.test" in unfolded
    assert b"spf=pass smtp.mailfrom=news@sender.test" in unfolded
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    cv, results, reason = dkim.arc_verify(message, dnsfunc=lookup)
    assert cv == dkim.CV_Pass, (reason, results)
    return message


def test_sieve_redirect_is_arc_sealed(
    forwarder: tuple[Instance, ScriptedPeer, DnsFixture],
) -> None:
    a = forwarder[0]
    data = make_mail("news@sender.test", "alice@a.test", "sieve-redirect-1")
    _sealed_at_sink(forwarder, ["alice@a.test"], data, b"sieve-redirect-1")
    # A redirect keeps no local copy (RFC 5228 section 4.2: no implicit keep).
    assert read_mailbox(a.data_dir, "alice@a.test") == []


def test_sieve_redirect_of_list_mail_to_several_recipients_is_sealed(
    forwarder: tuple[Instance, ScriptedPeer, DnsFixture],
) -> None:
    # Two recipients (so our Received names none) and a To: that is not ours: the seal
    # must still be made, by the domain the server itself belongs to.
    a = forwarder[0]
    data = make_mail("news@sender.test", "list@lists.other.test", "sieve-redirect-2")
    _sealed_at_sink(forwarder, ["alice@a.test", "bob@a.test"], data, b"sieve-redirect-2")
    assert len(read_mailbox(a.data_dir, "bob@a.test")) == 1
