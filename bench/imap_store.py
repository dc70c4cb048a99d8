"""Store operations behind IMAP on a big mailbox: builds a mailbox of N varied messages
(plain, base64 and quoted-printable bodies, encoded-word subjects, non-ASCII text) through
``accept_message``, then times full-text indexing, ``search_text`` (trigram and short-string
scans), ``list_messages_in``, ``store_flags`` on 10,000 UIDs, ``copy_messages``,
``changes_since`` and ``expunge``, and prints the figures.

    python bench/imap_store.py [--messages 50000] [--data-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import quopri
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src")]

from mailstead.storage.interfaces import FlagOp, IncomingMessage, LocalDelivery  # noqa: E402
from mailstead.storage.sqlite.store import SQLiteStore  # noqa: E402

WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "meeting report budget invoice holiday project deadline review coffee lunch server backup "
    "release kernel network garden bicycle mountain river ocean forest winter summer autumn "
    "spring planet rocket engine museum theatre concert library village harbour bridge tunnel "
    "Zürich München Straße café naïve façade résumé Ελλάδα Москва 東京"
).split()


def make_message(n: int, rng: random.Random) -> bytes:
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    body = "\n".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14)))
        for _ in range(rng.randint(5, 25))
    )
    body += f"\nreference number REF{n:07d}\n"
    kind = n % 3
    if kind == 0:
        head = f"Subject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        payload = body.encode().replace(b"\n", b"\r\n")
    elif kind == 1:
        encoded = base64.b64encode(subject.encode()).decode()
        head = (
            f"Subject: =?utf-8?B?{encoded}?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n"
        )
        payload = base64.encodebytes(body.encode()).replace(b"\n", b"\r\n")
    else:
        head = (
            f"Subject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n"
        )
        payload = quopri.encodestring(body.encode()).replace(b"\n", b"\r\n")
    return (
        f"From: user{n % 97}@remote.test\r\nTo: bench@example.test\r\n"
        f"Message-ID: <{n}.{rng.getrandbits(32)}@remote.test>\r\n{head}\r\n"
    ).encode() + payload


async def timed(label: str, fn: Callable[[], Awaitable[Any]], note: Callable[[Any], str]) -> Any:
    start = time.perf_counter()
    result = await fn()
    print(f"{label:<48} {1000 * (time.perf_counter() - start):9.1f} ms   {note(result)}")
    return result


async def main(count: int, data_dir: Path) -> None:
    rng = random.Random(1234)
    store = await SQLiteStore.open(data_dir)
    try:
        await store.add_domain("example.test")
        account = (await store.add_account("bench@example.test", "x")).id
        start = time.perf_counter()
        total = 0
        for first in range(0, count, 500):
            batch = [make_message(n, rng) for n in range(first, min(count, first + 500))]
            total += sum(map(len, batch))
            await asyncio.gather(
                *(
                    store.accept_message(
                        IncomingMessage(
                            d, "Q", "", [LocalDelivery(account)], [], time.time(), "{}", "{}"
                        )
                    )
                    for d in batch
                )
            )
        took = time.perf_counter() - start
        print(
            f"delivered {count} messages ({total / count:.0f} bytes avg) in {took:.1f} s:"
            f" {count / took:.0f} msg/s"
        )
        inbox = await store.get_mailbox(account, "INBOX")
        assert inbox is not None
        mid = inbox.id

        def hits(result: Any) -> str:
            return f"{len(result)} hits"

        await timed(
            "index pending + first search_text",
            lambda: store.search_text(mid, "REF0000042", part="body"),
            hits,
        )
        for text, part in (
            ("REF0012345", "body"),
            ("garden", "text"),
            ("mountain river", "body"),
            ("straße", "text"),
            ("東京", "body"),
            ("москва", "header:subject"),
            ("user42@", "header:from"),
            ("nothing-matches-this", "text"),
            ("zz", "text"),
        ):
            await timed(
                f"search_text {text!r} {part}",
                lambda t=text, p=part: store.search_text(mid, t, part=p),  # type: ignore[misc]
                hits,
            )
        await timed(f"list_messages_in ({count})", lambda: store.list_messages_in(mid), hits)
        archive = await store.get_mailbox(account, "Archive")
        assert archive is not None
        uids = list(range(1, min(count, 10_000) + 1))
        await timed(
            f"copy_messages {len(uids)} UIDs",
            lambda: store.copy_messages(mid, uids, archive.id),
            lambda r: f"{len(r)} copied",
        )
        await timed(
            f"list_messages_in ({len(uids)})", lambda: store.list_messages_in(archive.id), hits
        )
        before = (await store.mailbox_by_id(mid)).highestmodseq  # type: ignore[union-attr]
        await timed(
            f"store_flags +\\Seen on {len(uids)} UIDs",
            lambda: store.store_flags(mid, uids, FlagOp.ADD, ["\\Seen"]),
            lambda r: f"{len(r.changed)} changed",
        )
        await timed(
            f"store_flags UNCHANGEDSINCE on {len(uids)} UIDs",
            lambda: store.store_flags(mid, uids, FlagOp.ADD, ["\\Flagged"], before),
            lambda r: f"{len(r.changed)} changed, {len(r.modified)} modified",
        )
        await store.store_flags(mid, uids[:1000], FlagOp.ADD, ["\\Deleted"])
        await timed("expunge 1000", lambda: store.expunge(mid), lambda r: f"{len(r)} expunged")
        await timed(
            "changes_since (before the stores)",
            lambda: store.changes_since(mid, before),
            lambda r: f"{len(r.changed)} changed, {len(r.vanished)} vanished",
        )
        top = (await store.mailbox_by_id(mid)).highestmodseq  # type: ignore[union-attr]
        await timed(
            "changes_since (nothing new)",
            lambda: store.changes_since(mid, top),
            lambda r: f"{len(r.changed)} changed",
        )
        await timed("get_quota", lambda: store.get_quota(account), lambda q: f"used {q.used}")
        size = sum(p.stat().st_size for p in data_dir.glob("mailstead.db*"))
        print(f"database size with index: {size / 1e6:.0f} MB")
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    if args.data_dir is not None:
        asyncio.run(main(args.messages, args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="mailstead-bench-") as tmp:
            asyncio.run(main(args.messages, Path(tmp)))
