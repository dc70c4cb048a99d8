"""Issue 5 failure paths against scripted aiosmtpd peers on loopback: a 451 then 250 is
delivered on retry, a 550 becomes a DSN in Alice's INBOX naming the remote reply, a peer that
stays down gets a delay warning then a bounce at expiry, and a null MX bounces at once. Retry
timing is shortened through [queue] in the config only."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator

import pytest
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    ScriptedPeer,
    Zone,
    free_port,
    make_instance,
    make_mail,
    publish,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, Zone, int]]:
    zone = Zone()
    server = DnsFixture(zone)
    port = free_port("127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6")
    a = make_instance(tmp_path_factory.mktemp("fail"), "a.test", "127.0.0.2",
                      dns_port=server.port, smtp_port=port, users={ALICE: PASSWORD},
                      queue={"retry_schedule": [1], "expire_after": 8, "delay_warning": 3})
    publish(zone, a)
    for domain, ip in (("c.test", "127.0.0.4"), ("d.test", "127.0.0.5"), ("e.test", "127.0.0.6")):
        zone.add(domain, "MX", (10, f"mx.{domain}"))
        zone.add(f"mx.{domain}", "A", ip)
    zone.add("f.test", "MX", (0, "."))
    a.start()
    try:
        yield a, zone, port
    finally:
        code = a.stop()
        server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def _dsns(a: Instance, token: str) -> list[email.message.Message]:
    out = []
    for raw in a.inbox(ALICE):
        if b"MAILER-DAEMON" in raw and token.encode() in raw:
            out.append(email.message_from_bytes(raw, policy=email.policy.compat32))
    return out


def test_451_then_250_is_delivered_on_retry(world: tuple[Instance, Zone, int]) -> None:
    a, _zone, port = world
    peer = ScriptedPeer("127.0.0.4", port, ["451 4.3.0 Greylisted, try again", "250 2.1.5 Ok"])
    try:
        submit(a, ALICE, ["carol@c.test"], make_mail(ALICE, "carol@c.test", "grey-1"))
        wait_for(lambda: peer.received, 20, "delivery on retry", log=a.log)
        assert peer.rcpt_calls == 2
        mail_from, rcpts, data = peer.received[0]
        assert (mail_from, rcpts) == (ALICE, ["carol@c.test"])
        assert b"grey-1" in data
        assert b"DKIM-Signature:" in data
        rows = [r for r in a.queue() if r.rcpt_to == "carol@c.test"]
        assert [(r.state, r.attempts) for r in rows] == [("delivered", 2)]
        assert not _dsns(a, "grey-1")
    finally:
        peer.stop()


def test_550_bounces_with_a_dsn_naming_the_reply(world: tuple[Instance, Zone, int]) -> None:
    a, _zone, port = world
    peer = ScriptedPeer("127.0.0.5", port, ["550 5.1.1 <dave@d.test>: mailbox unknown here"])
    try:
        submit(a, ALICE, ["dave@d.test"], make_mail(ALICE, "dave@d.test", "bounce-550"))
        dsn = wait_for(lambda: _dsns(a, "bounce-550"), 20, "the DSN", log=a.log)[0]
    finally:
        peer.stop()
    assert dsn.get_content_type() == "multipart/report"
    status = dsn.get_payload()[1].as_string()
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 <dave@d.test>: mailbox unknown here" in status
    text = dsn.get_payload()[0].get_payload(decode=True).decode()
    assert "mailbox unknown here" in text
    assert [(r.state, r.attempts) for r in a.queue() if r.rcpt_to == "dave@d.test"] == [
        ("bounced", 1)]
    assert not peer.received


def test_peer_down_warns_then_bounces_at_expiry(world: tuple[Instance, Zone, int]) -> None:
    a, _zone, _port = world
    submit(a, ALICE, ["erin@e.test"], make_mail(ALICE, "erin@e.test", "down-1"))
    warning = wait_for(
        lambda: [m for m in _dsns(a, "down-1") if "Delayed" in (m["Subject"] or "")], 20,
        "the delay warning", log=a.log)[0]
    assert "Action: delayed" in warning.get_payload()[1].as_string()
    bounce = wait_for(
        lambda: [m for m in _dsns(a, "down-1") if "Undelivered" in (m["Subject"] or "")], 30,
        "the bounce at expiry", log=a.log)[0]
    status = bounce.get_payload()[1].as_string()
    assert "Action: failed" in status
    assert "Status: 4" not in status
    assert len(_dsns(a, "down-1")) == 2  # one warning, one bounce, nothing more
    rows = [r for r in a.queue() if r.rcpt_to == "erin@e.test"]
    assert rows[0].state == "bounced"
    assert rows[0].attempts >= 3
    assert rows[0].warned


def test_null_mx_bounces_at_once(world: tuple[Instance, Zone, int]) -> None:
    a, _zone, _port = world
    submit(a, ALICE, ["frank@f.test"], make_mail(ALICE, "frank@f.test", "nullmx-1"))
    dsn = wait_for(lambda: _dsns(a, "nullmx-1"), 10, "the null MX DSN", log=a.log)[0]
    status = dsn.get_payload()[1].as_string()
    assert "Status: 5.1.10" in status
    assert [(r.state, r.attempts) for r in a.queue() if r.rcpt_to == "frank@f.test"] == [
        ("bounced", 1)]
