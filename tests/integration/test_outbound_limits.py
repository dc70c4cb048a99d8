"""Issue 5, the per-sender hourly limit over submission: with ``sender_hourly_limit = 3`` the
fourth outside recipient an account submits within the hour gets ``451 4.7.1`` with a text
that says what happened; local recipients are not outgoing mail and never count or get
refused; the limit is per account; and refused recipients are never queued.

What counts is outside *recipients* (queue rows), not messages: one message to 500 outside
addresses is as much outgoing mail as 500 messages, which is what the limit protects."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from helpers import tls_context
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    ScriptedPeer,
    Zone,
    free_port,
    make_instance,
    make_mail,
    wait_for,
)

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"
BOB = "bob@a.test"
LIMIT = 3
PEER_IP = "127.0.0.14"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, ScriptedPeer]]:
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", PEER_IP)
    a = make_instance(tmp_path_factory.mktemp("limit"), "a.test", "127.0.0.2",
                      dns_port=dns_server.port, smtp_port=port,
                      users={ALICE: PASSWORD, BOB: PASSWORD},
                      queue={"sender_hourly_limit": LIMIT})
    zone.add("far.test", "MX", (10, "mx.far.test"))
    zone.add("mx.far.test", "A", PEER_IP)
    peer = ScriptedPeer(PEER_IP, port, ["250 2.1.5 Ok"])
    a.start()
    try:
        yield a, peer
    finally:
        code = a.stop()
        peer.stop()
        dns_server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def _session(a: Instance, user: str) -> smtplib.SMTP:
    assert a.server is not None
    smtp = smtplib.SMTP(a.ip, a.ports["submission"], timeout=20)
    smtp.starttls(context=tls_context(a.server.cert_path, a.hostname))
    smtp.login(user, PASSWORD)
    return smtp


def _rcpt(smtp: smtplib.SMTP, address: str) -> tuple[int, str]:
    code, text = smtp.rcpt(address)
    return code, text.decode()


def test_the_recipient_over_the_limit_gets_451_and_local_ones_do_not_count(
    world: tuple[Instance, ScriptedPeer],
) -> None:
    a, peer = world
    with _session(a, ALICE) as smtp:
        assert smtp.mail(ALICE)[0] == 250
        assert _rcpt(smtp, "r1@far.test")[0] == 250
        assert _rcpt(smtp, BOB)[0] == 250  # local: not outgoing, not counted
        assert _rcpt(smtp, "r2@far.test")[0] == 250
        assert _rcpt(smtp, "r3@far.test")[0] == 250  # the limit-th outside recipient
        code, text = _rcpt(smtp, "r4@far.test")
        assert code == 451
        assert text.startswith("4.7.1 ")
        assert f"at most {LIMIT} outside recipients per hour" in text
        assert "try again later" in text
        assert _rcpt(smtp, ALICE)[0] == 250  # still local mail after the refusal
        code, _ = smtp.data(make_mail(ALICE, "r1@far.test", "limit-1"))
        assert code == 250
    # The refused recipient was never queued; the accepted ones were, and leave.
    rows = {r.rcpt_to for r in a.queue()}
    assert rows == {"r1@far.test", "r2@far.test", "r3@far.test"}
    wait_for(lambda: len(peer.received) == 1 and len(peer.received[0][1]) == 3, 20,
             "the three outside recipients at the peer", log=a.log)
    assert "r4@far.test" not in peer.received[0][1]
    assert any(b"limit-1" in m for m in a.inbox(BOB))

    # A new transaction within the hour: outside recipients still refused (even after the
    # earlier ones were delivered), local ones accepted.
    with _session(a, ALICE) as smtp:
        assert smtp.mail(ALICE)[0] == 250
        code, text = _rcpt(smtp, "r5@far.test")
        assert (code, text.split(" ", 1)[0]) == (451, "4.7.1")
        assert _rcpt(smtp, BOB)[0] == 250
        assert smtp.data(make_mail(ALICE, BOB, "limit-2"))[0] == 250
    wait_for(lambda: any(b"limit-2" in m for m in a.inbox(BOB)), 10, "local mail delivered")
    assert "r5@far.test" not in {r.rcpt_to for r in a.queue()}
    assert "hourly sending limit reached" in a.log()

    # The limit is per account: Bob has sent nothing to the outside yet.
    with _session(a, BOB) as smtp:
        assert smtp.mail(BOB)[0] == 250
        assert _rcpt(smtp, "r6@far.test")[0] == 250
        assert smtp.data(make_mail(BOB, "r6@far.test", "limit-3"))[0] == 250
    wait_for(lambda: any("r6@far.test" in rcpts for _f, rcpts, _d in peer.received), 20,
             "Bob's message at the peer", log=a.log)
