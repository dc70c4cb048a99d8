"""A per-account Bayesian spam classifier: tokens of the message, their spam/ham counts in the
store, Robinson's per-token probability and Fisher's chi-square combination.

Learning happens when the user moves a message into or out of Junk (``spam.JunkLearner``), so
each account's counts follow that user's idea of spam. Tokens are stored as 63-bit hashes:
the table stays small and holds no readable text of anyone's mail.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from mailstead.storage.interfaces import SpamStore

# Only this much of a message is tokenised: spam signals sit at the start, and a bounded
# amount of work per message keeps a hostile 50 MB body from costing seconds.
MAX_SCAN = 256 * 1024
MAX_TOKENS = 3000  # distinct tokens kept per message
# No verdict before the account has learned this many of each class (a classifier trained on
# three messages guesses).
MIN_LEARNED = 10
# The per-account totals gate every classification ("trained enough?") and are a SUM over
# the learned messages: kept this long, and dropped at once when this classifier learns, so
# a message costs no database read for an untrained account. Learning elsewhere (another
# node) is seen within this time; a few seconds of stale totals only nudge probabilities.
TOTALS_TTL = 30.0
_MAX_TOTALS = 10_000  # accounts whose totals are kept
INTERESTING = 150  # tokens furthest from 0.5 used for the verdict (Graham, Robinson)
# Robinson's prior: strength s and assumed probability x of a token seen rarely.
_S = 1.0
_X = 0.5
_MIN_DEVIATION = 0.1  # tokens with |p - 0.5| below this say nothing

_WORD = re.compile(r"[^\W_][\w'$€£.-]{1,38}[^\W_]|[^\W_]{3}")
_URL_HOST = re.compile(r"https?://([a-z0-9.-]{1,253})", re.IGNORECASE)
_HEADERS = ("subject", "from", "reply-to", "to", "content-type", "x-mailer", "message-id")
_parser = BytesParser(policy=policy.default)


def _hash(token: str) -> int:
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: fits SQLite's signed INTEGER


def _text_parts(msg: EmailMessage) -> Iterable[str]:
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError, AssertionError, TypeError):
            payload = part.get_payload(decode=True)
            content = payload.decode("latin-1") if isinstance(payload, bytes) else ""
        if isinstance(content, str):
            if part.get_content_subtype() == "html":
                content = re.sub(r"<[^>]{0,2000}>", " ", content)
            yield content


def tokens(data: bytes) -> list[int]:
    """The distinct token hashes of a message (header tokens prefixed with the field name).

    Never raises: an unparsable message gives the tokens of its raw text."""
    words: set[str] = set()
    head = data[:MAX_SCAN]
    try:
        msg = _parser.parsebytes(head)
        assert isinstance(msg, EmailMessage)
        for name in _HEADERS:
            for value in msg.get_all(name, []) or []:
                for w in _WORD.findall(str(value).lower()):
                    words.add(f"{name}:{w}")
        bodies: Iterable[str] = _text_parts(msg)
        text = " ".join(bodies)
    except Exception:  # the email package raises many things on hostile input
        text = head.decode("latin-1")
    for host in _URL_HOST.findall(text):
        words.add("url:" + host.lower().rstrip("."))
    for w in _WORD.findall(text.lower()):
        words.add(w)
        if len(words) >= MAX_TOKENS:
            break
    return sorted({_hash(w) for w in words})


def token_probability(spam: int, ham: int, nspam: int, nham: int) -> float:
    """Robinson's f(w): the ham/spam ratio of the token, pulled toward 0.5 when rarely seen."""
    spam_ratio = spam / nspam if nspam else 0.0
    ham_ratio = ham / nham if nham else 0.0
    if spam_ratio + ham_ratio == 0:
        return _X
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam + ham
    return (_S * _X + n * p) / (_S + n)


def _chi2q(chi: float, df: int) -> float:
    """P(chi^2 >= chi) for even ``df`` (the series of Robinson's and SpamBayes' chi2Q)."""
    m = chi / 2.0
    total = term = math.exp(-m)
    for i in range(1, df // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def combine(probabilities: Iterable[float]) -> float:
    """Fisher/Robinson combination of token probabilities into one spam probability (0..1)."""
    probs = [min(max(p, 1e-6), 1 - 1e-6) for p in probabilities]
    if not probs:
        return 0.5
    n = len(probs)
    s = _chi2q(-2.0 * sum(math.log(1 - p) for p in probs), 2 * n)
    h = _chi2q(-2.0 * sum(math.log(p) for p in probs), 2 * n)
    return (1 + h - s) / 2  # H near 1 and S near 0 -> spam (SpamBayes' indicator)


@dataclass(frozen=True, slots=True)
class BayesVerdict:
    """The classifier's opinion: ``probability`` of spam, or None when untrained."""

    probability: float | None
    tokens_used: int = 0


_UNTRAINED = BayesVerdict(None)  # immutable: shared by every message of an untrained account


class BayesClassifier:
    """Classifies and learns per account over a ``SpamStore``."""

    def __init__(
        self,
        store: SpamStore,
        *,
        min_learned: int = MIN_LEARNED,
        totals_ttl: float = TOTALS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._min = min_learned
        self._ttl = totals_ttl
        self._clock = clock
        self._totals: dict[int, tuple[float, int, int]] = {}  # account -> (expires, spam, ham)

    async def _account_totals(self, account_id: int) -> tuple[int, int]:
        """(spam, ham) messages the account has learned, from the short-lived cache."""
        now = self._clock()
        cached = self._totals.get(account_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        nspam, nham = await self._store.bayes_totals(account_id)
        if self._ttl > 0:
            if len(self._totals) >= _MAX_TOTALS:
                self._totals.clear()
            self._totals[account_id] = (now + self._ttl, nspam, nham)
        return nspam, nham

    async def classify(self, account_id: int, data: bytes) -> BayesVerdict:
        nspam, nham = await self._account_totals(account_id)
        if nspam < self._min or nham < self._min:
            return _UNTRAINED
        toks = tokens(data)
        counts = await self._store.bayes_tokens(account_id, toks)
        probs = [token_probability(s, h, nspam, nham) for s, h in counts.values()]
        probs = [p for p in probs if abs(p - 0.5) >= _MIN_DEVIATION]
        probs.sort(key=lambda p: abs(p - 0.5), reverse=True)
        chosen = probs[:INTERESTING]
        return BayesVerdict(combine(chosen), len(chosen))

    async def learn(self, account_id: int, data: bytes, spam: bool) -> bool:
        """Learns the message as spam or ham; False when it had been learned so already."""
        message = hashlib.sha256(data).hexdigest()
        try:
            return await self._store.bayes_learn(account_id, message, tokens(data), spam)
        finally:
            self._totals.pop(account_id, None)  # the next message reads the new totals
