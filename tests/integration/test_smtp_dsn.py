"""DSN (RFC 3461) end to end against a real ``mailstead serve``: the extension is advertised,
bad parameters get 501, and NOTIFY/ORCPT/RET/ENVID given at submission are honoured by the
queue (a bounce with Original-Envelope-Id and Original-Recipient, headers only for RET=HDRS,
none for NOTIFY=NEVER, "delivered" for local delivery, "relayed" to a server without DSN) or
passed on to a server that offers DSN. DSNs are parsed with the stdlib email package."""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
from collections.abc import Iterator

import pytest
from helpers import run_cli, tls_context
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    FastSink,
    Instance,
    ScriptedPeer,
    Zone,
    free_port,
    make_instance,
    make_mail,
    publish,
    wait_for,
)

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"
BOB = "bob@a.test"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, int]]:
    zone = Zone()
    server = DnsFixture(zone)
    port = free_port("127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6")
    a = make_instance(tmp_path_factory.mktemp("dsn"), "a.test", "127.0.0.2",
                      dns_port=server.port, smtp_port=port,
                      users={ALICE: PASSWORD, BOB: PASSWORD},
                      queue={"retry_schedule": [1], "expire_after": 30, "delay_warning": 20})
    run_cli("alias", "add", "team@a.test", BOB, "carol@c.test", "--data-dir", str(a.data_dir))
    publish(zone, a)
    for domain, ip in (("c.test", "127.0.0.4"), ("d.test", "127.0.0.5"), ("e.test", "127.0.0.6")):
        zone.add(domain, "MX", (10, f"mx.{domain}"))
        zone.add(f"mx.{domain}", "A", ip)
    a.start()
    try:
        yield a, port
    finally:
        code = a.stop()
        server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def send(a: Instance, rcpt: str, subject: str, *, mail_options: list[str],
         rcpt_options: list[str]) -> None:
    """Alice submits one message to ``rcpt`` with the given ESMTP parameters."""
    assert a.server is not None
    with smtplib.SMTP(a.ip, a.ports["submission"], timeout=20) as smtp:
        smtp.starttls(context=tls_context(a.server.cert_path, a.hostname))
        smtp.login(ALICE, PASSWORD)
        assert smtp.has_extn("dsn")
        smtp.sendmail(ALICE, [rcpt], make_mail(ALICE, rcpt, subject), mail_options,
                      rcpt_options)


def dsns(a: Instance, token: str) -> list[email.message.Message]:
    """The DSNs in Alice's INBOX about the message whose subject is ``token``."""
    out = []
    for raw in a.inbox(ALICE):
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        if "MAILER-DAEMON" in str(msg["From"]) and token.encode() in raw:
            out.append(msg)
    return out


def report(msg: email.message.Message) -> tuple[email.message.Message, email.message.Message]:
    """(the per-message fields, the first per-recipient fields) of a DSN."""
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    status = msg.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    return blocks[0], blocks[1]


def test_dsn_is_advertised_and_bad_parameters_get_501(world: tuple[Instance, int]) -> None:
    a, _port = world
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("dsn")
        assert not smtp.has_extn("requiretls")  # RFC 8689 section 4.1: not before STARTTLS
        for params in ("RET=BODY", "ENVID=a+zz", "ENVID=" + "x" * 101):
            code, text = smtp.docmd(f"MAIL FROM:<x@r.test> {params}")
            assert (code, text[:5]) == (501, b"5.5.4"), (params, text)
        assert smtp.docmd("MAIL FROM:<x@r.test> RET=HDRS ENVID=ok+2Bid")[0] == 250
        for params in ("NOTIFY=SOMETIMES", "NOTIFY=NEVER,SUCCESS", "ORCPT=rfc822;x+zz",
                       "ORCPT=noaddrtype"):
            code, text = smtp.docmd(f"RCPT TO:<{BOB}> {params}")
            assert (code, text[:5]) == (501, b"5.5.4"), (params, text)
        code, _ = smtp.docmd(f"RCPT TO:<{BOB}> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob+40a.test")
        assert code == 250


def test_failure_dsn_has_envid_orcpt_and_only_the_headers(world: tuple[Instance, int]) -> None:
    a, port = world
    peer = ScriptedPeer("127.0.0.4", port, ["550 5.1.1 No such user carol"])
    try:
        send(a, "carol@c.test", "dsn-hdrs-1", mail_options=["RET=HDRS", "ENVID=abc"],
             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;x@y.test"])
        (msg,) = wait_for(lambda: dsns(a, "dsn-hdrs-1"), 30, "the bounce", log=a.log)
    finally:
        peer.stop()
    fields, rcpt = report(msg)
    assert fields["Original-Envelope-Id"] == "abc"
    assert rcpt["Original-Recipient"] == "rfc822; x@y.test"
    assert rcpt["Final-Recipient"] == "rfc822; carol@c.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.1")
    returned = msg.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    text = returned.get_payload()
    assert "Subject: dsn-hdrs-1" in text
    assert "Hello Bob." not in text  # RET=HDRS: headers only


def test_ret_full_returns_the_whole_message(world: tuple[Instance, int]) -> None:
    a, port = world
    peer = ScriptedPeer("127.0.0.4", port, ["550 5.1.1 No such user carol"])
    try:
        send(a, "carol@c.test", "dsn-full-1", mail_options=["RET=FULL"],
             rcpt_options=["NOTIFY=FAILURE"])
        (msg,) = wait_for(lambda: dsns(a, "dsn-full-1"), 30, "the bounce", log=a.log)
    finally:
        peer.stop()
    fields, rcpt = report(msg)
    assert fields["Original-Envelope-Id"] is None
    assert rcpt["Original-Recipient"] is None
    returned = msg.get_payload()[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "dsn-full-1"
    assert "Hello Bob." in inner.get_payload()


def test_notify_never_gives_no_bounce(world: tuple[Instance, int]) -> None:
    a, port = world
    peer = ScriptedPeer("127.0.0.5", port, ["550 5.1.1 No such user dave"])
    try:
        send(a, "dave@d.test", "dsn-never-1", mail_options=[], rcpt_options=["NOTIFY=NEVER"])
        wait_for(lambda: [r for r in a.queue() if r.rcpt_to == "dave@d.test"
                          and r.state == "bounced"], 30, "the bounce", log=a.log)
        # A control message to the same peer, sent after: its bounce arriving proves the
        # queue has finished with the first one.
        send(a, "dave@d.test", "dsn-never-2", mail_options=[], rcpt_options=[])
        wait_for(lambda: dsns(a, "dsn-never-2"), 30, "the control bounce", log=a.log)
    finally:
        peer.stop()
    assert dsns(a, "dsn-never-1") == []


def test_notify_success_local_delivery_gives_delivered(world: tuple[Instance, int]) -> None:
    a, _port = world
    send(a, BOB, "dsn-local-1", mail_options=["ENVID=local+2B1"],
         rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@a.test"])
    (msg,) = wait_for(lambda: dsns(a, "dsn-local-1"), 30, "the success notice", log=a.log)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    fields, rcpt = report(msg)
    assert fields["Original-Envelope-Id"] == "local+2B1"  # xtext, as it came
    assert (rcpt["Action"], rcpt["Status"]) == ("delivered", "2.0.0")
    assert rcpt["Original-Recipient"] == "rfc822; bob@a.test"
    assert any(b"dsn-local-1" in m for m in a.inbox(BOB))
    # Without NOTIFY=SUCCESS no notice is sent for a local delivery.
    send(a, BOB, "dsn-local-2", mail_options=[], rcpt_options=[])
    wait_for(lambda: any(b"dsn-local-2" in m for m in a.inbox(BOB)), 30, "delivery")
    assert dsns(a, "dsn-local-2") == []


def test_notify_success_to_a_server_without_dsn_gives_relayed(
    world: tuple[Instance, int],
) -> None:
    a, port = world
    peer = ScriptedPeer("127.0.0.4", port, ["250 2.1.5 Ok"])
    try:
        send(a, "carol@c.test", "dsn-relay-1", mail_options=["ENVID=r1"],
             rcpt_options=["NOTIFY=SUCCESS"])
        (msg,) = wait_for(lambda: dsns(a, "dsn-relay-1"), 30, "the relayed notice",
                          log=a.log)
        # aiosmtpd answers 555 to any RCPT parameter: none was sent to it.
        assert peer.received
        assert peer.received[0][1] == ["carol@c.test"]
    finally:
        peer.stop()
    fields, rcpt = report(msg)
    assert fields["Original-Envelope-Id"] == "r1"
    assert (rcpt["Action"], rcpt["Status"]) == ("relayed", "2.0.0")
    assert rcpt["Remote-MTA"].startswith("dns; mx.c.test")


def test_a_server_offering_dsn_receives_the_parameters(world: tuple[Instance, int]) -> None:
    a, port = world
    sink = FastSink("127.0.0.6", port, dsn=True)
    try:
        send(a, "erin@e.test", "dsn-pass-1", mail_options=["RET=HDRS", "ENVID=abc+2Bdef"],
             rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;x+2By@y.test"])
        wait_for(sink.count, 30, "delivery to the DSN server", log=a.log)
        wait_for(lambda: [r for r in a.queue() if r.rcpt_to == "erin@e.test"
                          and r.state == "delivered"], 30, "the row delivered", log=a.log)
    finally:
        sink.stop()
    mail = next(c for c in sink.commands if c.startswith("MAIL"))
    rcpt = next(c for c in sink.commands if c.startswith("RCPT"))
    assert " RET=HDRS" in mail
    assert " ENVID=abc+2Bdef" in mail
    assert rcpt == "RCPT TO:<erin@e.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+2By@y.test"
    # The next hop took the request: the success notice is its to send, not ours.
    assert dsns(a, "dsn-pass-1") == []


def test_an_alias_to_several_addresses_gives_one_expanded_notice(
    world: tuple[Instance, int],
) -> None:
    a, port = world
    peer = ScriptedPeer("127.0.0.4", port, ["250 2.1.5 Ok"])  # no DSN: would get "relayed"
    try:
        send(a, "team@a.test", "dsn-expand-1", mail_options=[],
             rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        (msg,) = wait_for(lambda: dsns(a, "dsn-expand-1"), 30, "the expanded notice",
                          log=a.log)
        wait_for(lambda: [r for r in a.queue() if r.rcpt_to == "carol@c.test"
                          and r.state == "delivered" and r.attempts], 30, "carol's copy",
                 log=a.log)
        assert any(b"dsn-expand-1" in m for m in a.inbox(BOB))
    finally:
        peer.stop()
    _fields, rcpt = report(msg)
    assert rcpt["Final-Recipient"] == "rfc822; team@a.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("expanded", "2.0.0")
    # RFC 3461 section 6.2.7.3: SUCCESS is not asked of the addresses the alias became, so
    # neither Bob's delivery nor the relay to Carol's server gives another notice.
    assert len(dsns(a, "dsn-expand-1")) == 1
