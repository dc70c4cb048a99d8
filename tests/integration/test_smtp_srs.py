"""SRS for forwarded mail against a real ``mailstead serve``: an alias of a.test forwards an
outside sender's message to an outside address with an SRS0 envelope sender in a.test (what
the next hop's SPF then checks), a bounce to that address comes back to the original sender,
and forged or mangled SRS0 addresses are refused at RCPT with 550. Mail of our own users is
not rewritten."""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import rewrite_tables, run_cli
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

from mailstead.accounts.keys import SecurityKeys
from mailstead.mailauth.srs import Srs

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"
FRIEND = "friend@remote.test"
_SRS0 = re.compile(r"SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=sender\.test=news@a\.test")


WORLD: dict[str, int] = {}  # the DNS server's and the MX port of the running world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, ScriptedPeer, ScriptedPeer]]:
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
    WORLD.update(dns=dns_server.port, smtp=port)
    a = make_instance(tmp_path_factory.mktemp("srs"), "a.test", "127.0.0.2",
                      dns_port=dns_server.port, smtp_port=port, users={ALICE: PASSWORD})
    run_cli("alias", "add", "fwd@a.test", FRIEND, "--data-dir", str(a.data_dir))
    run_cli("alias", "add", "gone@a.test", "left@gone.test", "--data-dir", str(a.data_dir))
    publish(zone, a)
    zone.add("gone.test", "MX", (10, "mx.gone.test"))
    zone.add("mx.gone.test", "A", "127.0.0.6")
    zone.add("remote.test", "MX", (10, "mx.remote.test"))
    zone.add("mx.remote.test", "A", "127.0.0.4")
    zone.add("sender.test", "MX", (10, "mx.sender.test"))
    zone.add("mx.sender.test", "A", "127.0.0.5")
    remote = ScriptedPeer("127.0.0.4", port, ["250 2.1.5 Ok"])
    sender = ScriptedPeer("127.0.0.5", port, ["250 2.1.5 Ok"])
    a.start()
    try:
        yield a, remote, sender
    finally:
        code = a.stop()
        remote.stop()
        sender.stop()
        dns_server.stop()
        assert code == 0, a.log()[-4000:]
        assert "Traceback" not in a.log(), a.log()[-8000:]


def _forwarded(a: Instance, remote: ScriptedPeer, token: bytes) -> str:
    found = wait_for(lambda: [f for f, _, m in remote.received if token in m], 30,
                     f"the forwarded message {token!r}", log=a.log)
    sender: str = found[0]
    return sender


def test_alias_forward_uses_srs_and_the_bounce_comes_back(
    world: tuple[Instance, ScriptedPeer, ScriptedPeer],
) -> None:
    a, remote, sender = world
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("client.sender.test")
        client.sendmail("news@sender.test", ["fwd@a.test"],
                        make_mail("news@sender.test", "fwd@a.test", "srs-forward-1"))
    srs_address = _forwarded(a, remote, b"srs-forward-1")
    assert _SRS0.fullmatch(srs_address), srs_address
    # The forward's destination bounces it later: the bounce goes to the SRS0 address, and
    # from there back to the original sender, with the null reverse-path.
    bounce = (b"From: MAILER-DAEMON@remote.test\r\nTo: <" + srs_address.encode() + b">\r\n"
              b"Subject: Undelivered: srs-bounce-1\r\n\r\nNo such user.\r\n")
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("mx.remote.test")
        client.sendmail("", [srs_address], bounce)
    found = wait_for(lambda: [(f, r) for f, r, m in sender.received if b"srs-bounce-1" in m],
                     30, "the bounce back at the original sender", log=a.log)
    assert found[0] == ("<>", ["news@sender.test"])  # aiosmtpd shows the null path so
    # The rewritten address works case-folded too (some servers lower-case local parts).
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("mx.remote.test")
        client.mail("")
        assert client.rcpt(srs_address.lower())[0] == 250


def test_our_own_bounce_of_a_forward_reaches_the_original_sender(
    world: tuple[Instance, ScriptedPeer, ScriptedPeer],
) -> None:
    """The forward's destination refuses it at RCPT: our queue's bounce goes to the SRS0
    sender of the row, which is resolved back to the original sender."""
    a, _remote, sender = world
    gone = ScriptedPeer("127.0.0.6", WORLD["smtp"], ["550 5.1.1 No such user"])
    try:
        with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
            client.ehlo("client.sender.test")
            client.sendmail("news@sender.test", ["gone@a.test"],
                            make_mail("news@sender.test", "gone@a.test", "srs-dsn-1"))
        found = wait_for(lambda: [(f, r, m) for f, r, m in sender.received
                                  if b"srs-dsn-1" in m and b"MAILER-DAEMON" in m], 30,
                         "our bounce at the original sender", log=a.log)
    finally:
        gone.stop()
    mail_from, rcpts, bounce = found[0]
    assert (mail_from, rcpts) == ("<>", ["news@sender.test"])
    assert b"Final-Recipient: rfc822; left@gone.test" in bounce
    rows = [r for r in a.queue() if r.rcpt_to == "left@gone.test"]
    assert [r.state for r in rows] == ["bounced"]
    assert _SRS0.fullmatch(rows[0].mail_from)


def test_forged_srs_addresses_are_refused_at_rcpt(
    world: tuple[Instance, ScriptedPeer, ScriptedPeer],
) -> None:
    a, _remote, _sender = world
    forged = Srs(b"k" * 32, time.time)
    candidates = [
        forged.forward("victim@elsewhere.test", "a.test"),  # another key: wrong hash
        "SRS0=AAAA=AA=elsewhere.test=victim@a.test",
        "SRS0=nonsense@a.test",
    ]
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("mx.remote.test")
        client.mail("")
        for address in candidates:
            code, text = client.rcpt(address)
            assert code == 550, (address, text)
            assert b"SRS" in text


def test_an_expired_srs_address_is_refused(
    world: tuple[Instance, ScriptedPeer, ScriptedPeer],
) -> None:
    """An address made 22 days ago with the server's own key: the hash is right, the age
    is not (at most 21 days)."""

    a, _remote, _sender = world
    key = SecurityKeys.load_or_create(a.data_dir).srs_key()
    old = Srs(key, lambda: time.time() - 22 * 86400).forward("news@sender.test", "a.test")
    fresh = Srs(key, time.time).forward("news@sender.test", "a.test")
    with smtplib.SMTP(a.ip, a.ports["smtp"], timeout=20) as client:
        client.ehlo("mx.remote.test")
        client.mail("")
        assert client.rcpt(old)[0] == 550
        assert client.rcpt(fresh)[0] == 250


def test_mail_of_our_own_users_is_not_rewritten(
    world: tuple[Instance, ScriptedPeer, ScriptedPeer],
) -> None:
    a, remote, _sender = world
    submit(a, ALICE, ["fwd@a.test"], make_mail(ALICE, "fwd@a.test", "srs-own-1"))
    assert _forwarded(a, remote, b"srs-own-1") == ALICE


def test_srs_can_be_turned_off(
    world: tuple[Instance, ScriptedPeer, ScriptedPeer], tmp_path: Path,
) -> None:
    """``[smtp] srs = false``: a second server forwards with the original envelope sender."""
    _a, remote, _sender = world
    b = make_instance(tmp_path, "b.test", "127.0.0.3", dns_port=WORLD["dns"],
                      smtp_port=WORLD["smtp"])
    rewrite_tables(b.data_dir / "mailstead.toml", {"smtp": {"srs": False}})
    run_cli("alias", "add", "fwd@b.test", FRIEND, "--data-dir", str(b.data_dir))
    b.start()
    try:
        with smtplib.SMTP(b.ip, b.ports["smtp"], timeout=20) as client:
            client.ehlo("client.sender.test")
            client.sendmail("news@sender.test", ["fwd@b.test"],
                            make_mail("news@sender.test", "fwd@b.test", "srs-off-1"))
        assert _forwarded(b, remote, b"srs-off-1") == "news@sender.test"
    finally:
        assert b.stop() == 0, b.log()[-4000:]
