"""Memory of idle IMAP sessions: N concurrent logged-in IDLE connections to one server.

Opens ``--connections`` (default 5,000) asyncio TLS clients on 993 spread over a few accounts,
each LOGIN, SELECT INBOX and IDLE; reports the server's RSS (``VmRSS`` of /proc/PID/status)
before and after, and per connection (issue 3 target: under 500 MB in total, under 100 KB per
connection). Then delivers one message by SMTP to every account and checks a sample of the
sessions sees ``* n EXISTS`` within a second.

    python bench/imap_idle.py [--connections 5000] [--accounts 10] [--sample 200]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import smtplib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    DEFAULT_IMAP,
    AsyncIMAP,
    Server,
    Users,
    configure_imap,
    init_data_dir,
    make_message,
    percentile,
    rss_kib,
    tls_context,
)


def raise_nofile(wanted: int) -> int:
    """Lift RLIMIT_NOFILE as far as the hard limit allows; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def open_idle(port: int, tls, user: str, password: str) -> AsyncIMAP:  # type: ignore[no-untyped-def]
    imap = await AsyncIMAP.connect(port, tls=tls)
    for command in (f'LOGIN "{user}" "{password}"', "SELECT INBOX"):
        response = await imap.command(command)
        if response.status != b"OK":
            raise RuntimeError(f"{command.split()[0]}: {response.tagged!r}")
    imap.writer.write(b"idle IDLE\r\n")
    line = await imap.read_line()
    if not line.startswith(b"+"):
        raise RuntimeError(f"IDLE: {line!r}")
    return imap


async def wait_exists(imap: AsyncIMAP, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        line = await asyncio.wait_for(imap.read_line(), timeout - (loop.time() - t0))
        if line.endswith(b"EXISTS"):
            return loop.time()


async def bench(args: argparse.Namespace, server: Server, users: dict[str, str]) -> None:
    tls = tls_context(server.cert_path)
    port = server.ports["imaps"]
    accounts = list(users.items())
    before = rss_kib(server.pid)
    print(f"server RSS before: {before / 1024:.1f} MiB")
    clients: list[AsyncIMAP] = []
    failures: list[str] = []
    sem = asyncio.Semaphore(100)  # handshakes in flight

    async def one(i: int) -> None:
        user, password = accounts[i % len(accounts)]
        async with sem:
            try:
                clients.append(await open_idle(port, tls, user, password))
            except (OSError, RuntimeError, ConnectionError, asyncio.IncompleteReadError) as exc:
                failures.append(repr(exc))

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(args.connections)))
    opened = time.monotonic() - t0
    await asyncio.sleep(2)
    after = rss_kib(server.pid)
    n = len(clients)
    print(f"{n} IDLE sessions open in {opened:.1f} s ({len(failures)} failed"
          f"{': ' + failures[0] if failures else ''})")
    print(f"server RSS after: {after / 1024:.1f} MiB; "
          f"{(after - before) / max(n, 1):.1f} KiB per connection "
          f"(target < 500 MiB total, < 100 KiB each)")

    sample = clients[: args.sample]
    waits = [asyncio.create_task(wait_exists(c, 10)) for c in sample]
    await asyncio.sleep(0.2)
    sent = asyncio.get_running_loop().time()
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=60) as smtp:
        smtp.sendmail("sender@remote.test", list(users), make_message("idle-wake"))
    delivered = asyncio.get_running_loop().time()
    results = await asyncio.gather(*waits, return_exceptions=True)
    delays = [r - delivered for r in results if isinstance(r, float)]
    print(f"SMTP delivery took {(delivered - sent) * 1000:.0f} ms; {len(delays)} of "
          f"{len(sample)} sampled sessions saw EXISTS; after the 250: p50 "
          f"{percentile(delays, 50) * 1000:.0f} ms, max {max(delays, default=0) * 1000:.0f} ms")
    await asyncio.gather(*(c.close() for c in clients))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    limit = raise_nofile(args.connections * 2 + 1000)
    if limit < args.connections + 100:
        sys.exit(f"RLIMIT_NOFILE is {limit}: too low for {args.connections} connections")
    users = {f"idle{i}@example.test": f"idle{i}-Secret-pw" for i in range(args.accounts)}
    with tempfile.TemporaryDirectory(prefix="mailstead-imap-idle-") as tmp:
        data_dir = Path(tmp) / "data"
        init_data_dir(data_dir, Users(passwords=users),
                      {"max_connections": 500, "max_connections_per_ip": 500})
        per_account = args.connections // args.accounts + 10
        configure_imap(data_dir, {**DEFAULT_IMAP, "max_connections": args.connections + 100,
                                  "max_connections_per_ip": args.connections + 100,
                                  "max_connections_per_account": per_account})
        # The server child inherits our raised RLIMIT_NOFILE.
        server = Server(data_dir).start(timeout=30)
        try:
            asyncio.run(bench(args, server, users))
        finally:
            code = server.stop(timeout=60)
            if code != 0 or "Traceback" in server.log_text():
                print(f"server exit code {code}\n{server.log_text()[-5000:]}")


if __name__ == "__main__":
    main()
