"""ImportSink on a real embedded store: after the source renumbers a folder (new UIDVALIDITY),
the messages imported under the old UIDs are matched by content, each stored copy claimed
once, so duplicates in the source stay as many as they are and new messages are copied."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailstead.interchange.sink import ImportItem, ImportSink
from mailstead.storage.sqlite.store import SQLiteStore

SOURCE = "imap://dave@source.test:993"


def _item(uidvalidity: int, uid: int, body: bytes) -> ImportItem:
    return ImportItem("Archive", b"Subject: x\r\n\r\n" + body + b"\r\n", ("\\Seen",),
                      1_700_000_000.0, f"{uidvalidity}/{uid}")


def test_renumbered_folder_matches_by_content(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            await store.add_account("a@e.test", "h")
            first = [b"one", b"two", b"two", b"three"]  # "two" twice in the source
            sink = await ImportSink.open(store, "a@e.test", SOURCE)
            await sink.ensure_folder("Archive")
            for uid, text in enumerate(first, start=1):
                assert await sink.add(_item(7, uid, text))
            await sink.close()

            sink = await ImportSink.open(store, "a@e.test", SOURCE)
            await sink.ensure_folder("Archive")
            assert await sink.renumbered("Archive", "9/") == 4
            assert await sink.known("Archive") == set()
            # Renumbered: the same four (in another order), a third "two" and a new one.
            second = [b"three", b"two", b"one", b"two", b"two", b"four"]
            added = [await sink.add(_item(9, uid, text))
                     for uid, text in enumerate(second, start=1)]
            await sink.close()
            assert added == [False, False, False, False, True, True]
            assert sink.report.skipped == 4
            assert sink.report.messages == 2

            box = await store.get_mailbox((await store.get_account("a@e.test")).id,  # type: ignore[union-attr]
                                          "Archive")
            assert box is not None
            assert len(await store.list_messages_in(box.id)) == 6
            origins = await store.import_origins(box.id, SOURCE)
            assert {o for o in origins if o.startswith("9/")} == {f"9/{n}" for n in range(1, 7)}

            # A third run knows every new UID: nothing is matched or copied again.
            sink = await ImportSink.open(store, "a@e.test", SOURCE)
            await sink.ensure_folder("Archive")
            assert {f"9/{n}" for n in range(1, 7)} <= await sink.known("Archive")
        finally:
            await store.close()

    asyncio.run(body())
