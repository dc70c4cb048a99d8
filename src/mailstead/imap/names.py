"""Mailbox names: the wire forms, the rules a name must follow, and LIST pattern matching.

The hierarchy delimiter is ``/``. ``INBOX`` is case-insensitive (RFC 9051 section 5.1) and is
stored as ``INBOX``, also as the first level of a child (``inbox/x`` is ``INBOX/x``). Names are
Unicode in the store; IMAP4rev1 clients see modified UTF-7 (RFC 3501 section 5.1.3), clients
that enabled UTF8=ACCEPT (RFC 6855 section 3) or IMAP4rev2 (RFC 9051 section 5.1) see UTF-8.
Names that could escape the account's namespace or confuse clients are refused.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from mailstead.proto.imap import mutf7

DELIMITER = "/"
INBOX = "INBOX"
# A name longer than this is refused; Dovecot uses 255 per level and ~1000 in total, and
# RFC 9051 section 5.1 lets servers limit names.
MAX_NAME_OCTETS = 1000
MAX_LEVEL_OCTETS = 255
MAX_LEVELS = 32


class MailboxNameError(ValueError):
    """A name the server refuses; the text tells the client why (sent with NO [CANNOT])."""


def decode_wire(raw: bytes, *, utf8: bool) -> str:
    """The Unicode name from its wire bytes: UTF-8 for a UTF8=ACCEPT/IMAP4rev2 client,
    modified UTF-7 otherwise (RFC 3501 section 5.1.3: 8-bit names are not allowed then).
    Raises MailboxNameError."""
    if utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MailboxNameError("Mailbox name is not valid UTF-8") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MailboxNameError(
            "8-bit mailbox names need UTF8=ACCEPT; use modified UTF-7 (RFC 3501 5.1.3)"
        ) from None
    try:
        return mutf7.decode(text)
    except ValueError:
        raise MailboxNameError("Mailbox name is not valid modified UTF-7") from None


def decode_pattern(raw: bytes, *, utf8: bool) -> str:
    """A LIST reference or pattern as Unicode; never refused. Unlike a name, a pattern that
    is not valid modified UTF-7 (or holds 8-bit octets without UTF8=ACCEPT) is matched
    literally, as RFC 9051 section 6.3.9 allows: it can only match fewer names."""
    text = raw.decode("utf-8", "replace")  # the parser has checked it is UTF-8
    return text if utf8 else mutf7.decode_pattern(text)


def encode_wire(name: str, *, utf8: bool) -> str:
    """The name as this client must see it (the inverse of ``decode_wire``)."""
    return name if utf8 else mutf7.encode(name)


def normalise(name: str, *, allow_trailing_delimiter: bool = False) -> str:
    """Check ``name`` and return its stored form. Raises MailboxNameError.

    Refused: empty names and levels (``a//b``), a leading ``/`` (an absolute path), ``.`` and
    ``..`` levels, control characters, the LIST wildcards ``*`` and ``%`` (RFC 9051 section
    5.1: they could never be listed exactly), and over-long names. CREATE may end in ``/``
    (RFC 9051 section 6.3.4: the client announces a hierarchy); it is dropped.
    """
    if allow_trailing_delimiter and name.endswith(DELIMITER) and len(name) > 1:
        name = name[:-1]
    if not name:
        raise MailboxNameError("Mailbox name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_OCTETS:
        raise MailboxNameError(f"Mailbox name longer than {MAX_NAME_OCTETS} octets")
    if name.startswith(DELIMITER):
        raise MailboxNameError("Mailbox name must not start with the hierarchy delimiter /")
    for ch in name:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF:
            raise MailboxNameError("Mailbox name contains a control character")
        if ch in "*%":
            raise MailboxNameError("Mailbox name must not contain * or %")
    levels = name.split(DELIMITER)
    if len(levels) > MAX_LEVELS:
        raise MailboxNameError(f"Mailbox hierarchy deeper than {MAX_LEVELS} levels")
    for level in levels:
        if not level:
            raise MailboxNameError("Mailbox name has an empty level (// or a trailing /)")
        if level in (".", ".."):
            raise MailboxNameError("Mailbox name levels . and .. are not allowed")
        if len(level.encode("utf-8")) > MAX_LEVEL_OCTETS:
            raise MailboxNameError(f"Mailbox name level longer than {MAX_LEVEL_OCTETS} octets")
    # RFC 9051 section 5.1: names SHOULD be NFC (RFC 5198), so two spellings are one mailbox.
    levels = [unicodedata.normalize("NFC", level) for level in levels]
    if levels[0].upper() == INBOX:
        levels[0] = INBOX
    return DELIMITER.join(levels)


def from_wire(raw: bytes, *, utf8: bool, allow_trailing_delimiter: bool = False) -> str:
    """``decode_wire`` then ``normalise``: the stored form of a name a client sent."""
    return normalise(
        decode_wire(raw, utf8=utf8), allow_trailing_delimiter=allow_trailing_delimiter
    )


def sort_key(name: str) -> tuple[bool, str]:
    """INBOX first, then by name, so listings are stable."""
    return (name != INBOX, name)


def is_inbox(name: str) -> bool:
    return name.upper() == INBOX


def parent_names(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``: the levels CREATE makes implicitly (RFC 9051 6.3.4)."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def hierarchy(existing: Iterable[str]) -> tuple[set[str], set[str]]:
    """``(every name, names with children)`` for the ``existing`` mailboxes, in one pass: every
    name is an existing mailbox or a level above one (RFC 9051 section 7.3.1: such a parent is
    listed \\Noselect), and a name has children exactly when it is a level above another.
    Linear in the number of names (times their depth), where testing each name against all
    others would be quadratic."""
    parents: set[str] = set()
    everything: set[str] = set()
    for name in existing:
        everything.add(name)
        end = name.rfind(DELIMITER)
        while end > 0:
            parent = name[:end]
            if parent in parents:
                break  # its own parents were added with it
            parents.add(parent)
            end = name.rfind(DELIMITER, 0, end)
    everything |= parents
    return everything, parents


class Pattern:
    """A LIST pattern (RFC 9051 section 6.3.9): ``*`` matches anything, ``%`` anything but
    the delimiter. Matched as a set of pattern positions advanced one name character at a
    time (a bit-parallel NFA), so a match costs a few integer operations per character of
    the name, whatever the pattern: a backtracking regex takes exponential time on hostile
    patterns such as ``*a*a*a*a*b`` against a long name of ``a``s."""

    __slots__ = ("_end", "_exact", "_literal", "_pct", "_prefix", "_star", "_wild")

    def __init__(self, full: str) -> None:
        tokens: list[str] = []
        for ch in full:
            if ch in "*%" and tokens and tokens[-1] in "*%":
                # Adjacent wildcards are one: %% is %, and * with % either side is *.
                tokens[-1] = "*" if "*" in (ch, tokens[-1]) else "%"
            else:
                tokens.append(ch)
        self._end = 1 << len(tokens)
        self._star = self._pct = 0
        self._literal: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if tok == "*":
                self._star |= 1 << i
            elif tok == "%":
                self._pct |= 1 << i
            else:
                self._literal[tok] = self._literal.get(tok, 0) | 1 << i
        self._wild = self._star | self._pct
        text = "".join(tokens)
        # The common shapes need no automaton: an exact name, or a prefix and a final *.
        self._exact = text if not self._wild else None
        self._prefix = text[:-1] if tokens[-1:] == ["*"] and self._wild == self._end >> 1 \
            else None

    def fullmatch(self, name: str) -> bool:
        """True when the pattern matches all of ``name``."""
        if self._exact is not None:
            return name == self._exact
        if self._prefix is not None:
            return name.startswith(self._prefix)
        star, pct, wild, literal = self._star, self._pct, self._wild, self._literal
        state = 1 | (1 & wild) << 1  # at the start, and past a leading wildcard (empty)
        for ch in name:
            moved = (state & literal.get(ch, 0)) << 1 | state & star
            if ch != DELIMITER:
                moved |= state & pct
            # A wildcard may match nothing: reaching one also reaches the token after it
            # (never another wildcard, they were merged).
            state = moved | (moved & wild) << 1
            if not state:
                return False
        return bool(state & self._end)


def compile_pattern(reference: str, pattern: str) -> Pattern:
    """LIST ``reference`` + ``pattern`` (RFC 9051 section 6.3.9) for ``Pattern.fullmatch``.
    INBOX matches case-insensitively."""
    full = reference + pattern if not pattern.startswith(DELIMITER) or not reference else (
        reference.rstrip(DELIMITER) + pattern
    )
    if full[:5].upper() == INBOX and (len(full) == 5 or full[5] in "/*%"):
        # RFC 9051 section 5.1: INBOX in any case names INBOX, also as a prefix.
        full = INBOX + full[5:]
    return Pattern(full)
