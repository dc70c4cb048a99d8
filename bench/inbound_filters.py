"""Inbound throughput through the full inbound path against the plain path (issue 9).

Starts a DNS server on loopback (dnslib) serving SPF, a DKIM key and a DMARC p=reject policy
for sender.test and a DNS blocklist zone (NXDOMAIN with an SOA, so misses are cached as on a
real resolver), then runs the same load as bench/smtp_inbound.py against a real
``mailstead serve`` in two configurations:

- plain: sender authentication, spam filter and Sieve off (the core benchmark's path);
- full: SPF + DKIM + DMARC, the built-in spam filter (authentication scores, the blocklist
  zone, each recipient's Bayesian classifier) and a Sieve script active for every recipient
  (fileinto and flag rules), every message DKIM-signed (relaxed/relaxed, RSA-2048) before the
  clock starts.

The resolver's TTL cache makes all but the first lookups cache hits, as on a busy MX.
The two runs alternate for ``--rounds`` rounds (each on a fresh data directory) and the
medians are compared, so that a noisy neighbour on the machine skews both sides alike.
Prints messages/s for every run, the medians and their ratio (target: all checks cost less
than half, i.e. at least 50% of the plain throughput).

    python bench/inbound_filters.py [--clients 20] [--messages 3000] [--size 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

import dkim  # noqa: E402 (the path set-up above must come first)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from dnslib import QTYPE, RCODE, RR, SOA, TXT, DNSRecord  # noqa: E402
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer  # noqa: E402
from helpers import (  # noqa: E402
    LoadStats,
    Server,
    Users,
    dot_stuff,
    init_data_dir,
    load_client,
    make_message,
    percentile,
    rewrite_tables,
    run_cli,
)

RECIPIENTS = [f"bench{i}@example.test" for i in range(1, 5)]
USERS = Users(passwords={address: "bench-Secret-1" for address in RECIPIENTS})
SENDER = "news@sender.test"
BLOCKLIST = "bl.bench.test"
# Each recipient's script: a few header and address tests, fileinto and imap4flags, as a user
# sorting mail would write; the benchmark's messages take the "bench" branch.
SIEVE = """require ["fileinto", "mailbox", "imap4flags"];
if header :contains "subject" ["invoice", "receipt"] {
    fileinto :create "Receipts";
    stop;
}
if address :is :domain "from" "lists.example.org" {
    addflag "$List";
    fileinto :create "Lists";
    stop;
}
if allof (header :matches "subject" "test bench-*", address :domain "from" "sender.test") {
    addflag "$Bench";
    fileinto :create "Bench";
}
if exists "x-priority" { addflag "\\\\Flagged"; }
"""


class Zone(BaseResolver):  # type: ignore[misc]
    """TXT records for sender.test; NXDOMAIN (with the zone's SOA, for negative caching as in
    RFC 2308 section 5) for everything else."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.queries = 0

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        self.queries += 1
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            zone = BLOCKLIST if name.endswith(BLOCKLIST) else "sender.test"
            reply.add_auth(RR(zone, QTYPE.SOA, ttl=3600, rdata=SOA(
                f"ns.{zone}", f"hostmaster.{zone}", (1, 3600, 600, 86400, 3600))))
        elif request.q.qtype == QTYPE.TXT:
            for text in self.records[name]:
                raw = text.encode()
                chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)]
                reply.add_answer(RR(name, QTYPE.TXT, ttl=3600, rdata=TXT(chunks)))
        return reply


def keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


def build(count: int, size: int, pem: bytes | None) -> list[tuple[str, str, str, bytes]]:
    """(token, sender, recipient, dot-stuffed payload), signed when ``pem`` is given."""
    out = []
    filler = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"
    for n in range(count):
        token = f"bench-{n}-{random.getrandbits(32):08x}"
        rcpt = RECIPIENTS[n % len(RECIPIENTS)]
        head = make_message(token, sender=SENDER, to=rcpt, body=b"")
        message = make_message(token, sender=SENDER, to=rcpt,
                               body=filler * max(1, (size - len(head)) // len(filler)))
        if pem is not None:
            message = dkim.sign(message, b"bench", b"sender.test", pem,
                                canonicalize=(b"relaxed", b"relaxed"),
                                include_headers=[b"from", b"to", b"subject", b"date",
                                                 b"message-id"]) + message
        out.append((token, SENDER, rcpt, dot_stuff(message)))
    return out


async def load(port: int, clients: int, jobs: list[tuple[str, str, str, bytes]]
               ) -> tuple[LoadStats, float]:
    stats = LoadStats()
    stop = asyncio.Event()
    shared = iter(jobs)
    start = time.perf_counter()
    await asyncio.gather(*(load_client(port, shared, stats, stop) for _ in range(clients)))
    return stats, time.perf_counter() - start


def run(base: Path, name: str, full: bool, dns_port: int, clients: int,
        jobs: list[tuple[str, str, str, bytes]]) -> float:
    data_dir = base / name
    init_data_dir(data_dir, USERS, {"max_connections": 1000, "max_connections_per_ip": 1000})
    rewrite_tables(data_dir / "mailstead.toml", {
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
        "auth_checks": {"enable": full},
        "spam": {"enable": full, "dnsbl_zones": [BLOCKLIST], "bayes": True,
                 "greylisting": False},
        "sieve": {"enable": full},
    })
    if full:
        script = base / "bench.sieve"
        script.write_text(SIEVE, encoding="utf-8")
        for rcpt in RECIPIENTS:
            run_cli("sieve", "put", rcpt, "bench", str(script), "--data-dir", str(data_dir))
    server = Server(data_dir, log_path=base / f"{name}.log").start()
    try:
        # One message first so the DNS cache is warm, as on a server that has been running.
        asyncio.run(load(server.ports["smtp"], 1, jobs[:1]))
        cpu_before = server.cpu_seconds()
        stats, wall = asyncio.run(load(server.ports["smtp"], clients, jobs[1:]))
        cpu = server.cpu_seconds() - cpu_before
    finally:
        code = server.stop()
    accepted = len(stats.accepted)
    ms = [v * 1000 for v in stats.latencies]
    rate = accepted / wall
    print(f"{name:>8}: {accepted} accepted in {wall:.2f} s = {rate:.1f} messages/s; "
          f"p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms; "
          f"server CPU {cpu / max(accepted, 1) * 1e6:.0f} us/message; errors {stats.errors}; "
          f"exit {code}")
    if stats.errors:
        print(f"        e.g. {stats.error_samples[:3]}")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=4096, help="approximate bytes per message")
    parser.add_argument("--rounds", type=int, default=3, help="plain/checks pairs (median)")
    args = parser.parse_args(argv)

    pem, pub = keypair()
    zone = Zone({
        "sender.test": ["v=spf1 ip4:127.0.0.0/8 -all"],
        "bench._domainkey.sender.test": [f"v=DKIM1; k=rsa; p={pub}"],
        "_dmarc.sender.test": ["v=DMARC1; p=reject"],
    })
    dns = DNSServer(zone, port=0, address="127.0.0.1", tcp=False,
                    logger=DNSLogger(logf=lambda _s: None))
    dns.start_thread()
    plain_jobs = build(args.messages + 1, args.size, None)
    signed_jobs = build(args.messages + 1, args.size, pem)
    print(f"clients {args.clients}, messages {args.messages}, size ~{args.size} bytes, "
          f"rounds {args.rounds}")
    plains: list[float] = []
    fulls: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mailstead-bench-") as tmp:
            base = Path(tmp)
            port = dns.server.server_address[1]
            for r in range(max(1, args.rounds)):
                plains.append(run(base, f"plain{r + 1}", False, port, args.clients, plain_jobs))
                before = zone.queries
                fulls.append(run(base, f"full{r + 1}", True, port, args.clients, signed_jobs))
                print(f"          DNS queries during the full run: {zone.queries - before}")
    finally:
        dns.stop()
        dns.server.server_close()
    plain, full = statistics.median(plains), statistics.median(fulls)
    ratio = full / plain if plain else 0.0
    print(f"median: plain {plain:.1f} messages/s, full inbound {full:.1f} messages/s")
    print(f"full inbound (SPF+DKIM+DMARC, built-in spam filter, Sieve): {ratio:.0%} of plain "
          f"throughput (target: at least 50%) -> {'ok' if ratio >= 0.5 else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
