"""The ImportStore contract (where imported messages came from, migration 0012) and the
import sink over it, run against every backend: origins per mailbox and source, recorded once,
gone with the mailbox; a repeated import copies nothing; a message committed before its origin
row (an import killed in between) is claimed, not stored twice; identical messages within one
source folder are each kept; folders map onto the account's special-use folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstead.core.errors import NotFound
from mailstead.interchange.sink import ImportItem, ImportRefused, ImportSink, import_flags
from mailstead.storage.blobs import blob_hash
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Store
from storebackends import Opener
from storebackends import run_with as run
from storebackends import two_accounts as accounts


def message(n: int) -> bytes:
    return (f"From: a@x.test\r\nTo: b@y.test\r\nSubject: m{n}\r\n"
            f"Message-ID: <{n}@x.test>\r\n\r\nbody {n}\r\n").encode()


def test_origins_per_mailbox_and_source(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        inbox = await store.get_mailbox(alice, "INBOX")
        sent = await store.get_mailbox(alice, "Sent")
        assert inbox is not None
        assert sent is not None
        assert await store.import_origins(inbox.id, "imap://a@h") == {}
        await store.add_import_origins(inbox.id, "imap://a@h", [("7/1", "b1"), ("7/2", "b2")])
        # Recorded once: a second row for an origin keeps the first.
        await store.add_import_origins(inbox.id, "imap://a@h", [("7/1", "other")])
        await store.add_import_origins(inbox.id, "maildir:/m", [("u1", "b3")])
        await store.add_import_origins(sent.id, "imap://a@h", [])
        assert await store.import_origins(inbox.id, "imap://a@h") == {"7/1": "b1", "7/2": "b2"}
        assert await store.import_origins(inbox.id, "maildir:/m") == {"u1": "b3"}
        assert await store.import_origins(sent.id, "imap://a@h") == {}
        await store.create_mailbox(alice, "Old")
        old = await store.get_mailbox(alice, "Old")
        assert old is not None
        await store.add_import_origins(old.id, "s", [("o", "b")])
        await store.delete_mailbox(alice, "Old")
        assert await store.import_origins(old.id, "s") == {}
        with pytest.raises(NotFound):
            await store.add_import_origins(old.id, "s", [("o", "b")])
        assert bob

    run(opener, tmp_path, body)


def test_sink_is_repeatable_and_survives_a_kill(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, _ = await accounts(store)
        address = (await store.get_account_by_id(alice)).address  # type: ignore[union-attr]
        items = [ImportItem("Archive/2020", message(n), ("\\Seen", "$Label", "\\Recent"),
                            1_600_000_000.0 + n, f"9/{n}") for n in range(5)]
        # Two identical messages in one source folder: both are kept.
        items.append(ImportItem("Archive/2020", message(0), (), 1_600_000_100.0, "9/99"))
        sink = await ImportSink.open(store, address, "imap://src@h")
        assert await sink.ensure_folder("Archive/2020") == "Archive/2020"
        for item in items[:3]:
            assert await sink.add(item)
        await sink.close()
        # "Killed" after two more messages were committed but before their origins were
        # recorded: store them the way the sink does, without the origin rows.
        for item in items[3:5]:
            await store.accept_message(IncomingMessage(
                data=item.data, queue_id="q", mail_from="",
                local=[LocalDelivery(alice, "Archive/2020", ())], remote=[],
                internal_date=item.internal_date, envelope="[]", bodystructure="[]",
            ))
        again = await ImportSink.open(store, address, "imap://src@h")
        await again.ensure_folder("Archive/2020")
        assert await again.known("Archive/2020") == {"9/0", "9/1", "9/2"}
        added = [await again.add(item) for item in items]
        await again.close()
        assert added == [False, False, False, False, False, True]
        assert (again.report.messages, again.report.skipped) == (1, 5)
        stored = await store.list_messages(alice, "Archive/2020")
        assert sorted(m.blob for m in stored) == sorted(blob_hash(i.data) for i in items)
        assert stored[0].flags == ("\\Seen", "$Label")
        assert stored[0].internal_date == 1_600_000_000.0
        third = await ImportSink.open(store, address, "imap://src@h")
        assert not any([await third.add(item) for item in items])
        await third.close()
        assert len(await store.list_messages(alice, "Archive/2020")) == 6
        # The parent of a nested folder exists.
        assert await store.get_mailbox(alice, "Archive") is not None

    run(opener, tmp_path, body)


def test_sink_maps_special_use_and_refuses_unknown_accounts(
    opener: Opener, tmp_path: Path
) -> None:
    async def body(store: Store) -> None:
        alice, _ = await accounts(store)
        address = (await store.get_account_by_id(alice)).address  # type: ignore[union-attr]
        with pytest.raises(ImportRefused, match=r"no account nobody@x\.test"):
            await ImportSink.open(store, "nobody@x.test", "s")
        sink = await ImportSink.open(store, address, "s")
        assert await sink.ensure_folder("Sent Messages", "\\Sent") == "Sent"
        assert await sink.ensure_folder("[Gmail]/Papierkorb", "\\Trash") == "Trash"
        assert await sink.ensure_folder("Projects", "\\Flagged") == "Projects"
        await sink.add(ImportItem("Sent Messages", message(1), (), 1.0, "1/1"))
        await sink.close()
        assert len(await store.list_messages(alice, "Sent")) == 1
        assert await store.get_mailbox(alice, "Sent Messages") is None

    run(opener, tmp_path, body)


def test_import_flags_drops_what_the_store_cannot_hold() -> None:
    assert import_flags(("\\seen", "\\Recent", "\\Unknown", "$Label", "$label", "bad(",
                         "", "x" * 300, "\\ANSWERED", "Ünï")) == ("\\Seen", "$Label",
                                                                  "\\Answered")
