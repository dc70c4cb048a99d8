"""The server-side key that protects second factors and app passwords: DATA/security.key.

One random 256-bit key, kept outside the database (mode 0600) so that a leaked database or
backup alone reveals no TOTP secret and allows no offline test of an app password. Two
independent subkeys are derived from it with HKDF-SHA256 (RFC 5869): one for the keyed
digests (HMAC-SHA256, RFC 2104) of app passwords and recovery codes, one for AES-256-GCM
encryption of TOTP secrets.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailstead.core.errors import MailsteadError

KEY_FILE = "security.key"
KEY_BYTES = 32
_NONCE_BYTES = 12  # NIST SP 800-38D section 8.2: 96-bit random nonces for AES-GCM
_VERSION = "v1"


class SecurityKeyError(MailsteadError):
    """The key file is unreadable or damaged, or a ciphertext does not decrypt with it."""


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


class SecurityKeys:
    """The derived keys; construct with ``load_or_create`` (or ``from_bytes`` in tests)."""

    __slots__ = ("_aead", "_mac", "_srs", "check_value")

    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise SecurityKeyError(f"the security key must be {KEY_BYTES} bytes")
        self._mac = _derive(master, b"mailstead digest v1")
        self._aead = AESGCM(_derive(master, b"mailstead totp encryption v1"))
        self._srs = _derive(master, b"mailstead srs v1")
        # One more independent subkey, published in the store: equal check values mean the
        # same key, and (HKDF being one-way, RFC 5869 section 3.1) it reveals nothing of it.
        self.check_value = "v1:" + _derive(master, b"mailstead key check v1").hex()[:32]

    def __repr__(self) -> str:
        return "SecurityKeys(***)"

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SecurityKeys:
        """Read DATA/security.key, creating it first when absent. Only for a data directory
        whose store holds no key record yet; servers and commands go through
        accounts/installkey.py, which checks the key against the store."""
        path = data_dir / KEY_FILE
        if not path.exists():
            write_key_file(data_dir, secrets.token_bytes(KEY_BYTES))
        return cls(read_key_file(path))

    def srs_key(self) -> bytes:
        """The key of the SRS hashes (``mailauth.srs``): derived, so it is the same on every
        node sharing security.key and independent of the other uses."""
        return self._srs

    def digest(self, purpose: str, value: str) -> str:
        """The keyed HMAC-SHA256 of ``value`` for ``purpose`` ("app", "recovery"), hex."""
        data = purpose.encode() + b"\x00" + value.encode("utf-8")
        return hmac.new(self._mac, data, hashlib.sha256).hexdigest()

    def encrypt(self, plaintext: str, context: str) -> str:
        """AES-256-GCM with a random nonce; ``context`` (e.g. the account id) is bound as
        associated data, so a ciphertext copied to another account does not decrypt."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode())
        return f"{_VERSION}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, ciphertext: str, context: str) -> str:
        """Raises SecurityKeyError when the text was not made by ``encrypt`` with this key."""
        version, _, body = ciphertext.partition(":")
        try:
            if version != _VERSION:
                raise ValueError("unknown version")
            raw = base64.b64decode(body, validate=True)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
            return plain.decode("utf-8")
        except (ValueError, InvalidTag) as exc:
            raise SecurityKeyError(
                f"a stored second factor does not decrypt with {KEY_FILE} ({type(exc).__name__})"
            ) from None


def read_key_file(path: Path) -> bytes:
    """The raw key in ``path`` (base64, one line); SecurityKeyError when unreadable."""
    try:
        master = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise SecurityKeyError(f"cannot read {path}: {exc}") from None
    if len(master) != KEY_BYTES:
        raise SecurityKeyError(f"{path} is damaged: it does not hold a {KEY_BYTES}-byte key")
    return master


def write_key_file(data_dir: Path, master: bytes) -> None:
    """Writes DATA/security.key (mode 0600) unless it exists. Atomic and durable: a
    temporary file, fsync'd, then linked into place, so a server and a CLI starting
    together agree on one key."""
    path = data_dir / KEY_FILE
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(master) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def equal(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())
