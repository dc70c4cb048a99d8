"""The installation's one security key, shared by every node: how a node gets it and proves
it has the right one.

Each data directory keeps the key in DATA/security.key (accounts/keys.py); the store keeps
only its check value (an independent HKDF subkey, which reveals nothing of the key), recorded
by the first node. A server or command whose key file is missing or differs from that record
refuses to run, with one line saying what to do, and a key is generated only for a store that
records none and holds no second factor or app password: a second key would silently break
every 2FA secret and app password made with the first. A joining node gets the key either as
a copied file or from the store, where an admin may leave it sealed by a passphrase
(scrypt, RFC 7914, then AES-256-GCM); without the passphrase the sealed copy is useless.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mailstead.accounts.keys import (
    KEY_BYTES,
    KEY_FILE,
    SecurityKeyError,
    SecurityKeys,
    read_key_file,
    write_key_file,
)
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import Store

# RFC 7914 section 2: N = 2^15, r = 8, p = 1 costs 32 MiB and about 0.1 s per try, so a
# stolen database gives an offline guesser little; the parameters travel with the sealed key.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_MAX_SCRYPT_MEMORY = 64 * 1024 * 1024  # the most a stored value may make unseal use
_SALT_BYTES = 16
_NONCE_BYTES = 12  # NIST SP 800-38D section 8.2
_SEAL_AD = b"mailstead sealed security key v1"
_SEAL_VERSION = "scrypt1"
MIN_PASSPHRASE = 12

_FETCH_HINT = (
    "on a node that has it run `mailstead security share-key --passphrase-stdin`, then here "
    "`mailstead security fetch-key --passphrase-stdin` (or copy its security.key here, mode "
    "0600)"
)


def _missing(path: Path) -> SecurityKeyError:
    return SecurityKeyError(
        f"{path} is missing and this installation's second factors and app passwords are "
        f"protected by the key of its other nodes: {_FETCH_HINT}"
    )


def _mismatch(path: Path) -> SecurityKeyError:
    return SecurityKeyError(
        f"{path} is not this installation's security key (the store was set up with "
        f"another): move it aside and get the right one: {_FETCH_HINT}"
    )


async def open_keys(store: Store, data_dir: Path) -> SecurityKeys:
    """The checked key of this node; generates one only for a store with no key record and
    no keyed secrets. Raises SecurityKeyError (one line saying what to do)."""
    path = data_dir / KEY_FILE
    check, _ = await store.security_key_record()
    if path.exists():
        keys = SecurityKeys(read_key_file(path))
        if check is None:
            # A store set up before check values: the first node to start records its key.
            check = await store.record_security_key(keys.check_value)
        if check != keys.check_value:
            raise _mismatch(path)
        return keys
    if check is not None or await store.count_keyed_secrets():
        raise _missing(path)
    return await create_key(store, data_dir)


async def create_key(store: Store, data_dir: Path) -> SecurityKeys:
    """A new key for a new installation, written to DATA/security.key and recorded in the
    store. Raises SecurityKeyError when another node recorded a different key first."""
    path = data_dir / KEY_FILE
    write_key_file(data_dir, secrets.token_bytes(KEY_BYTES))
    keys = SecurityKeys(read_key_file(path))
    if await store.record_security_key(keys.check_value) != keys.check_value:
        path.unlink(missing_ok=True)  # it protects nothing: the race's winner holds the key
        raise _missing(path)
    return keys


async def install_key(store: Store, data_dir: Path, master: bytes) -> SecurityKeys:
    """Writes ``master`` as this node's key after checking it is the installation's (when
    the store records one). Raises SecurityKeyError."""
    path = data_dir / KEY_FILE
    keys = SecurityKeys(master)
    check, _ = await store.security_key_record()
    if check is not None and check != keys.check_value:
        raise SecurityKeyError(
            "that key is not this installation's security key (its check value differs from "
            "the one in the store); nothing was written"
        )
    if path.exists():
        if read_key_file(path) != master:
            raise SecurityKeyError(
                f"{path} exists and holds another key; move it aside first"
            )
    else:
        write_key_file(data_dir, master)
    if check is None and await store.record_security_key(keys.check_value) != keys.check_value:
        raise _mismatch(path)
    return keys


def _kdf(salt: bytes, n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p)


def seal(master: bytes, passphrase: Secret) -> str:
    """``master`` encrypted under a key derived from ``passphrase``, as one text value."""
    salt = secrets.token_bytes(_SALT_BYTES)
    wrapping = _kdf(salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P).derive(
        passphrase.reveal().encode("utf-8"))
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(wrapping).encrypt(nonce, master, _SEAL_AD)
    body = base64.b64encode(salt + nonce + sealed).decode("ascii")
    return f"{_SEAL_VERSION}:{_SCRYPT_N}:{_SCRYPT_R}:{_SCRYPT_P}:{body}"


def unseal(text: str, passphrase: Secret) -> bytes:
    """The key sealed by ``seal``; SecurityKeyError for a wrong passphrase or a damaged
    value."""
    try:
        version, n_text, r_text, p_text, body = text.split(":")
        n, r, p = int(n_text), int(r_text), int(p_text)
        # The parameters come from the database: bound the memory (128 * r * N octets,
        # RFC 7914 section 6) and the work they can ask for.
        if (version != _SEAL_VERSION or not (n >= 2 and 1 <= r <= 16 and 1 <= p <= 4)
                or n & (n - 1) or 128 * r * n > _MAX_SCRYPT_MEMORY):
            raise ValueError("unknown parameters")
        raw = base64.b64decode(body, validate=True)
        salt, nonce = raw[:_SALT_BYTES], raw[_SALT_BYTES:_SALT_BYTES + _NONCE_BYTES]
        wrapping = _kdf(salt, n, r, p).derive(passphrase.reveal().encode("utf-8"))
        master = AESGCM(wrapping).decrypt(nonce, raw[_SALT_BYTES + _NONCE_BYTES:], _SEAL_AD)
    except InvalidTag:
        raise SecurityKeyError(
            "the passphrase does not open the security key shared in the store"
        ) from None
    except (ValueError, MemoryError):
        raise SecurityKeyError(
            "the security key shared in the store is damaged: share it again from a node "
            "that has it (mailstead security share-key)"
        ) from None
    if len(master) != KEY_BYTES:
        raise SecurityKeyError("the security key shared in the store has the wrong length")
    return master


def check_passphrase(passphrase: Secret) -> None:
    """Refuses a passphrase too short to protect a key kept in a database."""
    if len(passphrase.reveal()) < MIN_PASSPHRASE:
        raise SecurityKeyError(
            f"the passphrase must have at least {MIN_PASSPHRASE} characters"
        )


async def share_key(store: Store, data_dir: Path, passphrase: Secret) -> None:
    """Leaves this node's (checked) key in the store, sealed by ``passphrase``."""
    check_passphrase(passphrase)
    keys = await open_keys(store, data_dir)
    del keys
    master = read_key_file(data_dir / KEY_FILE)
    await store.set_sealed_security_key(seal(master, passphrase))


async def fetch_key(store: Store, data_dir: Path, passphrase: Secret) -> SecurityKeys:
    """Opens the key shared in the store with ``passphrase`` and installs it on this node."""
    _, sealed = await store.security_key_record()
    if sealed is None:
        raise SecurityKeyError(
            "no security key is shared in the store: on a node that has it run "
            "`mailstead security share-key --passphrase-stdin` first"
        )
    return await install_key(store, data_dir, unseal(sealed, passphrase))
