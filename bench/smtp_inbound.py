"""Inbound SMTP throughput and latency of real ``mailstead serve`` nodes on loopback.

Runs N concurrent asyncio clients on port 25 ("smtp"), each reusing its connection (one EHLO,
then MAIL/RCPT/DATA pipelined per message, RFC 2920), and prints accepted messages per second,
p50/p95/p99 latency from the final CRLF.CRLF to the 250, errors, and the CPU time of the
server(s), of PostgreSQL and of this load generator. Then checks a sample of the acknowledged
messages is in the store byte for byte.

With ``--store postgresql`` a private, durable PostgreSQL (fsync on, tests/pgserver.py) holds
the store; ``--nodes N`` starts N servers on that one database and spreads the clients over
them (client i talks to node i mod N).

    python bench/smtp_inbound.py [--clients 20] [--messages 5000] [--size 4096] [--data-dir D]
                                 [--store sqlite|postgresql] [--nodes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration"), str(REPO / "tests")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    DOMAIN,
    HOSTNAME,
    LoadStats,
    Server,
    ServerError,
    Users,
    configure,
    dot_stuff,
    init_data_dir,
    load_client,
    make_message,
    percentile,
    rewrite_tables,
    run_cli,
    verify_stored,
)

from pgserver import PgServer  # noqa: E402

RECIPIENTS = [f"bench{i}@example.test" for i in range(1, 5)]
USERS = Users(passwords={address: "bench-Secret-1" for address in RECIPIENTS})
LIMITS: dict[str, Any] = {"max_connections": 1000, "max_connections_per_ip": 1000,
                          "max_message_size": 50 * 1024 * 1024}
NO_FILTERS: dict[str, dict[str, Any]] = {"auth_checks": {"enable": False},
                                         "spam": {"enable": False}}


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
    if (data_dir / "mailstead.toml").exists():
        configure(data_dir, LIMITS)
        for address in RECIPIENTS:
            try:
                run_cli("user", "add", address, "--password-stdin", "--data-dir", str(data_dir),
                        stdin="bench-Secret-1\n")
            except ServerError as exc:
                if "exist" not in str(exc).lower():
                    raise
    else:
        os.environ.pop("MAILSTEAD_TEST_STORE", None)  # the embedded store, whatever the shell
        init_data_dir(data_dir, USERS, LIMITS)
    if not filters:
        rewrite_tables(data_dir / "mailstead.toml", NO_FILTERS)


# ---------------------------------------------------------------------------------------------
# Several nodes on one PostgreSQL database (issue 10); bench/imap_load.py uses these too.


@contextmanager
def durable_postgres() -> Iterator[PgServer]:
    """A private PostgreSQL on loopback with fsync on (a benchmark measures what production
    pays for a commit), stopped and removed afterwards."""
    server = PgServer(durable=True).start()
    try:
        yield server
    finally:
        server.stop()


def init_nodes(root: Path, count: int, dsn: str, users: Users,
               tables: Mapping[str, Mapping[str, Any]], smtp: Mapping[str, Any]) -> list[Path]:
    """``count`` data dirs under ``root`` pointing at the database ``dsn``: the first
    ``mailstead init --store`` creates the installation and its users, the others join it and
    get the first one's security.key (every node must have the same). Listeners go to
    loopback port 0; ``tables`` are merged into each config."""
    from mailstead.accounts.keys import KEY_FILE, SecurityKeys

    dirs = [root / f"node{i + 1}" for i in range(count)]
    for i, data_dir in enumerate(dirs):
        run_cli("init", "--data-dir", str(data_dir), "--hostname", HOSTNAME, "--domain", DOMAIN,
                "--dev", "--store", dsn)
        configure(data_dir, smtp)
        if tables:
            rewrite_tables(data_dir / "mailstead.toml", tables)
        if i == 0:
            for address, password in users.passwords.items():
                run_cli("user", "add", address, "--password-stdin", "--data-dir",
                        str(data_dir), stdin=password + "\n")
            SecurityKeys.load_or_create(data_dir)
        else:
            shutil.copy2(dirs[0] / KEY_FILE, data_dir / KEY_FILE)
    return dirs


def start_nodes(dirs: Sequence[Path], log_dir: Path) -> list[Server]:
    """Starts a server per data dir; stops the ones started when one fails."""
    servers: list[Server] = []
    try:
        for data_dir in dirs:
            log = log_dir / f"{data_dir.name}-serve.log"
            servers.append(Server(data_dir, log_path=log).start(timeout=60))
    except BaseException:
        stop_nodes(servers)
        raise
    return servers


def stop_nodes(servers: Sequence[Server]) -> list[int | None]:
    """SIGTERM every node; their exit codes."""
    return [server.stop() for server in servers]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after "pid (comm) ": index 0 is the state (field 3)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def postgres_cpu_seconds(pg: PgServer) -> float:
    """User plus system CPU of the whole PostgreSQL cluster so far: the postmaster, its live
    children (backends, WAL writer, checkpointer...) and the children it has reaped."""
    if pg.root is None:
        return 0.0  # an external server (MAILSTEAD_TEST_PG): not ours to measure
    postmaster = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat(postmaster)
    # utime, stime, cutime, cstime are fields 14-17, so indexes 11-14 here.
    total = sum(int(x) for x in fields[11:15])
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (OSError, ValueError):
            continue  # exited meanwhile
        if child[1] == str(postmaster):  # ppid (field 4)
            total += int(child[11]) + int(child[12])
    return total / tick


def machine_cpu() -> tuple[float, float]:
    """(busy, iowait) CPU seconds of the whole machine so far, over all cores (/proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    idle, iowait = values[3], values[4]
    busy = sum(values[:8]) - idle - iowait
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, iowait / tick


@dataclass
class CpuUse:
    """CPU seconds over one run: the servers, PostgreSQL, this load generator, the whole
    machine (anything else running too) and the machine's time waiting for the disk."""

    wall: float
    servers: float
    postgres: float
    client: float
    machine: float
    iowait: float

    def report(self, nodes: int, count: int, what: str) -> str:
        """Where the CPU went, in percent of one core over the wall time, against what the
        machine has: when the machine total nears it, CPU limits the throughput, and the
        biggest share says whose; well below it, the wait for commits (fsync) does."""
        cores = os.cpu_count() or 1

        def pct(seconds: float) -> str:
            return f"{seconds:.1f} s ({100 * seconds / self.wall:.0f}%)"

        others = max(0.0, self.machine - self.servers - self.postgres - self.client)
        return (
            f"CPU over {self.wall:.1f} s, {cores} cores ({100 * cores}% available): "
            f"server{'s' if nodes > 1 else ''} {pct(self.servers)}, postgres "
            f"{pct(self.postgres)}, load generator {pct(self.client)}, other processes "
            f"{pct(others)}; machine busy {100 * self.machine / self.wall:.0f}%, iowait "
            f"{100 * self.iowait / self.wall:.0f}%; server+database CPU per {what} "
            f"{(self.servers + self.postgres) / max(count, 1) * 1e6:.0f} us"
        )


@dataclass
class CpuMeter:
    """Measures CpuUse between ``start`` and ``stop``."""

    servers: Sequence[Server]
    pg: PgServer | None = None

    def sample(self) -> tuple[float, ...]:
        nodes = sum(server.cpu_seconds() for server in self.servers)
        database = postgres_cpu_seconds(self.pg) if self.pg is not None else 0.0
        return (time.perf_counter(), nodes, database, time.process_time(), *machine_cpu())

    def start(self) -> None:
        self._before = self.sample()

    def stop(self) -> CpuUse:
        after = self.sample()
        return CpuUse(*(a - b for a, b in zip(after, self._before, strict=True)))


# ---------------------------------------------------------------------------------------------


async def run_load(ports: Sequence[int], clients: int,
                   jobs: list[tuple[str, str, str, bytes, bytes]]) -> tuple[LoadStats, float]:
    stats = LoadStats()
    stop = asyncio.Event()
    shared = iter([(t, s, r, p) for t, s, r, p, _ in jobs])  # one queue, drained by all clients
    start = time.perf_counter()
    await asyncio.gather(*(load_client(ports[i % len(ports)], shared, stats, stop)
                           for i in range(clients)))
    return stats, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096, help="approximate bytes per message")
    parser.add_argument("--data-dir", type=Path,
                        help="embedded store only; default: a new temporary directory")
    parser.add_argument("--sample", type=int, default=200, help="messages checked in the store")
    parser.add_argument("--filters", action="store_true",
                        help="keep the default inbound checks on (SPF/DKIM/DMARC, spam filter)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="postgresql: a private durable PostgreSQL holds the store")
    parser.add_argument("--nodes", type=int, default=1,
                        help="servers on the one database (--store postgresql), load spread")
    args = parser.parse_args(argv)
    if args.nodes < 1 or (args.nodes > 1 and args.store != "postgresql"):
        parser.error("--nodes N > 1 needs --store postgresql (nodes share the database)")
    if args.data_dir is not None and args.store != "sqlite":
        parser.error("--data-dir is for the embedded store")

    with tempfile.TemporaryDirectory(prefix="mailstead-bench-") as tmp, \
            durable_postgres() if args.store == "postgresql" else _nothing() as pg:
        return run(args, Path(tmp), pg)


def run(args: argparse.Namespace, tmp: Path, pg: PgServer | None) -> int:
    """Prepares the node(s), runs the load, prints the figures; 0 when all is well."""
    if pg is not None:
        pg.psql('CREATE DATABASE "bench"')
        dirs = init_nodes(tmp, args.nodes, pg.dsn("bench"), USERS,
                          {} if args.filters else NO_FILTERS, LIMITS)
    else:
        dirs = [args.data_dir or tmp / "data"]
        prepare(dirs[0], args.filters)
    jobs = build_messages(args.messages, args.size)
    servers = start_nodes(dirs, tmp)
    try:
        meter = CpuMeter(servers, pg)
        meter.start()
        stats, wall = asyncio.run(
            run_load([s.ports["smtp"] for s in servers], args.clients, jobs))
        cpu = meter.stop()
    finally:
        codes = stop_nodes(servers)
    accepted = len(stats.accepted)
    ms = [v * 1000 for v in stats.latencies]
    print(f"store {args.store}, nodes {args.nodes}, clients {args.clients}, "
          f"messages {args.messages}, size ~{args.size} bytes")
    print(f"accepted {accepted} in {wall:.2f} s: {accepted / wall:.1f} messages/s")
    print(f"latency CRLF.CRLF -> 250: p50 {percentile(ms, 50):.2f} ms, "
          f"p95 {percentile(ms, 95):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
          f"max {max(ms, default=0):.2f} ms")
    print(f"errors {stats.errors}" + (f" (e.g. {stats.error_samples[:3]})"
                                      if stats.errors else ""))
    print(f"server CPU {cpu.servers:.2f} s ({cpu.servers / max(accepted, 1) * 1e6:.0f} us "
          f"per message), exit code{'s' if len(codes) > 1 else ''} "
          f"{', '.join(str(c) for c in codes)}")
    print(cpu.report(len(servers), accepted, "message"))
    sent = {token: message for token, _, _, _, message in jobs}
    sample = random.sample(stats.accepted, min(args.sample, accepted))
    check = verify_stored(dirs[0], RECIPIENTS, sent, sample)
    print(f"store sample: {check.summary()}")
    ok = (all(code == 0 for code in codes) and not check.missing
          and not check.corrupt and stats.errors == 0)
    return 0 if ok else 1


@contextmanager
def _nothing() -> Iterator[None]:
    """The embedded store needs no database server."""
    yield None


if __name__ == "__main__":
    raise SystemExit(main())
