"""PostgreSQL store: SMTP TLS reporting rows (interfaces.TlsReportStore, migration 0016),
shared by the nodes: each node adds its own sessions' counts, and the sent marks make each
daily report go out once whichever node builds it."""

from __future__ import annotations

from collections.abc import Sequence

from mailstead.storage.interfaces import ReceivedTlsReport, TlsResult
from mailstead.storage.postgres.base import PgBase, db_errors
from mailstead.storage.postgres.outbound import rowcount

_RESULT_COLUMNS = ("day, policy_domain, policy_type, policy_string, result_type, mx_host, "
                   "receiving_ip, sessions")


class TlsReportMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def add_tls_results(self, rows: Sequence[TlsResult]) -> None:
        if not rows:
            return
        self.check_open()
        async with db_errors("counting TLS sessions"), self.pool.acquire() as conn:
            await conn.executemany(
                f"INSERT INTO tls_results ({_RESULT_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (day, policy_domain, policy_type, policy_string, result_type,"
                " mx_host, receiving_ip)"
                " DO UPDATE SET sessions = tls_results.sessions + EXCLUDED.sessions",
                [(r.day, r.policy_domain, r.policy_type, r.policy_string, r.result_type,
                  r.mx_host, r.receiving_ip, r.sessions) for r in rows],
            )

    async def tls_results(self, day: str) -> list[TlsResult]:
        self.check_open()
        async with db_errors("reading TLS session counts"), self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_RESULT_COLUMNS} FROM tls_results WHERE day = $1"  # noqa: S608
                " ORDER BY policy_domain, policy_type, policy_string, result_type, mx_host,"
                " receiving_ip", day,
            )
        return [TlsResult(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7])) for r in rows]

    async def claim_tls_report(self, day: str, policy_domain: str, now: float) -> bool:
        self.check_open()
        async with db_errors("marking a TLS report sent"), self.pool.acquire() as conn:
            status: str = await conn.execute(
                "INSERT INTO tls_reports_sent (day, policy_domain, sent_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING", day, policy_domain, float(now),
            )
        return rowcount(status) > 0

    async def prune_tls_results(self, before_day: str) -> int:
        self.check_open()
        async with db_errors("pruning TLS session counts"), self.pool.acquire() as conn:
            a: str = await conn.execute("DELETE FROM tls_results WHERE day < $1", before_day)
            b: str = await conn.execute("DELETE FROM tls_reports_sent WHERE day < $1",
                                        before_day)
        return rowcount(a) + rowcount(b)

    async def add_received_tls_report(self, report: ReceivedTlsReport) -> bool:
        self.check_open()
        r = report
        async with db_errors("storing a TLS report"), self.pool.acquire() as conn:
            status: str = await conn.execute(
                "INSERT INTO tls_reports_received (received_at, organization, report_id,"
                " start_time, end_time, policy_domain, successes, failures, report)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                float(r.received_at), r.organization, r.report_id, r.start_time, r.end_time,
                r.policy_domain, r.successes, r.failures, r.report,
            )
        return rowcount(status) > 0

    async def received_tls_reports(self, limit: int) -> list[ReceivedTlsReport]:
        self.check_open()
        async with db_errors("reading TLS reports"), self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT received_at, organization, report_id, start_time, end_time,"
                " policy_domain, successes, failures, report, id FROM tls_reports_received"
                " ORDER BY received_at DESC, id DESC LIMIT $1", max(1, min(limit, 10_000)),
            )
        return [ReceivedTlsReport(float(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]),
                                  int(r[7]), r[8], int(r[9])) for r in rows]
