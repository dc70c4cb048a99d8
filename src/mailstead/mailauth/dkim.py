"""DKIM (RFC 6376) for outgoing mail: key generation, rotation and the signer the queue uses.

Every domain has an RSA-2048 key (``rsa-sha256``) and an Ed25519 key (``ed25519-sha256``, RFC
8463), and every message is signed with both active keys: receivers that do not know Ed25519
still find a valid RSA signature. Canonicalisation is relaxed/relaxed; the cryptography is
OpenSSL's (through ``cryptography``) on keys parsed once and cached, because dkimpy's pure-Python
RSA costs about 8 ms per signature against 0.5 ms here. dkimpy verifies our output in the tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailstead.accounts.names import DomainNameError, domain_forms
from mailstead.core.errors import MailsteadError
from mailstead.storage.interfaces import DkimKey

log = logging.getLogger("mailstead.dkim")

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
# RFC 8301 section 3.2: signers MUST use RSA keys of at least 1024 bits; 2048 is the common
# recommendation (M3AAWG) and still fits a DNS TXT record.
RSA_BITS = 2048
_SUFFIX = {RSA: "r", ED25519: "e"}

# RFC 6376 section 5.4.1: the fields a signer should sign when present. From is required
# (section 5.4); From, Subject and To are "oversigned" (listed once more than they occur) so
# that nobody can add a second instance without breaking the signature (section 8.15).
OVERSIGNED: tuple[str, ...] = ("from", "subject", "to")
SIGNED_IF_PRESENT: tuple[str, ...] = (
    "date",
    "message-id",
    "reply-to",
    "cc",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "sender",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
# Header lines of a signature are folded to stay under RFC 5322 section 2.1.1's 78 characters.
_FOLD_AT = 76
_B64_CHUNK = 64

_EOL = re.compile(rb"\r\n|\r|\n")
_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
# RFC 5322 section 3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126; obsolete syntax
# (RFC 5322 section 4.5) allows WSP before the colon.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


class DkimError(MailsteadError):
    """A DKIM key operation the administrator asked for cannot be done; the text says why."""


class DkimKeyStore(Protocol):
    """The part of the store DKIM needs (a subset of ``OutboundStore``)."""

    async def add_dkim_key(self, key: DkimKey) -> None: ...

    async def dkim_keys(self, domain: str) -> list[DkimKey]: ...

    async def set_dkim_active(self, domain: str, selectors: Sequence[str]) -> None: ...


# Keys ----------------------------------------------------------------------------------------


def _selector(day: str, algorithm: str, existing: Collection[str]) -> str:
    base = f"ms{day}{_SUFFIX[algorithm]}"
    if base not in existing:
        return base
    n = 2
    while f"{base}{n}" in existing:  # a second rotation on the same day
        n += 1
    return f"{base}{n}"


def generate_dkim_keys(
    domain: str, now: float, *, existing: Collection[str] = (), active: bool = True
) -> list[DkimKey]:
    """A new RSA-2048 and Ed25519 key for ``domain`` with dated selectors ("ms20261124r",
    "ms20261124e"), made unique against the ``existing`` selectors of the domain.

    CPU-bound (RSA generation takes tens of milliseconds): call it from a thread.
    """
    day = time.strftime("%Y%m%d", time.gmtime(now))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pkcs8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)
    # RFC 6376 section 3.6.1: p= is the base64 of the DER public key (SubjectPublicKeyInfo,
    # what every signer publishes); RFC 8463 section 4: for Ed25519 the raw 32-octet key.
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_public = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    keys: list[DkimKey] = []
    for algorithm, private, public in (
        (RSA, rsa_key.private_bytes(*pkcs8, serialization.NoEncryption()), rsa_public),
        (ED25519, ed_key.private_bytes(*pkcs8, serialization.NoEncryption()), ed_public),
    ):
        keys.append(
            DkimKey(
                domain=domain,
                selector=_selector(day, algorithm, existing),
                algorithm=algorithm,
                private_key=private.decode("ascii"),
                public_key=base64.b64encode(public).decode("ascii"),
                created_at=now,
                active=active,
            )
        )
    return keys


async def rotate_dkim_keys(
    store: DkimKeyStore, domain: str, now: float, *, activate: bool
) -> list[DkimKey]:
    """Add a new key pair to ``domain``; with ``activate`` (or when no key is active yet) the
    new pair signs from now on and the older keys stay published but inactive.

    Without ``activate`` the new keys wait until the admin has published them in DNS and runs
    ``activate_dkim_keys``: a signature under an unpublished key fails at every receiver.
    """
    current = await store.dkim_keys(domain)
    activate = activate or not any(k.active for k in current)
    keys = await asyncio.to_thread(
        generate_dkim_keys, domain, now, existing={k.selector for k in current}, active=False
    )
    for key in keys:
        await store.add_dkim_key(key)
    if activate:
        await store.set_dkim_active(domain, [k.selector for k in keys])
    return await store.dkim_keys(domain)


async def activate_dkim_keys(
    store: DkimKeyStore, domain: str, selectors: Sequence[str] = ()
) -> list[str]:
    """Make exactly ``selectors`` sign for ``domain`` (default: the newest key of each
    algorithm); returns them. Raises DkimError when the domain has no such keys."""
    keys = await store.dkim_keys(domain)
    if not keys:
        raise DkimError(f"{domain} has no DKIM keys (create them: mailstead dkim rotate {domain})")
    if selectors:
        known = {k.selector for k in keys}
        unknown = [s for s in selectors if s not in known]
        if unknown:
            raise DkimError(f"{domain} has no DKIM selector {', '.join(unknown)}")
        wanted = list(dict.fromkeys(selectors))
    else:
        newest: dict[str, str] = {}
        for key in keys:  # newest first (store contract)
            newest.setdefault(key.algorithm, key.selector)
        wanted = list(newest.values())
    await store.set_dkim_active(domain, wanted)
    return wanted


class DkimKeyRemoval(DkimKeyStore, Protocol):
    """The store with key deletion (``OutboundStore.remove_dkim_key``)."""

    async def remove_dkim_key(self, domain: str, selector: str) -> None: ...


async def remove_dkim_key(store: DkimKeyRemoval, domain: str, selector: str) -> DkimKey:
    """Delete a retired key of ``domain`` and return it. Raises DkimError when there is no
    such key or when it still signs: the next message would go out unsigned, and mail in
    transit would carry signatures no verifier can check once the record is gone (verifiers
    fetch the key from DNS when they check, RFC 6376 section 6.1.2), so the admin switches
    signing to other keys first."""
    keys = {k.selector: k for k in await store.dkim_keys(domain)}
    key = keys.get(selector)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        raise DkimError(f"{domain} has no DKIM selector {selector} (its selectors: {known})")
    if key.active:
        raise DkimError(
            f"DKIM selector {selector} of {domain} signs mail now; switch signing to other "
            f"keys first (mailstead dkim rotate/activate {domain})"
        )
    await store.remove_dkim_key(domain, selector)
    return key


# Canonicalisation (RFC 6376 section 3.4) ----------------------------------------------------


def normalise_line_endings(data: bytes) -> bytes:
    """Every CR, LF or CRLF becomes CRLF: the form the SMTP client sends (RFC 5321 section
    2.3.8), so the signature covers exactly the bytes that go on the wire."""
    if data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _EOL.sub(b"\r\n", data)


def split_message(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The header fields as (name, raw field with its CRLF) and the body, of CRLF data.

    The header ends at the first empty line (RFC 5322 section 2.1). A line that is neither a
    field nor a continuation is malformed and not signed; a continuation before any field
    is dropped the same way. Never raises.
    """
    if data.startswith(b"\r\n"):
        return [], data[2:]
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[: end + 2], data[end + 4 :])
    fields: list[tuple[bytes, bytes]] = []
    current: list[bytes] | None = None
    name = b""
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            fields.append((name, b"\r\n".join(current) + b"\r\n"))
            current = None
        m = _FIELD.match(line)
        if m is not None:
            name, current = m.group(1).lower(), [line]
    if current is not None:
        fields.append((name, b"\r\n".join(current) + b"\r\n"))
    return fields, body


def relaxed_header(field: bytes) -> bytes:
    """RFC 6376 section 3.4.2: lower-case name, unfolded, WSP runs as one SP, no WSP around
    the colon or at the end; returned with CRLF."""
    name, _, value = field.partition(b":")
    value = value.rstrip(b"\r\n")
    # The regexes only when there is work for them: most fields are one line whose
    # whitespace runs are single spaces already.
    if b"\r\n" in value:  # unfold: a CRLF before WSP goes (_FOLD), by plain replaces
        value = value.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.rstrip(b" \t").lower() + b":" + value.strip(b" ") + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 section 3.4.4: no WSP at line ends, WSP runs as one SP, no empty lines at
    the end; a non-empty body ends with CRLF, an empty one is empty (erratum 3133)."""
    # Same result as removing line-end WSP, then collapsing runs, without regex scans of
    # bodies that need neither (most): once runs are single spaces, line-end WSP is " \r\n".
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    body = strip_trailing_crlf(body)
    # An unterminated last line gets its CRLF (section 3.4.3, applied to relaxed as well).
    return body + b"\r\n" if body else b""


def strip_trailing_crlf(body: bytes) -> bytes:
    """``body`` without the CRLFs at its end (the empty lines RFC 6376 section 3.4.3 and
    3.4.4 ignore); a regex anchored at the end would scan every line of the body."""
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    return body[:end]


# Signing ------------------------------------------------------------------------------------

SigningPrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A parsed private key ready to sign; ``source`` is the PEM it came from (cache key)."""

    selector: str
    algorithm: str
    key: SigningPrivateKey
    source: str


def load_signing_key(key: DkimKey) -> SigningKey:
    """Parse a stored key. Raises DkimError when the PEM or the algorithm is wrong."""
    try:
        private = serialization.load_pem_private_key(key.private_key.encode("ascii"), None)
    except (ValueError, TypeError, UnicodeError) as exc:
        raise DkimError(f"DKIM key {key.selector} of {key.domain} is unreadable: {exc}") from None
    if key.algorithm == RSA and isinstance(private, rsa.RSAPrivateKey):
        # RFC 8301 section 3.2: keys under 1024 bits MUST NOT be used.
        if private.key_size < 1024:
            raise DkimError(f"DKIM key {key.selector} of {key.domain} is too short")
        return SigningKey(key.selector, key.algorithm, private, key.private_key)
    if key.algorithm == ED25519 and isinstance(private, ed25519.Ed25519PrivateKey):
        return SigningKey(key.selector, key.algorithm, private, key.private_key)
    raise DkimError(f"DKIM key {key.selector} of {key.domain} is not a {key.algorithm} key")


def _header_list(fields: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    counts: dict[bytes, int] = {}
    for name, _ in fields:
        counts[name] = counts.get(name, 0) + 1
    names = [n.encode("ascii") for n in OVERSIGNED]
    listed = [n for n in names for _ in range(counts.get(n, 0) + 1)]
    for text in SIGNED_IF_PRESENT:
        n = text.encode("ascii")
        listed += [n] * counts.get(n, 0)
    return listed


def _selected(fields: Sequence[tuple[bytes, bytes]], listed: Sequence[bytes]) -> bytes:
    """RFC 6376 section 5.4.2: each listed name takes the last instance not yet used; a name
    listed more often than it occurs contributes nothing (the oversigning "null" instance)."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, field in fields:
        by_name.setdefault(name, []).append(field)
    out: list[bytes] = []
    for name in listed:
        instances = by_name.get(name)
        if instances:
            out.append(relaxed_header(instances.pop()))
    return b"".join(out)


def _fold(tags: Sequence[str]) -> str:
    """Tags joined by "; ", folded (CRLF TAB) before a tag that would make the line longer
    than 76 characters; b= always starts a line of its own so its value wraps evenly."""
    out = "DKIM-Signature:"
    for i, tag in enumerate(tags):
        piece = tag if i == len(tags) - 1 else tag + ";"
        column = len(out) - (out.rfind("\n") + 1)
        if tag == "b=" or column + 1 + len(piece.split("\r\n")[0]) > _FOLD_AT:
            out += "\r\n\t" + piece
        else:
            out += " " + piece
    return out


def _wrap_names(listed: Sequence[bytes]) -> str:
    """The h= tag; RFC 6376 section 3.5 allows FWS around its colons, used to wrap it."""
    lines = ["h="]
    for i, name in enumerate(listed):
        text = name.decode("ascii") + (":" if i < len(listed) - 1 else "")
        if len(lines[-1]) + len(text) > _FOLD_AT - 2 and lines[-1] != "h=":
            lines.append(text)
        else:
            lines[-1] += text
    return "\r\n\t ".join(lines)


def _sign_one(
    key: SigningKey, d: str, timestamp: int, listed: str, bh: str, signed: bytes
) -> bytes:
    tags = [
        "v=1",
        f"a={key.algorithm}",
        "c=relaxed/relaxed",
        f"d={d}",
        f"s={key.selector}",
        f"t={timestamp}",
        listed,
        f"bh={bh}",
        "b=",
    ]
    unsigned = _fold(tags)
    # RFC 6376 section 3.7: the hash covers the selected fields, then this field with an
    # empty b= value, canonicalised and without its final CRLF.
    data = signed + relaxed_header(unsigned.encode("ascii"))[:-2]
    if isinstance(key.key, rsa.RSAPrivateKey):
        signature = key.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        # RFC 8463 section 3: Ed25519 (PureEdDSA) signs the SHA-256 hash of the data.
        signature = key.key.sign(hashlib.sha256(data).digest())
    b64 = base64.b64encode(signature).decode("ascii")
    chunks = [b64[i : i + _B64_CHUNK] for i in range(0, len(b64), _B64_CHUNK)]
    return (unsigned + "\r\n\t ".join(chunks) + "\r\n").encode("ascii")


def dkim_signature_headers(
    data: bytes, d: str, keys: Sequence[SigningKey], timestamp: int
) -> bytes:
    """The DKIM-Signature fields (CRLF-terminated, one per key) to prepend to ``data``.

    ``d`` is the signing domain in ASCII (A-labels). The body hash and the selected header
    fields are computed once for all keys. Pure and CPU-bound: no I/O, never raises on any
    message content. No l= tag (RFC 6376 section 8.2: it lets anyone append content).
    """
    if not keys:
        return b""
    fields, body = split_message(normalise_line_endings(data))
    # RFC 6376 section 3.7: bh= is the hash of the canonicalised body.
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")
    listed = _header_list(fields)
    signed = _selected(fields, listed)
    names = _wrap_names(listed)
    return b"".join(_sign_one(k, d, timestamp, names, bh, signed) for k in keys)


@dataclass(slots=True)
class _Cached:
    loaded_at: float
    keys: tuple[SigningKey, ...]


class DkimSigner:
    """Signs outgoing mail with the active keys of the sender's domain.

    Parsed keys are cached per domain; the store is asked again after ``refresh`` seconds
    (so a ``mailstead dkim rotate`` in another process takes effect without a restart) and a
    key is parsed again only when its PEM changed. ``invalidate`` drops the cache at once.
    """

    def __init__(
        self,
        store: DkimKeyStore,
        *,
        clock: Callable[[], float] = time.time,
        refresh: float = 60.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._refresh = refresh
        self._cache: dict[str, _Cached] = {}

    def invalidate(self, domain: str | None = None) -> None:
        """Forget the cached keys of ``domain`` (or of every domain)."""
        if domain is None:
            self._cache.clear()
        else:
            self._cache.pop(domain.lower().rstrip("."), None)

    async def _keys(self, domain: str) -> tuple[SigningKey, ...]:
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and 0 <= now - cached.loaded_at < self._refresh:
            return cached.keys
        stored = [k for k in await self._store.dkim_keys(domain) if k.active]
        previous = {(k.selector, k.source): k for k in cached.keys} if cached else {}
        keys: list[SigningKey] = []
        for key in stored:
            reuse = previous.get((key.selector, key.private_key))
            if reuse is not None and reuse.algorithm == key.algorithm:
                keys.append(reuse)
                continue
            try:
                keys.append(await asyncio.to_thread(load_signing_key, key))
            except DkimError as exc:
                # Sign with the other key rather than hold all mail of the domain.
                log.error("dkim key unusable domain=%s selector=%s: %s", domain, key.selector, exc)
        keys.sort(key=lambda k: k.algorithm != RSA)  # RSA first, as most verifiers expect
        entry = _Cached(now, tuple(keys))
        self._cache[domain] = entry
        return entry.keys

    async def sign(self, data: bytes, domain: str) -> bytes:
        """The DKIM-Signature header lines to prepend to ``data`` (which the client must send
        with CRLF line endings), or b"" when ``domain`` has no usable active key.

        Store errors propagate (the caller defers the message rather than send it unsigned).
        """
        name = domain.lower().rstrip(".")
        try:
            d = domain_forms(name)[0]
        except DomainNameError:
            return b""  # an address literal or junk: nothing to sign for
        keys = await self._keys(name)
        if not keys:
            return b""
        timestamp = int(self._clock())
        return await asyncio.to_thread(dkim_signature_headers, data, d, keys, timestamp)
