"""The wire size contract: every backend measures a message once, when it is accepted, and
reports the figures on MessageInfo wherever messages are listed, copied or moved (POP3 LIST
and STAT, IMAP RFC822.SIZE), so no reader has to open a body to know them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mailstead.proto.pop3.framing import wire_size as pop3_wire_size
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, MessageInfo, Store
from mailstead.storage.sqlite.store import LARGE_BLOB

Opener = Callable[[Path], Awaitable[Store]]

CRLF_ONLY = b"From: a@remote.test\r\nSubject: crlf\r\n\r\nbody\r\n"
BARE_LF = b"From: a@remote.test\nSubject: bare\n\nline\n.dot\nlast line, no break"
MIXED = b"Subject: mixed\r\n\r\none\ntwo\r\nbare cr\r stays\r\n\n"
ENDS_IN_CR = b"Subject: cr\r\n\r\nends in a bare CR\r"


def crlf_form(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def run(opener: Opener, path: Path, body: Callable[[Store, int], Awaitable[Any]]) -> Any:
    async def wrap() -> Any:
        store = await opener(path)
        try:
            await store.add_domain("example.test")
            account = (await store.add_account("alice@example.test", "hash")).id
            return await body(store, account)
        finally:
            await store.close()

    return asyncio.run(wrap())


async def deliver(store: Store, account: int, data: bytes, *mailboxes: str) -> None:
    await store.accept_message(IncomingMessage(
        data=data,
        queue_id="Q" + hashlib.sha256(data).hexdigest()[:8],
        mail_from="sender@remote.test",
        local=[LocalDelivery(account, m) for m in (mailboxes or ("INBOX",))],
        remote=[],
        internal_date=1_700_000_000.0,
        envelope="{}",
        bodystructure="{}",
    ))


def check(info: MessageInfo, data: bytes) -> None:
    """The figures a reader relies on, against the stored bytes."""
    assert info.size == len(data)
    assert info.wire_size == len(crlf_form(data))
    assert info.unterminated == (bool(data) and not data.endswith(b"\n"))
    # What POP3 RETR sends (RFC 1939 section 3: a last line is completed with CRLF).
    assert info.wire_size + 2 * info.unterminated == pop3_wire_size(data)


@pytest.mark.parametrize("data", [CRLF_ONLY, BARE_LF, MIXED, ENDS_IN_CR],
                         ids=["crlf", "bare-lf", "mixed", "ends-in-cr"])
def test_accept_message_measures_wire_size(opener: Opener, tmp_path: Path, data: bytes) -> None:
    async def body(store: Store, account: int) -> None:
        await deliver(store, account, data)
        listed = await store.list_messages(account, "INBOX")
        inbox = await store.get_mailbox(account, "INBOX")
        assert inbox is not None
        by_id = await store.list_messages_in(inbox.id)
        changes = await store.changes_since(inbox.id, 0)
        assert len(listed) == len(by_id) == len(changes.changed) == 1
        for info in (listed[0], by_id[0], changes.changed[0]):
            check(info, data)
            assert await store.read_blob(info.blob) == data  # the bytes are kept as given

    run(opener, tmp_path, body)


def test_concrete_figures(opener: Opener, tmp_path: Path) -> None:
    """Numbers worked out by hand, so the contract does not rest on one formula alone."""
    async def body(store: Store, account: int) -> list[tuple[int, int, bool]]:
        for data in (b"a\nb\n", b"a\r\nb", b"x\r\r\n", b"\n\n\n"):
            await deliver(store, account, data)
        return [(m.size, m.wire_size, m.unterminated)
                for m in await store.list_messages(account, "INBOX")]

    assert run(opener, tmp_path, body) == [
        (4, 6, False),  # two bare LFs become CRLF
        (4, 4, True),  # already CRLF; "b" has no line break
        (4, 4, False),  # CR CR LF: one CRLF and a bare CR that stays as it is
        (3, 6, False),
    ]


def test_shared_blob_to_several_mailboxes(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store, account: int) -> None:
        await deliver(store, account, BARE_LF, "INBOX", "Archive")
        await deliver(store, account, BARE_LF)  # the same bytes again: one blob, three rows
        for name in ("INBOX", "Archive"):
            for info in await store.list_messages(account, name):
                check(info, BARE_LF)

    run(opener, tmp_path, body)


def test_large_message_is_measured(opener: Opener, tmp_path: Path) -> None:
    """Bodies above the large-blob threshold take another path to disk; same figures."""
    data = b"Subject: big\n\n" + b"0123456789 bare lines\n" * (LARGE_BLOB // 20) + b"tail"
    assert len(data) > LARGE_BLOB

    async def body(store: Store, account: int) -> None:
        await deliver(store, account, data)
        [info] = await store.list_messages(account, "INBOX")
        check(info, data)

    run(opener, tmp_path, body)


def test_copy_and_move_keep_wire_size(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store, account: int) -> None:
        for data in (CRLF_ONLY, BARE_LF, MIXED):
            await deliver(store, account, data)
        inbox = await store.get_mailbox(account, "INBOX")
        archive = await store.get_mailbox(account, "Archive")
        trash = await store.get_mailbox(account, "Trash")
        assert inbox is not None
        assert archive is not None
        assert trash is not None
        pairs = await store.copy_messages(inbox.id, [1, 2, 3], archive.id)
        assert [old for old, _ in pairs] == [1, 2, 3]
        moved = await store.copy_messages(archive.id, [2, 3], trash.id, move=True)
        assert len(moved) == 2
        originals = {m.blob: m for m in await store.list_messages_in(inbox.id)}
        copies = await store.list_messages_in(archive.id) + await store.list_messages_in(
            trash.id)
        assert len(copies) == 3
        for info in copies:
            source = originals[info.blob]
            assert (info.size, info.wire_size, info.unterminated) == (
                source.size, source.wire_size, source.unterminated)
            check(info, await store.read_blob(info.blob))
        # RFC 3501 section 6.3.5: renaming INBOX moves its messages; the figures go along.
        await store.rename_mailbox(account, "INBOX", "Old")
        for info in await store.list_messages(account, "Old"):
            check(info, await store.read_blob(info.blob))

    run(opener, tmp_path, body)
