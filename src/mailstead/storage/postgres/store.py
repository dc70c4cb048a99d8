"""The PostgreSQL store: every part of ``interfaces.Store`` in one class, assembled from the
mixins beside this file (conventions in base.py)."""

from __future__ import annotations

from mailstead.storage.postgres.base import UpgradeBackup
from mailstead.storage.postgres.core import CoreMixin
from mailstead.storage.postgres.imports import ImportMixin
from mailstead.storage.postgres.mailstore import MailStoreMixin
from mailstead.storage.postgres.outbound import OutboundMixin
from mailstead.storage.postgres.security import SecurityMixin
from mailstead.storage.postgres.shared import SharedStateMixin
from mailstead.storage.postgres.sieve import SieveMixin
from mailstead.storage.postgres.spam import SpamMixin
from mailstead.storage.postgres.tlsreports import TlsReportMixin
from mailstead.storage.postgres.websessions import WebSessionMixin


class PostgresStore(
    CoreMixin,
    MailStoreMixin,
    OutboundMixin,
    SecurityMixin,
    SpamMixin,
    SieveMixin,
    SharedStateMixin,
    WebSessionMixin,
    ImportMixin,
    TlsReportMixin,
):
    """Implements ``mailstead.storage.interfaces.Store``; create with ``await
    PostgresStore.open(dsn)``."""

    @classmethod
    async def open(cls, dsn: str, pool_size: int = 10,
                   upgrade_backup: UpgradeBackup | None = None) -> PostgresStore:
        """Connects, migrates the schema (under an advisory lock, so several nodes may start
        at once; ``upgrade_backup`` runs before an upgrade) and starts listening for other
        nodes' changes. Raises StoreError."""
        store: PostgresStore = await cls.connect(dsn, pool_size, upgrade_backup)
        return store
