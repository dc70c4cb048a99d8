"""The embedded SQLite backend of the store (see ``store.py``)."""

from mailstead.storage.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
