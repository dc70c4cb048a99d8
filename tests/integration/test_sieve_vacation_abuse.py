"""Sieve vacation cannot be turned into a phishing relay: :from and :addresses must be the
account's own addresses (refused at upload over ManageSieve, and again at run time once an
alias is gone), :mime cannot set other header fields, replies and redirects count against
the account's hourly sending limit, and replies go only to senders SPF vouches for."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from helpers import (
    DEFAULT_SMTP,
    Server,
    ServerError,
    Users,
    init_data_dir,
    read_mailbox,
    read_queue,
    rewrite_tables,
    run_cli,
)
from outbound_helpers import DnsFixture, Zone
from test_sieve import SieveClient

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
OFFICE = "office@example.test"  # an alias of ALICE
PASSWORD = "correct horse battery staple"
HOURLY_LIMIT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("sieve-abuse") / "data"
    init_data_dir(data_dir, Users(passwords={ALICE: PASSWORD, BOB: PASSWORD, CAROL: PASSWORD},
                                  aliases={OFFICE: [ALICE]}), DEFAULT_SMTP)
    zone = Zone()
    # remote.test authorises this client; forged.test does not; nospf.test says nothing.
    zone.add("remote.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("forged.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    zone.add("nospf.test", "A", "192.0.2.1")
    for domain in ("remote.test", "forged.test", "nospf.test"):
        zone.add(domain, "MX", (10, "mx.remote.test"))
    zone.add("mx.remote.test", "A", "127.0.0.9")  # refuses: replies wait in the queue
    dns_server = DnsFixture(zone)
    rewrite_tables(data_dir / "mailstead.toml", {
        "dns": {"nameservers": [f"127.0.0.1:{dns_server.port}"]},
        "queue": {"sender_hourly_limit": HOURLY_LIMIT},
    })
    srv = Server(data_dir).start(timeout=20)
    try:
        yield srv
    finally:
        code = srv.stop()
        dns_server.stop()
        log = srv.log_text()
        assert code == 0, log[-5000:]
        assert "Traceback" not in log, log[-20000:]


def _session(server: Server, user: str) -> SieveClient:
    client = SieveClient(server.ports["managesieve"], server.cert_path)
    client.response()
    client.starttls()
    assert client.login(user, PASSWORD)[-1] == b'OK "Logged in"'
    return client


def _check(client: SieveClient, script: str) -> bytes:
    raw = script.encode()
    return client.command(b"CHECKSCRIPT {%d+}\r\n" % len(raw) + raw + b"\r\n")[-1]


def _install(server: Server, user: str, script: str) -> None:
    client = _session(server, user)
    try:
        assert client.put("main", script)[-1].startswith(b"OK")
        assert client.command(b'SETACTIVE "main"\r\n')[-1].startswith(b"OK")
    finally:
        client.close()


def _send(server: Server, rcpt: str, sender: str, subject: str, extra: str = "") -> None:
    msg = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n{extra}\r\nbody\r\n")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=15) as smtp:
        smtp.sendmail(sender, [rcpt], msg.encode())


def _replies_to(server: Server, *rcpts: str) -> list[str]:
    return sorted(q.rcpt_to for q in read_queue(server.data_dir) if q.rcpt_to in rcpts)


VACATION = 'require "vacation";\r\nvacation :days 1 {args} "I am away.";\r\n'


def test_upload_refuses_addresses_the_account_does_not_own(server: Server) -> None:
    client = _session(server, ALICE)
    try:
        forged = VACATION.format(args=':from "Payroll <payroll@b.test>"')
        for answer in (client.put("main", forged)[-1], _check(client, forged)):
            assert answer.startswith(b'NO "line 2: vacation :from')
            assert b"payroll@b.test" in answer
            assert b"is not an address of this account" in answer
        answer = _check(client, VACATION.format(args=':addresses ["boss@b.test"]'))
        assert answer.startswith(b'NO "line 2: vacation :addresses')
        mime = ('require "vacation";\r\nvacation :mime text:\r\nReply-To: pay@b.test\r\n'
                'Content-Type: text/plain\r\n\r\nSend your password.\r\n.\r\n;\r\n')
        answer = _check(client, mime)
        assert answer.startswith(b'NO "line 2: vacation :mime may set only Content-*')
        # The account's own addresses, tagged or through an alias, are fine.
        for args in (f':from "Alice <{ALICE}>"', ':from "alice+away@example.test"',
                     f':from "Office <{OFFICE}>" :addresses ["{OFFICE}"]'):
            assert _check(client, VACATION.format(args=args)) == b'OK "Script is valid"'
        assert b'"main"' not in b"".join(client.command(b"LISTSCRIPTS\r\n"))
    finally:
        client.close()
    # The administrator's CLI holds scripts to the same rule.
    path = server.data_dir.parent / "forged.sieve"
    path.write_text(forged, encoding="utf-8")
    with pytest.raises(ServerError, match="is not an address of this account"):
        run_cli("sieve", "put", ALICE, "main", str(path), "--data-dir", str(server.data_dir))


def test_alias_removed_after_upload_is_checked_at_run_time(server: Server) -> None:
    _install(server, ALICE, VACATION.format(args=f':from "Office <{OFFICE}>"'))
    run_cli("alias", "remove", OFFICE, "--data-dir", str(server.data_dir))
    _send(server, ALICE, "dora@remote.test", "are you there")
    assert any(b"are you there" in m for m in read_mailbox(server.data_dir, ALICE))
    assert _replies_to(server, "dora@remote.test") == []
    assert "is not an address of the account" in server.log_text()


def test_replies_and_redirects_count_against_the_sending_limit(server: Server) -> None:
    _install(server, BOB, VACATION.format(args=""))
    senders = [f"victim{i}@remote.test" for i in range(HOURLY_LIMIT + 3)]
    for i, sender in enumerate(senders):
        _send(server, BOB, sender, f"hello {i}")
    assert len(_replies_to(server, *senders)) == HOURLY_LIMIT
    assert len(read_mailbox(server.data_dir, BOB)) == len(senders)  # nothing lost
    # Redirect is held to the same limit: the message stays with Bob instead.
    _install(server, BOB, 'redirect "elsewhere@remote.test";\r\n')
    _send(server, BOB, "erin@remote.test", "please forward")
    assert _replies_to(server, "elsewhere@remote.test") == []
    assert any(b"please forward" in m for m in read_mailbox(server.data_dir, BOB))
    assert "hourly sending limit reached" in server.log_text()


def test_replies_go_only_to_verified_senders(server: Server) -> None:
    _install(server, CAROL, VACATION.format(args=""))
    _send(server, CAROL, "ceo@forged.test", "urgent wire transfer")  # SPF fail
    _send(server, CAROL, "someone@nospf.test", "hi")  # SPF none: anyone can claim it
    _send(server, CAROL, "news@remote.test", "weekly", extra="Precedence: bulk\r\n")
    _send(server, CAROL, "bot@remote.test", "robot", extra="Auto-Submitted: auto-generated\r\n")
    _send(server, CAROL, "friend@remote.test", "lunch?")
    assert _replies_to(server, "ceo@forged.test", "someone@nospf.test", "news@remote.test",
                       "bot@remote.test", "friend@remote.test") == ["friend@remote.test"]
    assert len(read_mailbox(server.data_dir, CAROL)) == 5
