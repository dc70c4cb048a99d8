"""Outbound relay throughput: 10,000 queued 4 KB messages delivered by one ``mailstead serve``
to a raw asyncio SMTP sink on loopback, DKIM signing on (RSA-2048 + Ed25519). Prints the
delivered messages per second (issue 5 target: at least 500/s on a 2-core machine).

    PYTHONPATH=src .venv/bin/python bench/smtp_relay.py [--messages N] [--size BYTES]
        [--connections N] [--reuse-time SECONDS]

``--reuse-time 0`` turns outbound connection reuse off ([queue] connection_reuse_time), to
compare one connection per message with idle sessions reused after RSET.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from outbound_helpers import (
    DnsFixture,
    FastSink,
    Zone,
    free_port,
    make_instance,
    queue_directly,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--reuse-time", type=float, default=5.0,
                        help="[queue] connection_reuse_time (0: a connection per message)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zone = Zone()
        dns_server = DnsFixture(zone)
        port = free_port("127.0.0.2", "127.0.0.7")
        inst = make_instance(Path(tmp), "a.test", "127.0.0.2", dns_port=dns_server.port,
                             smtp_port=port,
                             queue={"max_connections": args.connections,
                                    "max_connections_per_domain": args.connections,
                                    "connection_reuse_time": args.reuse_time})
        zone.add("sink.test", "MX", (10, "mx.sink.test"))
        zone.add("mx.sink.test", "A", "127.0.0.7")
        t0 = time.monotonic()
        queue_directly(inst.data_dir, "alice@a.test", "rcpt@sink.test", args.messages,
                       args.size)
        print(f"queued {args.messages} messages of {args.size} B in "
              f"{time.monotonic() - t0:.1f} s")
        sink = FastSink("127.0.0.7", port)
        try:
            inst.start()
            start = time.monotonic()
            while sink.count() < args.messages:
                time.sleep(0.05)
                if time.monotonic() - start > 600:
                    print("timed out", file=sys.stderr)
                    return 1
            elapsed = time.monotonic() - start
            assert inst.server is not None
            cpu = inst.server.cpu_seconds()
            delivered = sink.count()
            print(f"reuse {args.reuse_time:g} s: delivered {delivered} messages in "
                  f"{elapsed:.2f} s: "
                  f"{delivered / elapsed:.0f} messages/s (server CPU {cpu:.1f} s; "
                  f"{sink.signed} carried both DKIM signatures)")
        finally:
            inst.stop()
            sink.stop()
            dns_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
