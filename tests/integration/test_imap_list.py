"""LIST with thousands of mailboxes on a real server.

An account with thousands of mailboxes (made by a hostile or careless client with CREATE)
must not stall LIST for its own client nor every other client of the process: LIST answers
in one pass, and another session's NOOP is answered within a second while LIST loops.
"""

from __future__ import annotations

import threading
import time

from helpers import (
    Harness,
    RawIMAP,
    create_mailboxes,
    rss_kib,
)

Account = tuple[str, str]

MANY = 3000  # 4,500 names with their parents; the quadratic LIST took 1.4 s here


def session(h: Harness, account: Account) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    client.login(*account)
    return client


def test_list_of_thousands_of_mailboxes_is_fast_and_stalls_nobody(
    imap_server: Harness, imap_account: Account
) -> None:
    # p<k>/box<i>: 1,500 parents with two children each, as a hierarchy of folders makes.
    names = [f"p{i % (MANY // 2)}/box{i}" for i in range(MANY)]
    create_mailboxes(imap_server.data_dir, imap_account[0], names)
    rss_before = rss_kib(imap_server.server.pid)
    with session(imap_server, imap_account) as lister, \
            session(imap_server, imap_account) as other:
        started = time.monotonic()
        response = lister.command('LIST "" "*"')
        elapsed = time.monotonic() - started
        assert response.status == b"OK", response
        lines = set(response.untagged)
        # Every mailbox, its implied parent (\Noselect, RFC 9051 section 7.3.1) and INBOX.
        assert len(lines) >= MANY + MANY // 2 + 1
        assert b'* LIST (\\Noselect \\HasChildren) "/" p7' in lines
        assert b'* LIST (\\HasNoChildren) "/" p7/box7' in lines
        assert elapsed < 0.5, f"LIST of {len(lines)} names took {elapsed:.2f} s"

        stop = threading.Event()
        errors: list[BaseException] = []
        lists: list[float] = []

        def keep_listing() -> None:
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    assert lister.command('LIST "" "*"').status == b"OK"
                    lists.append(time.monotonic() - t0)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=keep_listing, daemon=True)
        thread.start()
        noops: list[float] = []
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline or len(lists) < 3:
                assert time.monotonic() < deadline + 30, "LIST loop made no progress"
                t0 = time.monotonic()
                assert other.command("NOOP").status == b"OK"
                noops.append(time.monotonic() - t0)
                stop.wait(0.02)  # pacing of the probe, not synchronisation
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not errors, errors
        assert max(noops) < 1.0, f"NOOP waited {max(noops):.2f} s while LIST looped"
        grown = rss_kib(imap_server.server.pid) - rss_before
        assert grown < 64 * 1024, f"server grew {grown} KiB listing {MANY} mailboxes"
