"""TOTP (RFC 6238) and one-time recovery codes: pure functions, the time passed in.

The secret is 160 random bits (RFC 4226 section 4 R6 recommends 160), shown in base32 as
authenticator apps expect; codes are 6 digits over 30-second steps with SHA-1, the only
parameters every app supports (RFC 6238 section 4 defaults).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum

import pyotp

STEP = 30  # RFC 6238 section 4: X = 30 seconds
DIGITS = 6
# RFC 6238 section 5.2: accept at most one step of clock drift each way.
WINDOW = 1
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_LENGTH = 10  # 31^10: about 49.5 bits each, single use and keyed-hashed
_CODE = re.compile(r"[0-9]{6}")


class CodeCheck(Enum):
    """What a typed second-factor code turned out to be."""

    OK = "ok"
    WRONG = "wrong"
    REUSED = "reused"  # a right TOTP code whose time step was used already


@dataclass(frozen=True, slots=True)
class TwoFactorSetup:
    """A secret not yet in effect: shown to the user, stored once a first code matches."""

    address: str
    secret: str  # base32; never logged
    uri: str  # otpauth://totp/... for the QR code

    def __repr__(self) -> str:
        return f"TwoFactorSetup(address={self.address!r}, secret='***')"


def new_setup(address: str, issuer: str) -> TwoFactorSetup:
    """A fresh secret and its ``otpauth://`` URI (Google Authenticator Key URI format)."""
    secret = pyotp.random_base32(32)  # 32 base32 characters = 160 bits
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=address, issuer_name=issuer
    )
    return TwoFactorSetup(address, secret, uri)


def normalise_code(code: str) -> str:
    """The code without spaces and hyphens, lower-case (what people type)."""
    return re.sub(r"[\s-]", "", code).lower()


def match_totp(secret: str, code: str, now: float) -> int | None:
    """The time step (counter) ``code`` belongs to within +-WINDOW steps of ``now``, else None.
    The caller must refuse a counter not newer than the last accepted (replay)."""
    text = normalise_code(code)
    if not _CODE.fullmatch(text):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    current = int(now // STEP)
    found: int | None = None
    for counter in range(current - WINDOW, current + WINDOW + 1):
        # Every candidate is compared (no early exit), in constant time (pyotp uses
        # hmac.compare_digest), so the timing says nothing about which step matched.
        if pyotp.utils.strings_equal(text, totp.at(counter * STEP)) and found is None:
            found = counter
    return found


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """``count`` random codes like ``abcde-fghjk``."""
    out = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        out.append(f"{raw[:5]}-{raw[5:]}")
    return out


def looks_like_recovery_code(code: str) -> bool:
    text = normalise_code(code)
    return len(text) == _RECOVERY_LENGTH and all(c in _RECOVERY_ALPHABET for c in text)
