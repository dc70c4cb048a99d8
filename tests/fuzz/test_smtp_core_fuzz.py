"""Hostile input for the SMTP core: random bytes in random pieces never raise and never hang,
and any body, dot-stuffed and framed, comes back identical whatever the chunking."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    ConnectionClosed,
    MailFrom,
    MessageData,
    RcptTo,
    SessionSettings,
    StartTLS,
    TransactionReset,
)
from mailstead.proto.smtp.framing import dot_stuff
from mailstead.proto.smtp.server import SMTPServerCore

PREFIX = b"EHLO c.test\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<b@e.test>\r\n"
TOKENS = [
    b"EHLO x\r\n", b"HELO x\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<c@d.test>\r\n",
    b"DATA\r\n", b"BDAT 3\r\n", b"BDAT 2 LAST\r\n", b"RSET\r\n", b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n", b"AGFAAGI=\r\n", b"*\r\n", b".\r\n", b"\r\n.\r\n",
    b"\n.\n", b"\r", b"\n", b".", b"QUIT\r\n", b"NOOP\r\n", b"x" * 50, b"\xff\x00",
]


def drive(core: SMTPServerCore, pieces: list[bytes], answers: list[int]) -> list[object]:
    """Feed pieces, answering decisions with a rotating set of replies; bounded work."""
    codes = [Reply(250, "2.0.0", "OK"), Reply(550, "5.1.1", "No"), Reply(451, "4.3.0", "Later")]
    events: list[object] = []
    n = 0
    for piece in [*pieces, b""]:
        core.receive_data(piece)
        for _ in range(10_000):
            event = core.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED
            events.append(event)
            choice = answers[n % len(answers)] if answers else 0
            n += 1
            if isinstance(event, MailFrom | RcptTo | MessageData):
                core.respond(codes[choice % 3])
            elif isinstance(event, AuthCredentials):
                core.auth_result(choice % 2 == 0)
            elif isinstance(event, StartTLS) and choice % 2 == 0:
                core.tls_started()
        else:
            raise AssertionError("the core kept producing events")
        assert core.data_to_send() is not None
        if core.closed:
            break
    return events


session_settings = st.builds(
    SessionSettings,
    hostname=st.just("mx.test"),
    submission=st.booleans(),
    tls_active=st.booleans(),
    starttls_available=st.booleans(),
    auth_requires_tls=st.booleans(),
    max_message_size=st.integers(0, 300),
    max_recipients=st.integers(1, 3),
    max_command_line=st.integers(10, 600),
    max_data_line=st.integers(1, 100),
    max_errors=st.integers(1, 20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=session_settings,
    pieces=st.lists(st.binary(min_size=1, max_size=200), max_size=20),
    answers=st.lists(st.integers(0, 5), max_size=5),
)
def test_random_bytes_never_raise(cfg: SessionSettings, pieces: list[bytes],
                                  answers: list[int]) -> None:
    core = SMTPServerCore(cfg)
    drive(core, [PREFIX, *pieces], answers)
    assert core.closed  # EOF always ends the session


@settings(max_examples=300, deadline=None)
@given(
    cfg=session_settings,
    tokens=st.lists(st.sampled_from(TOKENS), max_size=40),
    cuts=st.lists(st.integers(1, 30), max_size=30),
    answers=st.lists(st.integers(0, 5), max_size=5),
)
def test_protocol_shaped_input_never_raises(cfg: SessionSettings, tokens: list[bytes],
                                            cuts: list[int], answers: list[int]) -> None:
    stream = b"".join(tokens)
    pieces = []
    for cut in cuts:
        pieces.append(stream[:cut])
        stream = stream[cut:]
    pieces.append(stream)
    core = SMTPServerCore(cfg)
    events = drive(core, [p for p in pieces if p], answers)
    assert isinstance(events[-1], ConnectionClosed)
    # After close nothing more comes out.
    core.receive_data(b"NOOP\r\n")
    assert core.next_event() is NEED_DATA
    assert core.data_to_send() == b""


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    last = 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


crlf_lines = st.lists(
    st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=30,
).map(lambda lines: b"".join(line + b"\r\n" for line in lines))


@settings(max_examples=300, deadline=None)
@given(body=crlf_lines, cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_data_round_trip(body: bytes, cuts: list[int]) -> None:
    core = SMTPServerCore(SessionSettings(hostname="mx.test"))
    wire = PREFIX + b"DATA\r\n" + dot_stuff(body) + b"QUIT\r\n"
    events = drive(core, split(wire, cuts), [0])
    messages = [e for e in events if isinstance(e, MessageData)]
    assert len(messages) == 1
    assert messages[0].data == body
    assert not messages[0].via_bdat


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=60), max_size=5), cuts=st.lists(st.integers(0, 500),
                                                                           max_size=12))
def test_bdat_round_trip(chunks: list[bytes], cuts: list[int]) -> None:
    core = SMTPServerCore(SessionSettings(hostname="mx.test"))
    wire = PREFIX
    for chunk in chunks:
        wire += b"BDAT %d\r\n" % len(chunk) + chunk
    wire += b"BDAT 0 LAST\r\nQUIT\r\n"
    events = drive(core, split(wire, cuts), [0])
    messages = [e for e in events if isinstance(e, MessageData)]
    data = b"".join(chunks)
    if re.search(rb"\r(?!\n)|(?<!\r)\n", data):
        # RFC 5321 section 2.3.8: a bare CR or LF anywhere refuses the message, as with DATA.
        assert messages == []
        assert TransactionReset(replies.BARE_EOL_DATA) in events
        return
    assert len(messages) == 1
    assert messages[0].data == data
    assert messages[0].via_bdat


@settings(max_examples=200, deadline=None)
@given(
    body=crlf_lines,
    junk=st.lists(st.sampled_from([b"\n", b"\r", b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n"]),
                  min_size=1, max_size=3),
    where=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_bare_cr_lf_never_yields_a_message(body: bytes, junk: list[bytes], where: int,
                                           cuts: list[int]) -> None:
    stuffed = dot_stuff(body)[:-3]  # without the terminator
    pos = where % (len(stuffed) + 1)
    if stuffed[pos - 1 : pos] == b"\r":
        pos += 1  # never split a real CRLF: "\r" + "\n.\r\n" is a genuine end of data
    polluted = stuffed[:pos] + b"".join(junk) + stuffed[pos:]
    if not polluted.endswith(b"\r\n"):
        polluted += b"\r\n"
    # The junk can form a genuine CRLF or CRLF.CRLF; what matters is that the content up to
    # the first real end holds a bare CR or LF.
    stream = b"\r\n" + polluted + b".\r\n"
    content = stream[2 : stream.find(b"\r\n.\r\n") + 2]
    crlf = content.count(b"\r\n")
    assume(content.count(b"\r") != crlf or content.count(b"\n") != crlf)
    core = SMTPServerCore(SessionSettings(hostname="mx.test"))
    wire = PREFIX + b"DATA\r\n" + polluted + b".\r\nQUIT\r\n"
    events = drive(core, split(wire, cuts), [0])
    assert not any(isinstance(e, MessageData) for e in events)
    assert sum(isinstance(e, MailFrom) for e in events) == 1


# ---------------------------------------------------------------- text-level and ordering

VERBS = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "VRFY", "NOOP", "RSET", "AUTH", "BDAT",
         "DATA", "HELP", "EXPN", "QUIT", "STARTTLS", "XYZZY"]
text_lines = st.lists(
    st.tuples(st.sampled_from(VERBS), st.text(max_size=40)).map(
        lambda vt: (vt[0] + " " + vt[1]).replace("\r", "").replace("\n", "")
    ),
    max_size=15,
)


@settings(max_examples=400, deadline=None)
@given(cfg=session_settings, lines=text_lines, answers=st.lists(st.integers(0, 5), max_size=5))
def test_unicode_commands_never_raise(cfg: SessionSettings, lines: list[str],
                                      answers: list[int]) -> None:
    core = SMTPServerCore(cfg)
    wire = b"".join(line.encode("utf-8", "surrogatepass") + b"\r\n" for line in lines)
    drive(core, [PREFIX, wire], answers)
    assert core.closed


@settings(max_examples=200, deadline=None)
@given(cfg=session_settings, tokens=st.lists(st.sampled_from(TOKENS), max_size=40),
       cut=st.integers(1, 7), answers=st.lists(st.integers(0, 5), max_size=5))
def test_replies_do_not_depend_on_how_input_is_split(
    cfg: SessionSettings, tokens: list[bytes], cut: int, answers: list[int]
) -> None:
    """The same bytes give the same replies and events whether they come pipelined in one
    piece or in small pieces: nothing is answered twice, skipped or reordered."""
    stream = PREFIX + b"".join(t for t in tokens if t != b"STARTTLS\r\n")
    outputs = []
    for pieces in ([stream], [stream[i : i + cut] for i in range(0, len(stream), cut)]):
        core = SMTPServerCore(cfg)
        out = core.data_to_send()
        codes = [Reply(250, "2.0.0", "OK"), Reply(550, "5.1.1", "No")]
        events: list[object] = []
        for piece in [*pieces, b""]:
            core.receive_data(piece)
            while (event := core.next_event()) is not NEED_DATA:
                events.append(event)
                answer = codes[(answers or [0])[len(events) % len(answers or [0])] % 2]
                if isinstance(event, MailFrom | RcptTo | MessageData):
                    core.respond(answer)
                elif isinstance(event, AuthCredentials):
                    core.auth_result(answer.is_positive)
            out += core.data_to_send()
        outputs.append((out, events))
    assert outputs[0] == outputs[1]
