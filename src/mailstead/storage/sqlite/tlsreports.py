"""SMTP TLS reporting rows (migration 0016, interfaces.TlsReportStore). Write functions run on
the writer connection inside its transaction; reads take any connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailstead.storage.interfaces import ReceivedTlsReport, TlsResult

_RESULT_COLUMNS = ("day, policy_domain, policy_type, policy_string, result_type, mx_host, "
                   "receiving_ip, sessions")


def add_results(conn: sqlite3.Connection, rows: Sequence[TlsResult]) -> None:
    conn.executemany(
        f"INSERT INTO tls_results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (day, policy_domain, policy_type, policy_string, result_type, mx_host,"
        " receiving_ip) DO UPDATE SET sessions = sessions + excluded.sessions",
        [(r.day, r.policy_domain, r.policy_type, r.policy_string, r.result_type, r.mx_host,
          r.receiving_ip, r.sessions) for r in rows],
    )


def results(conn: sqlite3.Connection, day: str) -> list[TlsResult]:
    rows = conn.execute(
        f"SELECT {_RESULT_COLUMNS} FROM tls_results WHERE day = ?"  # noqa: S608
        " ORDER BY policy_domain, policy_type, policy_string, result_type, mx_host,"
        " receiving_ip", (day,),
    ).fetchall()
    return [TlsResult(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                      str(r[6]), int(r[7])) for r in rows]


def claim(conn: sqlite3.Connection, day: str, policy_domain: str, now: float) -> bool:
    cur = conn.execute(
        "INSERT INTO tls_reports_sent (day, policy_domain, sent_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING", (day, policy_domain, now),
    )
    return cur.rowcount > 0


def prune(conn: sqlite3.Connection, before_day: str) -> int:
    gone = conn.execute("DELETE FROM tls_results WHERE day < ?", (before_day,)).rowcount
    gone += conn.execute("DELETE FROM tls_reports_sent WHERE day < ?", (before_day,)).rowcount
    return int(gone)


def add_received(conn: sqlite3.Connection, r: ReceivedTlsReport) -> bool:
    cur = conn.execute(
        "INSERT INTO tls_reports_received (received_at, organization, report_id, start_time,"
        " end_time, policy_domain, successes, failures, report)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (r.received_at, r.organization, r.report_id, r.start_time, r.end_time,
         r.policy_domain, r.successes, r.failures, r.report),
    )
    return cur.rowcount > 0


def received(conn: sqlite3.Connection, limit: int) -> list[ReceivedTlsReport]:
    rows = conn.execute(
        "SELECT received_at, organization, report_id, start_time, end_time, policy_domain,"
        " successes, failures, report, id FROM tls_reports_received"
        " ORDER BY received_at DESC, id DESC LIMIT ?", (max(1, min(limit, 10_000)),),
    ).fetchall()
    return [ReceivedTlsReport(float(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]),
                              str(r[5]), int(r[6]), int(r[7]), str(r[8]), int(r[9]))
            for r in rows]
