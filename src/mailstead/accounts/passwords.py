"""Password hashing with argon2id (RFC 9106), and the rules a new password must meet.

The default hasher's parameters are argon2-cffi's defaults, RFC 9106's second recommended
option (t=3, 64 MiB, p=4); ``make_hasher`` builds one from ``[security]``, and
``needs_rehash`` tells when a stored hash used other ones (it is then rehashed at login).

The rules follow NIST SP 800-63B section 5.1.1.2: at least 8 characters, no composition
rules, and a check against passwords known to be common and against context-specific words
(here the address). The common list ships in ``data/common-passwords.txt``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from mailstead.core.errors import MailsteadError
from mailstead.core.secret import Secret

# NIST SP 800-63B section 5.1.1.2: memorized secrets SHALL be at least 8 characters.
MIN_LENGTH = 8
# Long enough for any passphrase or generated password; bounded so a hostile client cannot
# make each AUTH attempt hash megabytes.
MAX_LENGTH = 1024

DEFAULT_HASHER = PasswordHasher(type=Type.ID)


def make_hasher(time_cost: int, memory_cost: int, parallelism: int) -> PasswordHasher:
    """An argon2id hasher with these parameters (memory in KiB), 16-byte salt, 32-byte tag."""
    return PasswordHasher(
        time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
    )


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-case (loaded once; immutable)."""
    text = resources.files("mailstead.accounts").joinpath("data/common-passwords.txt")
    return frozenset(
        line.strip() for line in text.read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )


class PasswordRuleError(MailsteadError, ValueError):
    """A new password does not meet the rules; the message says which."""


def check_password_rules(password: Secret, address: str | None = None) -> None:
    """Refuse passwords shorter than 8 characters, absurdly long ones, control characters
    (NUL cannot pass SASL PLAIN, RFC 4616 section 2; line breaks cannot pass IMAP LOGIN),
    common ones, and ones that are little more than the address's local part."""
    value = password.reveal()
    if len(value) < MIN_LENGTH:
        raise PasswordRuleError(f"password is too short: use at least {MIN_LENGTH} characters")
    if len(value) > MAX_LENGTH:
        raise PasswordRuleError(f"password is too long: use at most {MAX_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise PasswordRuleError("password contains a control character (e.g. a tab or newline)")
    folded = value.casefold()
    if folded in common_passwords() or folded.strip() in common_passwords():
        raise PasswordRuleError(
            "password is one of the most common passwords and would be guessed at once; "
            "choose another (a few unrelated words make a good one)"
        )
    if address is not None:
        if folded == address.casefold():
            raise PasswordRuleError("password must not be the address")
        # NIST SP 800-63B section 5.1.1.2 "context-specific words": what is left after taking
        # out the address, its user name and its domain (and their parts) must be a password
        # on its own: "alice-Secret-1" passes for alice@, "alice2024!" and, for weak@a.test,
        # "weak@a.test1" or "Test-weak-99" do not.
        rest = folded
        for word in context_words(address):
            rest = rest.replace(word, "")
        if rest != folded and len(rest) < MIN_LENGTH:
            raise PasswordRuleError(
                "password is built on the address: without its user name and domain it must "
                f"still have at least {MIN_LENGTH} characters"
            )


# Parts shorter than this are too common in any text to take out of a password ("a", "me").
_MIN_WORD = 3


def context_words(address: str) -> list[str]:
    """The words of ``address`` a password must not be built on, longest first: the whole
    address, the local part and the domain, and their parts split at dots, hyphens,
    underscores and plus signs, case-folded."""
    local, _, domain = address.casefold().rpartition("@")
    words = {address.casefold(), local, domain}
    for part in (local, domain):
        words.update(w for w in re.split(r"[.\-_+]", part))
    return sorted((w for w in words if len(w) >= _MIN_WORD), key=lambda w: (-len(w), w))


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
