"""UIDONLY (RFC 9586): once enabled, commands name messages by UID alone.

The responses change in the renderers (UIDFETCH in proto/imap/fetch.py and
proto/imap/selected.py, VANISHED for expunges); this module decides which commands are
refused for using message sequence numbers.
"""

from __future__ import annotations

from mailstead.proto.imap.ast import Command, SearchArgs, SearchKey

# RFC 9586 section 3.1: the commands that take message sequence numbers unless given as
# their UID form.
_NUMBERED = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "THREAD"})


def _uses_numbers(key: SearchKey) -> bool:
    """A bare sequence-set search key (not ``$``, which holds UIDs) is message numbers."""
    if key.name == "SEQSET" and key.seqset is not None and not key.seqset.saved:
        return True
    return any(_uses_numbers(child) for child in key.children)


def refusal(cmd: Command) -> str | None:
    """Why a UIDONLY session may not run ``cmd`` (the BAD [UIDREQUIRED] text), or None."""
    if cmd.name in _NUMBERED and not cmd.uid:
        return f"Use UID {cmd.name}: message sequence numbers are off (UIDONLY)"
    args = cmd.args
    if isinstance(args, SearchArgs) and _uses_numbers(args.key):
        # RFC 9586 section 3.1: a search key that is a message set is refused too.
        return "A message sequence set is not a search key after ENABLE UIDONLY; use UID"
    return None
