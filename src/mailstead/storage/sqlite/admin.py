"""The write transactions of domains, accounts and aliases, run on the writer connection.

Each function runs inside a ``BEGIN IMMEDIATE`` transaction opened by the writer thread and
raises a StoreError subclass to roll it back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.interfaces import DEFAULT_MAILBOXES, Account, LoginRecord, address_key
from mailstead.storage.sqlite.security import login_record


def split_domain(address: str) -> str:
    """The lower-cased domain of ``local@domain`` or ``@domain``; StoreError if there is none."""
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        raise StoreError(f"not an address: {address[:200]!r}")
    del local
    return domain.lower()


def domain_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM domains WHERE name = ?", (name.lower(),)).fetchone()
    if row is None:
        raise NotFound(f"domain {name} is not a local domain")
    return int(row[0])


def add_domain(conn: sqlite3.Connection, name: str) -> None:
    try:
        conn.execute(
            "INSERT INTO domains (name, created_at) VALUES (?, ?)", (name.lower(), time.time())
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"domain {name} exists already") from None


def remove_domain(conn: sqlite3.Connection, name: str) -> None:
    ident = domain_id(conn, name)
    accounts = conn.execute(
        "SELECT COUNT(*) FROM accounts WHERE domain_id = ?", (ident,)
    ).fetchone()[0]
    aliases = conn.execute(
        "SELECT COUNT(DISTINCT source) FROM aliases WHERE domain_id = ?", (ident,)
    ).fetchone()[0]
    if accounts or aliases:
        raise InUse(
            f"domain {name} still has {accounts} account(s) and {aliases} alias(es); "
            "remove them first"
        )
    conn.execute("DELETE FROM domains WHERE id = ?", (ident,))
    # The domain's DKIM keys go with it (same transaction): a private key must not outlive
    # the domain, and a domain added again later gets fresh keys, not its old ones.
    conn.execute("DELETE FROM dkim_keys WHERE domain = ?", (name.lower(),))


def next_uidvalidity(conn: sqlite3.Connection) -> int:
    """A UIDVALIDITY never handed out before in this store: creation time in seconds, bumped
    past the last one so a mailbox deleted and recreated within a second still gets a new
    value (RFC 3501 section 2.3.1.1). Fits 32 bits until 2106."""
    now = int(time.time())
    rows = conn.execute(
        "UPDATE meta SET value = CASE WHEN value + 1 > ? THEN value + 1 ELSE ? END"
        " WHERE name = 'last_uidvalidity' RETURNING value",
        (now, now),
    ).fetchall()
    return int(rows[0][0])


def add_account(conn: sqlite3.Connection, address: str, password_hash: str) -> Account:
    ident = domain_id(conn, split_domain(address))
    if not address.rpartition("@")[0]:
        raise StoreError(f"not an account address: {address[:200]!r}")
    created = time.time()
    try:
        account_id = conn.execute(
            "INSERT INTO accounts (domain_id, address, address_key, password_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (ident, address, address_key(address), password_hash, created),
        ).fetchall()[0][0]
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"account {address} exists already") from None
    for name, special_use in DEFAULT_MAILBOXES:
        create_mailbox(conn, int(account_id), name, special_use)
    return Account(int(account_id), address, password_hash, created)


def create_mailbox(
    conn: sqlite3.Connection, account_id: int, name: str, special_use: str | None
) -> int:
    try:
        rows = conn.execute(
            "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, uidnext,"
            " highestmodseq) VALUES (?, ?, ?, ?, 1, 1) RETURNING id",
            (account_id, name, special_use, next_uidvalidity(conn)),
        ).fetchall()
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"mailbox {name!r} exists already") from None
    return int(rows[0][0])


def set_password(conn: sqlite3.Connection, address: str, password_hash: str) -> None:
    cur = conn.execute(
        "UPDATE accounts SET password_hash = ? WHERE address_key = ?",
        (password_hash, address_key(address)),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no account {address}")


def remove_account(conn: sqlite3.Connection, address: str) -> None:
    # Mailboxes and messages go by ON DELETE CASCADE; their blobs wait for collect_garbage.
    cur = conn.execute("DELETE FROM accounts WHERE address_key = ?", (address_key(address),))
    if cur.rowcount == 0:
        raise NotFound(f"no account {address}")


def add_alias(conn: sqlite3.Connection, source: str, targets: Sequence[str]) -> None:
    if not targets:
        raise StoreError("an alias needs at least one target")
    ident = domain_id(conn, split_domain(source))
    for target in targets:
        split_domain(target)  # a target must at least look like an address
        conn.execute(
            "INSERT INTO aliases (domain_id, source, source_key, target, target_key)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source_key, target_key) DO NOTHING",
            (ident, source, address_key(source), target, address_key(target)),
        )


def remove_alias(conn: sqlite3.Connection, source: str, targets: Sequence[str]) -> None:
    key = address_key(source)
    if not targets:
        if conn.execute("DELETE FROM aliases WHERE source_key = ?", (key,)).rowcount == 0:
            raise NotFound(f"no alias {source}")
        return
    for target in targets:
        cur = conn.execute(
            "DELETE FROM aliases WHERE source_key = ? AND target_key = ?",
            (key, address_key(target)),
        )
        if cur.rowcount == 0:  # raising rolls back the targets already removed: all or nothing
            raise NotFound(f"alias {source} has no target {target}")


# Administrators (issue 7, migration 0006) ------------------------------------------------


def set_admin(conn: sqlite3.Connection, address: str, admin: bool) -> None:
    cur = conn.execute(
        "UPDATE accounts SET is_admin = ? WHERE address_key = ?",
        (1 if admin else 0, address_key(address)),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no account {address}")


def is_admin(conn: sqlite3.Connection, account_id: int) -> bool:
    row = conn.execute("SELECT is_admin FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return row is not None and bool(row[0])


def list_admin_ids(conn: sqlite3.Connection) -> list[int]:
    rows = conn.execute("SELECT id FROM accounts WHERE is_admin = 1 ORDER BY id").fetchall()
    return [int(r[0]) for r in rows]


def recent_login_failures(conn: sqlite3.Connection, limit: int) -> list[LoginRecord]:
    """The newest failed attempts of every account (and of unknown names), newest first."""
    rows = conn.execute(
        "SELECT at, account_id, username, protocol, client_ip, mechanism, success, reason,"
        " app_password FROM login_audit WHERE success = 0 ORDER BY at DESC, id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [login_record(r) for r in rows]
