"""Server-side web sessions: a random id in a cookie, everything else in this process.

Sessions live in memory, so they are per process and end with a restart (people sign in
again): fine for the single-node SQLite installation, where one process serves the web. A
multi-node deployment needs sticky routing or a store-backed session table. A signed-in
session remembers a digest of the account's password hash, checked on every request, so a
password changed anywhere (the CLI, another node) ends the sessions signed in before. The
ids are looked up by their SHA-256, so neither the dictionary nor a memory dump holds a
usable id, and every table is bounded so a flood of sign-in pages cannot grow memory without
limit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mailstead.accounts.twofactor import TwoFactorSetup
from mailstead.web.security import csrf_matches

# OWASP Session Management: an idle timeout of 15-30 minutes for ordinary applications and an
# absolute lifetime of a working day; a sign-in waiting for its second factor gets 5 minutes.
IDLE_TIMEOUT = 30 * 60.0
ABSOLUTE_TIMEOUT = 12 * 3600.0
PENDING_TIMEOUT = 5 * 60.0
MAX_CODE_ATTEMPTS = 5  # wrong 2FA codes before the password must be given again
MAX_SIGNED_IN = 50_000
MAX_ANONYMOUS = 10_000  # sessions holding only a sign-in form's CSRF token

# A cookie name starting with "__Host-" is only accepted by browsers when set with Secure,
# Path=/ and no Domain (RFC 6265bis section 4.1.3.2), so a sibling host cannot plant one.
COOKIE_HTTPS = "__Host-mailstead"
COOKIE_HTTP = "mailstead"
_ID_BYTES = 32  # 256 bits from the OS CSPRNG (OWASP asks for at least 64 bits of entropy)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def credential_stamp(password_hash: str) -> str:
    """What a signed-in session keeps of its account's password: a digest of the stored
    hash (a new password, even the same one, gets a new salt and so a new stamp)."""
    return hashlib.sha256(password_hash.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class PendingSignIn:
    """A correct password of an account with 2FA on, waiting for its code."""

    account_id: int
    address: str
    until: float
    attempts: int = 0


@dataclass(eq=False)
class Session:
    """One browser's session. ``id`` is the cookie value; ``csrf`` the token every form of the
    session carries. ``account_id`` is set once the person has fully signed in."""

    id: str
    csrf: str
    created: float
    last_seen: float
    account_id: int | None = None
    address: str = ""
    stamp: str = ""  # credential_stamp of the password it signed in with
    pending: PendingSignIn | None = None
    setup: TwoFactorSetup | None = None  # a 2FA enrolment shown but not yet confirmed
    flash: str = ""  # a one-time message for the next page
    fresh: bool = False  # created by this request: the response must set the cookie

    def __repr__(self) -> str:  # never print the id or the token
        return f"Session(account_id={self.account_id!r}, address={self.address!r})"

    def csrf_ok(self, token: str | None) -> bool:
        """Constant-time comparison of a form's token with the session's."""
        return csrf_matches(self.csrf, token or "")

    def password_unchanged(self, password_hash: str) -> bool:
        """Whether the account's password is still the one this session signed in with."""
        return hmac.compare_digest(self.stamp, credential_stamp(password_hash))

    def take_flash(self) -> str:
        text, self.flash = self.flash, ""
        return text


class SessionStore:
    """The sessions of this process, the clock injected."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle: float = IDLE_TIMEOUT,
        absolute: float = ABSOLUTE_TIMEOUT,
        max_signed_in: int = MAX_SIGNED_IN,
        max_anonymous: int = MAX_ANONYMOUS,
    ) -> None:
        self._clock = clock
        self.idle = idle
        self.absolute = absolute
        self._max = {True: max_signed_in, False: max_anonymous}
        # Least recently used first, one table per kind, so anonymous sessions (anyone can
        # make them) can never push out a signed-in one.
        self._tables: dict[bool, OrderedDict[str, Session]] = {
            True: OrderedDict(), False: OrderedDict()
        }

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle or now - session.created > self.absolute

    def new(self, *, account_id: int | None = None, address: str = "",
            stamp: str = "") -> Session:
        """A fresh session with a new id and CSRF token (set the cookie on the response)."""
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(_ID_BYTES), csrf=secrets.token_urlsafe(_ID_BYTES),
            created=now, last_seen=now, account_id=account_id, address=address, stamp=stamp,
            fresh=True,
        )
        table = self._tables[account_id is not None]
        if len(table) >= self._max[account_id is not None]:
            self.prune()
        while len(table) >= self._max[account_id is not None]:
            table.popitem(last=False)
        table[_key(session.id)] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, its idle clock restarted; None when unknown or
        expired (an expired one is removed)."""
        if not session_id or len(session_id) > 100:
            return None
        key = _key(session_id)
        now = self._clock()
        for table in self._tables.values():
            session = table.get(key)
            if session is None:
                continue
            if self._expired(session, now):
                del table[key]
                return None
            session.last_seen = now
            table.move_to_end(key)
            return session
        return None

    def drop(self, session: Session) -> None:
        for table in self._tables.values():
            table.pop(_key(session.id), None)

    def sign_in(self, old: Session, account_id: int, address: str,
                password_hash: str) -> Session:
        """Replaces ``old`` by a signed-in session with a new id and token, so an id known
        before the sign-in (session fixation) is worth nothing after it; ``password_hash``:
        the account's, as stored (see ``Session.password_unchanged``)."""
        self.drop(old)
        return self.new(account_id=account_id, address=address,
                        stamp=credential_stamp(password_hash))

    def renew(self, old: Session) -> Session:
        """Same state under a new id (after the password step of a 2FA sign-in)."""
        self.drop(old)
        session = self.new()
        session.pending = old.pending
        session.flash = old.flash
        return session

    def drop_account(self, account_id: int, *, keep: Session | None = None) -> int:
        """Ends every session of the account except ``keep`` (after a password change, or when
        the account is removed); returns how many ended."""
        table = self._tables[True]
        gone = [k for k, s in table.items() if s.account_id == account_id and s is not keep]
        for key in gone:
            del table[key]
        return len(gone)

    def prune(self) -> int:
        """Removes the expired sessions; returns how many."""
        now = self._clock()
        removed = 0
        for table in self._tables.values():
            for key in [k for k, s in table.items() if self._expired(s, now)]:
                del table[key]
                removed += 1
        return removed
