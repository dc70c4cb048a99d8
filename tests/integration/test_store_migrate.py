"""Issue 10, ``mailstead store migrate``: an installation built by a real ``mailstead serve``
on the embedded store (SMTP deliveries, IMAP flags, copies, moves, expunges, folders and
subscriptions, an APPEND without CRLF, an app password and two-factor authentication, a DKIM
key, a deferred remote recipient) is copied into a fresh PostgreSQL database, the config is
switched, and the server started on PostgreSQL must show every client the same thing: every
mailbox's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, each message's UID, flags, MODSEQ, internal
date, size and exact bytes, the same logins, the same queue and keys; and it carries on from
there (the next UID and MODSEQ follow the copied ones)."""

from __future__ import annotations

import imaplib
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from helpers import (
    REPO,
    Harness,
    Server,
    ServerError,
    Users,
    child_env,
    init_data_dir,
    make_message,
    new_database,
    rewrite_tables,
    rich_message,
    run_cli,
)
from outbound_helpers import DnsFixture, Zone, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.backends("sqlite", reason="copies an embedded store into PostgreSQL"),
]

ALICE, BOB = "alice@example.test", "bob@example.test"
PASSWORDS = {ALICE: "alice-Secret-1", BOB: "bob-Secret-2"}
DELIVERIES = 240  # messages over SMTP; with the copies and moves below about 300 rows
# A message APPENDed without a final line break (POP3 would have to complete it).
APPENDED = b"From: <alice@example.test>\nSubject: draft\n\nlast line\nno end"

Mailbox = dict[str, Any]  # uidvalidity, uidnext, highestmodseq, exists, messages


@dataclass
class World:
    data_dir: Path
    server: Server
    app_password: str  # bob's (bob has two-factor authentication on)

    @property
    def harness(self) -> Harness:
        return Harness(self.server)

    def credentials(self) -> dict[str, str]:
        return {ALICE: PASSWORDS[ALICE], BOB: self.app_password}


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    return run_cli(*args, "--data-dir", str(data_dir), stdin=stdin)


def imap(h: Harness, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=30)
    client.starttls(h.tls())
    client.login(user, password)
    client.enable("CONDSTORE")  # RFC 7162: HIGHESTMODSEQ on SELECT, MODSEQ in FETCH
    return client


def check(result: tuple[str, list[Any]]) -> list[Any]:
    typ, data = result
    assert typ == "OK", data
    return data


def enable_2fa(data_dir: Path, address: str) -> None:
    """``user 2fa enable``, confirming with a code of the secret it printed."""
    with subprocess.Popen(
        [sys.executable, "-m", "mailstead", "user", "2fa", "enable", address,
         "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(), cwd=REPO,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stderr is not None
        secret = ""
        for line in proc.stdout:
            if line.startswith("secret:"):
                secret = line.split()[1]
                break
        assert secret
        proc.stdin.write(pyotp.TOTP(secret).now() + "\n")
        proc.stdin.close()
        proc.stdout.read()
        errors = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, errors


def deliver(h: Harness) -> None:
    """DELIVERIES messages on port 25 from four connections; every fifth to both users (one
    body, two mailboxes), every seventh a MIME message with 8-bit text and an attachment."""

    def send(start: int) -> None:
        with h.client("smtp") as smtp:
            for n in range(start, DELIVERIES, 4):
                to = [ALICE, BOB] if n % 5 == 0 else [ALICE if n % 3 else BOB]
                token = f"migrate-{n}"
                body = rich_message(token, to=to[0]) if n % 7 == 0 else make_message(
                    token, to=to[0], body=f"token {token}\r\n".encode() * (1 + n % 40))
                smtp.sendmail("sender@remote.test", to, body)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(4)))


def shape_mailboxes(h: Harness) -> None:
    """Folders, subscriptions, copies, moves, flags, expunges and an APPEND, over IMAP."""
    client = imap(h, ALICE, PASSWORDS[ALICE])
    try:
        for name in ("Projects", "Projects/2024", "Temp", "Old"):
            check(client.create(name))
        check(client.subscribe("Projects"))
        check(client.subscribe("Projects/2024"))
        check(client.delete("Temp"))
        check(client.rename("Old", "Archive/Old"))
        check(client.select("INBOX"))
        check(client.uid("COPY", "1:20", "Projects"))
        check(client.uid("MOVE", "21:30", "Projects/2024"))
        check(client.uid("STORE", "31:80", "+FLAGS", r"(\Seen)"))
        check(client.uid("STORE", "41:45", "+FLAGS", r"(\Flagged $Label1 project-x)"))
        check(client.uid("STORE", "81:90,*", "+FLAGS", r"(\Deleted)"))
        check(client.expunge())
        check(client.uid("STORE", "100", "+FLAGS", r"(\Answered)"))
        check(client.append("Drafts", r"(\Draft \Seen)", '"01-Jan-2024 10:00:00 +0100"',
                            APPENDED))
        check(client.select("Projects"))
        check(client.uid("STORE", "1:5", "+FLAGS", r"(\Deleted)"))
        check(client.expunge())
    finally:
        client.logout()


_ITEM = {
    "uid": re.compile(rb"\bUID (\d+)"),
    "flags": re.compile(rb"\bFLAGS \(([^)]*)\)"),
    "modseq": re.compile(rb"\bMODSEQ \((\d+)\)"),
    "internaldate": re.compile(rb'\bINTERNALDATE "([^"]+)"'),
    "size": re.compile(rb"\bRFC822\.SIZE (\d+)"),
}


def _messages(data: list[Any]) -> dict[int, dict[str, Any]]:
    """UID FETCH (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE BODY.PEEK[]) results by UID."""
    found: dict[int, dict[str, Any]] = {}
    i = 0
    while i < len(data):
        part = data[i]
        i += 1
        if not isinstance(part, tuple):
            continue
        text, body = part[0], part[1]
        if i < len(data) and isinstance(data[i], bytes):  # items after the literal
            text += data[i]
            i += 1
        items = {k: m.group(1) for k, m in ((k, p.search(text)) for k, p in _ITEM.items()) if m}
        assert set(items) == set(_ITEM), text
        found[int(items["uid"])] = {
            # \Recent is session state kept in the server's memory (RFC 3501 section
            # 2.3.2; imap/context.py): a restart renews it whatever the store.
            "flags": sorted(f for f in items["flags"].split() if f != rb"\Recent"),
            "modseq": int(items["modseq"]),
            "internaldate": items["internaldate"],
            "size": int(items["size"]),
            "body": body,
        }
    return found


def _status(client: imaplib.IMAP4, key: str) -> int:
    typ, value = client.response(key)
    assert typ == key, (key, value)
    assert value, (key, value)
    assert value[0] is not None, (key, value)
    return int(value[0])


def record(h: Harness, credentials: dict[str, str]) -> dict[str, Any]:
    """What each user's IMAP client sees: LIST, LSUB, and every mailbox in full."""
    seen: dict[str, Any] = {}
    for user, password in credentials.items():
        client = imap(h, user, password)
        try:
            listed = sorted(check(client.list()))
            names = [re.search(rb'"/" "?([^"]*)"?$', line).group(1).decode()  # type: ignore[union-attr]
                     for line in listed]
            boxes: dict[str, Mailbox] = {}
            for name in names:
                exists = int(check(client.select(f'"{name}"', readonly=True))[0])
                box: Mailbox = {
                    key.lower(): _status(client, key)
                    for key in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ")
                }
                box["exists"] = exists
                box["messages"] = {} if not exists else _messages(check(client.uid(
                    "FETCH", "1:*", "(UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE BODY.PEEK[])")))
                assert len(box["messages"]) == exists
                boxes[name] = box
            seen[user] = {"list": listed, "lsub": sorted(check(client.lsub())), "boxes": boxes}
        finally:
            client.logout()
    return seen


def _login_refused(h: Harness, user: str, password: str) -> str:
    client = imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=30)
    try:
        client.starttls(h.tls())
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login(user, password)
        return str(refused.value)
    finally:
        client.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[World]:
    assert store_backend == "sqlite"
    data_dir = tmp_path_factory.mktemp("migrate") / "data"
    init_data_dir(data_dir, Users(passwords=PASSWORDS))
    # remote.test's MX is an address where nothing listens: its recipient is deferred and,
    # an hour apart, stays so.
    zone = Zone()
    zone.add("remote.test", "MX", (10, "mx.remote.test"))
    zone.add("mx.remote.test", "A", "127.0.0.13")
    dns_server = DnsFixture(zone)
    config = tomllib.loads((data_dir / "mailstead.toml").read_text())
    rewrite_tables(data_dir / "mailstead.toml", {
        "dns": {"nameservers": [f"127.0.0.1:{dns_server.port}"]},
        "queue": {**config.get("queue", {}), "retry_schedule": [3600],
                  "remote_port": free_port("127.0.0.13"), "connect_timeout": 3},
    })
    cli(data_dir, "dkim", "rotate", "example.test", "--activate")
    server = Server(data_dir).start()
    try:
        enable_2fa(data_dir, BOB)
        out = cli(data_dir, "app-password", "add", BOB, "--name", "Laptop")
        match = re.search(r"^  ([a-z]{4} [a-z]{4} [a-z]{4} [a-z]{4})$", out, re.M)
        assert match, out
        world = World(data_dir, server, match.group(1))
        h = world.harness
        deliver(h)
        with h.client("submissions") as smtp:
            smtp.login(ALICE, PASSWORDS[ALICE])
            smtp.sendmail(ALICE, ["far@remote.test"], make_message("remote", sender=ALICE,
                                                                    to="far@remote.test"))
        shape_mailboxes(h)
        yield world
    finally:
        server.stop()
        dns_server.stop()


def _queue_rows(data_dir: Path) -> list[str]:
    return [line for line in cli(data_dir, "queue", "list", "--all").splitlines()
            if "remote.test" in line]


def _wait_deferred(data_dir: Path) -> list[str]:
    import time

    deadline = time.monotonic() + 30
    while True:
        rows = _queue_rows(data_dir)
        if rows and all(" deferred " in row for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"the remote recipient was not deferred: {rows}")
        time.sleep(0.2)


def test_migrate_to_postgresql_keeps_what_clients_see(world: World) -> None:
    data_dir, server = world.data_dir, world.server
    queue = _wait_deferred(data_dir)
    before = record(world.harness, world.credentials())
    inbox = before[ALICE]["boxes"]["INBOX"]
    assert sum(len(b["messages"]) for u in before.values() for b in u["boxes"].values()) > 250
    # imaplib sends the bare LFs as CRLF; the last line stays without one.
    appended = before[ALICE]["boxes"]["Drafts"]["messages"][1]
    assert appended["body"] == APPENDED.replace(b"\n", b"\r\n")
    assert "Archive/Old" in before[ALICE]["boxes"]
    assert "Temp" not in before[ALICE]["boxes"]
    assert inbox["uidnext"] > max(inbox["messages"]) + 1  # the expunged UIDs are not reused
    dkim = cli(data_dir, "dkim", "list", "example.test")
    logins = cli(data_dir, "user", "logins", BOB, "--limit", "1000").splitlines()
    dsn = new_database()

    # While the server runs the store may change under the copy: refused.
    with pytest.raises(ServerError, match=rf"in use by process {server.pid} "):
        cli(data_dir, "store", "migrate", "--to", dsn)
    assert server.stop() == 0

    out = cli(data_dir, "store", "migrate", "--to", dsn, "--switch")
    assert "verified:" in out
    assert "now uses PostgreSQL" in out
    config = tomllib.loads((data_dir / "mailstead.toml").read_text())
    assert config["store"] == {"backend": "postgresql", "dsn": dsn}
    # The embedded store stays behind untouched; moving it away proves it is not used.
    (data_dir / "mailstead.db").rename(data_dir / "mailstead.db.before-migration")

    server.start()
    h = world.harness
    after = record(h, world.credentials())
    for user in (ALICE, BOB):
        assert after[user]["list"] == before[user]["list"]
        assert after[user]["lsub"] == before[user]["lsub"]
        assert after[user]["boxes"].keys() == before[user]["boxes"].keys()
        for name, box in before[user]["boxes"].items():
            assert after[user]["boxes"][name] == box, f"{user} {name}"
    assert "app-specific password" in _login_refused(h, BOB, PASSWORDS[BOB])  # 2FA kept
    assert _queue_rows(data_dir) == queue
    assert cli(data_dir, "dkim", "list", "example.test") == dkim
    assert set(logins) <= set(
        cli(data_dir, "user", "logins", BOB, "--limit", "1000").splitlines())

    # The server carries on from the copied counters.
    with h.client("smtp") as smtp:
        smtp.sendmail("sender@remote.test", [ALICE], make_message("after", to=ALICE))
    client = imap(h, ALICE, PASSWORDS[ALICE])
    try:
        check(client.select("INBOX"))
        assert _status(client, "UIDVALIDITY") == inbox["uidvalidity"]
        assert check(client.uid("SEARCH", "HEADER", "X-Token", "after")) == [
            str(inbox["uidnext"]).encode()]
        stored = check(client.uid("STORE", str(max(inbox["messages"])), "+FLAGS", r"(\Seen)"))
        modseq = int(re.search(rb"MODSEQ \((\d+)\)", stored[0]).group(1))  # type: ignore[union-attr]
        assert modseq > inbox["highestmodseq"]
    finally:
        client.logout()
