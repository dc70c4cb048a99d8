"""``mailstead doctor`` against a running Mailstead, with every outside service on loopback:
a dnslib DNS server holding the domain's zone (and a blocklist zone), an SNTP responder and
a port-25 probe host. A healthy setup passes; removing a DKIM record and listing our address
on the blocklist give the exact FAIL lines and exit status 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dnslib import MX, PTR, QTYPE, RR, SRV, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from helpers import (
    HOSTNAME,
    REPO,
    Server,
    Users,
    _open_store,
    child_env,
    init_data_dir,
    rewrite_tables,
)

DOMAIN = "example.test"
BL_ZONE = "bl.test"


@dataclass
class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from a dict (name, type) -> [rdata]; names absent are NXDOMAIN."""

    records: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        for rdata in self.records.get((name, qtype), []):
            reply.add_answer(RR(name + ".", request.q.qtype, rdata=rdata, ttl=1))
        if not reply.rr and not any(key[0] == name for key in self.records):
            reply.header.rcode = 3  # NXDOMAIN
        return reply


def sntp_responder(stop: threading.Event, sock: socket.socket, skew: float) -> None:
    """Answer SNTP requests (RFC 4330 section 5) with our clock plus ``skew``."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(512)
        except OSError:
            continue
        now = time.time() + skew + 2_208_988_800
        stamp = struct.pack("!II", int(now), int((now % 1) * 2**32))
        answer = bytes([0x24, 2, 6, 0xEC]) + bytes(8) + b"LOCL" + stamp + data[40:48] + \
            stamp + stamp
        sock.sendto(answer, peer)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _dkim_keys(data_dir: Path) -> list[Any]:
    store = await _open_store(data_dir)
    try:
        return list(await store.dkim_keys(DOMAIN))
    finally:
        await store.close()


@dataclass
class Setup:
    server: Server
    zone: Zone
    selectors: list[str]

    def doctor(self) -> tuple[int, str, dict[str, dict[str, str]]]:
        base = [sys.executable, "-m", "mailstead", "doctor", "--data-dir",
                str(self.server.data_dir), "--timeout", "2"]
        text = subprocess.run(base, capture_output=True, text=True, env=child_env(), cwd=REPO,
                              timeout=120, check=False)
        js = subprocess.run([*base, "--json"], capture_output=True, text=True,
                            env=child_env(), cwd=REPO, timeout=120, check=False)
        assert text.returncode == js.returncode, text.stdout + text.stderr
        assert "Traceback" not in text.stderr + js.stderr
        checks = {c["name"]: c for c in json.loads(js.stdout)["checks"]}
        return text.returncode, text.stdout, checks


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Setup]:
    data_dir = tmp_path_factory.mktemp("doctor") / "data"
    init_data_dir(data_dir, Users({"alice@example.test": "Alice-pass-123"}))
    zone = Zone()
    dns_server = DNSServer(zone, port=0, address="127.0.0.1",
                           logger=DNSLogger(logf=lambda _: None))
    dns_server.start_thread()
    dns_port = dns_server.server.server_address[1]
    ntp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ntp.bind(("127.0.0.1", 0))
    stop = threading.Event()
    ntp_thread = threading.Thread(target=sntp_responder, args=(stop, ntp, 0.0), daemon=True)
    ntp_thread.start()
    # Every listener the config ``init`` writes, each on a fixed free port (port 0 is a WARN).
    written = tomllib.loads((data_dir / "mailstead.toml").read_text())["listen"]
    # Held open together while they are picked, so no two listeners get the same port.
    with contextlib.ExitStack() as held:
        socks = {name: held.enter_context(socket.socket()) for name in written}
        for sock in socks.values():
            sock.bind(("127.0.0.1", 0))
        ports = {name: int(sock.getsockname()[1]) for name, sock in socks.items()}
    rewrite_tables(data_dir / "mailstead.toml", {
        "listen": {name: f"127.0.0.1:{port}" for name, port in ports.items()},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
        # Our own port 25 stands in for the outside MX that outbound port 25 must reach.
        "doctor": {"dnsbl_zones": [BL_ZONE], "probe_host": f"127.0.0.1:{ports['smtp']}",
                   "time_server": f"127.0.0.1:{ntp.getsockname()[1]}"},
    })
    keys = asyncio.run(_dkim_keys(data_dir))
    records: dict[tuple[str, str], list[Any]] = {
        (HOSTNAME, "A"): [A("127.0.0.1")],
        (HOSTNAME, "TXT"): [TXT("v=spf1 a -all")],
        (DOMAIN, "MX"): [MX(HOSTNAME + ".", 10)],
        (DOMAIN, "TXT"): [TXT("v=spf1 mx -all")],
        (f"_dmarc.{DOMAIN}", "TXT"): [TXT("v=DMARC1; p=quarantine")],
        (f"autoconfig.{DOMAIN}", "A"): [A("127.0.0.1")],
        ("1.0.0.127.in-addr.arpa", "PTR"): [PTR(HOSTNAME + ".")],
    }
    for key in keys:
        kind = "ed25519" if key.algorithm.startswith("ed25519") else "rsa"
        value = f"v=DKIM1; k={kind}; p={key.public_key}"
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
        records[(f"{key.selector}._domainkey.{DOMAIN}", "TXT")] = [TXT(chunks)]
    for srv_name, listener in (("_submissions._tcp", "submissions"),
                               ("_submission._tcp", "submission"), ("_imaps._tcp", "imaps"),
                               ("_imap._tcp", "imap"), ("_pop3s._tcp", "pop3s"),
                               ("_pop3._tcp", "pop3")):
        records[(f"{srv_name}.{DOMAIN}", "SRV")] = [
            SRV(priority=0, weight=1, port=ports[listener], target=HOSTNAME + ".")]
    zone.records = records
    server = Server(data_dir).start()
    try:
        yield Setup(server, zone, [k.selector for k in keys if k.active])
    finally:
        assert server.stop() == 0
        stop.set()
        ntp_thread.join()
        ntp.close()
        dns_server.stop()
        dns_server.server.server_close()


def test_healthy(setup: Setup) -> None:
    code, text, checks = setup.doctor()
    assert code == 0, text
    assert "the check itself failed" not in text, text
    listeners = tomllib.loads((setup.server.data_dir / "mailstead.toml").read_text())["listen"]
    assert {"smtp", "submissions", "imap", "pop3s", "managesieve", "http"} <= set(listeners)
    for name in listeners:
        found = [c for n, c in checks.items() if n.startswith(f"listener {name} ")]
        assert found, (name, text)
        assert found[0]["status"] == "PASS", (name, text)
    sieve = next(c for n, c in checks.items() if n.startswith("listener managesieve "))
    assert sieve["why"] == "answers ManageSieve with STARTTLS", sieve
    assert checks["certificate name"]["status"] == "PASS"
    assert checks["certificate chain"]["status"] == "WARN"  # self-signed
    assert "self-signed" in checks["certificate chain"]["why"]
    for name in (f"dns {HOSTNAME} A/AAAA", f"dns {DOMAIN} MX", f"dns {DOMAIN} SPF",
                 f"dns _dmarc.{DOMAIN}", f"dns {DOMAIN} SRV", f"dns autoconfig.{DOMAIN}",
                 "dns PTR 127.0.0.1", f"blocklist {BL_ZONE} 127.0.0.1", "outbound port 25",
                 "queue", "clock"):
        assert checks[name]["status"] == "PASS", (name, text)
    for selector in setup.selectors:
        assert checks[f"dns {selector}._domainkey.{DOMAIN}"]["status"] == "PASS"
    assert checks[f"mta-sts {DOMAIN}"]["status"] == "WARN"
    assert text.splitlines()[-1].endswith(" 0 failed")


def test_broken(setup: Setup) -> None:
    selector = setup.selectors[0]
    removed = setup.zone.records.pop((f"{selector}._domainkey.{DOMAIN}", "TXT"))
    listed = {(f"1.0.0.127.{BL_ZONE}", "A"): [A("127.0.0.2")],
              (f"1.0.0.127.{BL_ZONE}", "TXT"): [TXT("listed for a test")]}
    setup.zone.records.update(listed)
    try:
        code, text, checks = setup.doctor()
    finally:
        setup.zone.records[(f"{selector}._domainkey.{DOMAIN}", "TXT")] = removed
        for key in listed:
            setup.zone.records.pop(key)
    assert code == 1
    dkim = checks[f"dns {selector}._domainkey.{DOMAIN}"]
    assert dkim["status"] == "FAIL"
    assert dkim["why"].startswith("missing (")
    assert f"mailstead dns {DOMAIN}" in dkim["fix"]
    bl = checks[f"blocklist {BL_ZONE} 127.0.0.1"]
    assert bl["status"] == "FAIL"
    assert bl["why"] == ("LISTED (127.0.0.2): listed for a test: many receivers refuse our "
                         "mail")
    assert f"FAIL  dns {selector}._domainkey.{DOMAIN}: missing" in text
