"""The TlsReportStore contract (SMTP TLS reporting, migration 0016) on every backend: session
counts add up per (day, policy, result) key, a day's report is claimed once, old days are
pruned, and a received report is kept once per (organization, report id)."""

from __future__ import annotations

from pathlib import Path

from mailstead.storage.interfaces import ReceivedTlsReport, Store, TlsResult
from storebackends import Opener
from storebackends import run_with as run

POLICY = "version: STSv1\nmode: enforce\nmx: mx.b.test\nmax_age: 86400"


def _r(day: str, result: str, n: int, domain: str = "b.test") -> TlsResult:
    return TlsResult(day, domain, "sts", POLICY, result, "mx.b.test", "192.0.2.1", n)


def test_results_add_up_and_prune(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        await store.add_tls_results([])
        await store.add_tls_results([_r("2026-12-07", "", 2), _r("2026-12-07", "", 3),
                                     _r("2026-12-07", "validation-failure", 1),
                                     _r("2026-12-06", "", 9, "a.test")])
        await store.add_tls_results([_r("2026-12-07", "validation-failure", 4)])
        got = await store.tls_results("2026-12-07")
        assert [(r.result_type, r.sessions) for r in got] == [("", 5),
                                                              ("validation-failure", 5)]
        assert got[0].policy_string == POLICY
        assert got[0].mx_host == "mx.b.test"
        assert [r.sessions for r in await store.tls_results("2026-12-06")] == [9]
        assert await store.claim_tls_report("2026-12-06", "a.test", 1.0)
        assert not await store.claim_tls_report("2026-12-06", "a.test", 2.0)
        assert await store.claim_tls_report("2026-12-06", "b.test", 2.0)
        assert await store.prune_tls_results("2026-12-07") == 3  # 1 count, 2 marks
        assert await store.tls_results("2026-12-06") == []
        assert len(await store.tls_results("2026-12-07")) == 2
        assert await store.claim_tls_report("2026-12-06", "a.test", 3.0)

    run(opener, tmp_path, body)


def test_received_reports_once_newest_first(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        first = ReceivedTlsReport(10.0, "Big Mail Inc.", "r-1", "2026-12-06T00:00:00Z",
                                  "2026-12-06T23:59:59Z", "example.test", 7, 1, '{"x": 1}')
        assert await store.add_received_tls_report(first)
        assert not await store.add_received_tls_report(first)
        second = ReceivedTlsReport(20.0, "Big Mail Inc.", "r-2", "2026-12-07T00:00:00Z",
                                   "2026-12-07T23:59:59Z", "example.test", 3, 0, "{}")
        assert await store.add_received_tls_report(second)
        got = await store.received_tls_reports(10)
        assert [r.report_id for r in got] == ["r-2", "r-1"]
        assert (got[1].successes, got[1].failures, got[1].report) == (7, 1, '{"x": 1}')
        assert got[0].id > 0
        assert [r.report_id for r in await store.received_tls_reports(1)] == ["r-2"]

    run(opener, tmp_path, body)
