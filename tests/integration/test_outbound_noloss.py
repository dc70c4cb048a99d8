"""Issue 5 no-loss proof: 1,000 queued messages, SIGKILL while they are being delivered,
restart: every message reaches the sink; only those in flight at the kill may arrive twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers import Server
from outbound_helpers import (
    DnsFixture,
    FastSink,
    Zone,
    free_port,
    make_instance,
    queue_directly,
    wait_for,
)

pytestmark = pytest.mark.slow
TOTAL = 1000


def test_sigkill_during_delivery_loses_nothing(tmp_path: Path) -> None:
    zone = Zone()
    dns_server = DnsFixture(zone)
    port = free_port("127.0.0.2", "127.0.0.7")
    # With PostgreSQL the restarted node cannot tell its own dead claims from a live node's:
    # they come back when their lease ends (queue/workers.py), so the lease is kept short.
    a = make_instance(tmp_path, "a.test", "127.0.0.2", dns_port=dns_server.port,
                      smtp_port=port, queue={"max_connections": 20,
                                             "max_connections_per_domain": 20,
                                             "connect_timeout": 0.5, "command_timeout": 1.5,
                                             "lease": 17})
    zone.add("sink.test", "MX", (10, "mx.sink.test"))
    zone.add("mx.sink.test", "A", "127.0.0.7")
    queue_directly(a.data_dir, "alice@a.test", "rcpt@sink.test", TOTAL)
    sink = FastSink("127.0.0.7", port)
    try:
        a.start()
        assert a.server is not None
        wait_for(lambda: sink.count() >= 150, 60, "deliveries before the kill", log=a.log)
        a.server.kill()
        at_kill = sink.count()
        assert at_kill < TOTAL, "everything was delivered before the kill; nothing was tested"
        a.server = Server(a.data_dir)
        a.server.start(timeout=30)
        wait_for(lambda: len(set(sink.tokens)) >= TOTAL, 120, "every message after restart",
                 log=a.log)
        wait_for(lambda: all(r.state == "delivered" for r in a.queue()), 30, "rows recorded")
        counts = Counter(sink.tokens)
        assert set(counts) == {str(i) for i in range(TOTAL)}
        twice = sum(1 for n in counts.values() if n > 1)
        print(f"\nno-loss: {TOTAL} messages, {at_kill} delivered before SIGKILL, "
              f"{twice} delivered twice")
        # Only rows in flight at the kill can repeat: at most the claim window.
        assert twice <= 20 * 4
        assert max(counts.values()) <= 2
    finally:
        code = a.stop()
        sink.stop()
        dns_server.stop()
    assert code == 0
    assert "Traceback" not in a.log(), a.log()[-8000:]
