"""SRS, the Sender Rewriting Scheme (Shevek's "SRS0" scheme as libsrs2 and postsrsd use it):
the envelope sender of forwarded mail becomes an address of ours, so SPF at the next hop
checks our server (RFC 7208 section 1.2 on forwarding), and a bounce to it can be returned.

    SRS0=HHHH=TT=example.org=alice@forwarder.test

``TT`` is the day (base32, modulo 1024), ``HHHH`` a keyed HMAC-SHA1 over the day, domain and
local part (lower-cased), base64, so nobody can make us relay a bounce to an address we did
not rewrite. Written here rather than taken from ``pysrs``: its last release (1.0.3) is of
March 2018, it is built around sendmail socketmap daemons, and the scheme is a few lines of
``hmac``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from mailstead.core.errors import MailsteadError

PREFIX = "SRS0="
# libsrs2's defaults: four hash characters, stamps of one day over a 1024-day cycle, and
# addresses older than 21 days refused.
HASH_LENGTH = 4
MAX_AGE_DAYS = 21
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400
_CYCLE = 1024
# RFC 5321 section 4.5.3.1.1: a local part is at most 64 octets; a rewritten one that would
# be longer is still sent (most servers accept more), but never beyond this.
MAX_LOCAL = 512


class SrsError(MailsteadError):
    """An address that looks like SRS but is not one of ours, or is too old."""


def is_srs(local: str) -> bool:
    """Whether ``local`` is an SRS0 local part (case-insensitive, as MTAs may fold it)."""
    return local[:5].upper() == PREFIX


class Srs:
    """Rewrites and reverses SRS0 addresses under ``key``; ``clock`` gives the time."""

    def __init__(self, key: bytes, clock: Callable[[], float], max_age_days: int = MAX_AGE_DAYS
                 ) -> None:
        if len(key) < 16:
            raise ValueError("an SRS key needs at least 16 bytes")
        self._key = key
        self._clock = clock
        self._max_age = max_age_days

    def _hash(self, stamp: str, domain: str, local: str) -> str:
        data = "\x00".join((stamp, domain, local)).lower().encode("utf-8")
        digest = hmac.new(self._key, data, hashlib.sha1).digest()
        return base64.b64encode(digest).decode("ascii")[:HASH_LENGTH]

    def _stamp(self, now: float) -> str:
        day = int(now // _DAY) % _CYCLE
        return _BASE32[day >> 5] + _BASE32[day & 31]

    def forward(self, sender: str, our_domain: str) -> str:
        """The SRS0 address of ``sender`` (``local@domain``) at ``our_domain``."""
        local, sep, domain = sender.rpartition("@")
        if not sep or not local or not domain:
            raise SrsError("not an address with a domain")
        stamp = self._stamp(self._clock())
        rewritten = f"{PREFIX}{self._hash(stamp, domain, local)}={stamp}={domain}={local}"
        if len(rewritten) > MAX_LOCAL:
            raise SrsError("the rewritten address would be too long")
        return f"{rewritten}@{our_domain}"

    def reverse(self, local: str) -> str:
        """The original sender an SRS0 local part stands for; raises SrsError when it is
        malformed, its hash is not ours, or it is older than the maximum age."""
        if not is_srs(local):
            raise SrsError("not an SRS0 address")
        parts = local[len(PREFIX):].split("=", 3)
        if len(parts) != 4 or not all(parts):
            raise SrsError("malformed SRS0 address")
        given, stamp, domain, orig_local = parts
        expected = self._hash(stamp, domain, orig_local)
        # Compared case-insensitively too: some MTAs lower-case the local part (libsrs2
        # does the same); constant time either way.
        if not (hmac.compare_digest(given.encode(), expected.encode())
                or hmac.compare_digest(given.lower().encode(), expected.lower().encode())):
            raise SrsError("SRS hash does not match")
        if len(stamp) != 2 or any(c not in _BASE32 for c in stamp.upper()):
            raise SrsError("malformed SRS timestamp")
        then = _BASE32.index(stamp[0].upper()) << 5 | _BASE32.index(stamp[1].upper())
        today = int(self._clock() // _DAY) % _CYCLE
        if (today - then) % _CYCLE > self._max_age:
            raise SrsError("SRS address too old")
        return f"{orig_local}@{domain}"
