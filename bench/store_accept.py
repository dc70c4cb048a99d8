"""Group-commit throughput of SQLiteStore.accept_message.

N concurrent asyncio tasks each deliver distinct 4 KB messages to a local mailbox (durable:
blob fsync'd, row committed) as fast as they can; prints msgs/s and p50/p99 latency.

    PYTHONPATH=src .venv/bin/python bench/store_accept.py --tasks 64 --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.sqlite.store import SQLiteStore


def make_message(i: int, size: int) -> bytes:
    head = (
        f"From: Sender <sender@example.test>\r\nTo: rcpt@example.test\r\n"
        f"Subject: bench {i}\r\nMessage-ID: <{i}.{os.getpid()}@example.test>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + body


def warm_up(data_dir: Path) -> None:
    for a in range(256):
        for b in range(256):
            (data_dir / "blobs" / f"{a:02x}" / f"{b:02x}").mkdir(
                mode=0o700, parents=True, exist_ok=True
            )
    os.sync()


async def run(
    tasks: int, messages: int, size: int, data_dir: Path, uvloop_on: bool, warm: bool
) -> None:
    if warm:
        warm_up(data_dir)
    store = await SQLiteStore.open(data_dir)
    await store.add_domain("example.test")
    account = await store.add_account("rcpt@example.test", "x")
    latencies: list[float] = []
    counter = iter(range(messages))

    async def worker() -> None:
        for i in counter:
            msg = IncomingMessage(
                data=make_message(i, size),
                queue_id=f"q{i}",
                mail_from="sender@example.test",
                local=[LocalDelivery(account.id)],
                remote=[],
                internal_date=time.time(),
                envelope="{}",
                bodystructure="{}",
            )
            t0 = time.perf_counter()
            await store.accept_message(msg)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - start
    await store.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"tasks={tasks} messages={messages} size={size} uvloop={uvloop_on} warm={warm}: "
        f"{messages / elapsed:,.0f} msgs/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dir", type=Path, default=None, help="data dir (default: a temp dir)")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="pre-create the 65,536 blob directories, as in a store that has taken a few "
        "hundred thousand messages (a fresh store also pays one mkdir per new directory)",
    )
    args = parser.parse_args()
    uvloop_on = False
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
            uvloop_on = True
        except ImportError:
            pass
    if args.dir is not None:
        asyncio.run(run(args.tasks, args.messages, args.size, args.dir, uvloop_on, args.warm))
        return
    # Not /tmp: it may be tmpfs, where fsync is free and the figures would lie.
    base = Path(os.environ.get("BENCH_DIR", Path(__file__).resolve().parent.parent / ".bench"))
    base.mkdir(exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            asyncio.run(run(args.tasks, args.messages, args.size, Path(tmp), uvloop_on, args.warm))
    finally:
        with contextlib.suppress(OSError):
            base.rmdir()


if __name__ == "__main__":
    main()
