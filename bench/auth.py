"""Login cost: argon2id logins per second at a given cost, and whether other sessions stay
responsive while a burst of logins hashes (hashing runs in threads, off the event loop).

1. In-process: argon2id verifications per second with the chosen parameters, on one thread
   and on all cores, so an admin can pick ``[security] argon2_*`` knowingly.
2. Against a real ``mailstead serve``: N clients log in over IMAPS (fresh connection, LOGIN,
   LOGOUT) for some seconds while one logged-in session sends NOOP in a loop; prints logins/s
   and the p50/p99/max latency of that NOOP, with and without the burst. Run twice: with the
   login cache off (``login_cache_ttl = 0``: every login runs argon2id) and on (the default
   300 s: one user logging in again and again runs argon2id once).

    python bench/auth.py [--time-cost 3] [--memory-cost 65536] [--parallelism 4]
                         [--clients 16] [--seconds 10] [--cache-ttl 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

from helpers import (  # noqa: E402 (the path set-up above must come first)
    AsyncIMAP,
    Server,
    Users,
    init_data_dir,
    percentile,
    rewrite_tables,
    tls_context,
)

from mailstead.accounts.passwords import hash_password, make_hasher, verify_password  # noqa: E402
from mailstead.core.secret import Secret  # noqa: E402

USER = "bench@example.test"
PASSWORD = "bench-Secret-password"


def hashing_rate(time_cost: int, memory_cost: int, parallelism: int, seconds: float) -> None:
    hasher = make_hasher(time_cost, memory_cost, parallelism)
    stored = hash_password(Secret(PASSWORD), hasher)
    secret = Secret(PASSWORD)

    def run_for(deadline: float) -> int:
        n = 0
        while time.monotonic() < deadline:
            verify_password(stored, secret, hasher)
            n += 1
        return n

    one = run_for(time.monotonic() + seconds / 2)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        deadline = time.monotonic() + seconds / 2
        total = sum(pool.map(run_for, [deadline] * workers))
    print(f"argon2id t={time_cost} m={memory_cost} KiB p={parallelism}: "
          f"{one / (seconds / 2):.1f} verifications/s on one thread "
          f"({1000 * (seconds / 2) / max(1, one):.1f} ms each), "
          f"{total / (seconds / 2):.1f}/s on {workers} threads")


async def noop_loop(port: int, tls: object, stop: asyncio.Event, out: list[float]) -> None:
    client = await AsyncIMAP.connect(port, tls=tls)  # type: ignore[arg-type]
    try:
        answer = await client.command(f'LOGIN "{USER}" "{PASSWORD}"')
        assert answer.tagged.split()[1] == b"OK", answer
        while not stop.is_set():
            started = time.perf_counter()
            answer = await client.command("NOOP")
            out.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
    finally:
        await client.close()


async def login_loop(port: int, tls: object, stop: asyncio.Event, done: list[float],
                     errors: list[str]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            client = await AsyncIMAP.connect(port, tls=tls)  # type: ignore[arg-type]
            try:
                answer = await client.command(f'LOGIN "{USER}" "{PASSWORD}"')
                if answer.tagged.split()[1] != b"OK":
                    errors.append(answer.tagged.decode(errors="replace"))
                else:
                    done.append(time.perf_counter() - started)
                await client.command("LOGOUT")
            finally:
                await client.close()
        except (OSError, ConnectionError) as exc:
            errors.append(repr(exc))


def show(name: str, values: list[float]) -> None:
    if not values:
        print(f"{name}: no samples")
        return
    print(f"{name}: {len(values)} samples, p50 {1000 * percentile(values, 50):.2f} ms, "
          f"p99 {1000 * percentile(values, 99):.2f} ms, max {1000 * max(values):.2f} ms")


async def server_burst(port: int, tls: object, clients: int, seconds: float) -> None:
    quiet: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(noop_loop(port, tls, stop, quiet))
    await asyncio.sleep(min(3.0, seconds / 3))
    stop.set()
    await task
    show("NOOP, no logins running", quiet)

    busy: list[float] = []
    logins: list[float] = []
    errors: list[str] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(noop_loop(port, tls, stop, busy))]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    tasks += [asyncio.create_task(login_loop(port, tls, stop, logins, errors))
              for _ in range(clients)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    print(f"burst: {clients} clients, {len(logins)} IMAPS logins in {elapsed:.1f} s = "
          f"{len(logins) / elapsed:.1f} logins/s ({len(errors)} errors"
          f"{': ' + errors[0] if errors else ''})")
    show("login (connect + TLS + LOGIN)", logins)
    show("NOOP on another session during the burst", busy)


def run_server(args: argparse.Namespace, cache_ttl: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        security = {
            "argon2_time_cost": args.time_cost,
            "argon2_memory_cost": args.memory_cost,
            "argon2_parallelism": args.parallelism,
            "login_cache_ttl": cache_ttl,
        }
        init_data_dir(data_dir, Users(passwords={USER: PASSWORD}), security=security)
        rewrite_tables(data_dir / "mailstead.toml", {
            "imap": {"max_connections_per_ip": 10_000, "max_connections_per_account": 10_000},
        })
        server = Server(data_dir).start(timeout=30)
        try:
            asyncio.run(server_burst(server.ports["imaps"], tls_context(server.cert_path),
                                     args.clients, args.seconds))
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-cost", type=int, default=3)
    parser.add_argument("--memory-cost", type=int, default=65536)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cache-ttl", type=float, default=300.0)
    args = parser.parse_args()
    hashing_rate(args.time_cost, args.memory_cost, args.parallelism, min(args.seconds, 6.0))
    for label, ttl in (("uncached (login_cache_ttl = 0)", 0.0),
                       (f"cached (login_cache_ttl = {args.cache_ttl:g})", args.cache_ttl)):
        print(f"--- {label}")
        run_server(args, ttl)


if __name__ == "__main__":
    main()
