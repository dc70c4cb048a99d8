"""TlsReporter over a real store: the day's counts go to each domain's rua once (mailto: into
the queue, https: as a POST of the gzip'd JSON to a loopback HTTPS server), a domain without a
record gets none, a DNS failure leaves the report for the next round, and the maintenance job
reports yesterday and forgets old days."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import ssl
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.certs import generate_self_signed
from mailstead.dns.resolver import StaticResolver
from mailstead.maintenance import tls_reports_job
from mailstead.queue.tlsreport import GZIP_TYPE, TlsReporter
from mailstead.storage.interfaces import TlsResult
from mailstead.storage.sqlite.store import SQLiteStore

DAY = "2026-12-07"
NOON = 1796644800.0  # 2026-12-07 12:00 UTC


class Injected:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, list[str]]] = []

    async def inject(self, data: bytes, mail_from: str, accounts: dict[int, str],
                     remote: Sequence[str]) -> str:
        self.sent.append((data, mail_from, list(remote)))
        return "Q1"


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[int, list[tuple[str, bytes]], ssl.SSLContext]]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed("rua.b.test", cert, key)
    posts: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.headers["Content-Type"], body))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False  # the server is 127.0.0.1; the CA is pinned
    try:
        yield int(httpd.server_address[1]), posts, client_ctx
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_reports_go_out_once_by_mail_and_https(
    tmp_path: Path, https: tuple[int, list[tuple[str, bytes]], ssl.SSLContext]
) -> None:
    port, posts, context = https

    async def go() -> None:
        store = await SQLiteStore.open(tmp_path / "store")
        try:
            await store.add_domain("a.test")
            await store.add_tls_results([
                TlsResult(DAY, "b.test", "no-policy-found", "", "", "mx.b.test", "192.0.2.1", 4),
                TlsResult(DAY, "c.test", "no-policy-found", "", "", "mx.c.test", "192.0.2.2", 1),
                TlsResult(DAY, "d.test", "no-policy-found", "", "", "mx.d.test", "192.0.2.3", 1),
            ])
            resolver = StaticResolver(txt={
                "_smtp._tls.b.test": [f"v=TLSRPTv1; rua=mailto:r@b.test,https://127.0.0.1:{port}/r"],
                "c.test": ["v=spf1 -all"],
            }, temporary=["_smtp._tls.d.test"])
            injected = Injected()
            reporter = TlsReporter(store, resolver, injected, hostname="mail.a.test",
                                   https_context=context, clock=lambda: NOON + 86400)
            summary = await reporter.send_day(DAY)
            assert summary.sent == {"b.test": ["mailto:r@b.test", f"https://127.0.0.1:{port}/r"]}
            assert summary.not_asked == ["c.test"]
            assert len(summary.errors) == 1
            assert summary.errors[0].startswith("d.test")
            [(data, sender, rcpts)] = injected.sent
            assert (sender, rcpts) == ("tls-reports@a.test", ["r@b.test"])
            assert b"TLS-Report-Domain: b.test" in data
            [(media, body)] = posts
            assert media == GZIP_TYPE
            report = json.loads(gzip.decompress(body))
            assert report["policies"][0]["summary"]["total-successful-session-count"] == 4
            again = await reporter.send_day(DAY)
            assert again.sent == {}
            assert again.already == ["b.test"]
            assert len(injected.sent) == 1
            # The job: yesterday of its clock, then counts older than 30 days go.
            job = tls_reports_job(reporter, store, clock=lambda: NOON + 31 * 86400)
            assert await job.run() == 3 + 1  # three count rows, one sent mark
            assert await store.tls_results(DAY) == []
        finally:
            await store.close()

    asyncio.run(go())
