"""ARC sealing (RFC 8617) for mail an alias forwards to a remote target.

When we forward, the receiver's SPF and DMARC checks fail (the client is us, not the author's
server); an ARC set carries our own authentication results to it, signed. The set is made at
delivery-attempt time by the queue with the domain's RSA DKIM key (ARC signatures are
rsa-sha256 only: RFC 8617 defines no other algorithm). Verification of incoming chains is
in ``verify.py`` (dkimpy); this module signs with our own canonicalisation helpers and
OpenSSL, like the DKIM signer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailstead.mailauth.dkim import (
    OVERSIGNED,
    RSA,
    SIGNED_IF_PRESENT,
    DkimError,
    DkimKeyStore,
    SigningKey,
    load_signing_key,
    normalise_line_endings,
    relaxed_body,
    relaxed_header,
    split_message,
)
from mailstead.mailauth.results import authserv_id, parse_results

log = logging.getLogger("mailstead.arc")

# RFC 8617 section 4.2.1: at most 50 ARC sets; a sealer MUST NOT add one beyond that.
MAX_INSTANCE = 50
_FOLD_AT = 76
_B64_CHUNK = 64
_INSTANCE = re.compile(rb"(?:^|;)\s*i\s*=\s*([0-9]+)\s*(?:;|$)")
_CV = re.compile(rb"(?:^|;)\s*cv\s*=\s*([A-Za-z]+)")
_ARC_NAMES = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")


@dataclass(frozen=True, slots=True)
class ChainResult:
    """What our inbound checks said about a message, read back from our own
    Authentication-Results field: the ARC verdict (none, pass, fail) and the resinfos."""

    arc: str
    results: str  # the field value after the authserv-id, e.g. "spf=pass ...; dkim=pass ..."


def chain_result(message: bytes, our_id: str) -> ChainResult | None:
    """The topmost Authentication-Results field of ``our_id`` in ``message``, or None when
    there is none (mail we did not receive on port 25: nothing to vouch for)."""
    fields, _ = split_message(normalise_line_endings(message))
    wanted = our_id.lower().rstrip(".")
    for name, raw in fields:
        if name != b"authentication-results":
            continue
        value = raw.split(b":", 1)[1].decode("utf-8", "replace")
        if (authserv_id(value) or "").rstrip(".") != wanted:
            continue
        rest = value.split(";", 1)[1] if ";" in value else " none"
        unfolded = " ".join(rest.split())
        arc = parse_results(value).get("arc", "none")
        return ChainResult(arc if arc in ("none", "pass", "fail") else "fail", unfolded)
    return None


def _existing(fields: Sequence[tuple[bytes, bytes]]) -> tuple[int, bool, dict[int, list[bytes]]]:
    """(highest instance, whether any seal says cv=fail, the sets by instance) of the chain."""
    sets: dict[int, list[bytes]] = {}
    failed = False
    for name, raw in fields:
        if name not in _ARC_NAMES:
            continue
        value = re.sub(rb"\r\n[ \t]", b" ", raw.split(b":", 1)[1])
        m = _INSTANCE.search(value)
        if m is None or len(m.group(1)) > 3:
            continue
        sets.setdefault(int(m.group(1)), []).append(raw)
        cv = _CV.search(value)
        if name == b"arc-seal" and cv is not None and cv.group(1).lower() == b"fail":
            failed = True
    return (max(sets) if sets else 0), failed, sets


def _fold(name: str, tags: Sequence[str]) -> str:
    """Tags joined by "; ", folded before a tag that would pass 76 columns; b= last."""
    out = name + ":"
    for i, tag in enumerate(tags):
        piece = tag if i == len(tags) - 1 else tag + ";"
        column = len(out) - (out.rfind("\n") + 1)
        if tag == "b=" or column + 1 + len(piece) > _FOLD_AT:
            out += "\r\n\t" + piece
        else:
            out += " " + piece
    return out


def _rsa_sign(key: SigningKey, data: bytes) -> str:
    assert isinstance(key.key, rsa.RSAPrivateKey)
    b64 = base64.b64encode(key.key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()
    return "\r\n\t ".join(b64[i : i + _B64_CHUNK] for i in range(0, len(b64), _B64_CHUNK))


def _signed_names(fields: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The AMS h= list: the DKIM signer's choice (From, Subject, To oversigned) plus the
    DKIM-Signature fields, so the receiver can tell the signatures were there."""
    counts: dict[bytes, int] = {}
    for name, _ in fields:
        counts[name] = counts.get(name, 0) + 1
    listed = [n.encode() for n in OVERSIGNED for _ in range(counts.get(n.encode(), 0) + 1)]
    for text in (*SIGNED_IF_PRESENT, "dkim-signature"):
        listed += [text.encode()] * counts.get(text.encode(), 0)
    return listed


def _selected(fields: Sequence[tuple[bytes, bytes]], listed: Sequence[bytes]) -> bytes:
    """RFC 6376 section 5.4.2 (used by RFC 8617 section 4.1.2): bottom-up instances."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, raw in fields:
        by_name.setdefault(name, []).append(raw)
    out = []
    for name in listed:
        instances = by_name.get(name)
        if instances:
            out.append(relaxed_header(instances.pop()))
    return b"".join(out)


def arc_seal(
    message: bytes,
    chain: ChainResult,
    *,
    authserv: str,
    domain: str,
    key: SigningKey,
    timestamp: int,
) -> bytes:
    """The three fields of a new ARC set (ARC-Seal, ARC-Message-Signature,
    ARC-Authentication-Results, CRLF-terminated) to prepend to ``message``, or b"" when the
    chain may not be extended (RFC 8617 section 5.1: a chain with cv=fail ended; at most 50
    sets) or ``key`` is not RSA. Pure, CPU-bound."""
    if key.algorithm != RSA or not isinstance(key.key, rsa.RSAPrivateKey):
        return b""
    data = normalise_line_endings(message)
    fields, body = split_message(data)
    highest, failed, sets = _existing(fields)
    instance = highest + 1
    if failed or instance > MAX_INSTANCE:
        return b""
    # RFC 8617 section 5.1.1: cv is "none" for the first set, else the validation status.
    cv = "none" if instance == 1 else ("pass" if chain.arc == "pass" else "fail")
    # RFC 8617 section 4.1.1: the AAR is "i=N; " and the Authentication-Results payload.
    payload = chain.results.replace("; ", ";\r\n\t")  # one resinfo per line (998 limit)
    aar = f"ARC-Authentication-Results: i={instance}; {authserv};\r\n\t{payload}\r\n"
    listed = _signed_names(fields)
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")
    names = "h=" + ":".join(n.decode() for n in listed)
    ams_tags = [f"i={instance}", "a=rsa-sha256", "c=relaxed/relaxed", f"d={domain}",
                f"s={key.selector}", f"t={timestamp}", names, f"bh={bh}", "b="]
    ams_unsigned = _fold("ARC-Message-Signature", ams_tags)
    # RFC 8617 section 4.1.2 (as RFC 6376 section 3.7): the selected fields, then the AMS
    # itself with an empty b=, without its final CRLF.
    ams_data = _selected(fields, listed) + relaxed_header(ams_unsigned.encode())[:-2]
    ams = ams_unsigned + _rsa_sign(key, ams_data) + "\r\n"
    as_tags = [f"i={instance}", "a=rsa-sha256", f"cv={cv}", f"d={domain}",
               f"s={key.selector}", f"t={timestamp}", "b="]
    seal_unsigned = _fold("ARC-Seal", as_tags)
    # RFC 8617 section 5.1.1: the seal covers every set in increasing instance order, each
    # as AAR, AMS, AS; with cv=fail only the new set.
    order = {b"arc-authentication-results": 0, b"arc-message-signature": 1, b"arc-seal": 2}
    covered = b""
    if cv != "fail":
        for i in range(1, instance):
            chunk = sorted(sets.get(i, []), key=lambda raw: order[
                raw.split(b":", 1)[0].strip().lower()])
            covered += b"".join(relaxed_header(raw) for raw in chunk)
    covered += relaxed_header(aar.encode()) + relaxed_header(ams.encode())
    covered += relaxed_header(seal_unsigned.encode())[:-2]
    seal = seal_unsigned + _rsa_sign(key, covered) + "\r\n"
    return (seal + ams + aar).encode("utf-8")


class ArcSealer:
    """Seals forwarded mail with the active RSA DKIM key of a local domain.

    Call ``seal`` at delivery-attempt time for every outbound message: it returns b"" for
    mail that carries no Authentication-Results of ours (submissions), so it only seals what
    came in on port 25 and is going out again (alias forwarding).
    """

    def __init__(
        self,
        store: DkimKeyStore,
        authserv: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh: float = 60.0,
    ) -> None:
        self._store = store
        self._authserv = authserv
        self._clock = clock
        self._refresh = refresh
        self._keys: dict[str, tuple[float, SigningKey | None]] = {}

    async def _key(self, domain: str) -> SigningKey | None:
        now = self._clock()
        cached = self._keys.get(domain)
        if cached is not None and 0 <= now - cached[0] < self._refresh:
            return cached[1]
        found: SigningKey | None = None
        for stored in await self._store.dkim_keys(domain):
            if not stored.active or stored.algorithm != RSA:
                continue
            old = cached[1] if cached is not None else None
            if old is not None and old.source == stored.private_key:
                found = old
                break
            try:
                found = await asyncio.to_thread(load_signing_key, stored)
                break
            except DkimError as exc:
                log.error("arc: dkim key unusable domain=%s: %s", domain, exc)
        self._keys[domain] = (now, found)
        return found

    async def seal(self, message: bytes, domain: str) -> bytes:
        """The ARC set to prepend to ``message`` (sent with CRLF line endings), sealed as
        ``domain``; b"" when there is nothing to vouch for or no RSA key for ``domain``.
        Store errors propagate (the caller defers rather than forward unsealed)."""
        chain = chain_result(message, self._authserv)
        if chain is None:
            return b""
        key = await self._key(domain.lower().rstrip("."))
        if key is None:
            return b""
        return await asyncio.to_thread(
            arc_seal, message, chain, authserv=self._authserv, domain=domain.lower(),
            key=key, timestamp=int(self._clock()))
