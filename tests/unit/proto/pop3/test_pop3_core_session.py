"""POP3ServerCore, byte for byte: RFC 1939 commands in the TRANSACTION state, UPDATE at QUIT,
errors, limits and state rules."""

from __future__ import annotations

import pytest
from pop3_core_driver import MESSAGES, Driver

from mailstead.proto.pop3.events import ConnectionClosed, Retrieve, Update
from mailstead.proto.pop3.framing import wire_size
from mailstead.proto.pop3.server import State

SIZES = [wire_size(m) for m in MESSAGES]
TOTAL = sum(SIZES)
LOGGED_IN = f"+OK Logged in, 3 messages ({TOTAL} octets)\r\n".encode()


@pytest.fixture
def d() -> Driver:
    driver = Driver.new()
    assert driver.login() == b"+OK Send PASS\r\n" + LOGGED_IN
    assert driver.core.state is State.TRANSACTION
    return driver


def test_sizes_are_what_retr_sends() -> None:
    # The third message has three bare LFs and no final newline: 3 CRs and a CRLF are added.
    assert [len(MESSAGES[0]), len(MESSAGES[1]), len(MESSAGES[2]) + 3 + 2] == SIZES


def test_stat(d: Driver) -> None:
    assert d.run(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()


def test_list_all_and_one(d: Driver) -> None:
    assert d.run(b"LIST\r\n") == (
        f"+OK 3 messages ({TOTAL} octets)\r\n"
        f"1 {SIZES[0]}\r\n2 {SIZES[1]}\r\n3 {SIZES[2]}\r\n.\r\n"
    ).encode()
    assert d.run(b"LIST 2\r\n") == f"+OK 2 {SIZES[1]}\r\n".encode()
    assert d.run(b"list 3\r\n") == f"+OK 3 {SIZES[2]}\r\n".encode()


def test_uidl(d: Driver) -> None:
    assert d.run(b"UIDL\r\n") == (
        b"+OK 3 messages (%d octets)\r\n1 7.1\r\n2 7.2\r\n3 7.3\r\n.\r\n" % TOTAL
    )
    assert d.run(b"UIDL 1\r\n") == b"+OK 1 7.1\r\n"


def test_retr_sends_crlf_byte_stuffed_with_exact_count(d: Driver) -> None:
    out = d.run(b"RETR 2\r\n")
    assert out == (
        b"+OK %d octets\r\n" % SIZES[1]
        + b"Subject: two\r\nX: y\r\n\r\n..dot line\r\nline 2\r\n...two\r\n..\r\nlast\r\n"
        + b".\r\n"
    )
    out = d.run(b"RETR 3\r\n")
    assert out == (
        b"+OK %d octets\r\n" % SIZES[2]
        + b"Subject: three\r\n\r\nbare LF body\r\nno final newline\r\n.\r\n"
    )
    retrieve = d.of(Retrieve)
    assert [(e.number, e.top_lines) for e in retrieve] == [(2, None), (3, None)]


def test_top(d: Driver) -> None:
    assert d.run(b"TOP 2 0\r\n") == (
        b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n.\r\n"
    )
    assert d.run(b"TOP 2 1\r\n") == (
        b"+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\n..dot line\r\n.\r\n"
    )


def test_dele_rset_and_deleted_messages_are_invisible(d: Driver) -> None:
    assert d.run(b"DELE 1\r\n") == b"+OK Message 1 deleted\r\n"
    assert d.run(b"STAT\r\n") == f"+OK 2 {SIZES[1] + SIZES[2]}\r\n".encode()
    assert d.run(b"LIST\r\n").startswith(f"+OK 2 messages ({SIZES[1] + SIZES[2]} octets)\r\n"
                                         f"2 {SIZES[1]}\r\n".encode())
    assert d.run(b"DELE 1\r\n") == b"-ERR Message is deleted\r\n"
    assert d.run(b"RETR 1\r\n") == b"-ERR Message is deleted\r\n"
    assert d.run(b"LIST 1\r\n") == b"-ERR Message is deleted\r\n"
    assert d.run(b"UIDL 1\r\n") == b"-ERR Message is deleted\r\n"
    assert d.run(b"TOP 1 0\r\n") == b"-ERR Message is deleted\r\n"
    assert d.run(b"RSET\r\n") == f"+OK Maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
    assert d.run(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()


def test_quit_enters_update_with_the_marked_messages(d: Driver) -> None:
    d.run(b"DELE 3\r\nDELE 1\r\n")
    assert d.run(b"QUIT\r\n") == b"+OK Bye, 1 messages left\r\n"
    assert [e.numbers for e in d.of(Update)] == [(1, 3)]
    assert d.core.closed
    assert d.of(ConnectionClosed)


def test_failed_update_is_reported(d: Driver) -> None:
    d.update_ok = False
    d.run(b"DELE 2\r\n")
    assert d.run(b"QUIT\r\n") == (
        b"-ERR [SYS/TEMP] Some deleted messages were not removed, try again\r\n"
    )
    assert d.core.closed


def test_quit_without_deletions_needs_no_update(d: Driver) -> None:
    assert d.run(b"QUIT\r\n") == b"+OK Bye, 3 messages left\r\n"
    assert not d.of(Update)


@pytest.mark.parametrize("ending", [b"", None])
def test_dropped_connection_or_timeout_deletes_nothing(d: Driver, ending: bytes | None) -> None:
    d.run(b"DELE 1\r\nDELE 2\r\n")
    if ending is None:
        d.core.timeout()  # RFC 1939 section 3: no response, no UPDATE
        assert d.run(b"") == b""
    else:
        assert d.run(ending) == b""
    assert d.core.closed
    assert not d.of(Update)


def test_shutdown_closes_silently_without_update(d: Driver) -> None:
    d.run(b"DELE 1\r\n")
    d.core.shutdown()
    assert d.run(b"") == b""
    assert not d.of(Update)


def test_noop(d: Driver) -> None:
    assert d.run(b"NOOP\r\n") == b"+OK\r\n"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RETR 0", b"-ERR No such message"),
        (b"RETR 4", b"-ERR No such message"),
        (b"RETR 99999999999", b"-ERR Syntax: RETR msg"),
        (b"RETR -1", b"-ERR Syntax: RETR msg"),
        (b"RETR x", b"-ERR Syntax: RETR msg"),
        (b"RETR", b"-ERR Syntax: RETR msg"),
        (b"RETR 1 2", b"-ERR Syntax: RETR msg"),
        (b"RETR  1", b"-ERR Syntax: RETR msg"),
        (b"DELE 4", b"-ERR No such message"),
        (b"LIST 4", b"-ERR No such message"),
        (b"LIST 1 2", b"-ERR Syntax: LIST [msg]"),
        (b"UIDL 0", b"-ERR No such message"),
        (b"TOP 1", b"-ERR Syntax: TOP msg n"),
        (b"TOP 1 -1", b"-ERR Syntax: TOP msg n"),
        (b"TOP 9 1", b"-ERR No such message"),
        (b"STAT 1", b"-ERR Syntax: STAT"),
        (b"USER bob", b"-ERR Already logged in"),
        (b"PASS x", b"-ERR Already logged in"),
        (b"STLS", b"-ERR Already logged in"),
        (b"AUTH PLAIN", b"-ERR Already logged in"),
        (b"XYZZY", b"-ERR Unknown command"),
        (b"", b"-ERR Unknown command"),
        (b"RETR\x001", b"-ERR Command contains control characters"),
        (b"RETR \xff", b"-ERR Command is not valid UTF-8"),
    ],
)
def test_bad_commands_in_transaction(d: Driver, line: bytes, reply: bytes) -> None:
    assert d.run(line + b"\r\n") == reply + b"\r\n"
    assert not d.of(Retrieve)
    assert d.run(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()  # nothing changed


def test_trailing_space_is_tolerated(d: Driver) -> None:
    assert d.run(b"LIST 1 \r\n") == f"+OK 1 {SIZES[0]}\r\n".encode()


def test_pipelined_commands_answered_in_order(d: Driver) -> None:
    out = d.run(b"STAT\r\nRETR 1\r\nDELE 1\r\nLIST 1\r\nNOOP\r\n")
    assert out == (
        f"+OK 3 {TOTAL}\r\n".encode()
        + b"+OK %d octets\r\n" % SIZES[0] + MESSAGES[0] + b".\r\n"
        + b"+OK Message 1 deleted\r\n-ERR Message is deleted\r\n+OK\r\n"
    )


def test_core_waits_for_the_answer_before_reading_on() -> None:
    from mailstead.proto.pop3.events import PAUSED

    d = Driver.new()
    d.login()
    core = d.core
    core.receive_data(b"RETR 1\r\nSTAT\r\n")
    event = core.next_event()
    assert isinstance(event, Retrieve)
    assert core.next_event() is PAUSED
    assert core.data_to_send() == b""
    core.message_content(MESSAGES[0])
    assert core.data_to_send().endswith(b"hello\r\n.\r\n")
    core.next_event()
    assert core.data_to_send() == f"+OK 3 {TOTAL}\r\n".encode()


def test_answers_without_a_pending_event_are_refused() -> None:
    d = Driver.new()
    with pytest.raises(RuntimeError):
        d.core.message_content(b"x")
    with pytest.raises(RuntimeError):
        d.core.login_ok([])


def test_line_limit_255_octets_with_crlf(d: Driver) -> None:
    ok = b"NOOP " + b"x" * (255 - 7)  # exactly 255 with CRLF: syntax error, not too long
    assert d.run(ok + b"\r\n") == b"-ERR Syntax: NOOP\r\n"
    assert d.run(ok + b"x\r\n") == b"-ERR Command line too long: at most 255 octets (RFC 2449)\r\n"
    # Over the framing limit: reported once, the rest of the line is skipped, no growth.
    out = d.run(b"NOOP " + b"y" * 5000)
    assert out == b"-ERR Command line too long: at most 255 octets (RFC 2449)\r\n"
    assert d.run(b"y" * 5000) == b""
    assert d.run(b"yyy\r\nNOOP\r\n") == b"+OK\r\n"


def test_bare_lf_never_ends_a_line(d: Driver) -> None:
    assert d.run(b"DELE 1\nDELE 2\r\n") == (
        b"-ERR Command lines must end with CRLF; bare CR or LF is not allowed\r\n"
    )
    assert d.run(b"STAT\r\n") == f"+OK 3 {TOTAL}\r\n".encode()


def test_too_many_errors_close_the_session() -> None:
    d = Driver.new(max_errors=3)
    d.login()
    out = d.run(b"DELE 1\r\nBAD\r\nBAD\r\nBAD\r\nSTAT\r\n")
    assert out == (
        b"+OK Message 1 deleted\r\n-ERR Unknown command\r\n-ERR Unknown command\r\n"
        b"-ERR Unknown command\r\n-ERR Too many invalid commands, closing connection\r\n"
    )
    assert d.core.closed
    assert not d.of(Update)  # closing for errors is not a QUIT: nothing is deleted


def test_empty_maildrop() -> None:
    d = Driver.new()
    d.messages = ()
    assert d.login().endswith(b"+OK Logged in, 0 messages (0 octets)\r\n")
    assert d.run(b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n") == (
        b"+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n+OK 0 messages (0 octets)\r\n.\r\n"
        b"-ERR No such message\r\n"
    )


def test_empty_stored_message_retrieves_as_empty() -> None:
    d = Driver.new()
    d.messages = (b"",)
    d.login()
    assert d.run(b"LIST 1\r\nRETR 1\r\n") == b"+OK 1 0\r\n+OK 0 octets\r\n.\r\n"
