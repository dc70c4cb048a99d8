"""App-specific passwords: generation, the form people type them in, and protocol names.

A generated password is 16 lower-case letters (26^16, about 75 bits, from ``secrets``),
shown in groups of four as iCloud and Google do. Because it is random and long, a fast keyed
hash (HMAC-SHA256 with DATA/security.key, see keys.py) protects it as well as argon2 would
protect a human password: 2^75 guesses are out of reach even with the key, and without the
key a stolen database allows no guessing at all. That makes checking cheap: one HMAC per
login and a constant-time comparison per stored app password, instead of an argon2 run
(tens of milliseconds) per app password of the account.
"""

from __future__ import annotations

import re
import secrets
import string

LENGTH = 16
# The protocol names the servers pass to ``AccountService.login``; an app password limited to
# some of them opens only those. "web" is deliberately absent: the web sign-in refuses every
# app password (a stolen device password must not reach the account settings).
PROTOCOLS: tuple[str, ...] = ("imap", "pop3", "smtp", "managesieve")
MAX_NAME = 64
_SHOWN = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP", "managesieve": "ManageSieve"}
MAX_PER_ACCOUNT = 100


def generate() -> str:
    """A new app password in display form: ``abcd efgh ijkl mnop``."""
    raw = "".join(secrets.choice(string.ascii_lowercase) for _ in range(LENGTH))
    return " ".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normalise(text: str) -> str | None:
    """The 16 letters of a typed app password (spaces and hyphens dropped, any case), or
    None when ``text`` cannot be one; used before hashing."""
    compact = re.sub(r"[ \-]", "", text).lower()
    if len(compact) != LENGTH or not compact.isascii() or not compact.isalpha():
        return None
    return compact


def parse_protocols(text: str | None) -> tuple[str, ...]:
    """``"imap,smtp"`` -> ("imap", "smtp"); None or "" or "all" -> () (every mail protocol).
    Raises ValueError naming the unknown protocol ("web" included: see PROTOCOLS)."""
    if text is None or text.strip().lower() in ("", "all"):
        return ()
    out: list[str] = []
    for item in text.split(","):
        name = item.strip().lower()
        if name == "web":
            raise ValueError("app passwords never open the web pages: sign in there with "
                             "the account password")
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {item.strip()!r} (use {', '.join(PROTOCOLS)})")
        if name not in out:
            out.append(name)
    return tuple(out)


def check_name(name: str) -> str:
    """The name as stored (trimmed). Raises ValueError for an empty, long or unprintable one."""
    text = name.strip()
    if not text:
        raise ValueError("an app password needs a name, e.g. --name iPhone")
    if len(text) > MAX_NAME:
        raise ValueError(f"the name is too long: at most {MAX_NAME} characters")
    if not text.isprintable():
        raise ValueError("the name contains control characters")
    return text


def scope_text(protocols: tuple[str, ...]) -> str:
    """What a client is told when an app password is used on a protocol it does not open:
    "this app password is for IMAP, POP3 only" (it was right, so saying so leaks nothing
    a guesser could use: the password is 75 random bits)."""
    names = ", ".join(_SHOWN.get(p, p) for p in protocols)
    return f"this app password is for {names} only"
