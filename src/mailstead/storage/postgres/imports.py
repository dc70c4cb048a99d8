"""PostgreSQL store: where imported messages came from (interfaces.ImportStore, migration
0012). Each operation is one statement."""

from __future__ import annotations

from collections.abc import Sequence

from mailstead.core.errors import NotFound
from mailstead.storage.postgres.base import PgBase, db_errors


class ImportMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def import_origins(self, mailbox_id: int, source: str) -> dict[str, str]:
        self.check_open()
        async with db_errors("reading import origins"), self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT origin, blob FROM import_origins WHERE mailbox_id = $1 AND source = $2",
                mailbox_id, source,
            )
        return {str(r[0]): str(r[1]) for r in rows}

    async def add_import_origins(
        self, mailbox_id: int, source: str, rows: Sequence[tuple[str, str]]
    ) -> None:
        self.check_open()
        async with db_errors("recording import origins"), self.pool.acquire() as conn:
            # One statement: the mailbox check and the inserts see the same snapshot.
            found = await conn.fetchval(
                "WITH box AS (SELECT id FROM mailboxes WHERE id = $1),"
                " ins AS (INSERT INTO import_origins (mailbox_id, source, origin, blob)"
                "  SELECT box.id, $2, o.origin, o.blob FROM box,"
                "   unnest($3::text[], $4::text[]) AS o (origin, blob)"
                "  ON CONFLICT (mailbox_id, source, origin) DO NOTHING)"
                " SELECT count(*) FROM box",
                mailbox_id, source, [o for o, _ in rows], [b for _, b in rows],
            )
        if not found:
            raise NotFound(f"no mailbox with id {mailbox_id}")
