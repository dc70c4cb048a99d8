"""Two ``mailstead serve`` nodes on one PostgreSQL database (issue 10), driven over the network
as clients see them: an IMAP IDLE session on node B learns of a delivery on node A within a
second (LISTEN/NOTIFY); 1,000 concurrent deliveries through both nodes get distinct UIDs and
MODSEQs with UIDNEXT right; a flag change on A reaches IDLE and NOOP sessions on B; the POP3
[IN-USE] lock and the brute-force block hold across nodes; and when one node is SIGKILLed in
the middle of outbound delivery, the other delivers its queue: every recipient at least once,
only rows in flight at the kill twice (a remote 250 and the node's record of it are not one
atomic step, so exactly-once cannot be promised). Two in-process tests of the queue workers on
the shared store show that a node that starts leaves the rows another node is delivering alone
until their lease ends, and that a node that stops gives its unfinished rows back at once.

Each node has its own data directory, listeners on loopback port 0 and its own self-signed
certificate; ``mailstead init --store DSN`` points both at one fresh database of the private
test server (tests/pgserver.py), the second init joining what the first created. The nodes
share ``security.key`` (app passwords and second factors are keyed with it), as a real
installation must.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEFAULT_IMAP,
    DEFAULT_SMTP,
    DOMAIN,
    HOSTNAME,
    Browser,
    Harness,
    LoadStats,
    RawIMAP,
    Server,
    ServerError,
    add_user,
    configure,
    dot_stuff,
    load_client,
    make_message,
    rewrite_tables,
    run_cli,
)
from outbound_helpers import DnsFixture, FastSink, Zone, free_port, queue_directly, wait_for

from pgserver import shared_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.backends("postgresql", reason="several nodes share one PostgreSQL database"),
]

# The filters are not what these tests are about; off, the load test measures the store.
NO_FILTERS: dict[str, dict[str, Any]] = {
    "auth_checks": {"enable": False},
    "spam": {"enable": False},
}
SECURITY: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 8,
    "argon2_parallelism": 1,
    "max_failures": 10,
    "failure_window": 600,
    "block_duration": 900,
    "failure_delay": 0.05,
    "max_failure_delay": 0.2,
}
POP3: dict[str, Any] = {"idle_timeout": 30, "max_connections": 50,
                        "max_connections_per_ip": 20}
ATTACKER = "127.0.0.5"
OWNER = "127.0.0.6"
# How soon a block made by one node applies on another (accounts/login.py caches the block
# table for BLOCK_CACHE_SECONDS = 2), with a margin for a loaded machine.
BLOCK_PROPAGATION = 5.0


def new_database() -> str:
    """A fresh database on the private test server (conftest's ``store_backend`` has made sure
    it runs)."""
    return shared_server().new_database("multinode")


@dataclass
class Cluster:
    """Node A and node B, one database."""

    dsn: str
    a: Harness
    b: Harness

    @property
    def nodes(self) -> tuple[Harness, Harness]:
        return self.a, self.b


def init_node(data_dir: Path, dsn: str, tables: Mapping[str, Mapping[str, Any]],
              key_from: Path | None = None) -> None:
    """``mailstead init --store DSN`` (the second node joins the installation the first
    created), listeners on loopback port 0, then ``tables`` merged into the config."""
    run_cli("init", "--data-dir", str(data_dir), "--hostname", HOSTNAME, "--domain", DOMAIN,
            "--dev", "--store", dsn)
    configure(data_dir, DEFAULT_SMTP, SECURITY)
    rewrite_tables(data_dir / "mailstead.toml", tables)
    if key_from is not None:
        from mailstead.accounts.keys import KEY_FILE, SecurityKeys

        SecurityKeys.load_or_create(key_from)  # the first node's, made now if need be
        shutil.copy2(key_from / KEY_FILE, data_dir / KEY_FILE)


def start_cluster(root: Path, tables: Mapping[str, Mapping[str, Any]]) -> Cluster:
    """Two initialised and running nodes on a fresh database."""
    dsn = new_database()
    a_dir, b_dir = root / "node-a", root / "node-b"
    init_node(a_dir, dsn, tables)
    init_node(b_dir, dsn, tables, key_from=a_dir)
    a = Server(a_dir).start(timeout=30)
    try:
        b = Server(b_dir).start(timeout=30)
    except BaseException:
        a.stop()
        raise
    return Cluster(dsn, Harness(a), Harness(b))


def stop_node(h: Harness) -> None:
    """SIGTERM must exit 0 without a traceback in the log."""
    code = h.server.stop()
    log = h.log()
    assert code == 0, f"{h.data_dir.name}: exit code {code}\n{log[-20000:]}"
    assert "Traceback" not in log, f"{h.data_dir.name} logged a traceback:\n{log[-20000:]}"


def stop_cluster(cluster: Cluster) -> None:
    errors: list[str] = []
    for node in cluster.nodes:
        if not node.server.alive():
            continue
        try:
            stop_node(node)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Cluster]:
    tables = {**NO_FILTERS, "pop3": POP3, "imap": DEFAULT_IMAP}
    try:
        started = start_cluster(tmp_path_factory.mktemp("multinode"), tables)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield started
    finally:
        stop_cluster(started)


@pytest.fixture
def account(cluster: Cluster) -> tuple[str, str]:
    """A fresh account, created through node A's data directory (so in the shared database)."""
    name = f"m{uuid.uuid4().hex[:12]}"
    address, password = f"{name}@{DOMAIN}", f"Pw-{uuid.uuid4().hex}"
    try:
        add_user(cluster.a.data_dir, address, password)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    return address, password


# ---------------------------------------------------------------------------------------------
# Clients


def imap_session(node: Harness, account: tuple[str, str]) -> RawIMAP:
    client = RawIMAP(node.port("imaps"), tls=node.tls())
    client.login(*account)
    return client


def deliver(node: Harness, to: str, messages: list[bytes]) -> None:
    """Port 25 of ``node``, one connection; returns after the last 250 (the commit)."""
    with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=30) as client:
        for message in messages:
            client.sendmail("sender@remote.test", [to], message)


def idle(client: RawIMAP) -> bytes:
    tag = client.next_tag()
    client.send(tag + b" IDLE\r\n")
    assert client.read_line().startswith(b"+"), "no continuation request for IDLE"
    return tag


def done(client: RawIMAP, tag: bytes) -> None:
    client.send(b"DONE\r\n")
    assert client.read_until(tag).status == b"OK"


class Waiter(threading.Thread):
    """Reads untagged lines of an idling session until one matches ``pattern``; ``at`` is the
    monotonic time it arrived (None when ``timeout`` passed first)."""

    def __init__(self, client: RawIMAP, pattern: bytes, timeout: float) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.pattern = re.compile(pattern)
        self.timeout = timeout
        self.at: float | None = None
        self.line = b""
        self.start()

    def run(self) -> None:
        self.client.sock.settimeout(self.timeout)
        try:
            while True:
                line = self.client.read_line()
                if self.pattern.search(line):
                    self.at = time.monotonic()
                    self.line = line
                    return
        except (TimeoutError, OSError):
            return
        finally:
            self.client.sock.settimeout(10)


def _connect(port: int, source: str | None, timeout: float) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout,
                                    source_address=(source, 0) if source else None)


class IMAPFrom(imaplib.IMAP4_SSL):
    """imaplib over implicit TLS from a chosen loopback source address."""

    def __init__(self, port: int, ctx: ssl.SSLContext, source: str | None) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=15)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = _connect(self.port, self.source, timeout or 15)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap_login(node: Harness, user: str, password: str, source: str | None) -> str:
    """One LOGIN on a fresh connection: "ok", "auth" (refused) or "temp" ([UNAVAILABLE]: the
    client's network is blocked, RFC 5530 section 3)."""
    client = IMAPFrom(node.port("imaps"), node.tls(), source)
    try:
        client.login(user, password)
        return "ok"
    except imaplib.IMAP4.error as exc:
        return "temp" if "[UNAVAILABLE]" in str(exc) else "auth"
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def pop3_login(node: Harness, user: str, password: str) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL("127.0.0.1", node.port("pop3s"), context=node.tls(), timeout=15)
    try:
        client.user(user)
        client.pass_(password)
    except BaseException:
        client.close()
        raise
    return client


# ---------------------------------------------------------------------------------------------
# Change notification across nodes


def test_idle_on_b_wakes_within_a_second_of_delivery_on_a(
    cluster: Cluster, account: tuple[str, str]
) -> None:
    address, _ = account
    after_ack: list[float] = []
    after_start: list[float] = []
    with imap_session(cluster.b, account) as watcher:
        assert watcher.command("SELECT INBOX").status == b"OK"
        for n in range(5):
            tag = idle(watcher)
            waiter = Waiter(watcher, rb"^\* %d EXISTS" % (n + 1), timeout=10)
            time.sleep(0.2)  # the IDLE is established on B's side
            started = time.monotonic()
            deliver(cluster.a, address, [make_message(f"idle-{n}", to=address)])
            acked = time.monotonic()
            waiter.join(15)
            assert waiter.at is not None, f"B's IDLE never saw message {n + 1} delivered on A"
            after_ack.append(waiter.at - acked)
            after_start.append(waiter.at - started)
            done(watcher, tag)
    print(f"\nIDLE on B after delivery on A: from the 250 "
          f"{', '.join(f'{1000 * s:.0f}' for s in after_ack)} ms; from the SMTP connect "
          f"{', '.join(f'{1000 * s:.0f}' for s in after_start)} ms")
    # Issue 10: node B learns of node A's delivery within one second of its commit (the 250).
    assert max(after_ack) < 1.0, after_ack


def test_flag_change_on_a_reaches_idle_and_noop_on_b(
    cluster: Cluster, account: tuple[str, str]
) -> None:
    address, _ = account
    deliver(cluster.a, address, [make_message(f"flags-{n}", to=address) for n in range(3)])
    with imap_session(cluster.a, account) as writer, \
            imap_session(cluster.b, account) as watcher:
        assert writer.command("SELECT INBOX").status == b"OK"
        assert b"* 3 EXISTS" in watcher.command("SELECT INBOX").untagged
        # RFC 9051 section 7.5.2: an idling session is told of flag changes (FETCH FLAGS).
        tag = idle(watcher)
        waiter = Waiter(watcher, rb"^\* 2 FETCH \(.*\\Flagged", timeout=10)
        time.sleep(0.2)
        assert writer.command("STORE 2 +FLAGS (\\Flagged)").status == b"OK"
        stored = time.monotonic()
        waiter.join(15)
        assert waiter.at is not None, "B's IDLE did not see the flag set on A"
        idle_delay = waiter.at - stored
        done(watcher, tag)
        # NOOP (RFC 9051 section 6.1.2) reports it too; the change may reach B's session an
        # instant after A's OK, so B asks again for up to a second.
        assert writer.command("STORE 3 +FLAGS (\\Seen $Multi)").status == b"OK"
        deadline = time.monotonic() + 1.0
        noops = 0
        while True:
            noops += 1
            response = watcher.command("NOOP")
            assert response.status == b"OK"
            if any(re.match(rb"\* 3 FETCH \(.*\$Multi", line) for line in response.untagged):
                break
            assert time.monotonic() < deadline, f"NOOP on B never showed the flag: {response}"
            time.sleep(0.05)
        flags = watcher.command("FETCH 1:3 (FLAGS)").untagged
    print(f"\nflag change on A: IDLE on B after {1000 * idle_delay:.0f} ms, NOOP after "
          f"{noops} round(s)")
    assert any(rb"\Flagged" in line for line in flags if line.startswith(b"* 2 FETCH"))
    assert any(b"$Multi" in line for line in flags if line.startswith(b"* 3 FETCH"))
    assert idle_delay < 1.0


def _recent_count(lines: tuple[bytes, ...]) -> int:
    found = [int(m.group(1)) for line in lines if (m := re.match(rb"\* (\d+) RECENT$", line))]
    assert found, f"no RECENT response in {lines!r}"
    return found[-1]


def _search(client: RawIMAP, key: str) -> list[int]:
    response = client.command(f"UID SEARCH {key}")
    assert response.status == b"OK", response
    return [int(n) for line in response.starting(b"SEARCH") for n in line.split()[2:]]


def test_recent_goes_to_one_session_across_nodes(
    cluster: Cluster, account: tuple[str, str]
) -> None:
    """\\Recent (RFC 3501 section 2.3.2) is one session's across nodes: two SELECTs sent at
    once on A and B give the message to exactly one; a message delivered later is taken by
    exactly one of the two selected sessions; STATUS on either node then counts none."""
    address, _ = account
    deliver(cluster.a, address, [make_message("recent-0", to=address)])
    with imap_session(cluster.a, account) as on_a, imap_session(cluster.b, account) as on_b, \
            imap_session(cluster.b, account) as looker:
        assert b"RECENT 1" in looker.command("STATUS INBOX (RECENT)").starting(b"STATUS")[0]
        on_a.send(b"s1 SELECT INBOX\r\n")
        on_b.send(b"s1 SELECT INBOX\r\n")
        counts = sorted(_recent_count(c.read_until(b"s1").untagged) for c in (on_a, on_b))
        assert counts == [0, 1]
        deliver(cluster.b, address, [make_message("recent-1", to=address)])
        # Both ask at once, again until both have seen the new message (B hears of the
        # delivery on A's node an instant later): exactly one of them has it recent.
        waiting = [on_a, on_b]
        deadline = time.monotonic() + 5
        while waiting:
            for client in waiting:
                client.send(b"n NOOP\r\n")
            waiting = [c for c in waiting if b"* 2 EXISTS" not in c.read_until(b"n").untagged]
            assert not waiting or time.monotonic() < deadline, "B never saw the new message"
            if waiting:
                time.sleep(0.05)
        takers = [c for c in (on_a, on_b) if 2 in _search(c, "RECENT")]
        assert len(takers) == 1
        other = on_b if takers[0] is on_a else on_a
        # Which session takes the second message is a race; the first stays with the
        # session whose SELECT took it, which may be either.
        assert 2 not in _search(other, "NEW")
        assert 2 in _search(other, "OLD")
        assert sum(1 in _search(c, "RECENT") for c in (on_a, on_b)) == 1
        for node in (cluster.a, cluster.b):
            with imap_session(node, account) as client:
                line = client.command("STATUS INBOX (RECENT)").starting(b"STATUS")[0]
                assert line.endswith(b"(RECENT 0)"), line


# ---------------------------------------------------------------------------------------------
# Concurrent deliveries through both nodes

TOTAL = 1000
CLIENTS_PER_NODE = 10


async def _load_both(ports: tuple[int, int], address: str) -> tuple[LoadStats, dict[str, bytes]]:
    stats = LoadStats()
    stop = asyncio.Event()
    sent: dict[str, bytes] = {}
    jobs: list[list[tuple[str, str, str, bytes]]] = [[], []]
    for n in range(TOTAL):
        token = f"load-{n}-{uuid.uuid4().hex[:8]}"
        message = make_message(token, to=address,
                               body=f"token {token}\r\n".encode() + b"payload line\r\n" * (n % 40))
        sent[token] = message
        jobs[n % 2].append((token, "sender@remote.test", address, dot_stuff(message)))
    clients = []
    for node, port in enumerate(ports):
        # Every client of a node draws from that node's half: all 1,000 are in flight at once.
        shared = iter(jobs[node])
        clients += [load_client(port, shared, stats, stop) for _ in range(CLIENTS_PER_NODE)]
    await asyncio.gather(*clients)
    return stats, sent


_FETCH_RE = re.compile(rb"^\* (\d+) FETCH \(")
_UID_RE = re.compile(rb"\bUID (\d+)")
_MODSEQ_RE = re.compile(rb"\bMODSEQ \((\d+)\)")
_TOKEN_RE = re.compile(rb"X-Token: (\S+)", re.IGNORECASE)


def _status_value(lines: tuple[bytes, ...], name: bytes) -> int:
    for line in lines:
        match = re.search(rb"\b" + name + rb" (\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no {name!r} in {lines!r}")


@pytest.mark.timeout(300)
def test_notify_on_b_hears_of_changes_on_a(cluster: Cluster, account: tuple[str, str]) -> None:
    """RFC 5465: a session on B with NOTIFY SET (no IDLE, no command) is told of a mailbox
    created, a message delivered and a mailbox subscribed on A."""
    address, _ = account
    with imap_session(cluster.a, account) as writer, \
            imap_session(cluster.b, account) as watcher:
        assert watcher.command("NOTIFY SET (PERSONAL (MessageNew MessageExpunge MailboxName "
                               "SubscriptionChange))").status == b"OK"
        seen = Waiter(watcher, rb'^\* LIST \(\) "/" Remote$', timeout=10)
        assert writer.command("CREATE Remote").status == b"OK"
        seen.join(15)
        assert seen.at is not None, "B was not told of the mailbox created on A"
        seen = Waiter(watcher, rb"^\* STATUS INBOX \(MESSAGES 1 UIDNEXT 2 ", timeout=10)
        deliver(cluster.a, address, [make_message("notify-1", to=address)])
        seen.join(15)
        assert seen.at is not None, "B was not told of the delivery on A"
        seen = Waiter(watcher, rb'^\* LIST \(\\Subscribed\) "/" Remote$', timeout=10)
        assert writer.command("SUBSCRIBE Remote").status == b"OK"
        seen.join(15)
        assert seen.at is not None, "B was not told of the subscription made on A"


def test_concurrent_deliveries_on_both_nodes_get_distinct_uids(
    cluster: Cluster, account: tuple[str, str]
) -> None:
    address, _ = account
    started = time.monotonic()
    stats, sent = asyncio.run(
        _load_both((cluster.a.smtp_port, cluster.b.smtp_port), address))
    elapsed = time.monotonic() - started
    print(f"\n{TOTAL} deliveries, {CLIENTS_PER_NODE} clients on each node: "
          f"{len(stats.accepted)} accepted in {elapsed:.1f} s "
          f"({len(stats.accepted) / elapsed:.0f}/s), {stats.errors} errors")
    assert stats.errors == 0, stats.error_samples
    assert len(stats.accepted) == TOTAL

    # Read the mailbox back through IMAP on B (CONDSTORE for MODSEQ, RFC 7162 section 3.1).
    with imap_session(cluster.b, account) as reader:
        selected = reader.command("SELECT INBOX (CONDSTORE)")
        assert selected.status == b"OK", selected
        assert f"* {TOTAL} EXISTS".encode() in selected.untagged, selected.untagged[:8]
        uidnext = _status_value(selected.untagged, b"UIDNEXT")
        highest = _status_value(selected.untagged, b"HIGHESTMODSEQ")
        fetched = reader.command("UID FETCH 1:* (UID MODSEQ BODY.PEEK[HEADER.FIELDS (X-Token)])")
        assert fetched.status == b"OK", fetched
        searched = reader.command("UID SEARCH ALL")
        assert searched.status == b"OK", searched
    uids: list[int] = []
    modseqs: list[int] = []
    tokens: list[str] = []
    for line in fetched.untagged:
        if not _FETCH_RE.match(line):
            continue
        uid, modseq, token = _UID_RE.search(line), _MODSEQ_RE.search(line), _TOKEN_RE.search(line)
        assert uid is not None, line
        assert modseq is not None, line
        assert token is not None, line
        uids.append(int(uid.group(1)))
        modseqs.append(int(modseq.group(1)))
        tokens.append(token.group(1).decode())
    searched_uids = [int(x) for line in searched.starting(b"SEARCH")
                     for x in line.split()[2:]]

    assert len(uids) == TOTAL
    assert len(set(uids)) == TOTAL, "two messages share a UID"
    assert sorted(searched_uids) == sorted(uids)
    assert Counter(tokens) == Counter(list(sent)), "a message is missing or stored twice"
    # RFC 9051 section 2.3.1.1: UIDNEXT is above every UID; nothing failed, so nothing was
    # skipped either. Every delivery is a change of its own (RFC 7162 section 3.1.1).
    assert uidnext == max(uids) + 1
    assert len(set(modseqs)) == TOTAL, "two deliveries share a MODSEQ"
    assert highest == max(modseqs)

    # Node A sees the same mailbox (STATUS, RFC 9051 section 6.3.11).
    with imap_session(cluster.a, account) as other:
        status = other.command("STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)")
        assert status.status == b"OK", status
    assert _status_value(status.untagged, b"MESSAGES") == TOTAL
    assert _status_value(status.untagged, b"UIDNEXT") == uidnext
    assert _status_value(status.untagged, b"HIGHESTMODSEQ") == highest
    gaps = (max(uids) - min(uids) + 1) - TOTAL
    print(f"UIDs {min(uids)}..{max(uids)} ({gaps} gaps), UIDNEXT {uidnext}, "
          f"HIGHESTMODSEQ {highest}")


# ---------------------------------------------------------------------------------------------
# State that must hold across nodes: the POP3 lock and the brute-force block


def test_pop3_in_use_across_nodes(cluster: Cluster, account: tuple[str, str]) -> None:
    address, password = account
    deliver(cluster.a, address, [make_message("pop-multi", to=address)])
    first = pop3_login(cluster.a, address, password)
    try:
        assert first.stat()[0] == 1
        # RFC 2449 section 8.1.2: the maildrop is locked by a session on the other node.
        second = poplib.POP3_SSL("127.0.0.1", cluster.b.port("pop3s"),
                                 context=cluster.b.tls(), timeout=15)
        try:
            second.user(address)
            with pytest.raises(poplib.error_proto) as refused:
                second.pass_(password)
            assert refused.value.args[0].startswith(b"-ERR [IN-USE]"), refused.value
        finally:
            second.close()
    finally:
        first.quit()
    # Released at QUIT: B gets the maildrop now.
    again = pop3_login(cluster.b, address, password)
    try:
        assert again.stat()[0] == 1
        # And A is refused while B holds it.
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            pop3_login(cluster.a, address, password)
    finally:
        again.quit()


def test_web_session_follows_the_browser_across_nodes(
    cluster: Cluster, account: tuple[str, str]
) -> None:
    """The web pages behind a round-robin balancer: each request goes to the other node. The
    sign-in form one node shows is accepted by the other, pages stay signed in on both, and
    a sign-out on one ends the session on both (the sessions live in the database)."""
    address, password = account
    browser = Browser(cluster.a.server, cluster.b.server)
    token = browser.csrf("/login")  # node A
    status, headers, _ = browser.request(  # node B
        "POST", "/login", {"csrf": token, "username": address, "password": password})
    assert (status, headers["location"]) == (303, "/account")
    for _ in range(4):  # B, A, B, A
        status, _, html = browser.request("GET", "/account")
        assert status == 200
        assert address in html
    assert browser.seen == [0, 1, 0, 1, 0, 1]
    token = browser.csrf()  # node B
    signed_in = browser.cookie
    status, _, _ = browser.request("POST", "/logout", {"csrf": token})  # node A
    assert status == 303
    browser.cookie = signed_in  # replayed (the sign-out set a new cookie)
    for _ in range(2):  # on B then A: signed out on both
        status, headers, _ = browser.request("GET", "/account")
        assert (status, headers["location"]) == (303, "/login")


def test_brute_force_block_holds_across_nodes(cluster: Cluster, account: tuple[str, str]) -> None:
    address, password = account
    a, b = cluster.nodes
    limit = int(SECURITY["max_failures"])
    # The guesses alternate between the nodes: each node alone sees only half of them, so a
    # block at the limit proves the failures are counted in the shared store.
    outcomes = []
    for i in range(limit):
        outcomes.append(imap_login((a, b)[i % 2], address, f"guess-{i:03d}", ATTACKER))
    assert outcomes == ["auth"] * limit, outcomes
    last = (a, b)[(limit - 1) % 2]  # the node that counted the last failure blocked at once
    assert imap_login(last, address, f"guess-{limit:03d}", ATTACKER) == "temp"
    # The other node refuses the network too, even with the right password, once it has
    # read the block (within BLOCK_PROPAGATION seconds).
    other = b if last is a else a
    deadline = time.monotonic() + BLOCK_PROPAGATION
    while True:
        outcome = imap_login(other, address, password, ATTACKER)
        if outcome == "temp":
            break
        assert time.monotonic() < deadline, f"the other node still says {outcome!r}"
        time.sleep(0.2)
    assert imap_login(last, address, password, ATTACKER) == "temp"
    # The owner on another network gets in through either node.
    assert imap_login(a, address, password, OWNER) == "ok"
    assert imap_login(b, address, password, OWNER) == "ok"
    assert ATTACKER in run_cli("security", "blocked", "--data-dir", str(b.data_dir))
    run_cli("security", "unblock", ATTACKER, "--data-dir", str(a.data_dir))


# ---------------------------------------------------------------------------------------------
# A node dies in the middle of outbound delivery

QUEUED = 1000
# Short timeouts so the lease may be short: [queue] lease must be at least
# 10 x connect_timeout + 8 x command_timeout (config/loader.py), here 5 + 12 = 17 s.
OUTBOUND_QUEUE: dict[str, Any] = {
    "retry_schedule": [1, 2],
    "connect_timeout": 0.5,
    "command_timeout": 1.5,
    "lease": 17,
    "max_connections": 20,
    "max_connections_per_domain": 20,
}


@pytest.mark.timeout(300)
def test_sigkill_during_outbound_delivery_other_node_finishes(tmp_path: Path) -> None:
    zone = Zone()
    dns = DnsFixture(zone)
    sink_ip = "127.0.0.7"
    port = free_port(sink_ip)
    zone.add("sink.test", "MX", (10, "mx.sink.test"))
    zone.add("mx.sink.test", "A", sink_ip)
    tables = {**NO_FILTERS, "queue": {**OUTBOUND_QUEUE, "remote_port": port},
              "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]}}
    sink = FastSink(sink_ip, port)
    cluster: Cluster | None = None
    try:
        cluster = start_cluster(tmp_path, tables)
        a, b = cluster.nodes
        # Both nodes poll the shared queue; the rows appear at once, as a burst of
        # submissions would leave them.
        queue_directly(a.data_dir, f"alice@{DOMAIN}", "rcpt@sink.test", QUEUED)
        wait_for(lambda: sink.count() >= 150, 60, "deliveries before the kill", log=a.log)
        a.server.kill()
        killed = time.monotonic()
        at_kill = sink.count()
        # Rows claimed just after the kill: A's (stuck until their lease ends) and B's.
        in_flight = sum(1 for row in b.queue() if row.state == "active")
        node_a = (a.data_dir / "node-id").read_text().strip()
        a_left = int(shared_server().psql(
            f"SELECT count(*) FROM queue WHERE state = 'active' AND claimed_by = '{node_a}'",
            cluster.dsn.rsplit("/", 1)[1]).strip())
        assert at_kill < QUEUED, "everything was delivered before the kill; nothing was tested"
        wait_for(lambda: len(set(sink.tokens)) >= QUEUED, 120,
                 "every message delivered by node B", log=b.log)
        finished = time.monotonic() - killed
        wait_for(lambda: all(row.state == "delivered" for row in b.queue()), 30,
                 "every row recorded as delivered", log=b.log)
        counts = Counter(sink.tokens)
        twice = sum(1 for n in counts.values() if n > 1)
        print(f"\nSIGKILL of node A: {QUEUED} queued, {at_kill} at the sink at the kill, "
              f"{in_flight} rows active just after; node B finished {finished:.1f} s "
              f"later (lease {OUTBOUND_QUEUE['lease']} s), {twice} delivered twice")
        # At least once, nothing lost: every message reached the sink.
        assert set(counts) == {str(i) for i in range(QUEUED)}
        # Only attempts in flight when A died can repeat: A's claim window at most.
        assert twice <= OUTBOUND_QUEUE["max_connections"] * 4
        assert max(counts.values()) <= 2
        # A's rows (if it died holding any) came back through their expired lease, not
        # through a restart.
        if a_left:
            assert "queue.lease_expired" in b.log(), b.log()[-6000:]
    finally:
        if cluster is not None:
            try:
                stop_cluster(cluster)
            finally:
                sink.stop()
                dns.stop()
        else:
            sink.stop()
            dns.stop()


# ---------------------------------------------------------------------------------------------
# A node that starts leaves the rows other nodes are delivering alone (queue/workers.py)


@dataclass
class _Route:
    kind: str = "mx"


@dataclass
class _RcptResult:
    rcpt: str
    reply: Any
    permanent: bool = False


@dataclass
class _Result:
    results: list[_RcptResult]
    peer: str = "mx.far.test[127.0.0.9]:25"
    tls: str | None = None


class _Router:
    async def route(self, domain: str) -> _Route:
        return _Route()


class _Client:
    """Accepts every recipient; remembers who was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def deliver(self, route: Any, mail_from: str, rcpts: list[str], data: bytes, *,
                      smtputf8: bool, eight_bit: bool, dsn: Any = None) -> _Result:
        from mailstead.core.reply import Reply

        self.sent += rcpts
        return _Result([_RcptResult(r, Reply(250, "2.0.0", "ok")) for r in rcpts])


async def _starting_node_and_a_live_lease(
    dsn: str, starting: str = "node-b"
) -> tuple[list[str], list[str], list[str]]:
    """Node A ("node-a") has claimed a row (lease 100 s) when the workers of node
    ``starting`` start on the same database: node B must not take it until the lease has run
    out; node A itself, restarting after a crash, takes it back at once. Returns the row
    states right after the start, what was sent by then, and what was sent once the clock
    passed the lease."""
    from mailstead.queue.workers import QueueWorkers, WorkerSettings
    from mailstead.storage.interfaces import IncomingMessage
    from mailstead.storage.postgres.store import PostgresStore

    now = [time.time()]
    store = await PostgresStore.open(dsn, pool_size=4)
    try:
        await store.add_domain(DOMAIN)
        data = b"From: <alice@example.test>\r\nTo: <x@far.test>\r\nSubject: t\r\n\r\nbody\r\n"
        await store.accept_message(IncomingMessage(
            data, "QLEASE1", f"alice@{DOMAIN}", [], ["x@far.test"], now[0], "{}", "{}"))
        now[0] = time.time() + 1.0  # the row is due (the store dated it with its own clock)
        claimed = await store.claim_due(now[0], 10, 100.0, "node-a")  # then node A "dies"
        assert [row.rcpt_to for row in claimed] == ["x@far.test"]
        client = _Client()
        settings = WorkerSettings(
            hostname=HOSTNAME, lease=100.0, poll_interval=0.01, node=starting
        )
        workers = QueueWorkers(store, _Router(), client, None, settings,  # type: ignore[arg-type]
                               clock=lambda: now[0])
        await workers.start()
        try:
            for _ in range(50):  # until the row is sent (node A) or 0.5 s have passed
                if client.sent:
                    break
                await asyncio.sleep(0.01)
            states = [row.state for row in await store.queue_entries("QLEASE1")]
            early = list(client.sent)
            now[0] += 101.0  # A's lease is over: the rows are B's to retry
            for _ in range(100):
                if client.sent:
                    break
                await asyncio.sleep(0.05)
            return states, early, list(client.sent)
        finally:
            await workers.stop(5.0)
    finally:
        await store.close()


def test_a_starting_node_does_not_take_rows_under_a_live_lease() -> None:
    states, early, late = asyncio.run(_starting_node_and_a_live_lease(new_database()))
    assert states == ["active"], "a starting node took back a row another node is delivering"
    assert early == []
    assert late == ["x@far.test"], "the row never came back after its lease ended"


def test_a_restarting_node_takes_its_own_rows_back_at_once() -> None:
    """The attempts of a node that crashed died with it: restarted, it retries them without
    waiting for their lease (core/nodeid.py keeps its name across restarts)."""
    states, early, late = asyncio.run(
        _starting_node_and_a_live_lease(new_database(), starting="node-a")
    )
    assert early == ["x@far.test"], f"the node's own row waited for its lease ({states})"
    assert late == ["x@far.test"]  # sent once


class _HangingClient:
    """A remote server that never answers: the attempt is still in flight at shutdown."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def deliver(self, route: Any, mail_from: str, rcpts: list[str], data: bytes, *,
                      smtputf8: bool, eight_bit: bool, dsn: Any = None) -> _Result:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _stopping_node_mid_attempt(dsn: str) -> tuple[list[str], list[str]]:
    """Node B stops (SIGTERM's path) while an attempt hangs: the row must be due again at
    once, for any node, instead of waiting out B's lease. Returns the row states and what a
    node claiming right after the stop gets."""
    from mailstead.queue.workers import QueueWorkers, WorkerSettings
    from mailstead.storage.interfaces import IncomingMessage
    from mailstead.storage.postgres.store import PostgresStore

    store = await PostgresStore.open(dsn, pool_size=4)
    try:
        await store.add_domain(DOMAIN)
        data = b"From: <alice@example.test>\r\nTo: <y@far.test>\r\nSubject: t\r\n\r\nbody\r\n"
        await store.accept_message(IncomingMessage(
            data, "QSTOP1", f"alice@{DOMAIN}", [], ["y@far.test"], time.time(), "{}", "{}"))
        client = _HangingClient()
        settings = WorkerSettings(hostname=HOSTNAME, lease=600.0, poll_interval=0.01)
        workers = QueueWorkers(store, _Router(), client, None, settings)  # type: ignore[arg-type]
        await workers.start()
        try:
            await asyncio.wait_for(client.started.wait(), 10)
        finally:
            await workers.stop(0.1)
        states = [row.state for row in await store.queue_entries("QSTOP1")]
        again = await store.claim_due(time.time() + 0.01, 10, 600.0)
        return states, [row.rcpt_to for row in again]
    finally:
        await store.close()


def test_a_stopping_node_gives_its_leases_back() -> None:
    states, claimed = asyncio.run(_stopping_node_mid_attempt(new_database()))
    assert states == ["deferred"]
    assert claimed == ["y@far.test"], "the interrupted row waits for a lease nobody holds"
