"""IMAP load on a real ``mailstead serve``: a 10,000-message mailbox and N concurrent clients.

Fills one account's INBOX over SMTP (MAIL/RCPT/DATA pipelined, RFC 2920, several connections),
then N asyncio clients on 993 each LOGIN, SELECT, FETCH 1:* (FLAGS ENVELOPE UID), fetch 100
full bodies, STORE flags, SEARCH, and IDLE until an APPEND from another session wakes them.
Prints operations/s and p50/p99 per command, and the time of the FETCH of all messages
(issue 3 target: under 1 s for 10,000), and where the CPU went (servers, PostgreSQL, client).

With ``--store postgresql`` a private, durable PostgreSQL holds the store; ``--nodes N`` runs
N servers on that one database: the filling SMTP sessions and the IMAP clients are spread
over them (client i on node i mod N) and the APPEND that ends the IDLE goes to node 1, so the
wake-up figures show how fast the other nodes learn of it (LISTEN/NOTIFY).

    python bench/imap_load.py [--clients 10] [--messages 10000] [--rounds 3]
                              [--store sqlite|postgresql] [--nodes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration"), str(REPO / "tests")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    DEFAULT_IMAP,
    AsyncIMAP,
    LoadStats,
    Server,
    Users,
    configure_imap,
    dot_stuff,
    init_data_dir,
    load_client,
    make_message,
    percentile,
    rewrite_tables,
    tls_context,
)
from smtp_inbound import (  # noqa: E402 (bench/ is on the path as this script's folder)
    NO_FILTERS,
    CpuMeter,
    durable_postgres,
    init_nodes,
    start_nodes,
    stop_nodes,
)

USER, PASSWORD = "load@example.test", "load-Secret-imap"
FILLER = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"


async def fill(ports: Sequence[int], count: int, connections: int = 8) -> LoadStats:
    """``count`` ~2 KB messages to USER over ``connections`` pipelined SMTP sessions, spread
    over the nodes' ``ports``."""
    stats = LoadStats()
    stop = asyncio.Event()

    def jobs(k: int):  # type: ignore[no-untyped-def]
        for n in range(k, count, connections):
            token = f"load-{n}"
            message = make_message(token, to=USER, body=FILLER * (20 + n % 20))
            yield token, "sender@remote.test", USER, dot_stuff(message)

    await asyncio.gather(*(load_client(ports[k % len(ports)], jobs(k), stats, stop)
                           for k in range(connections)))
    return stats


async def client_run(port: int, tls, rounds: int, timings: dict[str, list[float]],  # type: ignore[no-untyped-def]
                     total: int, idle_ready: asyncio.Event, woken: list[float]) -> None:
    loop = asyncio.get_running_loop()

    async def timed(name: str, command: str) -> bytes:
        t0 = loop.time()
        response = await imap.command(command)
        timings[name].append(loop.time() - t0)
        if response.status != b"OK":
            raise RuntimeError(f"{command[:40]}: {response.tagged!r}")
        return b"\n".join(response.untagged)

    t0 = loop.time()
    imap = await AsyncIMAP.connect(port, tls=tls)
    timings["connect+tls"].append(loop.time() - t0)
    rng = random.Random()
    try:
        await timed("LOGIN", f'LOGIN "{USER}" "{PASSWORD}"')
        for _ in range(rounds):
            await timed("SELECT", "SELECT INBOX")
            data = await timed("FETCH 1:* (FLAGS ENVELOPE UID)", "FETCH 1:* (FLAGS ENVELOPE UID)")
            # Other clients' STOREs may come as extra FETCH (FLAGS) lines (RFC 9051 section
            # 7.5.2): count the answers to this command, the ones with an ENVELOPE.
            answers = sum(1 for line in data.split(b"\n") if b" FETCH (" in line
                          and b"ENVELOPE" in line)
            assert answers == total, (answers, total)
            for _ in range(100):
                await timed("FETCH n BODY.PEEK[]", f"FETCH {rng.randint(1, total)} BODY.PEEK[]")
            for _ in range(20):
                n = rng.randint(1, total)
                await timed("STORE +FLAGS", f"STORE {n} +FLAGS (\\Seen $Bench)")
            await timed("SEARCH UNSEEN", "SEARCH UNSEEN")
            await timed("SEARCH TEXT", f"SEARCH TEXT load-{rng.randint(0, total - 1)}")
            await timed("UID SEARCH FLAGGED SINCE", "UID SEARCH FLAGGED SINCE 1-Jan-2020")
        # IDLE until the main task appends (RFC 2177).
        imap.counter += 1
        tag = b"a%d" % imap.counter
        imap.writer.write(tag + b" IDLE\r\n")
        line = await imap.read_line()
        assert line.startswith(b"+"), line
        idle_ready.set()
        while True:
            line = await imap.read_line()
            if line.endswith(b"EXISTS"):
                woken.append(loop.time())
                break
        imap.writer.write(b"DONE\r\n")
        await imap.read_until(tag)
        await timed("LOGOUT", "LOGOUT")
    finally:
        await imap.close()


async def bench(args: argparse.Namespace, servers: Sequence[Server], meter: CpuMeter) -> None:
    server = servers[0]
    # Each node has its own self-signed certificate for the same name.
    tls = [tls_context(s.cert_path) for s in servers]
    t0 = time.monotonic()
    stats = await fill([s.ports["smtp"] for s in servers], args.messages)
    elapsed = time.monotonic() - t0
    print(f"filled INBOX: {len(stats.accepted)} messages in {elapsed:.1f} s "
          f"({len(stats.accepted) / elapsed:.0f}/s), {stats.errors} errors")
    total = len(stats.accepted)

    # One client alone first: the FETCH of all messages without contention.
    solo: dict[str, list[float]] = defaultdict(list)
    imap = await AsyncIMAP.connect(server.ports["imaps"], tls=tls[0])
    await imap.command(f'LOGIN "{USER}" "{PASSWORD}"')
    await imap.command("EXAMINE INBOX")
    for _ in range(3):
        t = time.monotonic()
        response = await imap.command("FETCH 1:* (FLAGS ENVELOPE UID)")
        solo["fetch"].append(time.monotonic() - t)
        assert response.status == b"OK"
        assert len(response.untagged) == total
    await imap.close()
    print(f"single client FETCH 1:* (FLAGS ENVELOPE UID) of {total}: best "
          f"{min(solo['fetch']):.3f} s, worst {max(solo['fetch']):.3f} s (target < 1 s)")

    timings: dict[str, list[float]] = defaultdict(list)
    ready = [asyncio.Event() for _ in range(args.clients)]
    woken: list[float] = []
    meter.start()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(client_run(servers[i % len(servers)].ports["imaps"],
                                            tls[i % len(servers)], args.rounds, timings,
                                            total, ready[i], woken))
             for i in range(args.clients)]
    waiter = asyncio.gather(*(e.wait() for e in ready))
    all_idle = asyncio.ensure_future(waiter)
    await asyncio.wait([all_idle, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=600)
    if not all_idle.done():  # a client ended before IDLE: it failed
        all_idle.cancel()
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise RuntimeError("the clients did not all reach IDLE in 600 s")
    work = time.monotonic() - t0
    appender = await AsyncIMAP.connect(server.ports["imaps"], tls=tls[0])
    await appender.command(f'LOGIN "{USER}" "{PASSWORD}"')
    message = make_message("wake", to=USER)
    appended = asyncio.get_running_loop().time()
    appender.writer.write(b"w1 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    await appender.read_until(b"w1")
    await asyncio.gather(*tasks)
    await appender.close()
    cpu = meter.stop()

    ops = sum(len(v) for v in timings.values())
    nodes = f" over {len(servers)} nodes" if len(servers) > 1 else ""
    print(f"\n{args.clients} clients{nodes} x {args.rounds} rounds: {ops} commands in "
          f"{work:.1f} s ({ops / work:.0f} commands/s), server CPU {cpu.servers:.1f} s")
    print(f"{'command':34} {'count':>6} {'ops/s':>8} {'p50 ms':>9} {'p99 ms':>9}")
    for name, values in timings.items():
        print(f"{name:34} {len(values):6d} {len(values) / work:8.1f} "
              f"{percentile(values, 50) * 1000:9.1f} {percentile(values, 99) * 1000:9.1f}")
    delays = [w - appended for w in woken]
    print(f"IDLE wake-up after APPEND on node 1: {len(delays)} of {args.clients} clients, "
          f"p50 {percentile(delays, 50) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    print(cpu.report(len(servers), ops, "command"))


# The inbound checks and the spam filter are off while filling: they are not what this
# measures (bench/inbound_filters.py is), and their DNS lookups would only slow the fill.
SMTP_LIMITS = {"max_connections": 500, "max_connections_per_ip": 500,
               "max_message_size": 10 * 1024 * 1024}
IMAP_LIMITS = {**DEFAULT_IMAP, "max_connections_per_account": 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="postgresql: a private durable PostgreSQL holds the store")
    parser.add_argument("--nodes", type=int, default=1,
                        help="servers on the one database (--store postgresql), load spread")
    args = parser.parse_args()
    if args.nodes < 1 or (args.nodes > 1 and args.store != "postgresql"):
        parser.error("--nodes N > 1 needs --store postgresql (nodes share the database)")
    users = Users(passwords={USER: PASSWORD})
    with tempfile.TemporaryDirectory(prefix="mailstead-imap-load-") as tmp:
        if args.store == "postgresql":
            with durable_postgres() as pg:
                pg.psql('CREATE DATABASE "bench"')
                dirs = init_nodes(Path(tmp), args.nodes, pg.dsn("bench"), users,
                                  {"imap": IMAP_LIMITS, **NO_FILTERS}, SMTP_LIMITS)
                serve(args, dirs, Path(tmp), CpuMeter(servers=[], pg=pg))
        else:
            os.environ.pop("MAILSTEAD_TEST_STORE", None)  # the embedded store
            data_dir = Path(tmp) / "data"
            init_data_dir(data_dir, users, SMTP_LIMITS)
            configure_imap(data_dir, IMAP_LIMITS)
            rewrite_tables(data_dir / "mailstead.toml", NO_FILTERS)
            serve(args, [data_dir], Path(tmp), CpuMeter(servers=[]))


def serve(args: argparse.Namespace, dirs: Sequence[Path], tmp: Path, meter: CpuMeter) -> None:
    """Starts a server per data dir, runs the benchmark, stops them and shows any trouble."""
    servers = start_nodes(dirs, tmp)
    meter.servers = servers
    try:
        asyncio.run(bench(args, servers, meter))
    finally:
        codes = stop_nodes(servers)
        for server, code in zip(servers, codes, strict=True):
            if code != 0 or "Traceback" in server.log_text():
                print(f"{server.data_dir.name}: exit code {code}\n{server.log_text()[-5000:]}")


if __name__ == "__main__":
    main()
