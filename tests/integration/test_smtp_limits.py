"""Limits, against a server configured with tiny ones (conftest.LIMITED_SMTP)."""

from __future__ import annotations

import contextlib
import time

from helpers import LIMITED_SMTP, Harness, RawSMTP, dot_stuff, make_message

ALICE = "alice@example.test"
MAX_SIZE = LIMITED_SMTP["max_message_size"]


def _session(server: Harness) -> RawSMTP:
    smtp = server.raw("smtp")
    try:
        assert smtp.read_reply().code == 220
        smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def test_size_is_advertised(limited_server: Harness) -> None:
    with limited_server.raw("smtp") as smtp:
        smtp.read_reply()
        ehlo = smtp.ehlo()
        assert f"SIZE {MAX_SIZE}" in [line.upper() for line in ehlo.lines[1:]]  # RFC 1870 4


def test_size_parameter_over_limit_552(limited_server: Harness) -> None:
    with _session(limited_server) as smtp:
        reply = smtp.command(f"MAIL FROM:<sender@remote.test> SIZE={MAX_SIZE + 1}")
        assert (reply.code, reply.enhanced) == (552, "5.3.4"), reply  # RFC 1870 section 6.1
        assert smtp.command("MAIL FROM:<sender@remote.test> SIZE=1000").code == 250


def test_actual_data_over_limit_552(limited_server: Harness, token: str) -> None:
    line = b"x" * 76 + b"\r\n"
    message = make_message(token + "-big", body=line * (MAX_SIZE // len(line) + 10))
    assert len(message) > MAX_SIZE
    with _session(limited_server) as smtp:
        assert smtp.command("MAIL FROM:<sender@remote.test> SIZE=1000").code == 250
        assert smtp.command(f"RCPT TO:<{ALICE}>").code == 250
        assert smtp.command("DATA").code == 354
        smtp.send(dot_stuff(message))
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (552, "5.3.4"), reply
        # The session goes on, and a message just under the limit still fits.
        small = make_message(token + "-small")
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        assert smtp.command(f"RCPT TO:<{ALICE}>").code == 250
        assert smtp.command("DATA").code == 354
        smtp.send(dot_stuff(small))
        assert smtp.read_reply().code == 250
    assert not limited_server.find(ALICE, token + "-big")
    assert len(limited_server.find(ALICE, token + "-small")) == 1


def test_101st_recipient_452(limited_server: Harness, token: str) -> None:
    """RFC 5321 section 4.5.3.1.8 and 4.5.3.1.10: 452 for recipients over the limit; the
    transaction still goes through for the accepted ones (one copy: all are alice)."""
    with _session(limited_server) as smtp:
        assert smtp.command("MAIL FROM:<sender@remote.test>").code == 250
        for n in range(100):
            reply = smtp.command(f"RCPT TO:<alice+{n}@example.test>")
            assert reply.code == 250, (n, reply)
        reply = smtp.command("RCPT TO:<alice+100@example.test>")
        assert (reply.code, reply.enhanced) == (452, "4.5.3"), reply
        assert smtp.command("DATA").code == 354
        smtp.send(dot_stuff(make_message(token)))
        assert smtp.read_reply().code == 250
    assert len(limited_server.find(ALICE, token)) == 1


def test_command_line_too_long_500(limited_server: Harness) -> None:
    """The whole over-long line is one error (RFC 5321 section 4.5.3.1.4); its tail is never
    taken for a command of its own."""
    with _session(limited_server) as smtp:
        smtp.send(b"NOOP " + b"x" * 20000 + b"QUIT\r\n")
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (500, "5.5.2"), reply
        assert smtp.command("NOOP").code == 250


def test_too_many_errors_421_and_close(limited_server: Harness) -> None:
    max_errors = LIMITED_SMTP["max_errors"]
    with _session(limited_server) as smtp:
        codes = []
        for _ in range(max_errors + 1):
            reply = smtp.command("BOGUS")
            codes.append(reply.code)
            if reply.code == 421:
                break
        assert codes[-1] == 421, codes
        assert all(500 <= c < 600 for c in codes[:-1]), codes
        assert len(codes) <= max_errors + 1
        smtp.expect_closed()


def test_idle_timeout_421_and_close(limited_server: Harness) -> None:
    idle = LIMITED_SMTP["idle_timeout"]
    with _session(limited_server) as smtp:
        start = time.monotonic()
        smtp.sock.settimeout(idle + 10)
        reply = smtp.read_reply()
        elapsed = time.monotonic() - start
        assert (reply.code, reply.enhanced) == (421, "4.4.2"), reply  # RFC 5321 4.5.3.2.7
        assert idle * 0.8 <= elapsed <= idle + 5, elapsed
        smtp.expect_closed()


def test_idle_timeout_during_data(limited_server: Harness) -> None:
    idle = LIMITED_SMTP["idle_timeout"]
    with _session(limited_server) as smtp:
        smtp.command("MAIL FROM:<sender@remote.test>")
        smtp.command(f"RCPT TO:<{ALICE}>")
        assert smtp.command("DATA").code == 354
        smtp.send(b"Subject: half a message\r\n")
        smtp.sock.settimeout(idle + 10)
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2"), reply
        smtp.expect_closed()


def test_connections_per_ip_421_at_greeting(limited_server: Harness) -> None:
    limit = LIMITED_SMTP["max_connections_per_ip"]
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(limited_server.raw("smtp")) for _ in range(limit)]
        for smtp in held:
            assert smtp.read_reply().code == 220
        with limited_server.raw("smtp") as extra:
            reply = extra.read_reply()
            assert (reply.code, reply.enhanced) == (421, "4.7.0"), reply
            extra.expect_closed()
        assert held[0].command("QUIT").code == 221
        held[0].expect_closed()
    # Every slot is free again once the connections are gone.
    deadline = time.monotonic() + 5
    while True:
        with limited_server.raw("smtp") as again:
            reply = again.read_reply()
            if reply.code == 220 or time.monotonic() > deadline:
                break
        time.sleep(0.1)
    assert reply.code == 220, reply


def test_huge_unterminated_line_does_not_hang(limited_server: Harness) -> None:
    """1 MiB without any CRLF: refused (or the connection closed), never buffered forever."""
    with _session(limited_server) as smtp:
        try:
            smtp.send(b"A" * (1024 * 1024))
            smtp.send(b"\r\n")
            reply = smtp.read_reply()
        except (ConnectionError, BrokenPipeError):
            return
        assert 400 <= reply.code < 600, reply


def test_trickled_command_line_times_out(limited_server: Harness) -> None:
    """A byte every 0.4 s never finishes the line: the deadline is for the whole command
    line (RFC 5321 section 4.5.3.2.7), so each byte does not restart the idle timer."""
    idle = LIMITED_SMTP["idle_timeout"]
    with _session(limited_server) as smtp:
        start = time.monotonic()
        smtp.sock.settimeout(0.4)
        got = b""
        while not got and time.monotonic() - start < idle + 5:
            try:
                smtp.send(b"N")
                got = smtp.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        elapsed = time.monotonic() - start
        assert got.startswith(b"421 4.4.2"), got
        assert idle * 0.8 <= elapsed <= idle + 2, elapsed
