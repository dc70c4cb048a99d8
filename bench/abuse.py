"""Hostile clients against a real ``mailstead serve``: does one client freeze or exhaust it?

Runs each attack at the size it was first seen at, for a bounded time, against a fresh server,
while a second client from another loopback address keeps using the server; prints, for each,
that client's p50/p99/max latency, its failures, and the server's resident memory (baseline,
peak sampled every 50 ms, and VmHWM). Targets: p99 under 200 ms, peak RSS under 300 MB.

  list       20,000 mailboxes made by CREATE; the attacker repeats ``LIST "" "*"``
  sieve      a 2 KB ``:matches`` script (wildcards, then 500 ``?``) and 48 KB messages that
             make a backtracking matcher explode, delivered again and again over port 25
  literal    45 connections send ``a LOGIN {51380224+}`` and then 49 MiB each, unauthenticated
  data       20 SMTP sessions send 45 MB of DATA each and never the final dot
  deflate    COMPRESS=DEFLATE, then 381 KiB of deflate that inflates to 256 MiB of NOOPs
  handshake  1,500 TCP connections to the implicit-TLS IMAP port that never start TLS
  slowloris  1,100 SMTP connections from 60 addresses, one byte every 10 s each

The second client (a separate process, so the attacker's own CPU does not slow its clock):
an IMAPS session sending NOOP every 50 ms for ``list``, ``sieve``, ``literal`` and ``deflate``;
a new IMAPS connection with LOGIN for ``handshake``; a new SMTP connection delivering one
message for ``data`` and ``slowloris``. A sample that fails or takes over 5 s counts as 5 s.

    python bench/abuse.py [--only list,sieve,...] [--seconds 20] [--scale 1.0]

``--scale`` multiplies the sizes (connections, bytes, mailboxes) for a quicker look.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import ssl
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration"), str(REPO / "tests")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    HOSTNAME,
    Server,
    Users,
    init_data_dir,
    percentile,
    rewrite_tables,
    run_cli,
    tls_context,
)

ATTACKER, ATTACKER_PASSWORD = "mallory@example.test", "mallory-Secret-1"
VICTIM, VICTIM_PASSWORD = "victim@example.test", "victim-Secret-2"
PROBE_ADDRESS = "127.0.0.200"
SAMPLE_CAP = 5.0  # seconds: a failed or hung sample counts as this long
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Small asyncio clients that can bind a loopback source address


async def connect(port: int, *, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                  timeout: float = 10) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0), ssl=tls,
        server_hostname=HOSTNAME if tls is not None else None, limit=16 * MIB,
    ), timeout)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def imap_until(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    """Read IMAP lines up to the tagged one (literals are skipped by their length)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.endswith(b"}\r\n") and b"{" in line:
            size = line[line.rindex(b"{") + 1:-3].rstrip(b"+")
            if size.isdigit():
                await reader.readexactly(int(size))
                continue
        if line.startswith(tag + b" "):
            return line


async def imap_login(port: int, tls: ssl.SSLContext | None, user: str, password: str,
                     source: str = "127.0.0.1") -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    reader, writer = await connect(port, source=source, tls=tls)
    await reader.readline()
    writer.write(f'l LOGIN "{user}" "{password}"\r\n'.encode())
    answer = await imap_until(reader, b"l")
    if not answer.startswith(b"l OK"):
        await close(writer)
        raise ConnectionError(f"login refused: {answer!r}")
    return reader, writer


async def smtp_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


# ---------------------------------------------------------------------------------------------
# The second client, in a process of its own


@dataclass
class ProbeSpec:
    kind: str  # "imap-noop", "imap-connect" or "smtp-deliver"
    imaps: int
    smtp: int
    cert: str


async def _probe_once(spec: ProbeSpec, tls: ssl.SSLContext, state: dict[str, Any]) -> None:
    if spec.kind == "imap-noop":
        if "session" not in state:
            state["session"] = await imap_login(spec.imaps, tls, VICTIM, VICTIM_PASSWORD,
                                                PROBE_ADDRESS)
        reader, writer = state["session"]
        writer.write(b"n NOOP\r\n")
        await imap_until(reader, b"n")
    elif spec.kind == "imap-connect":
        reader, writer = await imap_login(spec.imaps, tls, VICTIM, VICTIM_PASSWORD,
                                          PROBE_ADDRESS)
        writer.write(b"z LOGOUT\r\n")
        await close(writer)
    else:
        reader, writer = await connect(spec.smtp, source=PROBE_ADDRESS)
        try:
            for command in (None, b"EHLO probe.test", b"MAIL FROM:<probe@remote.test>",
                            f"RCPT TO:<{VICTIM}>".encode(), b"DATA"):
                if command is not None:
                    writer.write(command + b"\r\n")
                reply = await smtp_reply(reader)
                if reply[:1] not in (b"2", b"3"):
                    raise ConnectionError(reply.decode(errors="replace").strip())
            writer.write(b"Subject: probe\r\nFrom: probe@remote.test\r\n\r\nprobe\r\n.\r\n")
            reply = await smtp_reply(reader)
            if not reply.startswith(b"250"):
                raise ConnectionError(reply.decode(errors="replace").strip())
            writer.write(b"QUIT\r\n")
        finally:
            await close(writer)


async def _probe_loop(spec: ProbeSpec, stop: Any, ready: Any, out: Any) -> None:
    tls = tls_context(Path(spec.cert))
    state: dict[str, Any] = {}
    samples: list[float] = []
    failures: list[str] = []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            await asyncio.wait_for(_probe_once(spec, tls, state), SAMPLE_CAP)
            samples.append(time.perf_counter() - started)
            if not ready.is_set():
                ready.set()
                samples.clear()  # the first sample pays for the TLS context and imports
        except Exception as exc:
            samples.append(SAMPLE_CAP)
            if len(failures) < 5:
                failures.append(f"{type(exc).__name__}: {exc}"[:160])
            if "session" in state:
                await close(state.pop("session")[1])
        await asyncio.sleep(0.05)
    if "session" in state:
        await close(state["session"][1])
    out.put((samples, failures))


def _probe_main(spec: ProbeSpec, stop: Any, ready: Any, out: Any) -> None:
    asyncio.run(_probe_loop(spec, stop, ready, out))


# ---------------------------------------------------------------------------------------------
# Memory of the server


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


# ---------------------------------------------------------------------------------------------
# The attacks: each runs until ``stop`` is set (or it is cancelled)


@dataclass
class Context:
    server: Server
    scale: float
    tls: ssl.SSLContext
    notes: list[str] = field(default_factory=list)

    def port(self, name: str) -> int:
        return self.server.ports[name]

    def n(self, value: int) -> int:
        return max(1, int(value * self.scale))


async def prepare_list(ctx: Context) -> None:
    reader, writer = await imap_login(ctx.port("imaps"), ctx.tls, ATTACKER, ATTACKER_PASSWORD)
    total, batch = ctx.n(20_000), 200
    started = time.monotonic()
    for first in range(0, total, batch):
        names = range(first, min(total, first + batch))
        writer.write(b"".join(b"c%d CREATE \"f%d/m%d\"\r\n" % (i, i // 100, i) for i in names))
        for i in names:
            await imap_until(reader, b"c%d" % i)
    writer.write(b"s LIST \"\" \"*\"\r\n")
    await imap_until(reader, b"s")
    await close(writer)
    ctx.notes.append(f"{total} mailboxes created in {time.monotonic() - started:.1f} s")


async def attack_list(ctx: Context, stop: asyncio.Event) -> None:
    reader, writer = await imap_login(ctx.port("imaps"), ctx.tls, ATTACKER, ATTACKER_PASSWORD)
    times: list[float] = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            writer.write(b"x LIST \"\" \"*\"\r\n")
            await imap_until(reader, b"x")
            times.append(time.perf_counter() - started)
    finally:
        if times:
            ctx.notes.append(f"{len(times)} LISTs, median {1000 * percentile(times, 50):.0f} ms")
        await close(writer)


# Ten stars, then 500 "?": a backtracking matcher retries every "?" run from every start.
SIEVE_PATTERN = "a*" * 10 + "?" * 500 + "b"


def sieve_script() -> str:
    rules = []
    n = 0
    while sum(map(len, rules)) < 1800:
        rules.append(f'if header :matches "Subject" "{SIEVE_PATTERN}{n}" {{ fileinto "Junk"; }}\n')
        n += 1
    return 'require ["fileinto"];\n' + "".join(rules)


def sieve_message(n: int) -> bytes:
    # A 48 KB Subject of "a a a ...", folded: every rule's pattern backtracks over all of it.
    words = ["a" * 70] * 680
    subject = "\r\n ".join(words)
    return (f"From: outsider@remote.test\r\nTo: {ATTACKER}\r\nSubject: {subject}\r\n"
            f"Message-ID: <sieve-{n}@remote.test>\r\n\r\nbody {n}\r\n").encode()


async def prepare_sieve(ctx: Context) -> None:
    script = ctx.server.data_dir.parent / "matches.sieve"
    script.write_text(sieve_script(), encoding="utf-8")
    run_cli("sieve", "put", ATTACKER, "main", str(script), "--data-dir", str(ctx.server.data_dir))


async def attack_sieve(ctx: Context, stop: asyncio.Event) -> None:
    sent = 0
    times: list[float] = []
    while not stop.is_set():
        reader, writer = await connect(ctx.port("smtp"), source="127.0.0.3")
        try:
            for command in (None, b"EHLO outsider.test", b"MAIL FROM:<outsider@remote.test>",
                            f"RCPT TO:<{ATTACKER}>".encode(), b"DATA"):
                if command is not None:
                    writer.write(command + b"\r\n")
                await smtp_reply(reader)
            started = time.perf_counter()
            writer.write(sieve_message(sent) + b".\r\n")
            reply = await smtp_reply(reader)
            times.append(time.perf_counter() - started)
            sent += 1
            if not reply.startswith(b"250"):
                ctx.notes.append(f"message {sent}: {reply.decode(errors='replace').strip()}")
                break
        finally:
            await close(writer)
    if times:
        ctx.notes.append(f"{sent} trigger messages, end of data to reply median "
                         f"{1000 * percentile(times, 50):.0f} ms")


async def attack_literal(ctx: Context, stop: asyncio.Event) -> None:
    chunk = b"x" * (256 * 1024)
    size = 51380224
    connections = 0

    async def one(i: int) -> int:
        # An attacker reconnects when cut off, for as long as the attack lasts.
        nonlocal connections
        sent = 0
        while not stop.is_set():
            try:
                reader, writer = await connect(ctx.port("imap"), source=f"127.0.1.{1 + i % 200}")
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            connections += 1
            try:
                await reader.readline()
                writer.write(b"a LOGIN {%d+}\r\n" % size)
                done = 0
                while done < size and not stop.is_set():
                    writer.write(chunk)
                    await writer.drain()
                    done += len(chunk)
                    sent += len(chunk)
            except (OSError, ConnectionError):
                pass
            finally:
                await close(writer)
        return sent

    sent = await asyncio.gather(*(one(i) for i in range(ctx.n(45))))
    ctx.notes.append(f"{ctx.n(45)} attackers, {connections} connections, "
                     f"{sum(sent) / MIB:.0f} MiB written to their sockets")


async def attack_data(ctx: Context, stop: asyncio.Event) -> None:
    line = b"y" * 998 + b"\r\n"
    block = line * 256
    size = 45 * 1000 * 1000

    async def one(i: int) -> int:
        sent = 0
        reader, writer = await connect(ctx.port("smtp"), source="127.0.0.4")
        try:
            for command in (None, b"EHLO data.test", b"MAIL FROM:<d@remote.test>",
                            f"RCPT TO:<{ATTACKER}>".encode(), b"DATA"):
                if command is not None:
                    writer.write(command + b"\r\n")
                reply = await smtp_reply(reader)
                if reply[:1] not in (b"2", b"3"):
                    ctx.notes.append(f"session {i}: {reply.decode(errors='replace').strip()}")
                    return sent
            while sent < size and not stop.is_set():
                writer.write(block)
                await writer.drain()
                sent += len(block)
            await stop.wait()  # hold the unfinished transaction open
        except (OSError, ConnectionError):
            pass
        finally:
            await close(writer)
        return sent

    sent = await asyncio.gather(*(one(i) for i in range(ctx.n(20))))
    ctx.notes.append(f"{len(sent)} sessions sent {sum(sent) / MIB:.0f} MiB of unfinished DATA")


def deflate_bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = b"a NOOP\r\n" * (MIB // 8)
    out = [compressor.compress(piece) for _ in range(inflated // len(piece))]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)


async def attack_deflate(ctx: Context, stop: asyncio.Event) -> None:
    bomb = deflate_bomb(ctx.n(256) * MIB)
    rounds = 0
    started = time.perf_counter()
    while not stop.is_set():
        reader, writer = await imap_login(ctx.port("imaps"), ctx.tls, ATTACKER,
                                          ATTACKER_PASSWORD)
        try:
            writer.write(b"z COMPRESS DEFLATE\r\n")
            answer = await imap_until(reader, b"z")
            if not answer.startswith(b"z OK"):
                ctx.notes.append(f"COMPRESS refused: {answer!r}")
                return
            rounds += 1
            writer.write(bomb)
            with contextlib.suppress(OSError, ConnectionError):
                await writer.drain()
                # Read (and discard) the compressed answers until the server cuts us off.
                while not stop.is_set():
                    if not await reader.read(65536):
                        break
        finally:
            await close(writer)
    ctx.notes.append(f"{rounds} bombs of {len(bomb) / 1024:.0f} KiB sent in "
                     f"{time.perf_counter() - started:.1f} s (a new login each)")


async def attack_handshake(ctx: Context, stop: asyncio.Event) -> None:
    writers: list[tuple[asyncio.StreamWriter, asyncio.StreamReader]] = []
    refused = 0
    for _ in range(ctx.n(1500)):
        try:
            reader, writer = await connect(ctx.port("imaps"), timeout=2)
            writers.append((writer, reader))
        except (TimeoutError, OSError):
            refused += 1
    await stop.wait()
    # The server closes what it will not serve: count what it has cut off by the end.
    cut = sum(1 for _, reader in writers if reader.at_eof())
    for writer, _ in writers:
        writer.transport.abort()
    ctx.notes.append(f"{len(writers)} TCP connections opened ({refused} refused at connect, "
                     f"{cut} closed by the server by the end)")


async def attack_slowloris(ctx: Context, stop: asyncio.Event) -> None:
    total, addresses = ctx.n(1100), 60
    opened = closed = 0

    async def one(i: int) -> None:
        nonlocal opened, closed
        try:
            _, writer = await connect(ctx.port("smtp"), source=f"127.0.2.{1 + i % addresses}",
                                      timeout=5)
        except (TimeoutError, OSError):
            return
        opened += 1
        try:
            for byte in b"EHLO slow.test\r\n" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 10)
                if stop.is_set():
                    return
        except (OSError, ConnectionError):
            closed += 1
        finally:
            await close(writer)

    await asyncio.gather(*(one(i) for i in range(total)))
    ctx.notes.append(f"{opened} of {total} slow connections opened, {closed} cut off by the "
                     "server")


@dataclass(frozen=True)
class Attack:
    name: str
    probe: str
    run: Callable[[Context, asyncio.Event], Awaitable[None]]
    prepare: Callable[[Context], Awaitable[None]] | None = None
    config: dict[str, dict[str, Any]] = field(default_factory=dict)


ATTACKS = (
    Attack("list", "imap-noop", attack_list, prepare_list,
           {"limits": {"max_mailboxes_per_account": 100_000}}),
    Attack("sieve", "imap-noop", attack_sieve, prepare_sieve),
    Attack("literal", "imap-noop", attack_literal),
    Attack("data", "smtp-deliver", attack_data),
    Attack("deflate", "imap-noop", attack_deflate),
    Attack("handshake", "imap-connect", attack_handshake),
    Attack("slowloris", "smtp-deliver", attack_slowloris),
)


def apply_config(data_dir: Path, tables: dict[str, dict[str, Any]]) -> None:
    import tomllib

    path = data_dir / "mailstead.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    rewrite_tables(path, {name: {**dict(config.get(name, {})), **values}
                          for name, values in tables.items()})


async def run_attack(ctx: Context, attack: Attack, seconds: float) -> dict[str, Any]:
    pid = ctx.server.pid
    baseline = status_kib(pid, "VmRSS")
    spec = ProbeSpec(attack.probe, ctx.port("imaps"), ctx.port("smtp"),
                     str(ctx.server.cert_path))
    mp = multiprocessing.get_context("spawn")
    probe_stop, probe_ready, results = mp.Event(), mp.Event(), mp.Queue()
    probe = mp.Process(target=_probe_main, args=(spec, probe_stop, probe_ready, results))
    probe.start()
    if not await asyncio.to_thread(probe_ready.wait, 60):
        ctx.notes.append("the second client never got an answer before the attack")
    stop = asyncio.Event()
    peak = [baseline]
    sampler = asyncio.create_task(sample_rss(pid, stop, peak))
    task = asyncio.create_task(attack.run(ctx, stop))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), seconds)
    stop.set()
    try:
        await asyncio.wait_for(task, 30)
    except TimeoutError:
        ctx.notes.append("the attack did not end within 30 s of its stop")
    except Exception as exc:
        ctx.notes.append(f"attack ended with {type(exc).__name__}: {exc}")
    probe_stop.set()
    samples, failures = await asyncio.to_thread(results.get, True, 60)
    await asyncio.to_thread(probe.join, 10)
    await sampler
    return {
        "samples": samples, "failures": failures, "baseline": baseline, "peak": peak[0],
        "hwm": status_kib(pid, "VmHWM"), "alive": ctx.server.alive(),
    }


def report(attack: Attack, result: dict[str, Any], notes: list[str]) -> None:
    samples: list[float] = result["samples"]
    slow = sum(1 for s in samples if s >= SAMPLE_CAP)
    if samples:
        figures = (f"p50 {1000 * percentile(samples, 50):.1f} ms, "
                   f"p99 {1000 * percentile(samples, 99):.1f} ms, "
                   f"max {1000 * max(samples):.1f} ms over {len(samples)} samples "
                   f"({slow} failed or over {SAMPLE_CAP:g} s)")
    else:
        figures = "no samples"
    print(f"== {attack.name}: second client ({attack.probe}): {figures}")
    print(f"   server RSS: baseline {result['baseline'] / 1024:.0f} MB, peak "
          f"{result['peak'] / 1024:.0f} MB, VmHWM {result['hwm'] / 1024:.0f} MB"
          f"{'' if result['alive'] else '; THE SERVER DIED'}")
    for note in notes:
        print(f"   {note}")
    for failure in result["failures"]:
        print(f"   probe failure: {failure}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated attack names")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each attack")
    parser.add_argument("--scale", type=float, default=1.0, help="size multiplier")
    args = parser.parse_args()
    chosen = [a for a in ATTACKS if not args.only or a.name in args.only.split(",")]
    if not chosen:
        parser.error(f"--only: expected some of {', '.join(a.name for a in ATTACKS)}")
    for attack in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            init_data_dir(data_dir, Users(passwords={ATTACKER: ATTACKER_PASSWORD,
                                                     VICTIM: VICTIM_PASSWORD}))
            if attack.config:
                apply_config(data_dir, attack.config)
            server = Server(data_dir).start(timeout=60)
            try:
                ctx = Context(server, args.scale, tls_context(server.cert_path))
                if attack.prepare is not None:
                    asyncio.run(attack.prepare(ctx))
                result = asyncio.run(run_attack(ctx, attack, args.seconds))
                report(attack, result, ctx.notes)
            finally:
                code = server.stop(timeout=60)
                if code not in (0, None):
                    print(f"   server exited {code}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
