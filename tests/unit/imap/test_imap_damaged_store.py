"""The IMAP session over a store that meets damage or a full disk: FETCH answers the intact
messages and ends NO [SERVERBUG] without the damaged bytes; a damaged database is NO
[SERVERBUG]; new mail below the free-space reserve is NO [UNAVAILABLE] while expunging works."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from imap_driver import Body, World

from mailstead.core.errors import CorruptData, DiskFull


def _damage(w: World, monkeypatch: pytest.MonkeyPatch, blob: str) -> None:
    """Makes the store see ``blob`` as damaged, as both backends report it."""
    real_one, real_many = w.store.read_blob, w.store.read_blobs

    async def read_blob(name: str) -> bytes:
        if name == blob:
            raise CorruptData(f"message body {name} is damaged")
        return await real_one(name)

    async def read_blobs(names: Any) -> dict[str, bytes]:
        return {k: v for k, v in (await real_many(names)).items() if k != blob}

    monkeypatch.setattr(w.store, "read_blob", read_blob)
    monkeypatch.setattr(w.store, "read_blobs", read_blobs)


def test_fetch_skips_a_damaged_body_and_ends_serverbug(
    run: Callable[[Body], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(w: World) -> None:
        for i in range(3):
            await w.deliver(f"m{i}", body=f"secret-{i}\r\n")
        infos = await w.store.list_messages(w.account_id, "INBOX")
        _damage(w, monkeypatch, infos[1].blob)
        c = w.client()
        await c.login()
        await c.cmd("a SELECT INBOX")
        for items in ("BODY.PEEK[]", "BODY.PEEK[]<0.10>", "BODY.PEEK[TEXT]", "RFC822"):
            out = await c.cmd(f"b FETCH 1:3 ({items})")
            assert re.findall(r"^\* (\d+) FETCH", out, re.M) == ["1", "3"], out
            assert "secret-1" not in out
            assert out.endswith("b NO [SERVERBUG] Stored data of message(s) 2 is damaged; "
                                "the administrator has been told\r\n"), out
        out = await c.cmd(f"u UID FETCH {infos[1].uid} (BODY.PEEK[])")
        assert f"message(s) {infos[1].uid} is damaged" in out
        # Items that need no body are answered for the damaged message too.
        out = await c.cmd("f FETCH 2 (FLAGS RFC822.SIZE)")
        assert out.startswith("* 2 FETCH (")
        assert out.endswith("f OK FETCH completed\r\n")
        assert (await c.cmd("n NOOP")).endswith("n OK NOOP completed\r\n")

    run(body)


def test_a_damaged_database_is_serverbug_not_try_again(
    run: Callable[[Body], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(w: World) -> None:
        await w.deliver("m0")

        async def broken(*_args: Any, **_kwargs: Any) -> Any:
            raise CorruptData("the database is damaged (database disk image is malformed)")

        c = w.client()
        await c.login()
        monkeypatch.setattr(w.store, "get_messages", broken)
        out = await c.cmd("a SELECT INBOX")
        assert out.endswith("a NO [SERVERBUG] Stored data is damaged; the administrator has "
                            "been told\r\n"), out

    run(body)


def test_below_the_reserve_append_waits_and_expunge_works(
    run: Callable[[Body], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(w: World) -> None:
        await w.deliver("m0")
        await w.deliver("m1")

        async def full(*_args: Any, **_kwargs: Any) -> Any:
            raise DiskFull("the disk is almost full")

        monkeypatch.setattr(w.store, "accept_message", full)
        c = w.client()
        await c.login()
        out = await c.cmd(b"a APPEND INBOX {12+}\r\nSubject: x\r\n\r\n")
        assert "a NO [UNAVAILABLE] " in out, out
        await c.cmd("b SELECT INBOX")
        assert "c OK" in await c.cmd("c STORE 1 +FLAGS.SILENT (\\Deleted)")
        out = await c.cmd("d EXPUNGE")
        assert out == "* 1 EXPUNGE\r\nd OK EXPUNGE completed\r\n", out

    run(body)
