"""LIST with many mailboxes on a real ``mailstead serve``: how long ``LIST "" "*"`` takes for
one account with N mailboxes, and how long another client's NOOP waits meanwhile.

Creates N mailboxes (``p<k>/box<i>``, so half the names have a parent with children) for one
account straight through the store, starts the server, times LIST "" "*" (and LSUB, LIST
RETURN (CHILDREN SUBSCRIBED)), then runs a LIST loop on one connection while a second one
sends NOOPs and prints their latency, and the server's peak memory (VmHWM).

    python bench/imap_list.py [--mailboxes 20000] [--seconds 10] [--store sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration"), str(REPO / "tests")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    DEFAULT_IMAP,
    STORE_BACKEND_ENV,
    AsyncIMAP,
    Server,
    Users,
    configure_imap,
    create_mailboxes,
    init_data_dir,
    percentile,
    rewrite_tables,
    tls_context,
)

USER, PASSWORD = "lists@example.test", "lists-Secret-imap"


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


async def timed(client: AsyncIMAP, command: str) -> tuple[float, int]:
    t0 = time.monotonic()
    response = await client.command(command)
    if response.status != b"OK":
        raise RuntimeError(f"{command}: {response.tagged!r}")
    return time.monotonic() - t0, len(response.untagged)


def list_loop(port: int, cert: Path, seconds: float, results: multiprocessing.Queue[object]
              ) -> None:
    """In a child process: LIST "" "*" again and again for ``seconds``; puts "ready" once
    logged in, then the list of LIST times."""

    async def run() -> list[float]:
        client = await AsyncIMAP.connect(port, tls=tls_context(cert))
        try:
            await timed(client, f'LOGIN "{USER}" "{PASSWORD}"')
            results.put("ready")
            lists: list[float] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                lists.append((await timed(client, 'LIST "" "*"'))[0])
            return lists
        finally:
            await client.close()

    results.put(asyncio.run(run()))


async def bench(server: Server, seconds: float) -> None:
    tls = tls_context(server.cert_path)
    lister = await AsyncIMAP.connect(server.ports["imaps"], tls=tls)
    other = await AsyncIMAP.connect(server.ports["imaps"], tls=tls)
    try:
        for client in (lister, other):
            await timed(client, f'LOGIN "{USER}" "{PASSWORD}"')
        await timed(lister, 'SUBSCRIBE "p1/box1"')
        for command in ('LIST "" "*"', 'LIST "" "%"', 'LSUB "" "*"',
                        'LIST "" "*" RETURN (CHILDREN SUBSCRIBED SPECIAL-USE)',
                        'LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT))',
                        'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))'):
            elapsed, lines = await timed(lister, command)
            print(f"{command}: {elapsed * 1000:.0f} ms, {lines} lines")
        # The LIST loop runs in a child process, so that parsing its answers here cannot
        # delay the NOOP probe: the latency measured is the server's alone.
        results: multiprocessing.Queue[object] = multiprocessing.Queue()
        child = multiprocessing.Process(
            target=list_loop, args=(server.ports["imaps"], server.cert_path, seconds, results)
        )
        child.start()
        assert results.get(timeout=60) == "ready"
        noops: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            noops.append((await timed(other, "NOOP"))[0])
            await asyncio.sleep(0.05)
        lists = results.get(timeout=600)
        assert isinstance(lists, list)
        child.join(timeout=60)
        print(f"while LIST loops ({len(lists)} LISTs, p50 {percentile(lists, 50) * 1000:.0f} ms):"
              f" NOOP p50 {percentile(noops, 50) * 1000:.1f} ms, p99"
              f" {percentile(noops, 99) * 1000:.1f} ms, max {max(noops) * 1000:.0f} ms")
        print(f"server VmRSS {vm_kib(server.pid, 'VmRSS') // 1024} MiB,"
              f" VmHWM {vm_kib(server.pid, 'VmHWM') // 1024} MiB")
    finally:
        await lister.close()
        await other.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    os.environ[STORE_BACKEND_ENV] = args.store
    with tempfile.TemporaryDirectory(prefix="mailstead-bench-list-") as tmp:
        data_dir = Path(tmp) / "data"
        init_data_dir(data_dir, Users(passwords={USER: PASSWORD}))
        configure_imap(data_dir, {**DEFAULT_IMAP, "max_connections_per_account": 5})
        # The cap must not stop the benchmark from making its mailboxes.
        rewrite_tables(data_dir / "mailstead.toml",
                       {"limits": {"max_mailboxes_per_account": args.mailboxes + 100}})
        names = [f"p{i % (args.mailboxes // 2 or 1)}/box{i}" for i in range(args.mailboxes)]
        t0 = time.monotonic()
        create_mailboxes(data_dir, USER, names)
        print(f"created {len(names)} mailboxes in {time.monotonic() - t0:.1f} s")
        server = Server(data_dir).start(timeout=30)
        try:
            asyncio.run(bench(server, args.seconds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
