"""An installation built by a real ``mailstead serve`` and what its clients see of it, for the
tests that carry a store somewhere (``store migrate`` to PostgreSQL, an upgrade from an earlier
release): SMTP deliveries, IMAP flags, keywords, copies, moves, expunges, folders and
subscriptions, an APPEND without CRLF, an app password and two-factor authentication, a DKIM
key, a deferred remote recipient, a Sieve script and a web session. ``record`` is every
mailbox's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ and each message's UID, flags, MODSEQ,
internal date, size and exact bytes, as an IMAP client reads them."""

from __future__ import annotations

import base64
import imaplib
import re
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import (
    CURRENT,
    Browser,
    Harness,
    Runtime,
    Server,
    Users,
    enable_2fa,
    init_data_dir,
    make_message,
    rewrite_tables,
    rich_message,
    run_cli,
)
from outbound_helpers import DnsFixture, Zone, free_port

ALICE, BOB = "alice@example.test", "bob@example.test"
PASSWORDS = {ALICE: "alice-Secret-1", BOB: "bob-Secret-2"}
# A message APPENDed without a final line break (POP3 would have to complete it).
APPENDED = b"From: <alice@example.test>\nSubject: draft\n\nlast line\nno end"
SIEVE_NAME = "sorting"
SIEVE = (
    'require ["fileinto", "imap4flags"];\r\n'
    'if header :contains "subject" "sieve-sort" {\r\n'
    '    addflag "$Sorted";\r\n'
    '    fileinto "Projects";\r\n'
    '}\r\n'
)

Mailbox = dict[str, Any]  # uidvalidity, uidnext, highestmodseq, exists, messages


@dataclass
class World:
    data_dir: Path
    server: Server
    app_password: str  # bob's (bob has two-factor authentication on)
    totp_secret: str  # bob's
    web_cookie: str  # alice's signed-in web session

    @property
    def harness(self) -> Harness:
        return Harness(self.server)

    def credentials(self) -> dict[str, str]:
        return {ALICE: PASSWORDS[ALICE], BOB: self.app_password}


def cli(data_dir: Path, *args: str, stdin: str | None = None,
        runtime: Runtime = CURRENT) -> str:
    return run_cli(*args, "--data-dir", str(data_dir), stdin=stdin, runtime=runtime)


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


def deliver(h: Harness, count: int) -> None:
    """``count`` messages on port 25 from four connections; every fifth to both users (one
    body, two mailboxes), every seventh a MIME message with 8-bit text and an attachment."""

    def send(start: int) -> None:
        with h.client("smtp") as smtp:
            for n in range(start, count, 4):
                to = [ALICE, BOB] if n % 5 == 0 else [ALICE if n % 3 else BOB]
                token = f"world-{n}"
                body = rich_message(token, to=to[0]) if n % 7 == 0 else make_message(
                    token, to=to[0], body=f"token {token}\r\n".encode() * (1 + n % 40))
                smtp.sendmail("sender@remote.test", to, body)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(4)))


def shape_mailboxes(h: Harness) -> None:
    """Folders, subscriptions, copies, moves, flags, expunges and an APPEND, over IMAP."""
    client = imap(h, ALICE, PASSWORDS[ALICE])
    try:
        for name in ("Projects", "Projects/2024", "Temp", "Old", "Entwürfe/Grüße"):
            check(client.create(imap_name(name)))
        check(client.subscribe("Projects"))
        check(client.subscribe("Projects/2024"))
        check(client.delete("Temp"))
        check(client.rename("Old", "Archive/Old"))
        check(client.select("INBOX"))
        check(client.uid("COPY", "1:20", "Projects"))
        check(client.uid("MOVE", "21:30", "Projects/2024"))
        check(client.uid("COPY", "31:35", imap_name("Entwürfe/Grüße")))
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


def imap_name(name: str) -> str:
    """A mailbox name as IMAP4rev1 sends it: modified UTF-7 (RFC 3501 section 5.1.3), quoted."""
    out, run = [], ""

    def flush() -> None:
        nonlocal run
        if run:
            b64 = base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            run = ""

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run += ch
    flush()
    return '"' + "".join(out) + '"'


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
            # \Recent goes to the first session that selects the mailbox (RFC 3501 section
            # 2.3.2; imap/recent.py): the reading before a change takes it from the one after.
            "flags": sorted(f for f in items["flags"].split() if f != rb"\Recent"),
            "modseq": int(items["modseq"]),
            "internaldate": items["internaldate"],
            "size": int(items["size"]),
            "body": body,
        }
    return found


def status(client: imaplib.IMAP4, key: str) -> int:
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
                    key.lower(): status(client, key)
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


def assert_same_view(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every user, mailbox and message as ``record`` saw it, unchanged."""
    assert after.keys() == before.keys()
    for user in before:
        assert after[user]["list"] == before[user]["list"]
        assert after[user]["lsub"] == before[user]["lsub"]
        assert after[user]["boxes"].keys() == before[user]["boxes"].keys()
        for name, box in before[user]["boxes"].items():
            assert after[user]["boxes"][name] == box, f"{user} {name}"


def assert_carries_on(h: Harness, view: dict[str, Any]) -> None:
    """After the store moved, the server carries on from its counters: a delivery gets the old
    UIDNEXT, a flag change a MODSEQ above the old HIGHESTMODSEQ, and the Sieve script still
    files into Projects at that folder's UIDNEXT."""
    inbox, projects = view[ALICE]["boxes"]["INBOX"], view[ALICE]["boxes"]["Projects"]
    with h.client("smtp") as smtp:
        smtp.sendmail("sender@remote.test", [ALICE], make_message("carries-on", to=ALICE))
        smtp.sendmail("sender@remote.test", [ALICE], make_message("sieve-sort-2", to=ALICE))
    client = imap(h, ALICE, PASSWORDS[ALICE])
    try:
        check(client.select("INBOX"))
        assert status(client, "UIDVALIDITY") == inbox["uidvalidity"]
        assert check(client.uid("SEARCH", "HEADER", "X-Token", "carries-on")) == [
            str(inbox["uidnext"]).encode()]
        # A keyword no message has yet: the STORE is a real change (RFC 7162 section 3.1.3).
        stored = check(client.uid("STORE", str(max(inbox["messages"])), "+FLAGS", "($Moved)"))
        modseq = int(re.search(rb"MODSEQ \((\d+)\)", stored[0]).group(1))  # type: ignore[union-attr]
        assert modseq > inbox["highestmodseq"]
        check(client.select("Projects"))
        assert check(client.uid("SEARCH", "HEADER", "X-Token", "sieve-sort-2")) == [
            str(projects["uidnext"]).encode()]
    finally:
        client.logout()


def login_refused(h: Harness, user: str, password: str) -> str:
    client = imaplib.IMAP4("127.0.0.1", h.port("imap"), timeout=30)
    try:
        client.starttls(h.tls())
        try:
            client.login(user, password)
        except imaplib.IMAP4.error as refused:
            return str(refused)
        raise AssertionError(f"{user} logged in with {password!r}")
    finally:
        client.shutdown()


def queue_rows(data_dir: Path, runtime: Runtime = CURRENT) -> list[str]:
    return [line for line in cli(data_dir, "queue", "list", "--all", runtime=runtime)
            .splitlines() if "remote.test" in line]


def wait_deferred(data_dir: Path, runtime: Runtime = CURRENT) -> list[str]:
    deadline = time.monotonic() + 30
    while True:
        rows = queue_rows(data_dir, runtime)
        if rows and all(" deferred " in row for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"the remote recipient was not deferred: {rows}")
        time.sleep(0.2)


@contextmanager
def built_world(data_dir: Path, deliveries: int,
                runtime: Runtime = CURRENT) -> Iterator[World]:
    """Builds the installation with ``runtime``'s Mailstead and yields it with its server
    running; stops the server (if still running) and the DNS server at the end."""
    init_data_dir(data_dir, Users(passwords=PASSWORDS), runtime=runtime)
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
    cli(data_dir, "dkim", "rotate", "example.test", "--activate", runtime=runtime)
    cli(data_dir, "sieve", "put", ALICE, SIEVE_NAME, "-", stdin=SIEVE, runtime=runtime)
    server = Server(data_dir, runtime=runtime).start()
    try:
        secret = enable_2fa(data_dir, BOB, runtime).secret
        out = cli(data_dir, "app-password", "add", BOB, "--name", "Laptop", runtime=runtime)
        match = re.search(r"^  ([a-z]{4} [a-z]{4} [a-z]{4} [a-z]{4})$", out, re.M)
        assert match, out
        browser = Browser(server)
        assert browser.sign_in(ALICE, PASSWORDS[ALICE]) == 303
        world = World(data_dir, server, match.group(1), secret, browser.cookie)
        h = world.harness
        deliver(h, deliveries)
        with h.client("submissions") as smtp:
            smtp.login(ALICE, PASSWORDS[ALICE])
            smtp.sendmail(ALICE, ["far@remote.test"], make_message("remote", sender=ALICE,
                                                                    to="far@remote.test"))
        shape_mailboxes(h)
        with h.client("smtp") as smtp:  # filed into Projects by the Sieve script
            smtp.sendmail("sender@remote.test", [ALICE], make_message("sieve-sort", to=ALICE))
        yield world
    finally:
        server.stop()
        dns_server.stop()


def web_account_page(server: Server, cookie: str) -> tuple[int, str]:
    """GET /account with the session cookie: the status and the page."""
    browser = Browser(server)
    browser.cookie = cookie
    status_code, _, page = browser.request("GET", "/account")
    return status_code, page
