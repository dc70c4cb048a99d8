"""Sender authentication of one inbound message: SPF, DKIM, DMARC and ARC together.

DKIM signatures are checked by ``dkimverify`` (OpenSSL through ``cryptography``), ARC chains
by dkimpy, which is synchronous and would do its own DNS: the keys are fetched first through
our async ``Resolver`` (concurrently, cached by it); parsed DKIM keys are cached by the
verifier, and dkimpy is given a lookup function that only answers from the prefetched records.
Small messages are verified inline (a thread hop costs more than the hashing); large ones in a
thread so that body hashing never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import dkim

from mailstead.accounts.names import DomainNameError, domain_forms
from mailstead.delivery.headers import field_value, mailboxes
from mailstead.dns.resolver import DnsError, DnsTemporary, Resolver
from mailstead.mailauth.deadline import Inline
from mailstead.mailauth.dkim import normalise_line_endings, split_message
from mailstead.mailauth.dkimverify import (
    DkimPublicKey,
    DkimVerifyError,
    KeyCache,
    Message,
    parse_signature,
    verify_signature,
)
from mailstead.mailauth.dmarc import (
    DmarcOutcome,
    DmarcResult,
    OrgDomains,
    Policy,
    RecordCache,
    check_dmarc,
)
from mailstead.mailauth.parsecache import ParseCache
from mailstead.mailauth.results import Resinfo, ResultItem, render
from mailstead.mailauth.spf import SpfCache, SpfOutcome, SpfResult, check_helo, check_mailfrom

log = logging.getLogger("mailstead.mailauth")


class _DkimpyLog:
    """dkimpy reports every bad signature at ERROR level; a bad signature from the internet is
    routine, so its chatter goes to our debug log."""

    def _emit(self, msg: object, *args: object, **_kwargs: object) -> None:
        log.debug("dkimpy: " + str(msg), *args)

    debug = info = warning = error = exception = _emit


_dkimpy_log = _DkimpyLog()

# RFC 6376 section 6.1: verifiers MAY limit the number of signatures they try; a hostile
# message with thousands of signatures must not cost thousands of DNS queries.
MAX_SIGNATURES = 8
# RFC 8617 section 4.2.1: at most 50 ARC sets.
MAX_ARC_SETS = 50
# Messages up to this size are verified on the event loop, larger ones in a thread.
INLINE_LIMIT = 256 * 1024
_NAMED = (b"d", b"s", b"b")  # the tags a signature is named by (any case)
_WSP = b" \t\n\r\x0b\x0c"  # what \s matches in a bytes pattern
_ARC_FIELDS = (b"arc-seal", b"arc-message-signature")
_B_SHOWN = 300  # enough of a folded value for d=, s= and the 8 characters of header.b
# The octets of a selector or domain we look a key up for: letters, digits, "_", "-", ".".
_KEY_LABEL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."


# One DKIM-Signature: the raw field, its d=, s= and b= tags, the name of its key record.
_Signed = tuple[bytes, dict[bytes, bytes], str | None]


class _Key(Enum):
    TEMPORARY = "temporary"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    """One DKIM-Signature: result (RFC 8601 section 2.7.1), d=, s=, the start of b=, why."""

    result: str  # pass | fail | neutral | temperror | permerror
    domain: str
    selector: str
    b: str
    reason: str = ""
    # l= left part of the body unsigned (RFC 6376 section 8.2): reported as pass, but not
    # trusted for DMARC alignment, since anyone may have appended the unsigned part.
    weak: bool = False


@dataclass(frozen=True, slots=True)
class ArcOutcome:
    """The ARC chain (RFC 8617 section 5.2): none, pass or fail; ``sealer`` is the d= of the
    newest ARC-Seal, ``instance`` its i=."""

    result: str  # none | pass | fail
    instance: int = 0
    sealer: str = ""
    reason: str = ""


_NO_ARC = ArcOutcome("none")  # immutable: one instance for every message without ARC


@dataclass(frozen=True, slots=True)
class AuthResults:
    """Everything sender authentication found out about one message."""

    spf: SpfOutcome  # the MAIL FROM identity (HELO for the null sender)
    helo: SpfOutcome
    dkim: tuple[DkimOutcome, ...]
    dmarc: DmarcOutcome
    arc: ArcOutcome
    mail_from: str
    helo_name: str
    overridden: str = ""  # why a failing DMARC disposition was not applied
    extra: tuple[ResultItem, ...] = field(default=())

    def items(self) -> list[ResultItem]:
        """The resinfos of our Authentication-Results field, in a fixed order."""
        return [r if isinstance(r, ResultItem) else ResultItem(*r) for r in self._resinfos()]

    def _resinfos(self) -> list[ResultItem | Resinfo]:
        """``items`` as the cheaper tuples ``header`` renders from (the extra ones as given)."""
        out: list[ResultItem | Resinfo] = []
        # Results as plain text: str() of a StrEnum member is str's own (formatting the
        # member, or its .value, is a Python-level call).
        if self.mail_from:
            out.append(Resinfo("spf", str(self.spf.result),
                               properties=(("smtp.mailfrom", self.mail_from),)))
            if self.helo_name and self.helo.result is not SpfResult.NONE:
                out.append(Resinfo("spf", str(self.helo.result),
                                   properties=(("smtp.helo", self.helo_name),)))
        else:
            # RFC 7208 section 2.4: for the null sender the MAIL FROM check is of the HELO.
            out.append(Resinfo("spf", str(self.spf.result),
                               properties=(("smtp.helo", self.helo_name or "unknown"),)))
        if not self.dkim:
            out.append(Resinfo("dkim", "none"))
        for d in self.dkim:
            out.append(Resinfo("dkim", d.result, reason=d.reason, properties=(
                ("header.d", d.domain), ("header.s", d.selector), ("header.b", d.b))))
        dm = self.dmarc
        comment = ""
        if dm.policy is not None:
            comment = f"p={dm.policy!s} dis={dm.disposition!s}"
            if self.overridden:
                comment += f" override={self.overridden}"
        props = (("header.from", dm.from_domain),) if dm.from_domain else ()
        reason = dm.reason if dm.result in (DmarcResult.PERMERROR, DmarcResult.TEMPERROR) else ""
        out.append(Resinfo("dmarc", str(dm.result), comment=comment, reason=reason,
                           properties=props))
        arc = self.arc
        arc_comment = f"i={arc.instance} d={arc.sealer}" if arc.instance else ""
        out.append(Resinfo("arc", arc.result, comment=arc_comment,
                           reason=arc.reason if arc.result == "fail" else ""))
        out.extend(self.extra)
        return out

    def header(self, authserv_id: str) -> bytes:
        """Our Authentication-Results field, CRLF-terminated."""
        return render(authserv_id, self._resinfos())


def _tags(value: bytes) -> dict[bytes, bytes]:
    """The d=, s= and b= tags of a signature, leniently (for naming it in the results and
    its key; the strict parse is ``dkimverify.parse_signature``)."""
    out: dict[bytes, bytes] = {}
    for part in value.split(b";"):
        # A tag is letters, optional white space, "=" (the first one); only d, s and b count.
        name, eq, tag_value = part.partition(b"=")
        name = name.strip(_WSP).lower()
        if eq and name in _NAMED and name not in out:
            out[name] = tag_value.lstrip(_WSP)[:_B_SHOWN].translate(None, _WSP)
    return out


def _key_label(text: bytes) -> bool:
    return 0 < len(text) <= 253 and not text.translate(None, _KEY_LABEL_CHARS)


def _key_name(tags: dict[bytes, bytes]) -> str | None:
    s, d = tags.get(b"s", b""), tags.get(b"d", b"")
    if not _key_label(s) or not _key_label(d):
        return None
    return (s + b"._domainkey." + d).decode("ascii").lower().rstrip(".")


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


class AuthVerifier:
    """Runs SPF, DKIM, ARC and DMARC for inbound messages over one resolver.

    ``random`` draws the pct sample of DMARC (RFC 7489 section 6.6.4); ``trusted_arc_sealers``
    are domains whose passing ARC chain excuses a DMARC failure (RFC 7489 section 7.2 local
    policy, the forwarding case RFC 8617 was made for).
    """

    def __init__(
        self,
        resolver: Resolver,
        orgs: OrgDomains,
        *,
        random: Callable[[], float] = random.random,
        trusted_arc_sealers: Sequence[str] = (),
        spf_timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
        key_cache_size: int = 1024,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        # Parsed DKIM keys, SPF and DMARC records, client addresses and From domains of this
        # verifier (DESIGN rule 9: no module-level cache), bounded: each is a pure function
        # of its text, so a hit is what parsing again would give.
        self._key_cache = KeyCache(key_cache_size)
        self._spf_cache = SpfCache(key_cache_size)
        self._dmarc_records: RecordCache = ParseCache(key_cache_size)
        self._domains: ParseCache[str, str] = ParseCache(key_cache_size)
        self._orgs = orgs
        self._random = random
        self._trusted = {d.lower().rstrip(".") for d in trusted_arc_sealers}
        self._spf_timeout = spf_timeout

    async def verify(
        self, *, client_ip: str, helo: str | None, mail_from: str, data: bytes,
        fields: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> AuthResults:
        """All checks for ``data`` as received (CRLF line endings, before our own headers).

        ``mail_from`` is the reverse-path ("" for the null sender); ``fields``, when given,
        are data's header fields as ``filters.parse_fields`` splits them (the pipeline has
        them already). Never raises on any message or DNS content; DNS failures become
        temperror results.
        """
        message = normalise_line_endings(data)
        body: bytes
        if fields is not None and message is data:
            # The raw fields put together are the header block; the body follows the
            # blank line (none: no body), as split_message would cut it.
            end = sum([len(raw) for _, raw in fields])
            body = message[end + 2:] if message.startswith(b"\r\n", end) else b""
        else:
            fields, body = split_message(message)
        dkim_fields: list[bytes] = []
        arc_fields: list[bytes] = []
        from_fields: list[bytes] = []
        for field_name, raw in fields:
            if field_name == b"dkim-signature":
                dkim_fields.append(raw)
            elif field_name == b"from":
                from_fields.append(raw)
            elif field_name in _ARC_FIELDS:
                arc_fields.append(raw)
        signatures: list[_Signed] = []
        for raw in dkim_fields[:MAX_SIGNATURES]:
            tags = _tags(raw.split(b":", 1)[1])
            signatures.append((raw, tags, _key_name(tags)))
        names = {name for _, _, name in signatures if name is not None}
        for raw in arc_fields[: 2 * MAX_ARC_SETS]:
            name = _key_name(_tags(raw.split(b":", 1)[1]))
            if name is not None:
                names.add(name)
        prepared = Message.from_parts(fields, body) if signatures else None
        # SPF for MAIL FROM, SPF for HELO and the key lookups wait for DNS at the same time:
        # as soon as one check has to wait, the ones after it start in tasks. When the cache
        # answers (nearly always on a busy MX) they all run here, one after the other, without
        # the cost of tasks.
        loop = asyncio.get_running_loop()
        mailfrom = Inline(check_mailfrom(self._resolver, client_ip, mail_from, helo,
                                         timeout=self._spf_timeout, cache=self._spf_cache))
        helo_inline: Inline[SpfOutcome] | None = None
        helo_task: asyncio.Task[SpfOutcome] | None = None
        keys_task: asyncio.Task[dict[str, bytes | _Key]] | None = None
        try:
            helo_check = check_helo(self._resolver, client_ip, helo,
                                    timeout=self._spf_timeout, cache=self._spf_cache)
            if mailfrom.done:
                helo_inline = Inline(helo_check)
                if not helo_inline.done and names:
                    keys_task = loop.create_task(self._keys(names))
            else:
                helo_task = loop.create_task(helo_check)
                if names:
                    keys_task = loop.create_task(self._keys(names))
            spf = await mailfrom
            if helo_inline is not None:
                helo_result = await helo_inline
            else:
                assert helo_task is not None
                helo_result = await helo_task
            if keys_task is not None:
                keys = await keys_task
            else:
                keys = await self._keys(names) if names else {}
        finally:
            # Cancelled (a stage timeout) or failed: nothing may go on in the background.
            mailfrom.close()
            if helo_inline is not None:
                helo_inline.close()
            for task in (helo_task, keys_task):
                if task is not None and not task.done():
                    task.cancel()
        # Keys are parsed here, on the event loop, so the cache needs no lock.
        parsed = {name: self._key_cache.get(name, record)
                  for name, record in keys.items() if isinstance(record, bytes)}
        now = self._clock()
        args = (message, prepared, signatures, keys, parsed, bool(arc_fields), now)
        if len(message) <= INLINE_LIMIT:
            dkims, arc = _signatures(*args)
        else:
            dkims, arc = await asyncio.to_thread(_signatures, *args)
        dmarc = await self._dmarc([field_value(raw) for raw in from_fields], spf, dkims)
        overridden = ""
        if (dmarc.result is DmarcResult.FAIL and dmarc.disposition is not Policy.NONE
                and arc.result == "pass" and arc.sealer in self._trusted):
            overridden = f"arc:{arc.sealer}"
            dmarc = DmarcOutcome(dmarc.result, dmarc.from_domain, dmarc.policy, Policy.NONE,
                                 dmarc.reason)
        helo_name = (helo or "").strip()
        return AuthResults(spf=spf, helo=helo_result, dkim=dkims, dmarc=dmarc, arc=arc,
                           mail_from=mail_from, helo_name=helo_name, overridden=overridden)

    async def _keys(self, names: set[str]) -> dict[str, bytes | _Key]:
        """The TXT record of each key name (the first one with a p= tag), or why not."""
        async def one(name: str) -> tuple[str, bytes | _Key]:
            try:
                texts = await self._resolver.txt(name)
            except DnsTemporary:
                return name, _Key.TEMPORARY
            except DnsError:
                return name, _Key.MISSING
            for text in texts:
                if "p=" in text:
                    return name, text.encode("utf-8", "replace")
            return name, _Key.MISSING

        if len(names) == 1:  # the common case: no tasks to gather
            name, found = await one(next(iter(names)))
            return {name: found}
        return dict(await asyncio.gather(*(one(n) for n in sorted(names))))

    async def _dmarc(self, from_values: list[str], spf: SpfOutcome,
                     dkims: Sequence[DkimOutcome]) -> DmarcOutcome:
        """RFC 7489 section 6.6.1: the domain of the single From: field; with several From
        domains each is evaluated and the strictest outcome is kept."""
        froms = mailboxes(from_values)
        if froms is None:
            return DmarcOutcome(DmarcResult.PERMERROR, "", reason="unparseable From: header")
        domains = list(dict.fromkeys(self._domains.get(a.domain, _ascii_domain) for a in froms))
        if not domains:
            return DmarcOutcome(DmarcResult.PERMERROR, "", reason="no From: header")
        spf_domain = spf.domain if spf.result is SpfResult.PASS else None
        passing = [d.domain for d in dkims if d.result == "pass" and not d.weak]
        sample = self._random()
        outcomes = []
        for d in domains[:5]:  # one, nearly always
            outcomes.append(await check_dmarc(
                self._resolver, self._orgs, d, spf_pass_domain=spf_domain,
                dkim_pass_domains=passing, sample=sample, records=self._dmarc_records))
        return outcomes[0] if len(outcomes) == 1 else max(outcomes, key=_severity)


_RANK = {DmarcResult.PASS: 0, DmarcResult.NONE: 1, DmarcResult.PERMERROR: 2,
         DmarcResult.TEMPERROR: 3, DmarcResult.FAIL: 4}
_DISPOSITION = {Policy.NONE: 0, Policy.QUARANTINE: 1, Policy.REJECT: 2}


def _severity(o: DmarcOutcome) -> tuple[int, int]:
    return _DISPOSITION[o.disposition], _RANK[o.result]


def _ascii_domain(domain: str) -> str:
    try:
        return domain_forms(domain)[0]
    except DomainNameError:
        return domain.lower()


def _signatures(
    message: bytes,
    prepared: Message | None,
    signatures: Sequence[_Signed],
    keys: dict[str, bytes | _Key],
    parsed: dict[str, DkimPublicKey | DkimVerifyError],
    has_arc: bool,
    now: float,
) -> tuple[tuple[DkimOutcome, ...], ArcOutcome]:
    """DKIM verification (ours, on OpenSSL) and ARC chain validation (dkimpy) over prefetched
    keys: CPU only, no I/O."""
    outcomes: list[DkimOutcome] = []
    if prepared is not None:
        for raw, tags, name in signatures:
            outcomes.append(_one_dkim(prepared, raw, tags, name, keys, parsed, now))
    if not has_arc:
        return tuple(outcomes), _NO_ARC

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name)
        found = keys.get(key.lower().rstrip("."))
        return found if isinstance(found, bytes) else None

    return tuple(outcomes), _arc(message, dnsfunc)


def _one_dkim(
    message: Message,
    raw: bytes,
    tags: dict[bytes, bytes],
    name: str | None,
    keys: dict[str, bytes | _Key],
    parsed: dict[str, DkimPublicKey | DkimVerifyError],
    now: float,
) -> DkimOutcome:
    d, s, b = _text(tags.get(b"d", b"")), _text(tags.get(b"s", b"")), _text(tags.get(b"b", b""))

    def out(result: str, reason: str = "", weak: bool = False) -> DkimOutcome:
        return DkimOutcome(result, d.lower(), s, b[:8], reason, weak)

    if name is None:
        return out("permerror", "signature has no valid d= or s=")
    try:
        # RFC 6376 section 6.1.1: the signature's own MUSTs come before its key.
        sig = parse_signature(raw, now)
    except DkimVerifyError as exc:
        return out("permerror", str(exc))
    key = keys.get(name, _Key.MISSING)
    if key is _Key.TEMPORARY:
        return out("temperror", "key lookup failed")
    if key is _Key.MISSING:
        # RFC 6376 section 6.1.2: no key record is a permanent failure.
        return out("permerror", "no key for signature")
    public = parsed.get(name)
    if public is None:
        return out("permerror", "unusable key")
    if isinstance(public, DkimVerifyError):
        return out("permerror", str(public))
    try:
        check = verify_signature(message, sig, public)
    except Exception as exc:  # a bug must cost one signature, never the message
        log.warning("dkim verification error: %r", exc)
        return out("permerror", "signature could not be verified")
    return out(check.result, check.reason, check.weak)


def _arc(message: bytes, dnsfunc: Callable[..., bytes | None]) -> ArcOutcome:
    """RFC 8617 section 5.2 chain validation through dkimpy."""
    try:
        verifier = dkim.ARC(message, logger=_dkimpy_log, minkey=1024)
        cv, results, reason = verifier.verify(dnsfunc=dnsfunc)
    except Exception as exc:  # malformed ARC headers: the chain fails, nothing escapes
        log.debug("arc verification error: %r", exc)
        return ArcOutcome("fail", reason="malformed ARC set")
    newest = results[0] if results else {}
    instance = int(newest.get("instance", 0) or 0)
    sealer = _text(newest.get("as-domain", b"") or b"").lower()
    if instance > MAX_ARC_SETS:
        return ArcOutcome("fail", instance, sealer, "too many ARC sets")
    if cv == dkim.CV_Pass:
        return ArcOutcome("pass", instance, sealer)
    if cv == dkim.CV_None:
        return _NO_ARC
    return ArcOutcome("fail", instance, sealer, str(reason)[:80])
