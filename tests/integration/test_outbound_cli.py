"""Issue 5, the queue CLI against a real data directory: ``mailstead queue list|show|retry|
delete|bounce`` with the server stopped and while it runs (readable output, exit codes,
one-line errors, a bounce that tells the sender), and ``mailstead dkim remove``."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from outbound_helpers import (
    PASSWORD,
    DnsFixture,
    Instance,
    ScriptedPeer,
    Zone,
    cli,
    free_port,
    make_instance,
    make_mail,
    queue_directly,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow
ALICE = "alice@a.test"
DOWN_IP = "127.0.0.13"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str
          ) -> Iterator[tuple[Instance, Zone, int]]:
    root: Path = tmp_path_factory.mktemp("qcli")
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", DOWN_IP)
    # Retries an hour apart: deferred rows stay put until the CLI acts on them.
    a = make_instance(root, "a.test", "127.0.0.2", dns_port=dns_server.port, smtp_port=port,
                      users={ALICE: PASSWORD}, queue={"retry_schedule": [3600]})
    zone.add("a.test", "MX", (10, a.hostname))
    zone.add(a.hostname, "A", a.ip)
    zone.add("down.test", "MX", (10, "mx.down.test"))
    zone.add("mx.down.test", "A", DOWN_IP)
    try:
        yield a, zone, port
    finally:
        a.stop()
        dns_server.stop()


def q(a: Instance, *args: str) -> tuple[int, str, str]:
    result = cli("queue", *args, "--data-dir", str(a.data_dir))
    return result.code, result.out, result.err


def _dsns(a: Instance, token: str) -> list[email.message.Message]:
    return [email.message_from_bytes(m, policy=email.policy.compat32)
            for m in a.inbox(ALICE) if b"MAILER-DAEMON" in m and token.encode() in m]


def test_queue_commands_with_the_server_stopped(world: tuple[Instance, Zone, int]) -> None:
    a, _zone, _port = world
    assert a.server is None
    assert q(a, "list") == (0, "the queue is empty\n", "")
    # One after another: the listing below expects them in this order (L000000 .. L000002).
    queue_directly(a.data_dir, ALICE, "rcpt@down.test", 3, burst=False)

    code, out, err = q(a, "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "ID", "STATE", "TRIES", "NEXT", "ATTEMPT", "RECIPIENT"]
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["L000000", "queued", "0"], ["L000001", "queued", "0"], ["L000002", "queued", "0"]]
    assert all(line.endswith("rcpt@down.test") for line in lines[1:4])
    assert lines[4] == "3 recipient(s) in 3 message(s)"

    code, out, err = q(a, "show", "L000001")
    assert (code, err) == (0, "")
    assert "queue id:  L000001" in out
    assert f"sender:    {ALICE}" in out
    assert "  rcpt@down.test\n    state queued, 0 attempt(s), last -" in out
    code, out, err = q(a, "show", "L000001", "--body")
    assert code == 0
    assert "X-Token: 1" in out
    assert "Subject: load 1" in out

    # Unknown IDs: exit 1, one line on stderr naming the ID, nothing on stdout.
    for command in (("show", "NOPE"), ("retry", "NOPE"), ("delete", "NOPE"),
                    ("bounce", "NOPE")):
        code, out, err = q(a, *command)
        assert (code, out) == (1, ""), command
        assert err == "mailstead: no message NOPE in the queue (see: mailstead queue list)\n"
    code, out, err = q(a, "show")  # usage error: argparse's exit status
    assert (code, out) == (2, "")
    assert "ID" in err

    assert q(a, "delete", "L000002") == (
        0, "deleted L000002 (1 recipient row(s)); no notice was sent\n", "")
    assert [r.queue_id for r in a.queue()] == ["L000000", "L000001"]

    code, out, err = q(a, "bounce", "L000000")
    assert (code, err) == (0, "")
    assert out.startswith("bounced 1 recipient(s) of L000000; notice ")
    assert out.endswith(" sent to the sender\n")
    [dsn] = _dsns(a, "load 0")
    assert dsn.get_content_type() == "multipart/report"
    status = dsn.get_payload()[1].as_string()
    assert "Final-Recipient: rfc822; rcpt@down.test" in status
    assert "Action: failed" in status
    assert "Status: 5.0.0" in status
    assert "postmaster removed the message" in dsn.get_payload()[0].get_payload(decode=True
                                                                               ).decode()
    assert "MAILER-DAEMON@mail.a.test" in (dsn["From"] or "")
    rows = {r.queue_id: r for r in a.queue()}
    assert rows["L000000"].state == "bounced"
    assert rows["L000000"].last_error == "bounced by the postmaster"
    # A second bounce has nothing left to do.
    assert q(a, "bounce", "L000000") == (
        1, "", "mailstead: L000000 has no undelivered recipients\n")
    # list hides finished rows unless --all.
    assert "L000000" not in q(a, "list")[1]
    everything = {line.split()[0]: line.split()[1] for line in
                  q(a, "list", "--all")[1].splitlines()[1:-1]}
    assert everything == {"L000000": "bounced", "L000001": "queued"}
    # Queued rows are due already: retry has nothing to move.
    assert q(a, "retry") == (0, "0 recipient(s) due now\n", "")
    assert q(a, "delete", "L000001")[0] == 0


def test_queue_commands_while_the_server_runs(world: tuple[Instance, Zone, int]) -> None:
    a, _zone, port = world
    a.start()
    submit(a, ALICE, ["dora@down.test"], make_mail(ALICE, "dora@down.test", "cli-run-1"))
    submit(a, ALICE, ["dan@down.test"], make_mail(ALICE, "dan@down.test", "cli-run-2"))
    submit(a, ALICE, ["dirk@down.test"], make_mail(ALICE, "dirk@down.test", "cli-run-3"))

    def deferred() -> dict[str, str]:
        rows = [r for r in a.queue() if r.rcpt_to.endswith("@down.test") and r.state != "bounced"]
        ok = len(rows) == 3 and all(r.state == "deferred" for r in rows)
        return {r.rcpt_to: r.queue_id for r in rows} if ok else {}

    ids = wait_for(deferred, 30, "three deferred rows (the MX is down)", log=a.log)
    code, out, _err = q(a, "list")
    assert code == 0
    assert sum(" deferred " in line for line in out.splitlines()) == 3
    code, out, _err = q(a, "show", ids["dora@down.test"])
    assert code == 0
    assert "state deferred, 1 attempt(s)" in out
    assert "next attempt " in out
    assert f"last result: 451 4.4.1 mx.down.test[{DOWN_IP}]:{port}: connection failed" in out

    # The MX comes up; retry of one message moves only it, and it is delivered within seconds.
    peer = ScriptedPeer(DOWN_IP, port, ["250 2.1.5 Ok"])
    try:
        assert q(a, "retry", ids["dora@down.test"]) == (0, "1 recipient(s) due now\n", "")
        wait_for(lambda: [m for m in peer.received if b"cli-run-1" in m[2]], 20,
                 "the retried message at the peer", log=a.log)
        wait_for(lambda: {r.rcpt_to: r.state for r in a.queue()}.get("dora@down.test")
                 == "delivered", 10, "the row delivered")
        assert len(peer.received) == 1  # the other two wait for their own schedule

        # bounce while the server runs: the sender gets the notice in her INBOX.
        code, out, err = q(a, "bounce", ids["dan@down.test"])
        assert (code, err) == (0, "")
        wait_for(lambda: _dsns(a, "cli-run-2"), 10, "the bounce notice", log=a.log)
        # delete while the server runs: gone, no notice.
        assert q(a, "delete", ids["dirk@down.test"])[0] == 0
        assert ids["dirk@down.test"] not in {r.queue_id for r in a.queue()}
        assert not _dsns(a, "cli-run-3")
        # Neither reaches the peer later.
        assert q(a, "retry") == (0, "0 recipient(s) due now\n", "")
        states = {r.rcpt_to: r.state for r in a.queue()}
        assert states["dan@down.test"] == "bounced"
        assert len(peer.received) == 1
    finally:
        peer.stop()
    assert a.stop() == 0
    a.server = None
    assert "Traceback" not in a.log()


def test_dkim_remove_refuses_a_signing_key_and_removes_a_retired_one(
    world: tuple[Instance, Zone, int],
) -> None:
    a, _zone, _port = world
    d = ("--data-dir", str(a.data_dir))

    def selectors() -> dict[str, str]:
        out = cli("dkim", "list", "a.test", *d).out
        return {line.split("\t")[0]: line.split("\t")[-1] for line in out.splitlines()}

    before = selectors()
    assert set(before.values()) == {"signing"}
    signing = sorted(before)[0]
    result = cli("dkim", "remove", "a.test", signing, *d)
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert f"DKIM selector {signing} of a.test signs mail now" in result.err
    assert cli("dkim", "rotate", "a.test", "--activate", *d).code == 0
    after = selectors()
    assert len(after) == 4
    assert {s: after[s] for s in before} == {s: "published, not signing" for s in before}
    result = cli("dkim", "remove", "a.test", signing, *d)
    assert result.code == 0, result.err
    assert result.out.startswith(f"removed DKIM key {signing} ")
    assert f"{signing}._domainkey.a.test. TXT" in result.out
    assert signing not in selectors()
    result = cli("dkim", "remove", "a.test", signing, *d)
    assert result.code == 1
    assert f"a.test has no DKIM selector {signing}" in result.err
    result = cli("dkim", "remove", "nowhere.test", "x", *d)
    assert result.code == 1
    assert "nowhere.test is not a local domain" in result.err
