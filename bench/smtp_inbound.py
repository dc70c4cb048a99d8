"""Inbound SMTP throughput and latency of a real ``mailstead serve`` on loopback.

Runs N concurrent asyncio clients on port 25 ("smtp"), each reusing its connection (one EHLO,
then MAIL/RCPT/DATA pipelined per message, RFC 2920), and prints accepted messages per second,
p50/p95/p99 latency from the final CRLF.CRLF to the 250, errors, and the server's CPU time.
Then checks a sample of the acknowledged messages is in the store byte for byte.

    python bench/smtp_inbound.py [--clients 20] [--messages 5000] [--size 4096] [--data-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    LoadStats,
    Server,
    ServerError,
    Users,
    dot_stuff,
    init_data_dir,
    load_client,
    make_message,
    percentile,
    run_cli,
    verify_stored,
)

RECIPIENTS = [f"bench{i}@example.test" for i in range(1, 5)]
USERS = Users(passwords={address: "bench-Secret-1" for address in RECIPIENTS})


def build_messages(count: int, size: int) -> list[tuple[str, str, str, bytes, bytes]]:
    """(token, sender, recipient, dot-stuffed payload, message) built before the clock starts,
    so the clients do no work per message beyond writing bytes and reading reply lines."""
    out = []
    filler_line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"
    for n in range(count):
        token = f"bench-{n}-{random.getrandbits(32):08x}"
        rcpt = RECIPIENTS[n % len(RECIPIENTS)]
        head = make_message(token, to=rcpt, body=b"")
        lines = max(1, (size - len(head)) // len(filler_line))
        message = make_message(token, to=rcpt, body=filler_line * lines)
        out.append((token, "sender@remote.test", rcpt, dot_stuff(message), message))
    return out


def prepare(data_dir: Path, filters: bool = False) -> None:
    """Init ``data_dir`` (or reuse an initialised one, adding the bench users if missing).

    Without ``filters`` the sender-authentication checks and the spam filter are turned off,
    so this measures the core path (SMTP, policy, durable delivery); bench/inbound_filters.py
    measures what the checks cost on top of it."""
    limits = {"max_connections": 1000, "max_connections_per_ip": 1000,
              "max_message_size": 50 * 1024 * 1024}
    if (data_dir / "mailstead.toml").exists():
        from helpers import configure

        configure(data_dir, limits)
        for address in RECIPIENTS:
            try:
                run_cli("user", "add", address, "--password-stdin", "--data-dir", str(data_dir),
                        stdin="bench-Secret-1\n")
            except ServerError as exc:
                if "exist" not in str(exc).lower():
                    raise
    else:
        init_data_dir(data_dir, USERS, limits)
    if not filters:
        from helpers import rewrite_tables

        rewrite_tables(data_dir / "mailstead.toml",
                       {"auth_checks": {"enable": False}, "spam": {"enable": False}})


async def run_load(port: int, clients: int,
                   jobs: list[tuple[str, str, str, bytes, bytes]]) -> tuple[LoadStats, float]:
    stats = LoadStats()
    stop = asyncio.Event()
    shared = iter([(t, s, r, p) for t, s, r, p, _ in jobs])  # one queue, drained by all clients
    start = time.perf_counter()
    await asyncio.gather(*(load_client(port, shared, stats, stop) for _ in range(clients)))
    return stats, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096, help="approximate bytes per message")
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--sample", type=int, default=200, help="messages checked in the store")
    parser.add_argument("--filters", action="store_true",
                        help="keep the default inbound checks on (SPF/DKIM/DMARC, spam filter)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mailstead-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        prepare(data_dir, args.filters)
        jobs = build_messages(args.messages, args.size)
        server = Server(data_dir, log_path=Path(tmp) / "serve.log").start()
        try:
            cpu_before = server.cpu_seconds()
            stats, wall = asyncio.run(run_load(server.ports["smtp"], args.clients, jobs))
            cpu = server.cpu_seconds() - cpu_before
        finally:
            code = server.stop()
        accepted = len(stats.accepted)
        ms = [v * 1000 for v in stats.latencies]
        print(f"clients {args.clients}, messages {args.messages}, size ~{args.size} bytes")
        print(f"accepted {accepted} in {wall:.2f} s: {accepted / wall:.1f} messages/s")
        print(f"latency CRLF.CRLF -> 250: p50 {percentile(ms, 50):.2f} ms, "
              f"p95 {percentile(ms, 95):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
              f"max {max(ms, default=0):.2f} ms")
        print(f"errors {stats.errors}" + (f" (e.g. {stats.error_samples[:3]})"
                                          if stats.errors else ""))
        print(f"server CPU {cpu:.2f} s ({cpu / max(accepted, 1) * 1e6:.0f} us per message), "
              f"exit code {code}")
        sent = {token: message for token, _, _, _, message in jobs}
        sample = random.sample(stats.accepted, min(args.sample, accepted))
        check = verify_stored(data_dir, RECIPIENTS, sent, sample)
        print(f"store sample: {check.summary()}")
        ok = code == 0 and not check.missing and not check.corrupt and stats.errors == 0
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
