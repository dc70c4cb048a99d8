"""One session's view of the maildrop: numbered messages and deletion marks (RFC 1939
section 5). The store is not touched until the UPDATE state; marks live only here."""

from __future__ import annotations

from collections.abc import Sequence

from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.commands import CommandError
from mailstead.proto.pop3.events import MaildropEntry


class Maildrop:
    """Messages numbered from 1 in the order given, fixed for the whole session."""

    __slots__ = ("_deleted", "_entries")

    def __init__(self, entries: Sequence[MaildropEntry]) -> None:
        self._entries = tuple(entries)
        self._deleted: set[int] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def live(self) -> list[tuple[int, MaildropEntry]]:
        """``(number, entry)`` of every message not marked deleted, ascending."""
        return [
            (n, e) for n, e in enumerate(self._entries, start=1) if n not in self._deleted
        ]

    def stat(self) -> tuple[int, int]:
        """Count and total size of the messages not marked deleted (RFC 1939 section 5, STAT)."""
        live = self.live()
        return len(live), sum(e.size for _, e in live)

    def get(self, number: int) -> MaildropEntry:
        """The entry of a message that exists and is not deleted; raises CommandError."""
        if not 1 <= number <= len(self._entries):
            raise CommandError(replies.NO_SUCH_MESSAGE)
        if number in self._deleted:
            # RFC 1939 section 5: a deleted message may not be referred to.
            raise CommandError(replies.MESSAGE_DELETED)
        return self._entries[number - 1]

    def delete(self, number: int) -> None:
        self.get(number)
        self._deleted.add(number)

    def reset(self) -> None:
        """Unmark every message (RFC 1939 section 5, RSET)."""
        self._deleted.clear()

    def deleted(self) -> tuple[int, ...]:
        return tuple(sorted(self._deleted))
