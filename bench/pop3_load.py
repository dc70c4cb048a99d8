"""POP3 download throughput of a real ``mailstead serve`` on loopback.

Delivers a 1,000-message maildrop to each of N accounts (one SMTP transaction per message with
N recipients, so the bodies are shared), then runs N concurrent asyncio clients on port 995,
one per account (a second session on an account would get [IN-USE]). Each logs in, STATs and
RETRs every message with up to ``--window`` commands pipelined (RFC 2449 PIPELINING), checks
each octet count against LIST, and QUITs without deleting. Prints the login time (the first
one measures the maildrop), messages/s, MB/s and the server's CPU time.

    python bench/pop3_load.py [--clients 10] [--messages 1000] [--size 4096] [--window 16]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import smtplib
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    HOSTNAME,
    Server,
    ServerError,
    Users,
    init_data_dir,
    make_message,
    rewrite_tables,
    tls_context,
)

PASSWORD = "bench-Secret-pop3"
FILLER = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"


@dataclass
class ClientStats:
    login: float = 0.0
    messages: int = 0
    octets: int = 0
    errors: list[str] = field(default_factory=list)


def deliver(port: int, accounts: list[str], count: int, size: int, threads: int = 8) -> None:
    """``count`` messages of about ``size`` octets, each to every account."""

    def send(start: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for n in range(start, count, threads):
                head = make_message(f"pop3-bench-{n}", body=b"")
                lines = max(1, (size - len(head)) // len(FILLER))
                client.sendmail("sender@remote.test", accounts,
                                make_message(f"pop3-bench-{n}", body=FILLER * lines))

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(send, i) for i in range(threads)]:
            future.result()


async def status(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\r\n")
    if not line.startswith(b"+OK"):
        raise ConnectionError(f"unexpected reply {line[:200]!r}")
    return line


async def client(port: int, ctx: ssl.SSLContext, address: str, window: int,
                 stats: ClientStats) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=HOSTNAME, limit=64 * 1024 * 1024)
    try:
        await status(reader)
        t0 = time.perf_counter()
        writer.write(f"USER {address}\r\nPASS {PASSWORD}\r\n".encode())
        await status(reader)
        await status(reader)
        stats.login = time.perf_counter() - t0
        writer.write(b"LIST\r\n")
        await status(reader)
        listing = (await reader.readuntil(b"\r\n.\r\n"))[:-5].split(b"\r\n")
        sizes = [int(line.split()[1]) for line in listing if line]
        sent = 0
        for n in range(1, min(window, len(sizes)) + 1):
            writer.write(b"RETR %d\r\n" % n)
            sent = n
        for n in range(1, len(sizes) + 1):
            first = await status(reader)
            body = await reader.readuntil(b"\r\n.\r\n")
            octets = int(first.split()[1])
            if octets != sizes[n - 1]:
                stats.errors.append(f"{address} #{n}: RETR said {octets}, LIST {sizes[n - 1]}")
            stats.messages += 1
            stats.octets += len(body) - 3
            if sent < len(sizes):
                sent += 1
                writer.write(b"RETR %d\r\n" % sent)
        writer.write(b"QUIT\r\n")
        await status(reader)
    except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        stats.errors.append(f"{address}: {exc!r}")
    finally:
        writer.close()


async def load(port: int, ctx: ssl.SSLContext, accounts: list[str],
               window: int) -> tuple[float, list[ClientStats]]:
    stats = [ClientStats() for _ in accounts]
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, ctx, a, window, s) for a, s in zip(accounts, stats,
                                                                          strict=True)))
    return time.perf_counter() - t0, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096, help="approximate message size")
    parser.add_argument("--window", type=int, default=16, help="RETRs in flight per client")
    args = parser.parse_args()
    accounts = [f"pop{i}@example.test" for i in range(args.clients)]
    with tempfile.TemporaryDirectory(prefix="pop3-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        limits = {"max_connections": 1000, "max_connections_per_ip": 1000}
        init_data_dir(data_dir, Users(passwords={a: PASSWORD for a in accounts}), limits)
        rewrite_tables(data_dir / "mailstead.toml", {"pop3": {
            "max_connections": 1000, "max_connections_per_ip": 1000}})
        try:
            server = Server(data_dir).start()
        except ServerError as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            t0 = time.perf_counter()
            deliver(server.ports["smtp"], accounts, args.messages, args.size)
            print(f"delivered {args.messages} messages to {len(accounts)} accounts in "
                  f"{time.perf_counter() - t0:.1f} s")
            ctx = tls_context(server.cert_path)
            cpu0 = server.cpu_seconds()
            elapsed, stats = asyncio.run(load(server.ports["pop3s"], ctx, accounts, args.window))
            cpu = server.cpu_seconds() - cpu0
        finally:
            code = server.stop()
    messages = sum(s.messages for s in stats)
    octets = sum(s.octets for s in stats)
    errors = [e for s in stats for e in s.errors]
    logins = sorted(s.login for s in stats)
    print(f"clients {len(accounts)}, maildrop {args.messages} messages of ~{args.size} octets, "
          f"pipelining window {args.window}")
    print(f"login (includes measuring the maildrop): fastest {logins[0] * 1000:.0f} ms, "
          f"slowest {logins[-1] * 1000:.0f} ms")
    print(f"retrieved {messages} messages, {octets / 1e6:.1f} MB in {elapsed:.2f} s: "
          f"{messages / elapsed:.0f} messages/s, {octets / 1e6 / elapsed:.1f} MB/s")
    print(f"server CPU {cpu:.2f} s; errors {len(errors)}; server exit code {code}")
    for error in errors[:10]:
        print("  ", error)
    return 0 if not errors and messages == args.messages * len(accounts) and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
