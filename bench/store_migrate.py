"""``mailstead store migrate`` on a store of 10,000 messages: how long the copy into PostgreSQL
takes, and whether IMAP clients see exactly the same thing afterwards.

Builds an embedded store with a real ``mailstead serve`` (``--messages`` over port 25 from
``--clients`` concurrent asyncio SMTP clients, spread over four users; then over IMAP every
third message \\Seen, every tenth \\Flagged, every fiftieth expunged), records every user's
INBOX through imaplib (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, and each message's UID, flags,
MODSEQ, size and BODY[] bytes), stops the server, runs ``mailstead store migrate --to DSN
--switch`` into a private durable PostgreSQL (fsync on, tests/pgserver.py), starts the server
on PostgreSQL, records again and compares. Prints the timings (delivery, recording, the
migration with its own summary) and the comparison; exits 1 when anything differs.

    python bench/store_migrate.py [--messages 10000] [--clients 40] [--size 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration"), str(REPO / "tests")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    STORE_BACKEND_ENV,
    LoadStats,
    Server,
    Users,
    child_env,
    dot_stuff,
    init_data_dir,
    load_client,
    make_message,
    rewrite_tables,
    tls_context,
)

from pgserver import PgServer  # noqa: E402

RECIPIENTS = [f"bench{i}@example.test" for i in range(1, 5)]
PASSWORD = "bench-Secret-1"
USERS = Users(passwords={address: PASSWORD for address in RECIPIENTS})
LIMITS: dict[str, Any] = {"max_connections": 1000, "max_connections_per_ip": 1000}
# The inbound checks and spam filter cost CPU per message and prove nothing here.
NO_FILTERS: dict[str, dict[str, Any]] = {"auth_checks": {"enable": False},
                                         "spam": {"enable": False}}
FILLER = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"
FETCH_ITEM = {
    "uid": re.compile(rb"\bUID (\d+)"),
    "flags": re.compile(rb"\bFLAGS \(([^)]*)\)"),
    "modseq": re.compile(rb"\bMODSEQ \((\d+)\)"),
    "size": re.compile(rb"\bRFC822\.SIZE (\d+)"),
}


async def deliver(port: int, count: int, clients: int, size: int) -> LoadStats:
    jobs = []
    for n in range(count):
        rcpt = RECIPIENTS[n % len(RECIPIENTS)]
        token = f"migrate-bench-{n}"
        lines = max(1, (size - len(make_message(token, to=rcpt, body=b""))) // len(FILLER))
        jobs.append((token, "sender@remote.test", rcpt,
                     dot_stuff(make_message(token, to=rcpt, body=FILLER * lines))))
    stats = LoadStats()
    stop = asyncio.Event()
    await asyncio.gather(*(load_client(port, jobs[i::clients], stats, stop)
                           for i in range(clients)))
    return stats


def ok(result: tuple[str, list[Any]]) -> list[Any]:
    """The data of an IMAP command that must have succeeded."""
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"IMAP command failed: {typ} {data!r}")
    return data


def connect(server: Server, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=120)
    client.starttls(tls_context(server.cert_path))
    client.login(user, PASSWORD)
    client.enable("CONDSTORE")
    return client


def shape(server: Server) -> None:
    """Flags and expunges, so MODSEQs, UIDNEXT and the vanished UIDs are worth comparing."""
    for user in RECIPIENTS:
        client = connect(server, user)
        try:
            ok(client.select("INBOX"))
            uids = [int(u) for u in ok(client.uid("SEARCH", "ALL"))[0].split()]
            for step, flag in ((3, r"(\Seen)"), (10, r"(\Flagged)"), (50, r"(\Deleted)")):
                chosen = ",".join(str(u) for u in uids[::step])
                if chosen:
                    ok(client.uid("STORE", chosen, "+FLAGS.SILENT", flag))
            ok(client.expunge())
        finally:
            client.logout()


def record(server: Server) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for user in RECIPIENTS:
        client = connect(server, user)
        try:
            ok(client.select("INBOX", readonly=True))
            state = {key: int(client.response(key)[1][0])
                     for key in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ")}
            data = ok(client.uid("FETCH", "1:*", "(UID FLAGS MODSEQ RFC822.SIZE BODY.PEEK[])"))
            messages: dict[int, tuple[Any, ...]] = {}
            for part in data:
                if not isinstance(part, tuple):
                    continue
                items = {k: p.search(part[0]) for k, p in FETCH_ITEM.items()}
                got = {k: m.group(1) for k, m in items.items() if m is not None}
                # \Recent lives in the server's memory (RFC 3501 section 2.3.2), not the store.
                flags = sorted(f for f in got["flags"].split() if f != rb"\Recent")
                messages[int(got["uid"])] = (flags, int(got["modseq"]), int(got["size"]),
                                             part[1])
            seen[user] = {"state": state, "messages": messages}
        finally:
            client.logout()
    return seen


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    found = []
    for user, old in before.items():
        new = after.get(user, {"state": None, "messages": {}})
        if new["state"] != old["state"]:
            found.append(f"{user}: {old['state']} became {new['state']}")
        for uid in sorted(set(old["messages"]) | set(new["messages"])):
            if old["messages"].get(uid) != new["messages"].get(uid):
                found.append(f"{user} UID {uid} differs")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--size", type=int, default=4096, help="octets per message (about)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mailstead-migrate-bench-"))
    data_dir = root / "data"
    pg = PgServer(durable=True).start()
    server = Server(data_dir)
    try:
        os.environ[STORE_BACKEND_ENV] = "sqlite"
        init_data_dir(data_dir, USERS, LIMITS)
        rewrite_tables(data_dir / "mailstead.toml", NO_FILTERS)
        server.start()
        t0 = time.monotonic()
        stats = asyncio.run(deliver(server.ports["smtp"], args.messages, args.clients,
                                    args.size))
        delivered = time.monotonic() - t0
        print(f"delivered {len(stats.accepted):,} of {args.messages:,} messages in "
              f"{delivered:.1f} s ({len(stats.accepted) / delivered:,.0f}/s) over "
              f"{args.clients} SMTP connections; errors {stats.errors} {stats.error_samples}")
        shape(server)
        t0 = time.monotonic()
        before = record(server)
        count = sum(len(u["messages"]) for u in before.values())
        print(f"recorded {count:,} messages over IMAP in {time.monotonic() - t0:.1f} s")
        server.stop()

        dsn = pg.dsn("postgres")
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "mailstead", "store", "migrate", "--data-dir", str(data_dir),
             "--to", dsn, "--switch"],
            capture_output=True, text=True, env=child_env(), cwd=REPO, check=False,
        )
        migrated = time.monotonic() - t0
        sys.stdout.write(proc.stderr + proc.stdout)
        if proc.returncode != 0:
            print(f"FAIL: store migrate exited {proc.returncode}")
            return 1
        print(f"store migrate: {migrated:.1f} s wall clock, process start included "
              f"({count / migrated:,.0f} messages/s)")

        server.start()
        t0 = time.monotonic()
        after = record(server)
        print(f"recorded again on PostgreSQL in {time.monotonic() - t0:.1f} s")
        problems = differences(before, after)
        if problems:
            print(f"FAIL: {len(problems)} difference(s): {problems[:10]}")
            return 1
        print(f"OK: every mailbox's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ and all {count:,} "
              "messages' UID, flags, MODSEQ, size and bytes are the same on PostgreSQL")
        return 0
    finally:
        server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
