"""Password hashing with argon2id (RFC 9106), and the rules a new password must meet.

The hasher's parameters are argon2-cffi's defaults, RFC 9106's second recommended option
(t=3, 64 MiB, p=4); ``needs_rehash`` tells when a stored hash used weaker ones.
"""

from __future__ import annotations

import unicodedata

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from mailstead.core.errors import MailsteadError
from mailstead.core.secret import Secret

MIN_LENGTH = 8
# Long enough for any passphrase or generated password; bounded so a hostile client cannot
# make each AUTH attempt hash megabytes.
MAX_LENGTH = 1024

DEFAULT_HASHER = PasswordHasher(type=Type.ID)


class PasswordRuleError(MailsteadError, ValueError):
    """A new password does not meet the rules; the message says which."""


def check_password_rules(password: Secret) -> None:
    """Refuse passwords shorter than 8 characters, absurdly long ones, and control characters
    (NUL cannot pass SASL PLAIN, RFC 4616 section 2; line breaks cannot pass IMAP LOGIN)."""
    value = password.reveal()
    if len(value) < MIN_LENGTH:
        raise PasswordRuleError(f"password is too short: use at least {MIN_LENGTH} characters")
    if len(value) > MAX_LENGTH:
        raise PasswordRuleError(f"password is too long: use at most {MAX_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise PasswordRuleError("password contains a control character (e.g. a tab or newline)")


def hash_password(password: Secret, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    """The argon2id PHC string of ``password``, with a fresh random salt."""
    return hasher.hash(password.reveal())


def verify_password(
    password_hash: str, password: Secret, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """True when ``password`` matches; False for a mismatch or an unreadable hash (never raises,
    so a damaged row cannot turn a login attempt into a server error)."""
    try:
        return hasher.verify(password_hash, password.reveal())
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """True when the hash used other parameters than ``hasher``; rehash after a good login."""
    try:
        return hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True
