"""The account-security tables (migration 0005): TOTP, recovery codes, app passwords, login
audit and IP blocks. Write functions run on the writer connection inside its transaction;
read functions take any connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from mailstead.core.errors import AlreadyExists, NotFound
from mailstead.storage.interfaces import (
    KEY_CHECK,
    KEY_SEALED,
    AppPassword,
    IpBlock,
    LoginRecord,
    SecondFactor,
)


def get_second_factor(conn: sqlite3.Connection, account_id: int) -> SecondFactor | None:
    row = conn.execute(
        "SELECT secret, last_counter, created_at,"
        " (SELECT COUNT(*) FROM recovery_codes r WHERE r.account_id = t.account_id)"
        " FROM totp t WHERE account_id = ?",
        (account_id,),
    ).fetchone()
    if row is None:
        return None
    return SecondFactor(account_id, str(row[0]), int(row[1]), float(row[2]), int(row[3]))


def set_second_factor(
    conn: sqlite3.Connection,
    account_id: int,
    secret: str,
    digests: Sequence[str],
    created_at: float,
) -> None:
    if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        raise NotFound(f"no account with id {account_id}")
    conn.execute("DELETE FROM recovery_codes WHERE account_id = ?", (account_id,))
    conn.execute(
        "INSERT INTO totp (account_id, secret, last_counter, created_at) VALUES (?, ?, -1, ?)"
        " ON CONFLICT (account_id) DO UPDATE SET secret = excluded.secret,"
        " last_counter = -1, created_at = excluded.created_at",
        (account_id, secret, created_at),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO recovery_codes (account_id, digest) VALUES (?, ?)",
        [(account_id, d) for d in digests],
    )


def remove_second_factor(conn: sqlite3.Connection, account_id: int) -> bool:
    conn.execute("DELETE FROM recovery_codes WHERE account_id = ?", (account_id,))
    return conn.execute("DELETE FROM totp WHERE account_id = ?", (account_id,)).rowcount > 0


def use_totp_counter(conn: sqlite3.Connection, account_id: int, counter: int) -> bool:
    cur = conn.execute(
        "UPDATE totp SET last_counter = ? WHERE account_id = ? AND last_counter < ?",
        (counter, account_id, counter),
    )
    return cur.rowcount > 0


def use_recovery_code(conn: sqlite3.Connection, account_id: int, digest: str) -> bool:
    cur = conn.execute(
        "DELETE FROM recovery_codes WHERE account_id = ? AND digest = ?", (account_id, digest)
    )
    return cur.rowcount > 0


_APP = (
    "SELECT id, account_id, name, digest, protocols, created_at, last_used, last_ip"
    " FROM app_passwords"
)


def _app(row: Sequence[object]) -> AppPassword:
    return AppPassword(
        id=int(row[0]),  # type: ignore[call-overload]
        account_id=int(row[1]),  # type: ignore[call-overload]
        name=str(row[2]),
        digest=str(row[3]),
        protocols=tuple(str(row[4]).split()),
        created_at=float(row[5]),  # type: ignore[arg-type]
        last_used=None if row[6] is None else float(row[6]),  # type: ignore[arg-type]
        last_ip=None if row[7] is None else str(row[7]),
    )


def add_app_password(
    conn: sqlite3.Connection,
    account_id: int,
    name: str,
    digest: str,
    protocols: Sequence[str],
    created_at: float,
) -> AppPassword:
    if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        raise NotFound(f"no account with id {account_id}")
    try:
        rows = conn.execute(
            "INSERT INTO app_passwords (account_id, name, name_key, digest, protocols,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (account_id, name, name.lower(), digest, " ".join(protocols), created_at),
        ).fetchall()
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"an app password named {name!r} exists already") from None
    return AppPassword(
        int(rows[0][0]), account_id, name, digest, tuple(protocols), created_at, None, None
    )


def list_app_passwords(conn: sqlite3.Connection, account_id: int) -> list[AppPassword]:
    rows = conn.execute(_APP + " WHERE account_id = ? ORDER BY id", (account_id,)).fetchall()
    return [_app(r) for r in rows]


def revoke_app_password(conn: sqlite3.Connection, account_id: int, name: str) -> None:
    cur = conn.execute(
        "DELETE FROM app_passwords WHERE account_id = ? AND name_key = ?",
        (account_id, name.lower()),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no app password named {name!r}")


def add_login_records(conn: sqlite3.Connection, records: Sequence[LoginRecord]) -> None:
    # An account removed since the attempt is recorded without it (its rows went with it).
    conn.executemany(
        "INSERT INTO login_audit (at, account_id, username, protocol, client_ip, mechanism,"
        " success, reason, app_password) VALUES (?, (SELECT id FROM accounts WHERE id = ?),"
        " ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.at,
                r.account_id,
                r.username,
                r.protocol,
                r.client_ip,
                r.mechanism,
                int(r.success),
                r.reason,
                r.app_password,
            )
            for r in records
        ],
    )
    conn.executemany(
        "UPDATE app_passwords SET last_used = ?, last_ip = ? WHERE id = ?"
        " AND (last_used IS NULL OR last_used <= ?)",
        [
            (r.at, r.client_ip, r.app_password_id, r.at)
            for r in records
            if r.success and r.app_password_id is not None
        ],
    )


def list_logins(conn: sqlite3.Connection, account_id: int, limit: int) -> list[LoginRecord]:
    rows = conn.execute(
        "SELECT at, account_id, username, protocol, client_ip, mechanism, success, reason,"
        " app_password FROM login_audit WHERE account_id = ? ORDER BY at DESC, id DESC LIMIT ?",
        (account_id, limit),
    ).fetchall()
    return [login_record(r) for r in rows]


def login_record(r: Sequence[Any]) -> LoginRecord:
    """A ``LoginRecord`` from its row: at, account_id, username, protocol, client_ip,
    mechanism, success, reason, app_password (both backends select these columns)."""
    return LoginRecord(
        at=float(r[0]),
        account_id=None if r[1] is None else int(r[1]),
        username=str(r[2]),
        protocol=str(r[3]),
        client_ip=str(r[4]),
        mechanism=str(r[5]),
        success=bool(r[6]),
        reason=str(r[7]),
        app_password=None if r[8] is None else str(r[8]),
    )


def prune_logins(conn: sqlite3.Connection, before: float) -> int:
    pruned = conn.execute("DELETE FROM login_audit WHERE at < ?", (before,)).rowcount
    # Expired blocks serve nobody: drop them with the old audit rows.
    conn.execute("DELETE FROM ip_blocks WHERE until < ?", (before,))
    return pruned


def add_block(conn: sqlite3.Connection, block: IpBlock) -> None:
    conn.execute(
        "INSERT INTO ip_blocks (network, until, failures, created_at, reason)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (network) DO UPDATE SET until = excluded.until,"
        " failures = excluded.failures, created_at = excluded.created_at,"
        " reason = excluded.reason",
        (block.network, block.until, block.failures, block.created_at, block.reason),
    )


def active_blocks(conn: sqlite3.Connection, now: float) -> list[IpBlock]:
    rows = conn.execute(
        "SELECT network, until, failures, created_at, reason FROM ip_blocks WHERE until > ?"
        " ORDER BY until",
        (now,),
    ).fetchall()
    return [IpBlock(str(r[0]), float(r[1]), int(r[2]), float(r[3]), str(r[4])) for r in rows]


def remove_block(conn: sqlite3.Connection, network: str) -> bool:
    return conn.execute("DELETE FROM ip_blocks WHERE network = ?", (network,)).rowcount > 0


# The installation key's record lives in store_meta (storage/migrate.py creates it before any
# migration), so no schema step is needed and every store has it.


def security_key_record(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
    rows = dict(conn.execute(
        "SELECT key, value FROM store_meta WHERE key IN (?, ?)", (KEY_CHECK, KEY_SEALED)
    ).fetchall())
    check, sealed = rows.get(KEY_CHECK), rows.get(KEY_SEALED)
    return (None if check is None else str(check), None if sealed is None else str(sealed))


def record_security_key(conn: sqlite3.Connection, check: str) -> str:
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (KEY_CHECK, check),
    )
    row = conn.execute("SELECT value FROM store_meta WHERE key = ?", (KEY_CHECK,)).fetchone()
    return str(row[0])


def set_sealed_security_key(conn: sqlite3.Connection, sealed: str | None) -> None:
    if sealed is None:
        conn.execute("DELETE FROM store_meta WHERE key = ?", (KEY_SEALED,))
        return
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (KEY_SEALED, sealed),
    )


def count_keyed_secrets(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM totp) + (SELECT COUNT(*) FROM app_passwords)"
    ).fetchone()
    return int(row[0])
