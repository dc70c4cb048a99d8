"""Mailboxes, subscriptions and quotas of the SQLite store (the ``MailStore`` interface).

Write functions run inside the writer thread's ``BEGIN IMMEDIATE`` transaction and add the
account they changed to ``touched``; the writer notifies that account's watchers after the
commit. Read functions run in a reader transaction.
"""

from __future__ import annotations

import sqlite3

from mailstead.core.errors import AlreadyExists, LimitExceeded, NotFound, StoreError
from mailstead.storage.interfaces import MailboxCounts, MailboxInfo, Quota, RecentInfo
from mailstead.storage.sqlite import admin, messages
from mailstead.storage.sqlite.writer import inbox_name

# RFC 9051 section 5.1: a server may impose a limit on mailbox names; 1000 octets is plenty
# for any real hierarchy and keeps hostile names out of the database.
MAX_NAME_LENGTH = 1000
DELIMITER = "/"  # the hierarchy delimiter (issue 3, "Mailbox names")

_INFO = (
    "SELECT b.id, b.account_id, b.name, b.special_use, b.uidvalidity, b.uidnext,"
    " b.highestmodseq, (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id)"
    " FROM mailboxes b"
)


def _info(row: tuple[object, ...]) -> MailboxInfo:
    return MailboxInfo(*row)  # type: ignore[arg-type]


def check_name(name: str) -> str:
    """The stored spelling of ``name``; StoreError for names no client can mean (the IMAP
    layer refuses escapes like ``..`` itself, with its own replies)."""
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
        raise StoreError("invalid mailbox name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise StoreError("mailbox names cannot contain control characters")
    return inbox_name(name)


def get_by_name(conn: sqlite3.Connection, account_id: int, name: str) -> MailboxInfo | None:
    row = conn.execute(
        _INFO + " WHERE b.account_id = ? AND b.name = ?", (account_id, inbox_name(name))
    ).fetchone()
    return None if row is None else _info(row)


def get_by_id(conn: sqlite3.Connection, mailbox_id: int) -> MailboxInfo | None:
    row = conn.execute(_INFO + " WHERE b.id = ?", (mailbox_id,)).fetchone()
    return None if row is None else _info(row)


def recent_info(conn: sqlite3.Connection, mailbox_id: int) -> RecentInfo:
    """The first recent UID and how many messages have a UID from it on (migration 0013)."""
    row = conn.execute(
        "SELECT b.first_recent_uid, (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id"
        " AND m.uid >= b.first_recent_uid) FROM mailboxes b WHERE b.id = ?", (mailbox_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    return RecentInfo(int(row[0]), int(row[1]))


def claim_recent(conn: sqlite3.Connection, mailbox_id: int, upto: int) -> int:
    """In the writer's transaction (one writer, and BEGIN IMMEDIATE against other processes):
    the first recent UID as it was, raised to ``upto``."""
    row = conn.execute(
        "SELECT first_recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    first = int(row[0])
    if upto > first:
        conn.execute(
            "UPDATE mailboxes SET first_recent_uid = ? WHERE id = ?", (upto, mailbox_id)
        )
    return first


def require_account(conn: sqlite3.Connection, account_id: int) -> None:
    if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        raise NotFound(f"no account {account_id}")


def _require(conn: sqlite3.Connection, account_id: int, name: str) -> int:
    row = conn.execute(
        "SELECT id FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, name)
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {name!r}")
    return int(row[0])


def check_limit(conn: sqlite3.Connection, account_id: int, limit: int | None) -> None:
    """LimitExceeded when the account has ``limit`` mailboxes already (inside the writer's
    transaction, so no other create slips in between the count and the insert)."""
    if limit is None:
        return
    count = conn.execute(
        "SELECT COUNT(*) FROM mailboxes WHERE account_id = ?", (account_id,)
    ).fetchone()[0]
    if int(count) >= limit:
        raise LimitExceeded(f"the account has {limit} mailboxes, the most it may have")


def create(
    conn: sqlite3.Connection,
    touched: set[int],
    account_id: int,
    name: str,
    special_use: str | None,
    limit: int | None = None,
) -> MailboxInfo:
    stored = check_name(name)
    require_account(conn, account_id)
    check_limit(conn, account_id, limit)
    mailbox_id = admin.create_mailbox(conn, account_id, stored, special_use)
    touched.add(account_id)
    info = get_by_id(conn, mailbox_id)
    assert info is not None
    return info


def delete(conn: sqlite3.Connection, touched: set[int], account_id: int, name: str) -> None:
    stored = inbox_name(name)
    if stored == "INBOX":  # RFC 9051 section 6.3.5: it is an error to delete INBOX
        raise StoreError("INBOX cannot be deleted")
    mailbox_id = _require(conn, account_id, stored)
    # Messages first, so the quota triggers still find the account through the mailbox;
    # their blobs become garbage for collect_garbage. Vanished rows go by ON DELETE CASCADE.
    conn.execute("DELETE FROM messages WHERE mailbox_id = ?", (mailbox_id,))
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
    touched.add(account_id)


def rename(
    conn: sqlite3.Connection,
    touched: set[int],
    account_id: int,
    old: str,
    new: str,
    limit: int | None = None,
) -> None:
    source = inbox_name(old)
    target = check_name(new)
    source_id = _require(conn, account_id, source)
    if conn.execute(
        "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, target)
    ).fetchone():
        raise AlreadyExists(f"mailbox {target!r} exists already")
    touched.add(account_id)
    if source == "INBOX":
        check_limit(conn, account_id, limit)  # the one rename that adds a mailbox
        _rename_inbox(conn, account_id, source_id, target)
        return
    if target == source or target.startswith(source + DELIMITER):
        raise StoreError("a mailbox cannot be renamed into itself")
    # Every inferior name moves with it (RFC 9051 section 6.3.6): "a/b" -> "x/b".
    prefix = source + DELIMITER
    children = conn.execute(
        "SELECT id, name FROM mailboxes WHERE account_id = ? AND substr(name, 1, ?) = ?",
        (account_id, len(prefix), prefix),
    ).fetchall()
    renames = [(source_id, target)] + [
        (int(i), target + DELIMITER + str(n)[len(prefix) :]) for i, n in children
    ]
    for _, name in renames[1:]:
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
            raise StoreError("the renamed mailbox name would be too long")
        if conn.execute(
            "SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, name)
        ).fetchone():
            raise AlreadyExists(f"mailbox {name!r} exists already")
    # Two steps through unique temporary names, so no intermediate state collides.
    for mailbox_id, _ in renames:
        conn.execute(
            "UPDATE mailboxes SET name = ? WHERE id = ?",
            (f"\x00rename\x00{mailbox_id}", mailbox_id),
        )
    conn.executemany("UPDATE mailboxes SET name = ? WHERE id = ?", [(n, i) for i, n in renames])


def _rename_inbox(conn: sqlite3.Connection, account_id: int, inbox_id: int, target: str) -> None:
    """RFC 3501 section 6.3.5 / RFC 9051 section 6.3.6: renaming INBOX moves its messages to
    a new mailbox of that name and leaves INBOX empty; INBOX's inferiors are unaffected."""
    new_id = admin.create_mailbox(conn, account_id, target, None)
    uids = [
        int(r[0])
        for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id = ?", (inbox_id,))
    ]
    if uids:
        messages.copy(conn, set(), inbox_id, uids, new_id, move=True)


# Flags are stored canonical and separated by single spaces (storage/flags.py), and a
# keyword cannot contain a backslash (RFC 9051 section 9, atom-specials), so a padded
# substring test finds exactly the system flag.
_COUNTS = (
    "SELECT m.mailbox_id, SUM(instr(' ' || m.flags || ' ', ' \\Seen ') = 0),"
    " SUM(instr(' ' || m.flags || ' ', ' \\Deleted ') > 0), SUM(m.size)"
    " FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    " WHERE b.account_id = ?"
)


def counts(
    conn: sqlite3.Connection, account_id: int, mailbox_id: int | None
) -> dict[int, MailboxCounts]:
    if mailbox_id is None:
        rows = conn.execute(_COUNTS + " GROUP BY m.mailbox_id", (account_id,))
    else:
        rows = conn.execute(
            _COUNTS + " AND m.mailbox_id = ? GROUP BY m.mailbox_id", (account_id, mailbox_id)
        )
    return {int(r[0]): MailboxCounts(int(r[1]), int(r[2]), int(r[3])) for r in rows}


def set_subscribed(
    conn: sqlite3.Connection,
    account_id: int,
    name: str,
    subscribed: bool,
    limit: int | None = None,
) -> None:
    require_account(conn, account_id)
    stored = check_name(name)
    if subscribed and limit is not None and not conn.execute(
        "SELECT 1 FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, stored)
    ).fetchone():
        count = conn.execute(
            "SELECT COUNT(*) FROM subscriptions WHERE account_id = ?", (account_id,)
        ).fetchone()[0]
        if int(count) >= limit:
            raise LimitExceeded(f"the account has {limit} subscriptions, the most it may have")
    if subscribed:
        conn.execute(
            "INSERT INTO subscriptions (account_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (account_id, stored),
        )
    else:
        conn.execute(
            "DELETE FROM subscriptions WHERE account_id = ? AND name = ?", (account_id, stored)
        )


def list_subscriptions(conn: sqlite3.Connection, account_id: int) -> list[str]:
    require_account(conn, account_id)
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM subscriptions WHERE account_id = ? ORDER BY name", (account_id,)
        )
    ]


def get_quota(conn: sqlite3.Connection, account_id: int) -> Quota:
    row = conn.execute(
        "SELECT used_bytes, quota, used_messages, quota_warned FROM accounts WHERE id = ?",
        (account_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no account {account_id}")
    return Quota(
        used=int(row[0]), limit=None if row[1] is None else int(row[1]), messages=int(row[2]),
        warned=int(row[3]),
    )


def swap_quota_warning(conn: sqlite3.Connection, account_id: int, level: int) -> int:
    """Runs in the writer's transaction, so the read and the write are one step."""
    row = conn.execute("SELECT quota_warned FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise NotFound(f"no account {account_id}")
    if int(row[0]) != level:
        conn.execute("UPDATE accounts SET quota_warned = ? WHERE id = ?", (level, account_id))
    return int(row[0])


def set_quota(conn: sqlite3.Connection, account_id: int, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise StoreError("a quota cannot be negative")
    if (
        conn.execute("UPDATE accounts SET quota = ? WHERE id = ?", (limit, account_id)).rowcount
        == 0
    ):
        raise NotFound(f"no account {account_id}")
