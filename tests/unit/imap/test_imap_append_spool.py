"""APPEND of a spooled message through a real session and store (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from imap_driver import Body, World

from mailstead.core.budget import ByteBudget
from mailstead.imap.spool import LiteralSpool
from mailstead.proto.imap.framing import CommandFrame, Literal
from mailstead.proto.imap.parser import parse_command


def spooled_append(tag: str, size: int) -> CommandFrame:
    head = f"{tag} APPEND INBOX {{{size}}}".encode()
    return CommandFrame((head, b""), (Literal(b"", spooled=True, size=size),))


def test_spooled_append_is_stored_byte_for_byte_within_the_budget(
    run: Callable[[Body], None],
) -> None:
    message = b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 10_000

    async def body(w: World) -> None:
        w.ctx.append_budget = ByteBudget(len(message))
        c = w.client(max_message_size=1 << 20)
        await c.login()
        spool = LiteralSpool()
        try:
            for start in range(0, len(message), 4096):
                spool.write(message[start:start + 4096])
            # Another commit holds the whole budget: the APPEND waits for it.
            async with w.ctx.append_budget.hold(len(message)):
                c.session.spool = spool
                pending = asyncio.ensure_future(
                    c.session.execute(parse_command(spooled_append("a", len(message))))
                )
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not pending.done()
            out = await asyncio.wait_for(pending, 30)
            assert out.startswith(b"a OK [APPENDUID "), out
        finally:
            c.session.spool = None
            spool.close()
        assert w.ctx.append_budget.used == 0
        await c.cmd("b SELECT INBOX")
        fetched = await c.send(b"c FETCH 1 BODY.PEEK[]\r\n")
        assert b"{%d}\r\n" % len(message) + message + b")\r\n" in fetched

    run(body)


def test_spooled_append_that_did_not_arrive_whole_is_refused(
    run: Callable[[Body], None],
) -> None:
    async def body(w: World) -> None:
        c = w.client(max_message_size=1 << 20)
        await c.login()
        spool = LiteralSpool()
        try:
            spool.write(b"Subject: cut\r\n\r\nshort")
            c.session.spool = spool
            out = await c.session.execute(parse_command(spooled_append("a", 70_000)))
        finally:
            spool.close()
        assert out.startswith(b"a NO"), out
        assert (await c.cmd("b STATUS INBOX (MESSAGES)")).startswith(
            "* STATUS INBOX (MESSAGES 0)")

    run(body)
