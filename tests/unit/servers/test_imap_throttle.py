"""The IMAP server's per-session command cap and the COMPRESS input checks, without sockets."""

from __future__ import annotations

import os
import zlib
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.servers.imap import INFLATE_CHUNK, CompressionBomb, _Stream
from mailstead.servers.listener import Connection
from mailstead.servers.throttle import TokenBucket


def test_bucket_allows_the_burst_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.01)
    assert bucket.take(0.0) == pytest.approx(0.02)  # waits queue up
    assert bucket.take(1.0) == 0.0  # a second later the burst is back (capped at 5)
    assert [bucket.take(1.0) for _ in range(4)] == [0.0] * 4
    assert bucket.take(1.0) > 0


def test_bucket_without_rate_never_waits() -> None:
    bucket = TokenBucket(rate=0, burst=1, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(10_000))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=0.05), min_size=1, max_size=300))
def test_bucket_never_lets_more_than_burst_plus_rate_times_time(gaps: list[float]) -> None:
    """Whatever the timing, commands that run (at now + wait) stay within the budget."""
    rate, burst = 50.0, 10
    bucket = TokenBucket(rate, burst, now=0.0)
    now, last_run = 0.0, 0.0
    for i, gap in enumerate(gaps, 1):
        now += gap
        run_at = max(last_run, now + bucket.take(now))
        last_run = run_at
        assert i <= burst + rate * run_at + 1e-6


def stream(ratio: float) -> _Stream:
    s = _Stream(cast(Connection, None), ratio)  # inflate() never touches the connection
    s.start_compression()
    return s


def deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)


def test_bomb_is_refused_after_one_bounded_step() -> None:
    s = stream(200)
    with pytest.raises(CompressionBomb):
        s.inflate(deflate(b"a NOOP\r\n" * (8 * 1024 * 1024)))
    assert s.inflated_out <= INFLATE_CHUNK


def test_ordinary_traffic_passes_whole() -> None:
    s = stream(200)
    text = b"".join(b"t%d UID FETCH %d:* (FLAGS)\r\n" % (i, i) for i in range(50_000))
    mail = os.urandom(300_000).hex().encode()
    wire = deflate(text + mail)
    out = s.inflate(wire)
    while s._tail:
        out += s.inflate(b"")
    assert out == text + mail
    assert s.inflated_out == len(text + mail)


def test_no_cap_configured() -> None:
    s = stream(0)
    out = s.inflate(deflate(b"\0" * (2 * 1024 * 1024)))
    assert len(out) == INFLATE_CHUNK  # still bounded per step
