"""servers/pop3.py ``Maildrops.open``: LIST/STAT sizes come from the stored wire size, a login
reads no message body, and the sizes equal what the core sends for RETR."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from pop3_core_driver import PASSWORD, USER, settings

from mailstead.core.errors import StoreError
from mailstead.proto.pop3.events import NEED_DATA, Credentials, Retrieve
from mailstead.proto.pop3.framing import wire_form
from mailstead.proto.pop3.server import POP3ServerCore
from mailstead.servers.pop3 import Maildrops, retr_size
from mailstead.storage.interfaces import MailboxInfo, MessageInfo
from mailstead.storage.sqlite.writer import wire_shape

BODIES = [
    b"Subject: a\r\n\r\nplain\r\n",
    b"Subject: b\n\n.dot\nbare lf, unterminated",
    b"Subject: c\r\n\r\nends in a bare CR\r",
]
INBOX = MailboxInfo(7, 1, "INBOX", None, 1234, 4, 9, len(BODIES))


def info(uid: int, data: bytes) -> MessageInfo:
    shape = wire_shape(data)
    return MessageInfo(uid, 7, uid, uid, (), 0.0, len(data), f"{uid:064x}", "{}", "{}",
                       shape.size, shape.unterminated)


class FakeStore:
    """A store whose bodies must not be read while opening a maildrop."""

    def __init__(self, messages: list[MessageInfo], bodies: dict[str, bytes]) -> None:
        self.messages = messages
        self.bodies = bodies
        self.reads: list[str] = []

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        return INBOX if (account_id, name) == (1, "INBOX") else None

    async def list_messages_in(self, mailbox_id: int) -> list[MessageInfo]:
        assert mailbox_id == INBOX.id
        return self.messages

    async def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[int]:
        return list(uids)

    async def read_blob(self, blob: str) -> bytes:
        self.reads.append(blob)
        return self.bodies[blob]


def test_open_reads_no_body_and_lists_retr_sizes() -> None:
    messages = [info(n, data) for n, data in enumerate(BODIES, start=1)]
    store = FakeStore(messages, {m.blob: d for m, d in zip(messages, BODIES, strict=True)})
    drop = asyncio.run(Maildrops(store).open(1))
    assert store.reads == []
    assert [e.unique_id for e in drop.entries] == ["1234.1", "1234.2", "1234.3"]
    assert [e.size for e in drop.entries] == [len(wire_form(d)) for d in BODIES]
    assert [retr_size(m) for m in messages] == [e.size for e in drop.entries]

    # The core announces, for RETR, the very count LIST gave, as the server answers it.
    core = POP3ServerCore(settings())
    core.data_to_send()  # the greeting
    commands = f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode()
    core.receive_data(commands + b"".join(b"RETR %d\r\n" % n for n in (1, 2, 3)))
    while (event := core.next_event()) is not NEED_DATA:
        if isinstance(event, Credentials):
            core.login_ok(drop.entries)
        elif isinstance(event, Retrieve):
            core.message_content(BODIES[event.number - 1])
    out = core.data_to_send()
    for entry in drop.entries:
        assert b"\r\n+OK %d octets\r\n" % entry.size in out


def test_open_without_inbox_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        asyncio.run(Maildrops(FakeStore([], {})).open(2))


def test_rows_without_wire_size_fall_back_to_size() -> None:
    """A MessageInfo from a caller that predates the field reports its stored size."""
    legacy = MessageInfo(1, 7, 1, 1, (), 0.0, 20, "0" * 64, "{}", "{}")
    assert retr_size(legacy) == 20
