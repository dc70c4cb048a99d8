"""The sans-I/O POP3 server core: bytes in, events out, decisions in, bytes out (DESIGN rule 1).

``POP3ServerCore`` owns the session's state transitions (RFC 1939 AUTHORIZATION, TRANSACTION
and UPDATE; RFC 2595 STLS; RFC 5034 AUTH) in the table ``_STATES``. Commands are handled
strictly one after another: while a decision event (Credentials, Retrieve, Update) waits for
its answer no further line is read, so pipelined commands (RFC 2449 section 6.6) get their
responses in order. Client bytes never raise out of it and memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TypeVar

from mailstead.core.secret import Secret
from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.commands import (
    MAX_AUTH_LINE,
    MAX_COMMAND_LINE,
    CommandError,
    arguments,
    decode_line,
    line_count,
    message_number,
    split_command,
)
from mailstead.proto.pop3.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    Event,
    MaildropEntry,
    Pop3Settings,
    Retrieve,
    Sentinel,
    StartTLS,
    Update,
)
from mailstead.proto.pop3.framing import (
    BadLine,
    LineProblem,
    LineReader,
    multiline,
    top_of,
    wire_form,
)
from mailstead.proto.pop3.maildrop import Maildrop
from mailstead.proto.pop3.replies import Pop3Reply
from mailstead.proto.pop3.sasl import Pop3Sasl


class State(Enum):
    AUTHORIZATION = "authorization"  # RFC 1939 section 4
    TRANSACTION = "transaction"  # RFC 1939 section 5
    UPDATE = "update"  # RFC 1939 section 6: after QUIT, while the store removes messages
    CLOSED = "closed"


class _Input(Enum):
    COMMAND = "command"  # reading command lines
    SASL = "sasl"  # reading AUTH responses after a "+ " continuation
    TLS_WAIT = "tls wait"  # StartTLS emitted: every byte is dropped until tls_started()


_P = TypeVar("_P", Credentials, Retrieve, Update)

_A, _T = State.AUTHORIZATION, State.TRANSACTION
# The state table: where each command is valid (RFC 1939 sections 4-7, RFC 2449 section 5,
# RFC 2595 section 4, RFC 5034 section 4).
_STATES: dict[str, frozenset[State]] = {
    "CAPA": frozenset({_A, _T}),
    "QUIT": frozenset({_A, _T}),
    "STLS": frozenset({_A}),
    "USER": frozenset({_A}),
    "PASS": frozenset({_A}),
    "AUTH": frozenset({_A}),
    "APOP": frozenset({_A}),
    "STAT": frozenset({_T}),
    "LIST": frozenset({_T}),
    "RETR": frozenset({_T}),
    "DELE": frozenset({_T}),
    "NOOP": frozenset({_T}),
    "RSET": frozenset({_T}),
    "TOP": frozenset({_T}),
    "UIDL": frozenset({_T}),
}


class POP3ServerCore:
    """One POP3 session; see ``mailstead.proto.pop3.events`` for the calling contract."""

    def __init__(self, settings: Pop3Settings) -> None:
        self.settings = settings
        self.state = State.AUTHORIZATION
        self.authenticated_as: str | None = None
        self._tls_active = settings.tls_active
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._input = _Input.COMMAND
        self._lines = LineReader()
        self._events: deque[Event] = deque()
        self._pending: Credentials | Retrieve | Update | None = None
        self._errors = 0
        self._user: str | None = None  # the name given with USER, waiting for PASS
        self._sasl = Pop3Sasl(settings.sasl_mechanisms)
        self._maildrop = Maildrop(())
        self._handlers: dict[str, Callable[[str], None]] = {
            "CAPA": self._cmd_capa,
            "QUIT": self._cmd_quit,
            "STLS": self._cmd_stls,
            "USER": self._cmd_user,
            "PASS": self._cmd_pass,
            "AUTH": self._cmd_auth,
            "APOP": self._cmd_apop,
            "STAT": self._cmd_stat,
            "LIST": self._cmd_list,
            "RETR": self._cmd_retr,
            "DELE": self._cmd_dele,
            "NOOP": self._cmd_noop,
            "RSET": self._cmd_rset,
            "TOP": self._cmd_top,
            "UIDL": self._cmd_uidl,
        }
        self._send(replies.greeting(settings.hostname))

    # ----------------------------------------------------------------- public API

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def auth_allowed(self) -> bool:
        """USER/PASS and AUTH are accepted on this connection now (RFC 2595 section 2.1)."""
        return self._tls_active or not self.settings.auth_requires_tls

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self.closed:
            return
        if not data:
            self._eof = True
        elif self._input is not _Input.TLS_WAIT:
            # After STLS every plaintext byte is discarded (RFC 2595 section 4).
            self._in += data

    def next_event(self) -> Event | Sentinel:
        """The next event, NEED_DATA (feed more) or PAUSED (answer the pending event)."""
        while True:
            if self._events:
                return self._events.popleft()
            if self.closed:
                return NEED_DATA
            if self._pending is not None:
                return PAUSED
            if self._input is not _Input.TLS_WAIT and self._step():
                continue
            if not self._eof:
                return NEED_DATA
            # RFC 1939 section 6: a session that ends without QUIT never enters UPDATE.
            self._close("peer closed connection")

    def login_ok(self, messages: Sequence[MaildropEntry]) -> None:
        """Answer Credentials: the maildrop is locked and holds ``messages``, in order."""
        pending = self._take(Credentials)
        if pending is None:
            return
        self.authenticated_as = pending.username
        self._maildrop = Maildrop(messages)
        self.state = State.TRANSACTION
        count, size = self._maildrop.stat()
        # RFC 1939 section 7 (PASS): "+OK maildrop locked and ready".
        self._send(replies.ok(f"Logged in, {count} messages ({size} octets)"))

    def login_failed(self, reply: Pop3Reply = replies.AUTH_FAILED) -> None:
        """Answer Credentials with ``reply`` (``[AUTH]``, ``[IN-USE]``, ``[SYS/TEMP]``...);
        counted as an error, which bounds password guessing on one connection."""
        if self._take(Credentials) is None:
            return
        self._error(reply)

    def message_content(self, data: bytes) -> None:
        """Answer Retrieve with the message's stored bytes; the core sends them in the
        multi-line form (CRLF lines, byte-stuffed, terminated)."""
        pending = self._take(Retrieve)
        if pending is None:
            return
        if pending.top_lines is None:
            content = wire_form(data)
            first = replies.ok(f"{len(content)} octets").render()
        else:
            content = top_of(data, pending.top_lines)
            first = replies.ok("Top of message follows").render()
        self._out += multiline(first, content)

    def message_unavailable(self, reply: Pop3Reply = replies.SYS_TEMP) -> None:
        """Answer Retrieve when the message cannot be read (gone, or a store failure)."""
        if self._take(Retrieve) is None:
            return
        self._send(reply)

    def update_done(self, ok: bool) -> None:
        """Answer Update: ``ok`` when every marked message was removed (RFC 1939 section 6)."""
        pending = self._take(Update)
        if pending is None:
            return
        if ok:
            left = len(self._maildrop) - len(pending.numbers)
            self._send(replies.ok(f"Bye, {left} messages left"))
        else:
            self._send(replies.err("Some deleted messages were not removed, try again",
                                   "SYS/TEMP"))
        self._close("client quit")

    def tls_started(self) -> None:
        """TLS is up: the session starts afresh in the AUTHORIZATION state (RFC 2595 4)."""
        if self.closed:
            return
        if self._input is not _Input.TLS_WAIT:
            raise RuntimeError("tls_started() without a StartTLS event")
        self._tls_active = True
        self._user = None
        self._sasl.cancel()
        self._in.clear()
        self._lines.reset()
        self._input = _Input.COMMAND
        # The error counter is kept on purpose: STLS must not reset the error budget.

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def timeout(self) -> None:
        """The autologout timer fired. RFC 1939 section 3: close without a response and
        without entering UPDATE, so nothing is deleted."""
        if not self.closed:
            self._close("idle timeout")

    def shutdown(self) -> None:
        """The server is stopping: close like a timeout (POP3 has no unsolicited responses,
        and a session that did not QUIT deletes nothing)."""
        if not self.closed:
            self._close("server shutdown")

    # ----------------------------------------------------------------- machinery

    def _take(self, kind: type[_P]) -> _P | None:
        if self.closed:
            return None
        pending = self._pending
        if not isinstance(pending, kind):
            raise RuntimeError(f"no pending {kind.__name__}: {pending!r}")
        self._pending = None
        return pending

    def _send(self, reply: Pop3Reply) -> None:
        self._out += reply.render()

    def _error(self, reply: Pop3Reply) -> None:
        """Send an error and count it; too many end the session."""
        self._send(reply)
        self._errors += 1
        if self._errors >= self.settings.max_errors and not self.closed:
            self._send(replies.TOO_MANY_ERRORS)
            self._close("too many errors")

    def _close(self, reason: str) -> None:
        self.state = State.CLOSED
        self._pending = None
        self._in.clear()
        self._sasl.cancel()
        self._events.append(ConnectionClosed(reason))

    def _decision(self, event: Credentials | Retrieve | Update) -> None:
        self._pending = event
        self._events.append(event)

    def _step(self) -> bool:
        """Handle one line; False when no complete line is buffered."""
        in_sasl = self._input is _Input.SASL
        line = self._lines.read_line(self._in, MAX_AUTH_LINE)
        if line is None:
            return False
        if isinstance(line, BadLine):
            if in_sasl:
                self._sasl.cancel()
                self._input = _Input.COMMAND
            too_long = line.problem is LineProblem.TOO_LONG
            self._error(replies.LINE_TOO_LONG if too_long else replies.BARE_EOL)
        elif in_sasl:
            self._sasl_outcome(self._sasl.response(line))
        else:
            try:
                self._command_line(line)
            except CommandError as exc:
                self._error(exc.reply)
        return True

    def _command_line(self, raw: bytes) -> None:
        if len(raw) + 2 > MAX_COMMAND_LINE and raw[:5].upper() != b"AUTH ":
            # RFC 2449 section 4: 255 octets with CRLF; only AUTH may be longer (RFC 5034 4).
            raise CommandError(replies.LINE_TOO_LONG)
        command = split_command(decode_line(raw))
        if command is None or command.keyword not in _STATES:
            raise CommandError(replies.UNKNOWN_COMMAND)
        if self.state not in _STATES[command.keyword]:
            raise CommandError(
                replies.NOT_AUTHENTICATED if self.state is _A else replies.ALREADY_AUTHENTICATED
            )
        if command.keyword != "PASS":
            self._user = None  # RFC 1939 section 7: PASS must follow USER directly
        self._handlers[command.keyword](command.arg)

    # ----------------------------------------------------------------- any state

    def _cmd_capa(self, arg: str) -> None:
        arguments(arg, 0, 0, "CAPA")
        # RFC 2449 section 5: the capabilities of the current state.
        caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is _A:
            if self.settings.stls_available and not self._tls_active:
                caps.append("STLS")  # RFC 2595 section 4
            if self.auth_allowed:
                caps.append("USER")  # RFC 2449 section 6.8
                if self._sasl.mechanisms:
                    caps.append("SASL " + " ".join(self._sasl.mechanisms))  # RFC 5034 section 5
        caps.append("IMPLEMENTATION Mailstead")
        content = "".join(f"{c}\r\n" for c in caps).encode()
        self._out += multiline(replies.CAPA.render(), content)

    def _cmd_quit(self, arg: str) -> None:
        arguments(arg, 0, 0, "QUIT")
        if self.state is _T:
            deleted = self._maildrop.deleted()
            if deleted:
                # RFC 1939 section 6: messages marked deleted are removed only now.
                self.state = State.UPDATE
                self._decision(Update(deleted))
                return
            self._send(replies.ok(f"Bye, {len(self._maildrop)} messages left"))
        else:
            self._send(replies.BYE)
        self._close("client quit")

    # ----------------------------------------------------------------- AUTHORIZATION

    def _cmd_stls(self, arg: str) -> None:
        arguments(arg, 0, 0, "STLS")
        if self._tls_active:
            raise CommandError(replies.TLS_ACTIVE)  # RFC 2595 section 4: only once
        if not self.settings.stls_available:
            raise CommandError(replies.TLS_UNAVAILABLE)
        self._send(replies.TLS_READY)
        # RFC 2595 section 4 (and RFC 3207 section 5): input pipelined after STLS is
        # plaintext that could be injected; it is discarded.
        self._in.clear()
        self._lines.reset()
        self._input = _Input.TLS_WAIT
        self._events.append(StartTLS())

    def _cmd_user(self, arg: str) -> None:
        if not self.auth_allowed:
            raise CommandError(replies.PLAINTEXT_REFUSED)
        name = arg.strip(" ")
        if not name:
            raise CommandError(replies.syntax("USER name"))
        # Always +OK: the answer must not tell which accounts exist (RFC 1939 section 13).
        self._user = name
        self._send(replies.USER_OK)

    def _cmd_pass(self, arg: str) -> None:
        if not self.auth_allowed:
            raise CommandError(replies.PLAINTEXT_REFUSED)
        user, self._user = self._user, None
        if user is None:
            raise CommandError(replies.PASS_WITHOUT_USER)
        # RFC 1939 section 7: PASS has one argument, so spaces belong to the password.
        if not arg:
            raise CommandError(replies.syntax("PASS password"))
        self._decision(Credentials("USER", "", user, Secret(arg)))

    def _cmd_auth(self, arg: str) -> None:
        if not arg.strip(" "):
            # The RFC 1734 listing that older clients ask for before choosing.
            mechs = self._sasl.mechanisms if self.auth_allowed else ()
            content = "".join(f"{m}\r\n" for m in mechs).encode()
            self._out += multiline(replies.ok("Supported mechanisms follow").render(), content)
            return
        if not self.auth_allowed:
            raise CommandError(replies.PLAINTEXT_REFUSED)
        self._sasl_outcome(self._sasl.start(arg))

    def _sasl_outcome(self, outcome: bytes | Credentials | Pop3Reply) -> None:
        if isinstance(outcome, bytes):
            self._out += outcome  # a "+ " continuation
            self._input = _Input.SASL
            return
        self._input = _Input.COMMAND
        if isinstance(outcome, Credentials):
            self._decision(outcome)
        else:
            self._error(outcome)

    def _cmd_apop(self, arg: str) -> None:
        raise CommandError(replies.APOP_UNSUPPORTED)

    # ----------------------------------------------------------------- TRANSACTION

    def _cmd_stat(self, arg: str) -> None:
        arguments(arg, 0, 0, "STAT")
        count, size = self._maildrop.stat()
        self._send(replies.ok(f"{count} {size}"))  # RFC 1939 section 5: the drop listing

    def _cmd_list(self, arg: str) -> None:
        self._listing(arg, "LIST [msg]", lambda e: str(e.size))

    def _cmd_uidl(self, arg: str) -> None:
        self._listing(arg, "UIDL [msg]", lambda e: e.unique_id)  # RFC 1939 section 7

    def _listing(self, arg: str, usage: str, value: Callable[[MaildropEntry], str]) -> None:
        args = arguments(arg, 0, 1, usage)
        if args:
            number = message_number(args[0], usage)
            entry = self._maildrop.get(number)
            self._send(replies.ok(f"{number} {value(entry)}"))
            return
        live = self._maildrop.live()
        content = "".join(f"{n} {value(e)}\r\n" for n, e in live).encode()
        count, size = self._maildrop.stat()
        first = replies.ok(f"{count} messages ({size} octets)").render()
        self._out += multiline(first, content)

    def _cmd_retr(self, arg: str) -> None:
        usage = "RETR msg"
        number = message_number(arguments(arg, 1, 1, usage)[0], usage)
        self._decision(Retrieve(number, self._maildrop.get(number), None))

    def _cmd_top(self, arg: str) -> None:
        usage = "TOP msg n"
        args = arguments(arg, 2, 2, usage)
        number = message_number(args[0], usage)
        lines = line_count(args[1], usage)
        self._decision(Retrieve(number, self._maildrop.get(number), lines))

    def _cmd_dele(self, arg: str) -> None:
        usage = "DELE msg"
        number = message_number(arguments(arg, 1, 1, usage)[0], usage)
        self._maildrop.delete(number)
        self._send(replies.ok(f"Message {number} deleted"))

    def _cmd_noop(self, arg: str) -> None:
        arguments(arg, 0, 0, "NOOP")
        self._send(replies.NOOP)

    def _cmd_rset(self, arg: str) -> None:
        arguments(arg, 0, 0, "RSET")
        self._maildrop.reset()
        count, size = self._maildrop.stat()
        self._send(replies.ok(f"Maildrop has {count} messages ({size} octets)"))
