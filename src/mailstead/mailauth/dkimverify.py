"""DKIM signature verification (RFC 6376 section 6) on OpenSSL, for inbound mail.

dkimpy does the RSA arithmetic and the canonicalisation in pure Python, which made the
checks cost more than half of the inbound throughput. This module parses signatures and key
records with every MUST of RFC 6376 sections 3.5, 3.6.1 and 6.1, canonicalises with the
helpers of ``dkim.py`` (plus "simple", section 3.4.1 and 3.4.3) and verifies with
``cryptography``. rsa-sha256 and ed25519-sha256 (RFC 8463) are accepted; rsa-sha1 is not
(RFC 8301 section 3.1). Pure and CPU-bound: no I/O, no clock (``now`` is passed in), and no
exception escapes for any message or record content.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailstead.mailauth.dkim import (
    normalise_line_endings,
    relaxed_body,
    relaxed_header,
    split_message,
    strip_trailing_crlf,
)

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
_KEY_TYPES = {RSA_SHA256: "rsa", ED25519_SHA256: "ed25519"}
# RFC 8301 section 3.2: verifiers MUST NOT consider signatures with RSA keys under 1024 bits
# valid (and MUST accept 1024 to 4096; larger keys are refused here to bound the CPU cost).
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 8192
# RFC 6376 section 3.5 x=: verifiers MAY allow for clock skew; five minutes, as for t=.
EXPIRY_SKEW = 300
# RFC 6376 section 3.5 t=: verifiers MAY ignore signatures dated in the future. Senders'
# clocks are often wrong by hours, so only a timestamp more than a day ahead is refused.
FUTURE_SKEW = 86400
# RFC 6376 section 6.1: verifiers MAY limit what they accept; a legitimate h= names a few
# dozen fields, a hostile one thousands (each costs a header selection).
MAX_SIGNED_FIELDS = 512
# RFC 6376 section 3.5: l= has at most 76 digits; anything that long exceeds every body.
_MAX_L_DIGITS = 76

# RFC 6376 section 3.3.1 rsa-sha256: RSASSA-PKCS1-v1_5 with SHA-256 (immutable, made once).
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
# RFC 6376 section 2.8 FWS (with the bare CR/LF some senders fold with): stripped around tag
# names and values, deleted from base64 values and h= names.
_FWS_CHARS = b" \t\r\n"
# RFC 6376 section 3.5 h=: hdr-name (RFC 5322 field-name: printable ASCII except colon).
_FIELD_NAMES = re.compile(rb"[\x21-\x39\x3b-\x7e]+(?::[\x21-\x39\x3b-\x7e]+)*\Z")  # h= list


class DkimVerifyError(Exception):
    """A signature or key record that cannot be used; ``str()`` is the reason reported in
    Authentication-Results (short, no message content beyond a tag name)."""


def parse_tags(value: bytes) -> dict[bytes, bytes]:
    """RFC 6376 section 3.2 tag=value list: names are case-sensitive, values keep inner
    whitespace but lose FWS at both ends. Raises DkimVerifyError on a malformed list or a
    duplicate tag ("if a tag name does occur more than once, the entire tag-list is
    invalid")."""
    tags: dict[bytes, bytes] = {}
    parts = value.split(b";")
    for i, part in enumerate(parts):
        if not part.strip(_FWS_CHARS):
            if i == len(parts) - 1:
                break  # a trailing ";" is allowed
            raise DkimVerifyError("empty tag in tag list")
        name, eq, val = part.partition(b"=")
        name = name.strip(_FWS_CHARS)
        if not eq or not _tag_name(name):
            raise DkimVerifyError("malformed tag list")
        if name in tags:
            raise DkimVerifyError(f"duplicate tag {name.decode('ascii')}=")
        tags[name] = val.strip(_FWS_CHARS)
    return tags


def _tag_name(name: bytes) -> bool:
    """Section 3.2 tag-name = ALPHA *ALNUMPUNC (bytes.isalpha and isalnum are ASCII-only)."""
    return name[:1].isalpha() and (name.isalnum() or name.replace(b"_", b"").isalnum())


def _b64(value: bytes, tag: str) -> bytes:
    clean = value.translate(None, _FWS_CHARS)  # FWS may appear anywhere in base64 values
    # At most two "=" of padding, at the end; a whole number of 4-character quanta.
    if len(clean) % 4 or clean.endswith(b"==="):
        raise DkimVerifyError(f"{tag}= is not valid base64")
    try:
        # Strict mode refuses any other octet and padding before the end (what
        # base64.b64decode(validate=True) checks, without its wrapper).
        return binascii.a2b_base64(clean, strict_mode=True)
    except (binascii.Error, ValueError):
        raise DkimVerifyError(f"{tag}= is not valid base64") from None


# Key records (RFC 6376 section 3.6.1) --------------------------------------------------------

PublicKeyType = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class DkimPublicKey:
    """A usable key record: ``key_type`` "rsa" or "ed25519", the parsed key, its size, and
    the t= flags ("y" testing, "s" no subdomains in i=)."""

    key_type: str
    key: PublicKeyType
    bits: int
    flags: frozenset[str]

    @property
    def testing(self) -> bool:
        return "y" in self.flags


def parse_key_record(record: bytes) -> DkimPublicKey:
    """The key of a DKIM TXT record, or DkimVerifyError saying why it is unusable."""
    tags = parse_tags(record)
    # RFC 6376 section 3.6.1 v=: if present it MUST be "DKIM1" and the first tag.
    if b"v" in tags and (tags[b"v"] != b"DKIM1" or next(iter(tags)) != b"v"):
        raise DkimVerifyError("key record has a wrong v= tag")
    # h=: the hash algorithms the key may be used with; sha256 must be among them.
    if b"h" in tags:
        allowed = {h.strip(b" \t\r\n").lower() for h in tags[b"h"].split(b":")}
        if b"sha256" not in allowed:
            raise DkimVerifyError("key record does not allow sha256")
    # s=: service types; "*" (the default) or "email" (section 3.6.1; unknown ones ignored).
    if b"s" in tags:
        services = {s.strip(b" \t\r\n").lower() for s in tags[b"s"].split(b":")}
        if not services & {b"*", b"email"}:
            raise DkimVerifyError("key record is not for email")
    key_type = tags.get(b"k", b"rsa").lower()
    if b"p" not in tags:
        raise DkimVerifyError("key record has no p= tag")
    # p= empty: "this public key has been revoked" (section 3.6.1).
    if not tags[b"p"].translate(None, _FWS_CHARS):
        raise DkimVerifyError("key revoked")
    der = _b64(tags[b"p"], "p")
    flags = frozenset(f.strip(b" \t\r\n").decode("ascii", "replace").lower()
                      for f in tags.get(b"t", b"").split(b":") if f.strip())
    if key_type == b"rsa":
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm):
            # Some publish the PKCS#1 RSAPublicKey instead of SubjectPublicKeyInfo.
            try:
                key = serialization.load_der_public_key(_spki_from_pkcs1(der))
            except (ValueError, UnsupportedAlgorithm):
                raise DkimVerifyError("key record has an unreadable RSA key") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise DkimVerifyError("key record k=rsa holds another key type")
        if key.key_size < MIN_RSA_BITS:
            raise DkimVerifyError("RSA key shorter than 1024 bits")
        if key.key_size > MAX_RSA_BITS:
            raise DkimVerifyError("RSA key longer than 8192 bits")
        return DkimPublicKey("rsa", key, key.key_size, flags)
    if key_type == b"ed25519":
        # RFC 8463 section 4: p= is the raw 32-octet public key.
        if len(der) != 32:
            raise DkimVerifyError("key record has an unreadable Ed25519 key")
        try:
            ed = ed25519.Ed25519PublicKey.from_public_bytes(der)
        except (ValueError, UnsupportedAlgorithm):
            raise DkimVerifyError("key record has an unreadable Ed25519 key") from None
        return DkimPublicKey("ed25519", ed, 256, flags)
    raise DkimVerifyError("key record has an unknown k= type")


def _spki_from_pkcs1(der: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (rsaEncryption, NULL params)."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(der) + 1) + b"\x00" + der
    body = algorithm + bit_string
    return b"\x30" + _der_length(len(body)) + body


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


class KeyCache:
    """Parsed key records by (name, record text), least recently used out first: a busy MX
    sees the same few keys all day, and parsing a key costs more than verifying with it.
    Errors are cached too, so a hostile record is parsed once. Not thread-safe: use it from
    the event loop."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._max = max(1, maxsize)
        self._entries: OrderedDict[tuple[str, bytes], DkimPublicKey | DkimVerifyError] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, record: bytes) -> DkimPublicKey | DkimVerifyError:
        """The parsed key of ``record`` (published at ``name``), or the error it gives."""
        cache_key = (name, record)
        found = self._entries.get(cache_key)
        if found is not None:
            self._entries.move_to_end(cache_key)
            return found
        try:
            parsed: DkimPublicKey | DkimVerifyError = parse_key_record(record)
        except DkimVerifyError as exc:
            parsed = exc
        self._entries[cache_key] = parsed
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return parsed


# Signatures (RFC 6376 section 3.5) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimSignature:
    """The tags of one DKIM-Signature field, checked (section 6.1.1) but not yet verified."""

    raw: bytes  # the whole field as received, with its CRLF
    algorithm: str
    domain: str  # d=, lower-case
    selector: str
    headers: tuple[bytes, ...]  # h=, lower-case names in order
    body_hash: bytes  # bh= decoded
    signature: bytes  # b= decoded
    header_canon: str  # "simple" | "relaxed"
    body_canon: str
    identity: str  # i= (default "@" + d=)
    length: int | None  # l=
    timestamp: int | None  # t=
    expires: int | None  # x=

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def parse_signature(raw: bytes, now: float) -> DkimSignature:
    """Section 6.1.1 checks of one DKIM-Signature field; DkimVerifyError (a PERMFAIL) says
    which MUST the signature breaks."""
    _name, colon, value = raw.partition(b":")
    if not colon:
        raise DkimVerifyError("not a header field")
    tags = parse_tags(value)
    # Section 6.1.1: v=, a=, b=, bh=, d=, h=, s= are required; v= MUST be "1".
    for required in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if required not in tags:
            raise DkimVerifyError(f"signature has no {required.decode()}= tag")
    if tags[b"v"] != b"1":
        raise DkimVerifyError("signature has an incompatible version")
    algorithm = tags[b"a"].lower().decode("ascii", "replace")
    if algorithm == "rsa-sha1":
        raise DkimVerifyError("rsa-sha1 signatures are not accepted (RFC 8301)")
    if algorithm not in _KEY_TYPES:
        raise DkimVerifyError("signature has an unknown a= algorithm")
    domain = tags[b"d"].decode("ascii", "replace").lower().rstrip(".")
    selector = tags[b"s"].decode("ascii", "replace").lower()
    if not domain or not selector:
        raise DkimVerifyError("signature has an empty d= or s=")
    h = tags[b"h"].translate(None, _FWS_CHARS).lower()
    names = tuple(h.split(b":"))
    if len(names) > MAX_SIGNED_FIELDS or not _FIELD_NAMES.match(h):
        raise DkimVerifyError("signature has a malformed h= tag")
    # Section 5.4 and 6.1.1: the From field MUST be signed.
    if b"from" not in names:
        raise DkimVerifyError("From field not signed")
    canon = tags.get(b"c", b"simple/simple").lower()
    header_c, _, body_c = canon.partition(b"/")
    body_c = body_c or b"simple"  # section 3.5 c=: the body algorithm defaults to simple
    if header_c not in (b"simple", b"relaxed") or body_c not in (b"simple", b"relaxed"):
        raise DkimVerifyError("signature has an unknown c= canonicalization")
    # q=: a colon-separated list; dns/txt is the only defined method (section 3.5).
    if b"q" in tags and b"dns/txt" not in [q.strip() for q in tags[b"q"].lower().split(b":")]:
        raise DkimVerifyError("signature has no q=dns/txt")
    # i=: the identity's domain MUST be d= or a subdomain of it.
    identity = tags.get(b"i", b"@" + tags[b"d"]).decode("utf-8", "replace")
    id_domain = identity.rpartition("@")[2].lower().rstrip(".")
    if "@" not in identity or not (id_domain == domain or id_domain.endswith("." + domain)):
        raise DkimVerifyError("i= is not in the d= domain")
    length = _number(tags, b"l", _MAX_L_DIGITS)
    timestamp = _number(tags, b"t", 12)
    expires = _number(tags, b"x", 12)
    # x=: "MUST be greater than the value of the t= tag if both are present".
    if timestamp is not None and expires is not None and expires <= timestamp:
        raise DkimVerifyError("x= is not after t=")
    if expires is not None and expires + EXPIRY_SKEW < now:
        raise DkimVerifyError("signature expired")
    if timestamp is not None and timestamp > now + FUTURE_SKEW:
        raise DkimVerifyError("signature timestamp in the future")
    return DkimSignature(
        raw=raw, algorithm=algorithm, domain=domain, selector=selector, headers=names,
        body_hash=_b64(tags[b"bh"], "bh"), signature=_b64(tags[b"b"], "b"),
        header_canon=header_c.decode(), body_canon=body_c.decode(), identity=identity,
        length=length, timestamp=timestamp, expires=expires)


def _number(tags: dict[bytes, bytes], name: bytes, digits: int) -> int | None:
    value = tags.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > digits:  # bytes.isdigit: ASCII digits only
        raise DkimVerifyError(f"{name.decode()}= is not a decimal number")
    return int(value)


# Verification (RFC 6376 section 6.1.3) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimCheck:
    """The outcome of one signature: ``result`` pass, fail or permerror (RFC 8601 section
    2.7.1), why, and ``weak`` when l= leaves part of the body unsigned (section 8.2)."""

    result: str
    reason: str = ""
    weak: bool = False


_PASSED = DkimCheck("pass")  # immutable: one instance for every good signature


def simple_body(body: bytes) -> bytes:
    """RFC 6376 section 3.4.3: trailing empty lines removed, an empty body is one CRLF, an
    unterminated last line gets its CRLF."""
    return strip_trailing_crlf(body) + b"\r\n"


class Message:
    """One message prepared for verifying its signatures: split once, each body
    canonicalisation computed once and shared by every signature."""

    def __init__(self, data: bytes) -> None:
        fields, self._body = split_message(normalise_line_endings(data))
        self.fields: Sequence[tuple[bytes, bytes]] = fields
        self._bodies: dict[str, bytes] = {}

    @classmethod
    def from_parts(cls, fields: Sequence[tuple[bytes, bytes]], body: bytes) -> Message:
        """From a message already split (of CRLF data): by ``dkim.split_message``, or by
        ``filters.parse_fields`` (whose entries for malformed lines are named b"", which no
        h= tag can name)."""
        message = cls.__new__(cls)
        message.fields, message._body, message._bodies = fields, body, {}
        return message

    def body(self, canon: str) -> bytes:
        found = self._bodies.get(canon)
        if found is None:
            found = relaxed_body(self._body) if canon == "relaxed" else simple_body(self._body)
            self._bodies[canon] = found
        return found

    def signed_header(self, sig: DkimSignature) -> bytes:
        """Section 3.7 and 5.4.2: the h= fields (each name takes the last instance not used
        yet, bottom up; a missing one is the null string), then the signature field with an empty
        b= value and no final CRLF, each canonicalised."""
        wanted = set(sig.headers)
        by_name: dict[bytes, list[bytes]] = {}
        for name, raw in self.fields:
            if name in wanted:
                by_name.setdefault(name, []).append(raw)
        canon = relaxed_header if sig.header_canon == "relaxed" else _simple_header
        out: list[bytes] = []
        for name in sig.headers:
            instances = by_name.get(name)
            if instances:
                out.append(canon(instances.pop()))
        stripped = _strip_b(sig.raw)
        last = canon(stripped)
        out.append(last[:-2] if last.endswith(b"\r\n") else last)
        return b"".join(out)


def _simple_header(field: bytes) -> bytes:
    """RFC 6376 section 3.4.1: the field exactly as it is."""
    return field


def _strip_b(raw: bytes) -> bytes:
    """The field with the b= value (and the whitespace around it) deleted, section 3.7."""
    name, _, value = raw.rstrip(b"\r\n").partition(b":")
    # The first tag named b (FWS around the name allowed) keeps its "b=" and loses the rest.
    parts = value.split(b";")
    for i, part in enumerate(parts):
        tag, eq, _ = part.partition(b"=")
        if eq and tag.strip(_FWS_CHARS) == b"b":
            parts[i] = tag + eq
            break
    return name + b":" + b";".join(parts) + b"\r\n"


def verify_signature(message: Message, sig: DkimSignature, key: DkimPublicKey) -> DkimCheck:
    """Section 6.1.3 for one signature whose tags and key already passed their checks."""
    if _KEY_TYPES[sig.algorithm] != key.key_type:
        return DkimCheck("permerror", "key type does not match a=")
    # Section 3.10 / t=s: the i= domain must then be d= itself, not a subdomain.
    if "s" in key.flags and sig.identity.rpartition("@")[2].lower().rstrip(".") != sig.domain:
        return DkimCheck("permerror", "key does not allow i= subdomains (t=s)")
    body = message.body(sig.body_canon)
    weak = False
    if sig.length is not None:
        if sig.length > len(body):
            # The signer saw more body than arrived: the message was truncated.
            return DkimCheck("fail", "l= exceeds the body length")
        weak = sig.length < len(body)
        body = body[: sig.length]
    if hashlib.sha256(body).digest() != sig.body_hash:
        return DkimCheck("fail", "body hash did not verify")
    data = message.signed_header(sig)
    try:
        # key_type says which key it is (an isinstance check of the ABC costs more).
        if key.key_type == "rsa":
            cast(rsa.RSAPublicKey, key.key).verify(sig.signature, data, _PKCS1, _SHA256)
        else:
            # RFC 8463 section 3: Ed25519 signs the SHA-256 hash of the data.
            cast(ed25519.Ed25519PublicKey, key.key).verify(
                sig.signature, hashlib.sha256(data).digest())
    except InvalidSignature:
        return DkimCheck("fail", "signature did not verify")
    except ValueError:  # e.g. an RSA signature longer than the modulus
        return DkimCheck("fail", "signature did not verify")
    if weak:
        return DkimCheck("pass", "l= leaves part of the body unsigned", weak=True)
    return _PASSED
