"""Server-side web sessions: a random id in a cookie, everything else in the store.

Sessions live in the store's ``web_sessions`` table (interfaces.WebSessionStore), so every
node on a shared PostgreSQL database knows every session: a load balancer may send each
request anywhere, and sessions survive a restart. Rows are keyed by the SHA-256 of the cookie
value, so neither the database nor a backup holds a usable id; the 2FA enrolment secret is
encrypted with the data directory's security.key (the same on every node). A signed-in
session remembers a digest of the account's password hash, checked on every request, so a
password changed anywhere (the CLI, another node) ends the sessions signed in before. The
table is bounded per kind (anonymous, signed in), and the idle clock is written at most once
a minute, not on every request.

A session that only shows the sign-in form is not stored at all: its cookie value carries
its creation time and an HMAC of both under security.key, and its CSRF token is another HMAC
of that value, so every node can check them; a flood of sign-in pages costs no write and
cannot push out anyone's stored session (a pending 2FA step, say). It becomes a row once it
holds something (a pending sign-in, a message for the next page), and ends like any other
after the idle timeout (counted from when the form was first shown).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mailstead.accounts.keys import SecurityKeyError, SecurityKeys
from mailstead.accounts.twofactor import TwoFactorSetup
from mailstead.storage.interfaces import WebSessionRow, WebSessionStore
from mailstead.web.security import csrf_matches

# OWASP Session Management: an idle timeout of 15-30 minutes for ordinary applications and an
# absolute lifetime of a working day; a sign-in waiting for its second factor gets 5 minutes.
IDLE_TIMEOUT = 30 * 60.0
ABSOLUTE_TIMEOUT = 12 * 3600.0
PENDING_TIMEOUT = 5 * 60.0
MAX_CODE_ATTEMPTS = 5  # wrong 2FA codes before the password must be given again
MAX_SIGNED_IN = 50_000
MAX_ANONYMOUS = 10_000  # sessions holding only a sign-in form's CSRF token
# How stale a stored last_seen may get: the idle clock is written at most this often per
# session (so the idle timeout holds to within a minute) rather than on every request.
TOUCH_INTERVAL = 60.0

# A cookie name starting with "__Host-" is only accepted by browsers when set with Secure,
# Path=/ and no Domain (RFC 6265bis section 4.1.3.2), so a sibling host cannot plant one.
COOKIE_HTTPS = "__Host-mailstead"
COOKIE_HTTP = "mailstead"
_ID_BYTES = 32  # 256 bits from the OS CSPRNG (OWASP asks for at least 64 bits of entropy)
# A sign-in form session's cookie value: 43 random base64url characters, its creation time in
# whole seconds, and the first 32 hex digits of their HMAC (see ``SessionStore._form_tag``).
_FORM_ID = re.compile(r"([A-Za-z0-9_-]{43}\.([0-9]{1,12}))\.([0-9a-f]{32})\Z")


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
    stored: bool = True  # False: a sign-in form session, no row yet (see the module docstring)
    # What ``state()`` was when last read from or written to the store (see SessionStore.save).
    saved: str = field(default="", repr=False)

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

    def state(self) -> str:
        """The session's mutable state as canonical JSON, the enrolment still in clear (for
        comparing; ``SessionStore`` encrypts it before it is stored)."""
        return json.dumps({
            "csrf": self.csrf, "address": self.address, "stamp": self.stamp,
            "pending": asdict(self.pending) if self.pending is not None else None,
            "setup": asdict(self.setup) if self.setup is not None else None,
            "flash": self.flash,
        }, sort_keys=True)


class SessionStore:
    """The sessions of every node, kept in the store; the clock injected. ``keys``: the
    data directory's security keys, which encrypt the 2FA enrolment of a session."""

    def __init__(
        self,
        store: WebSessionStore,
        keys: SecurityKeys,
        clock: Callable[[], float],
        *,
        idle: float = IDLE_TIMEOUT,
        absolute: float = ABSOLUTE_TIMEOUT,
        max_signed_in: int = MAX_SIGNED_IN,
        max_anonymous: int = MAX_ANONYMOUS,
    ) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self.idle = idle
        self.absolute = absolute
        self.max_signed_in = max_signed_in
        self.max_anonymous = max_anonymous

    async def count(self) -> int:
        """How many sessions the store holds (expired ones not yet pruned included)."""
        anonymous, signed_in = await self._store.count_web_sessions()
        return anonymous + signed_in

    def _expired(self, created: float, last_seen: float, now: float) -> bool:
        return now - last_seen > self.idle or now - created > self.absolute

    # Serialisation -------------------------------------------------------------------------

    def _stored(self, session: Session, key: str) -> str:
        """The row's ``data``: ``state()`` with the enrolment (secret and URI) encrypted,
        bound to this session's key so it decrypts in no other row."""
        data: dict[str, Any] = json.loads(session.state())
        if data["setup"] is not None:
            data["setup"] = self._keys.encrypt(json.dumps(data["setup"]), "web-session:" + key)
        return json.dumps(data)

    def _loaded(self, session_id: str, key: str, row: WebSessionRow) -> Session | None:
        """The session of a stored row; None when the row cannot be read (then it is
        treated as unknown, and the person signs in again)."""
        try:
            data = json.loads(row.data)
            pending = data["pending"]
            setup = data["setup"]
            session = Session(
                id=session_id, csrf=str(data["csrf"]), created=row.created,
                last_seen=row.last_seen, account_id=row.account_id,
                address=str(data["address"]), stamp=str(data["stamp"]),
                pending=PendingSignIn(**pending) if pending is not None else None,
                flash=str(data["flash"]),
            )
            if setup is not None:
                try:
                    plain = self._keys.decrypt(str(setup), "web-session:" + key)
                    session.setup = TwoFactorSetup(**json.loads(plain))
                except SecurityKeyError:  # another security.key: start the enrolment again
                    session.setup = None
        except (ValueError, KeyError, TypeError):
            return None
        session.saved = session.state()
        return session

    # Sessions ----------------------------------------------------------------------------

    def _form_tag(self, body: str) -> str:
        return self._keys.digest("web sign-in form id", body)[:32]

    def _form_session(self, session_id: str, created: float, *, fresh: bool) -> Session:
        """The unstored session of a sign-in form: its token is derived from its id."""
        session = Session(
            id=session_id, csrf=self._keys.digest("web sign-in form", session_id),
            created=created, last_seen=self._clock(), fresh=fresh, stored=False,
        )
        session.saved = session.state()
        return session

    def _form_of(self, session_id: str) -> Session | None:
        """The sign-in form session a cookie value names, if it is one of ours and live."""
        match = _FORM_ID.match(session_id)
        if match is None or not hmac.compare_digest(match[3], self._form_tag(match[1])):
            return None
        created = float(match[2])
        now = self._clock()
        if self._expired(created, created, now) or created > now + TOUCH_INTERVAL:
            return None
        return self._form_session(session_id, created, fresh=False)

    async def new(
        self, *, account_id: int | None = None, address: str = "", stamp: str = "",
        pending: PendingSignIn | None = None, flash: str = "",
    ) -> Session:
        """A fresh session with a new id (set the cookie on the response). One that only
        shows the sign-in form is not stored; any other is, and when its kind is at its cap,
        the expired and then the least recently seen sessions of that kind make room."""
        now = self._clock()
        if account_id is None and pending is None and not flash:
            body = f"{secrets.token_urlsafe(_ID_BYTES)}.{int(now)}"
            return self._form_session(f"{body}.{self._form_tag(body)}", float(int(now)),
                                      fresh=True)
        session_id = secrets.token_urlsafe(_ID_BYTES)
        session = Session(
            id=session_id, csrf=secrets.token_urlsafe(_ID_BYTES),
            created=now, last_seen=now, account_id=account_id, address=address, stamp=stamp,
            pending=pending, flash=flash, fresh=True,
        )
        await self._insert(session)
        return session

    async def _insert(self, session: Session) -> None:
        """Stores ``session`` as a new row, making room under its kind's cap first."""
        now = self._clock()
        anonymous, signed_in = await self._store.count_web_sessions()
        if session.account_id is None and anonymous >= self.max_anonymous:
            await self._prune(now, self.max_anonymous - 1, self.max_signed_in)
        elif session.account_id is not None and signed_in >= self.max_signed_in:
            await self._prune(now, self.max_anonymous, self.max_signed_in - 1)
        key = _key(session.id)
        await self._store.put_web_session(key, session.account_id,
                                          self._stored(session, key), session.created, now)
        session.stored = True
        session.saved = session.state()

    async def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, its idle clock restarted; None when unknown or
        expired (an expired one is removed). A sign-in form session needs no row: its value
        proves itself (see the module docstring)."""
        if not session_id or len(session_id) > 100:
            return None
        key = _key(session_id)
        row = await self._store.get_web_session(key)
        if row is None:
            return self._form_of(session_id)
        now = self._clock()
        if self._expired(row.created, row.last_seen, now):
            await self._store.drop_web_sessions([key])
            return None
        session = self._loaded(session_id, key, row)
        if session is None:
            return None
        if now - row.last_seen >= TOUCH_INTERVAL:
            await self._store.touch_web_session(key, now)
            session.last_seen = now
        return session

    async def save(self, session: Session) -> None:
        """Writes what the request changed in the session (flash, pending sign-in, enrolment,
        stamp), if anything; a session ended meanwhile (signed out elsewhere) stays ended."""
        state = session.state()
        if state == session.saved:
            return
        if not session.stored:  # a sign-in form session now holds something: a row
            await self._insert(session)
            return
        key = _key(session.id)
        await self._store.update_web_session(key, self._stored(session, key),
                                              session.last_seen)
        session.saved = state

    async def drop(self, session: Session) -> None:
        await self._store.drop_web_sessions([_key(session.id)])

    async def sign_in(self, old: Session, account_id: int, address: str,
                      password_hash: str) -> Session:
        """Replaces ``old`` by a signed-in session with a new id and token, so an id known
        before the sign-in (session fixation) is worth nothing after it; ``password_hash``:
        the account's, as stored (see ``Session.password_unchanged``)."""
        await self.drop(old)
        return await self.new(account_id=account_id, address=address,
                              stamp=credential_stamp(password_hash))

    async def renew(self, old: Session) -> Session:
        """Same state under a new id (after the password step of a 2FA sign-in)."""
        await self.drop(old)
        return await self.new(pending=old.pending, flash=old.flash)

    async def drop_account(self, account_id: int, *, keep: Session | None = None) -> int:
        """Ends every session of the account except ``keep`` (after a password change, or when
        the account is removed), on every node; returns how many ended."""
        return await self._store.drop_account_web_sessions(
            account_id, _key(keep.id) if keep is not None else None
        )

    async def _prune(self, now: float, max_anonymous: int, max_signed_in: int) -> int:
        return await self._store.prune_web_sessions(
            now - self.idle, now - self.absolute, max_anonymous, max_signed_in
        )

    async def prune(self) -> int:
        """Removes the expired sessions and any beyond the caps; returns how many."""
        return await self._prune(self._clock(), self.max_anonymous, self.max_signed_in)
