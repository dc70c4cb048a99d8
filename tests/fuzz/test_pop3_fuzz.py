"""Hostile input for the POP3 core: random bytes and command soup in random pieces never
raise, never hang and keep memory bounded; any stored message comes back from RETR exactly
in its wire form, with the size LIST announced."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    MaildropEntry,
    Pop3Settings,
    Retrieve,
    StartTLS,
    Update,
)
from mailstead.proto.pop3.framing import wire_form, wire_size
from mailstead.proto.pop3.server import POP3ServerCore

TOKENS = [
    b"USER a@b.test\r\n", b"PASS pw\r\n", b"AUTH PLAIN\r\n", b"AUTH PLAIN AGEAcHc=\r\n",
    b"AGEAcHc=\r\n", b"*\r\n", b"=\r\n", b"STLS\r\n", b"CAPA\r\n", b"STAT\r\n", b"LIST\r\n",
    b"LIST 1\r\n", b"UIDL\r\n", b"UIDL 2\r\n", b"RETR 1\r\n", b"RETR 3\r\n", b"TOP 1 2\r\n",
    b"DELE 1\r\n", b"DELE 2\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"APOP x y\r\n",
    b"RETR 99999999999999\r\n", b"\r\n", b"\r", b"\n", b".", b"x" * 300, b"\xff\x00",
]
STORED = [b"A: 1\r\n\r\nbody\r\n", b".\n..\r\n.\r", b""]


def drive(core: POP3ServerCore, pieces: list[bytes], choices: list[int]) -> bytes:
    """Feed every piece, answering decisions by rotating through ``choices``."""
    out = bytearray(core.data_to_send())
    n = 0
    for piece in [*pieces, b""]:
        core.receive_data(piece)
        for _ in range(10_000):
            event = core.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED
            choice = choices[n % len(choices)] if choices else 0
            n += 1
            if isinstance(event, Credentials):
                if choice % 3 == 0:
                    core.login_ok([MaildropEntry(f"1.{i}", wire_size(m))
                                   for i, m in enumerate(STORED, start=1)])
                else:
                    core.login_failed(replies.IN_USE if choice % 3 == 1 else replies.AUTH_FAILED)
            elif isinstance(event, Retrieve):
                assert 1 <= event.number <= len(STORED)
                if choice % 4:
                    core.message_content(STORED[event.number - 1])
                else:
                    core.message_unavailable()
            elif isinstance(event, Update):
                assert event.numbers
                core.update_done(choice % 2 == 0)
            elif isinstance(event, StartTLS):
                if choice % 2 == 0:
                    core.tls_started()
            else:
                assert isinstance(event, ConnectionClosed)
        else:
            raise AssertionError("the core kept producing events")
        out += core.data_to_send()
        # Buffered input stays bounded whatever arrives (framing limit plus one read).
        assert len(core._in) <= 2048 + len(piece) + 2
        if core.closed:
            break
    assert core.closed  # end of input always ends the session
    return bytes(out)


def _check_output(out: bytes) -> None:
    # Every status line the core wrote is well formed (multi-line bodies aside).
    for line in out.split(b"\r\n"):
        if line.startswith((b"+OK", b"-ERR")):
            assert len(line) + 2 <= 512  # RFC 1939 section 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.binary(max_size=400), max_size=12),
    choices=st.lists(st.integers(0, 11), max_size=8),
    tls=st.booleans(),
)
def test_random_bytes_never_raise(pieces: list[bytes], choices: list[int], tls: bool) -> None:
    core = POP3ServerCore(Pop3Settings("h.test", tls_active=tls, stls_available=True))
    _check_output(drive(core, pieces, choices))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=40),
    cuts=st.lists(st.integers(0, 4000), max_size=10),
    choices=st.lists(st.integers(0, 11), max_size=8),
    tls=st.booleans(),
)
def test_command_soup_in_random_pieces(
    tokens: list[bytes], cuts: list[int], choices: list[int], tls: bool
) -> None:
    stream = b"".join(tokens)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    core = POP3ServerCore(Pop3Settings("h.test", tls_active=tls, stls_available=True,
                                       max_errors=1000))
    _check_output(drive(core, [p for p in pieces if p], choices))


def _unstuff(response: bytes) -> bytes:
    """The client side of RFC 1939 section 3: strip the status line and the terminator and
    remove one leading "." from every line."""
    status, _, rest = response.partition(b"\r\n")
    assert status.startswith(b"+OK")
    assert rest.endswith(b".\r\n")
    body = rest[:-3]
    if not body:
        return b""
    assert body.endswith(b"\r\n")
    lines = body[:-2].split(b"\r\n")
    for line in lines:
        assert line != b"."  # a lone dot would end the response early
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines) + b"\r\n"


@settings(max_examples=300, deadline=None)
@given(message=st.binary(max_size=600) | st.lists(
    st.sampled_from([b".", b"\r\n", b"\n", b"\r", b"..", b"a", b".\r\n", b"\r\n.\r\n"]),
    max_size=40).map(b"".join))
def test_retr_round_trips_any_message(message: bytes) -> None:
    core = POP3ServerCore(Pop3Settings("h.test", tls_active=True))
    core.data_to_send()
    core.receive_data(b"USER u\r\nPASS p\r\n")
    assert isinstance(core.next_event(), Credentials)
    core.login_ok([MaildropEntry("1.1", wire_size(message))])
    core.data_to_send()
    core.receive_data(b"LIST 1\r\nRETR 1\r\n")
    assert core.next_event() is not NEED_DATA  # the Retrieve
    listed = core.data_to_send()
    core.message_content(message)
    response = core.data_to_send()
    assert response.count(b"\r\n.\r\n") >= 1
    got = _unstuff(response)
    assert got == wire_form(message)
    assert listed == b"+OK 1 %d\r\n" % len(got)
    assert response.startswith(b"+OK %d octets\r\n" % len(got))
    # Only CRLF line endings on the wire: every LF is preceded by CR.
    assert response.count(b"\n") == response.count(b"\r\n")
