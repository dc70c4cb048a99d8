"""``mailstead backup``, ``backup --verify`` and ``restore`` on a 100,000-message embedded store.

Builds the store fast, straight through the store API (``accept_message`` from many concurrent
tasks, so deliveries share group commits): ~4 KB messages of varied content over a few accounts
and mailboxes. Then times, with the real CLI in a child process each:

- a full backup (into an empty DEST: every body copied),
- an incremental backup into the same DEST (after 1,000 more messages each run: only the new
  bodies copied),
- ``backup --verify`` of the newest snapshot, and
- ``restore`` into an empty directory,

each the median of ``--runs`` runs (``--heavy-runs`` for the full backup and restore), and
prints messages/s and MB/s (bytes of bodies).

    PYTHONPATH=src .venv/bin/python bench/backup.py --messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.sqlite.store import SQLiteStore

DOMAIN = "backup-bench.test"
ACCOUNTS = 4
MAILBOXES = ("INBOX", "Bench/Lists", "Bench/Projects")
TASKS = 128
_WORDS = ("mail", "server", "backup", "restore", "snapshot", "body", "header", "quota",
          "archive", "digest", "blob", "commit", "fsync", "incremental", "manifest", "verify")


def make_message(i: int, size: int, rng: random.Random) -> bytes:
    """A distinct message of about ``size`` bytes whose body varies from one to the next."""
    head = (
        f"From: Sender {i % 97} <s{i % 97}@{DOMAIN}>\r\nTo: u{i % ACCOUNTS}@{DOMAIN}\r\n"
        f"Subject: bench {i} {rng.choice(_WORDS)}\r\nMessage-ID: <{i}.{rng.getrandbits(48):x}"
        f"@{DOMAIN}>\r\nDate: Mon, 7 Dec 2026 17:00:00 +0000\r\n\r\n"
    ).encode()
    lines: list[bytes] = []
    total = len(head)
    target = max(256, int(size * rng.uniform(0.5, 1.5)))
    while total < target:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))).encode() + b"\r\n"
        lines.append(line)
        total += len(line)
    return head + b"".join(lines)


async def fill(data_dir: Path, first: int, count: int, size: int, seed: int) -> int:
    """Delivers ``count`` messages (numbered from ``first``); returns their bytes."""
    store = await SQLiteStore.open(data_dir)
    try:
        ids = []
        for a in range(ACCOUNTS):
            address = f"u{a}@{DOMAIN}"
            account = await store.get_account(address)
            if account is None:  # `mailstead init --domain` added the domain itself
                account = await store.add_account(address, "x")
                for box in MAILBOXES[1:]:
                    await store.create_mailbox(account.id, box)
            ids.append(account.id)
        counter = iter(range(first, first + count))
        rng = random.Random(seed)
        total = 0

        async def worker() -> None:
            nonlocal total
            for i in counter:
                data = make_message(i, size, rng)
                total += len(data)
                await store.accept_message(IncomingMessage(
                    data=data, queue_id=f"b{i}", mail_from=f"s@{DOMAIN}",
                    local=[LocalDelivery(ids[i % ACCOUNTS], MAILBOXES[i // ACCOUNTS % 3])],
                    remote=[], internal_date=time.time(), envelope="{}", bodystructure="{}",
                ))

        await asyncio.gather(*(worker() for _ in range(TASKS)))
        return total
    finally:
        await store.close()


def cli(*args: str) -> float:
    """Runs ``mailstead ARGS`` in a child process; its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mailstead", *args], capture_output=True,
                          text=True, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mailstead {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return elapsed


def median_of(runs: int, prepare: Callable[[int], None], run: Callable[[int], float]) -> float:
    times = []
    for n in range(runs):
        prepare(n)
        os.sync()  # each run starts with nothing dirty in the page cache
        times.append(run(n))
    return statistics.median(times)


def line(what: str, seconds: float, messages: int, nbytes: int) -> None:
    print(f"{what:<34} {seconds:8.2f} s  {messages / seconds:10,.0f} messages/s  "
          f"{nbytes / seconds / 1e6:8.1f} MB/s  ({messages:,} messages, {nbytes / 1e6:,.0f} MB)")


def run_bench(
    root: Path, messages: int, more: int, size: int, runs: int, heavy_runs: int
) -> None:
    data = root / "data"
    cli("init", "--data-dir", str(data), "--hostname", f"mail.{DOMAIN}", "--domain", DOMAIN,
        "--dev")
    t0 = time.perf_counter()
    nbytes = asyncio.run(fill(data, 0, messages, size, 1))
    built = time.perf_counter() - t0
    os.sync()
    line("build (store API, not timed CLI)", built, messages, nbytes)
    where = ("--data-dir", str(data))
    dests = [root / f"dest{n}" for n in range(heavy_runs)]

    def fresh_dest(n: int) -> None:
        shutil.rmtree(dests[n], ignore_errors=True)

    full = median_of(heavy_runs, fresh_dest, lambda n: cli("backup", *where, str(dests[n])))
    line("backup, full (empty DEST)", full, messages, nbytes)

    for d in dests[1:]:
        shutil.rmtree(d, ignore_errors=True)
    # Each incremental run follows ``more`` new deliveries, into the same DEST.
    added = {"messages": 0, "bytes": 0}

    def deliver_more(n: int) -> None:
        first = messages + added["messages"]
        added["bytes"] += asyncio.run(fill(data, first, more, size, 2 + n))
        added["messages"] += more

    incr = median_of(runs, deliver_more, lambda n: cli("backup", *where, str(dests[0])))
    line(f"backup, incremental (+{more:,} new)", incr, more, added["bytes"] // runs)
    print(f"{'':<34} {'':8}    {(messages + more) / incr:10,.0f} messages/s of the whole store")

    total, total_bytes = messages + added["messages"], nbytes + added["bytes"]
    verify = median_of(runs, lambda n: None,
                       lambda n: cli("backup", "--verify", str(dests[0])))
    line("backup --verify", verify, total, total_bytes)

    targets = [root / f"restored{n}" for n in range(runs)]

    def empty_target(n: int) -> None:
        shutil.rmtree(targets[n], ignore_errors=True)

    restore = median_of(heavy_runs, empty_target,
                        lambda n: cli("restore", str(dests[0]), "--data-dir",
                                      str(targets[n])))
    line("restore (into an empty dir)", restore, total, total_bytes)
    sample = hashlib.sha256((targets[0] / "mailstead.db").read_bytes()).hexdigest()[:12]
    print(f"restored database sha256 {sample}..., {len(os.listdir(targets[0] / 'blobs'))} "
          "top-level blob directories")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--more", type=int, default=1_000,
                        help="messages delivered between the full and the incremental backup")
    parser.add_argument("--size", type=int, default=4096, help="mean message size in bytes")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of the incremental backup and of --verify (the median)")
    parser.add_argument("--heavy-runs", type=int, default=1,
                        help="runs of the full backup and of restore (the median)")
    parser.add_argument("--keep", action="store_true", help="leave the directories behind")
    args = parser.parse_args()
    # Not /tmp: it may be tmpfs, where fsync is free and the figures would lie.
    base = Path(os.environ.get("BENCH_DIR", Path(__file__).resolve().parent.parent / ".bench"))
    base.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="backup-", dir=base))
    try:
        print(f"{args.messages:,} messages of ~{args.size:,} bytes in {ACCOUNTS} accounts x "
              f"{len(MAILBOXES)} mailboxes; median of {args.heavy_runs} full/restore and "
              f"{args.runs} incremental/verify run(s); in {root}")
        run_bench(root, args.messages, args.more, args.size, args.runs, args.heavy_runs)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
            if not any(base.iterdir()):
                base.rmdir()


if __name__ == "__main__":
    main()
