"""\\Recent through IMAPSession on each store backend (RFC 3501 section 2.3.2): sessions of
two contexts (two server processes or nodes on one store) share it through the store; a
session selected read-only counts a new message recent without taking it."""

from __future__ import annotations

from collections.abc import Callable

from imap_driver import Body, World

from mailstead.imap.context import IMAPContext


def test_two_processes_share_recent_and_examine_never_takes(
        run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        other = World(w.store, w.accounts, w.account_id)
        other.ctx = IMAPContext(w.store, w.accounts)  # another process on the same store
        await w.deliver("one")
        examiner, selector, late = w.client(), w.client(), other.client()
        for c in (examiner, selector, late):
            await c.login()
        assert "* 1 RECENT" in await examiner.cmd("e EXAMINE INBOX")
        assert "* 1 RECENT" in await selector.cmd("s SELECT INBOX")
        assert "* 0 RECENT" in await late.cmd("l SELECT INBOX")
        await w.deliver("two")
        # The read-only session sees it recent (with the first) and leaves it to the others.
        out = await examiner.cmd("e2 NOOP")
        assert "* 2 EXISTS" in out
        assert "* 2 RECENT" in out
        assert "* SEARCH 1 2\r\n" in await examiner.cmd("e3 SEARCH NEW")
        assert "* 1 RECENT" in await late.cmd("l2 NOOP")
        out = await selector.cmd("s2 NOOP")
        assert "* 2 EXISTS" in out
        assert "* 1 RECENT" in out  # still only its first one
        assert "* SEARCH\r\n" in await selector.cmd("s3 SEARCH UID 2 RECENT")
        assert "* SEARCH 2\r\n" in await late.cmd("l3 SEARCH RECENT")
        watcher = w.client()
        await watcher.login()
        assert "(RECENT 0)" in await watcher.cmd("x STATUS INBOX (RECENT)")

    run(body)
