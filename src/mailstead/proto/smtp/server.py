"""The sans-I/O SMTP server core: bytes in, events out, decisions in, bytes out (DESIGN rule 1).

``SMTPServerCore`` owns the session's state transitions (RFC 5321 section 4.1.4 sequencing,
RFC 3207 STARTTLS, RFC 4954 AUTH, RFC 3030 CHUNKING, RFC 2920 PIPELINING) through the tables
of ``state.py``; MAIL/RCPT parsing lives in ``envelope.py``, DATA/BDAT reading in
``transaction.py`` and the SASL exchange in ``auth.py``. It answers alone whatever needs no
policy and stops at each decision event (MailFrom, RcptTo, MessageData, AuthCredentials) until
the server answers it, so pipelined commands are handled strictly in order and the replies
come out in order. Client bytes never raise out of it.

Memory is bounded as long as the server feeds bytes only after ``next_event`` returned
NEED_DATA (the contract): then the input buffer never holds more than one command line plus
one read, DATA and BDAT content is consumed as it arrives and handed to the server's
``ContentSink`` (see ``sink.py``), and at most one reply per command line read is queued.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.auth import AuthOutcome, SmtpAuth
from mailstead.proto.smtp.commands import (
    CommandError,
    has_control_characters,
    parse_bdat,
    parse_helo,
    split_command,
)
from mailstead.proto.smtp.envelope import parse_mail, parse_rcpt
from mailstead.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    ConnectionClosed,
    Event,
    Helo,
    MailFrom,
    MessageData,
    RcptTo,
    Sentinel,
    SessionSettings,
    StartTLS,
    TransactionReset,
)
from mailstead.proto.smtp.framing import BadLine, BdatReader, DataReader, LineProblem, LineReader
from mailstead.proto.smtp.sink import ContentSink
from mailstead.proto.smtp.state import (
    COMMANDS,
    TRANSACTION_READY,
    TRANSITIONS,
    Phase,
    refusal,
)
from mailstead.proto.smtp.transaction import ContentOutcome, Refusal, Transaction

# RFC 4954 section 4: a client may send AUTH lines (initial response included) up to 12288
# octets, more than the ordinary command line limit.
AUTH_LINE_LIMIT = 12288

_Decision = MailFrom | RcptTo | MessageData | AuthCredentials


class SMTPServerCore:
    """One SMTP session; see ``mailstead.proto.smtp.events`` for the calling contract."""

    def __init__(self, settings: SessionSettings, sink: ContentSink | None = None) -> None:
        """``sink`` receives message content as it arrives (default: kept in memory and
        handed out as ``MessageData.data``)."""
        self.settings = settings
        self.helo_name: str | None = None
        self.authenticated_as: str | None = None
        self.closed = False
        self._tls_active = settings.tls_active
        self._esmtp = False
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._phase = Phase.COMMAND
        self._lines = LineReader()
        self._events: deque[Event] = deque()
        self._pending: _Decision | None = None
        self._errors = 0
        self._junk = 0
        self._auth = SmtpAuth(settings.auth_mechanisms)
        self._txn = Transaction(settings, sink)
        # One handler per row of the state table: _cmd_ehlo for "EHLO", and so on.
        self._handlers: dict[str, Callable[[str], None]] = {
            verb: getattr(self, f"_cmd_{verb.lower()}") for verb in COMMANDS
        }
        self._send(replies.greeting(settings.hostname))

    # ----------------------------------------------------------------- session state

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def auth_offered(self) -> bool:
        """RFC 4954 section 4 / RFC 3207 section 6: AUTH only where it can be accepted."""
        return (
            self.settings.submission
            and bool(self._auth.mechanisms)
            and (self._tls_active or not self.settings.auth_requires_tls)
        )

    @property
    def mail(self) -> MailFrom | None:
        """The accepted MAIL of the open transaction, or None."""
        return self._txn.mail

    @property
    def recipient_count(self) -> int:
        return len(self._txn.rcpts)

    @property
    def rcpt_attempts(self) -> int:
        return self._txn.rcpt_attempts

    @property
    def bdat_used(self) -> bool:
        return self._txn.bdat_used

    @property
    def in_content(self) -> bool:
        """True while message content (DATA or BDAT) is being read, not a command line."""
        return self._txn.data is not None or self._txn.bdat is not None

    # Earlier names of transaction internals, kept for white-box tests.
    @property
    def _mail(self) -> MailFrom | None:
        return self._txn.mail

    @_mail.setter
    def _mail(self, value: MailFrom | None) -> None:
        self._txn.mail = value

    @property
    def _data(self) -> DataReader | None:
        return self._txn.data

    @property
    def _bdat(self) -> BdatReader | None:
        return self._txn.bdat

    # ----------------------------------------------------------------- public API

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self.closed:
            return
        if not data:
            self._eof = True
        elif self._phase is not Phase.TLS_WAIT:
            # After STARTTLS every plaintext byte is discarded (RFC 3207 section 5).
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
            if self._phase is not Phase.TLS_WAIT and self._step():
                continue
            if not self._eof:
                return NEED_DATA
            self._close("peer closed connection")

    def respond(self, reply: Reply) -> None:
        """Answer the pending MailFrom, RcptTo or MessageData event."""
        if self.closed:
            return
        pending = self._pending
        if not isinstance(pending, MailFrom | RcptTo | MessageData):
            raise RuntimeError(f"respond() without a pending MAIL/RCPT/message: {pending!r}")
        if reply.code // 100 not in (2, 4, 5):
            raise ValueError(f"not a final reply: {reply}")
        self._pending = None
        txn = self._txn
        if not isinstance(pending, MessageData) and not reply.is_positive:
            # A refused sender or recipient delivers nothing: it is junk, which bounds
            # directory harvesting on one connection without making policy refusals errors.
            self._junk += 1
        elif isinstance(pending, MailFrom):
            txn.mail = pending
        elif isinstance(pending, RcptTo):
            txn.rcpts.append(pending.recipient)
        else:
            # RFC 5321 section 4.1.1.4: the transaction ends with the reply, whatever it is.
            txn.reset()
            if reply.is_positive:
                self._junk = 0  # the client is doing real work
        # Policy refusals are not protocol errors and are not counted; a policy that wants
        # the client gone answers 421 (RFC 5321 section 3.8).
        self._send(reply)
        if reply.code == 421:
            self._close("server answered 421")
        elif self._junk > self.settings.max_junk_commands:
            self._count_error()

    def auth_result(self, ok: bool, reply: Reply | None = None) -> None:
        """Answer the pending AuthCredentials: 235 2.7.0, or ``reply`` / 535 5.7.8."""
        if self.closed:
            return
        pending = self._pending
        if not isinstance(pending, AuthCredentials):
            raise RuntimeError(f"auth_result() without pending credentials: {pending!r}")
        if reply is not None and (reply.code // 100 == 2) != ok:
            # RFC 4954 section 6: success is 235 and failure 4xx/5xx; a mismatch would tell
            # the client one thing and leave the session in the other state.
            raise ValueError(f"auth_result({ok}) with reply {reply}")
        self._pending = None
        if ok:
            self.authenticated_as = pending.username
            self._send(reply or replies.AUTH_OK)
            return
        final = reply or replies.AUTH_FAILED
        if final.code == 421:
            self._send(final)
            self._close("server answered 421")
        else:
            self._error(final)  # counted: bounds password guessing on one connection

    def tls_started(self) -> None:
        """TLS is up: forget everything learnt in plaintext (RFC 3207 section 4.2)."""
        if self.closed:
            return
        if self._phase is not Phase.TLS_WAIT:
            raise RuntimeError("tls_started() without a StartTLS event")
        self._tls_active = True
        self.helo_name = None
        self._esmtp = False
        self.authenticated_as = None
        self._auth.cancel()
        self._txn.reset()
        self._in.clear()
        self._lines.reset()
        self._enter(Phase.COMMAND)
        # The error counter is kept on purpose: STARTTLS must not reset the error budget.

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def timeout(self) -> None:
        """The idle timer fired (RFC 5321 section 4.5.3.2)."""
        if not self.closed:
            self._send(replies.closing(self.settings.hostname, "4.4.2", "Idle timeout"))
            self._close("idle timeout")

    def shutdown(self) -> None:
        """The server is stopping."""
        if not self.closed:
            self._send(replies.closing(self.settings.hostname, "4.3.2", "Server shutting down"))
            self._close("server shutdown")

    # ----------------------------------------------------------------- machinery

    def _enter(self, phase: Phase) -> None:
        """Change phase, along the TRANSITIONS table only."""
        if phase not in TRANSITIONS[self._phase]:
            raise RuntimeError(f"SMTP core bug: {self._phase.value} -> {phase.value}")
        self._phase = phase

    def _send(self, reply: Reply) -> None:
        self._out += reply.render()

    def _error(self, reply: Reply) -> None:
        """Send an error reply and count it; too many errors end the session."""
        self._send(reply)
        self._count_error()

    def _count_error(self) -> None:
        self._errors += 1
        if self._errors >= self.settings.max_errors and not self.closed:
            self._send(replies.closing(self.settings.hostname, "4.7.0", "Too many errors"))
            self._close("too many errors")

    def _count_junk(self) -> None:
        """A command that delivers nothing was answered; past the limit it is an error."""
        self._junk += 1
        if self._junk > self.settings.max_junk_commands:
            self._count_error()

    def _close(self, reason: str) -> None:
        self.closed = True
        self._enter(Phase.CLOSED)
        self._pending = None
        self._in.clear()
        self._txn.drop_readers()
        self._events.append(ConnectionClosed(reason))

    def _decision(self, event: _Decision) -> None:
        self._pending = event
        self._events.append(event)

    def _reset_transaction(self) -> None:
        """RSET or EHLO/HELO (RFC 5321 section 4.1.4): abandon the transaction, and say so."""
        if self._txn.reset():
            self._events.append(TransactionReset(None))

    def _step(self) -> bool:
        """Make progress on the input; False when nothing more can be done without bytes."""
        phase = self._phase
        if phase is Phase.DATA:
            return self._content(self._txn.feed_data(self._in))
        if phase is Phase.BDAT:
            return self._content(self._txn.feed_bdat(self._in))
        in_auth = phase is Phase.AUTH
        limit = self.settings.max_command_line
        if in_auth or self.auth_offered:
            limit = max(limit, AUTH_LINE_LIMIT)
        line = self._lines.read_line(self._in, limit)
        if line is None:
            return False
        if isinstance(line, BadLine):
            if in_auth:
                self._auth.cancel()
                self._enter(Phase.COMMAND)
            too_long = line.problem is LineProblem.TOO_LONG
            self._error(replies.LINE_TOO_LONG if too_long else replies.BARE_EOL_COMMAND)
        elif in_auth:
            self._auth_outcome(self._auth.line(line))
        else:
            self._command_line(line)
        return True

    def _content(self, outcome: ContentOutcome | None) -> bool:
        """Act on the end of DATA content or of a BDAT chunk."""
        if outcome is None:
            return False
        self._enter(Phase.COMMAND)
        if isinstance(outcome, MessageData):
            self._decision(outcome)
        elif isinstance(outcome, Refusal):
            if outcome.reset:
                self._events.append(TransactionReset(outcome.reply))
            self._error(outcome.reply)
        else:
            self._send(outcome)  # 250 for a BDAT chunk that is not the last
        return True

    def _command_line(self, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(replies.BAD_UTF8)
            return
        if has_control_characters(line):
            self._error(replies.BAD_CHARACTER)
            return
        command = split_command(line)
        rule = COMMANDS.get(command.verb) if command is not None else None
        if command is None or rule is None:
            self._error(replies.UNKNOWN_COMMAND)
            return
        if command.verb != "AUTH" and len(raw) + 2 > self.settings.max_command_line:
            # Only AUTH may use the longer RFC 4954 line (RFC 5321 section 4.5.3.1.4).
            self._error(replies.LINE_TOO_LONG)
            return
        if rule.no_argument is not None and command.arg:
            self._error(rule.no_argument)
            return
        refused = refusal(rule.guards, self)
        if refused is not None:
            self._error(refused)
            return
        try:
            self._handlers[command.verb](command.arg)
        except CommandError as exc:
            self._error(exc.reply)
            return
        if rule.junk and not self.closed:
            self._count_junk()

    # ----------------------------------------------------------------- session commands

    def _cmd_ehlo(self, arg: str) -> None:
        self._greet(arg, esmtp=True)

    def _cmd_helo(self, arg: str) -> None:
        self._greet(arg, esmtp=False)

    def _greet(self, arg: str, *, esmtp: bool) -> None:
        name = parse_helo(arg)
        if name is None:
            # RFC 5321 section 4.1.1.1: EHLO/HELO take the client's domain or address literal.
            raise CommandError(replies.syntax(f"{'EHLO' if esmtp else 'HELO'} hostname"))
        # RFC 5321 section 4.1.4: EHLO/HELO in a session resets the transaction, like RSET.
        self._reset_transaction()
        self.helo_name = name
        self._esmtp = esmtp
        if not esmtp:
            self._send(replies.helo(self.settings.hostname))
        else:
            mechanisms = self._auth.mechanisms if self.auth_offered else ()
            self._send(replies.ehlo(self.settings.hostname, replies.ehlo_keywords(
                self.settings, tls_active=self._tls_active, auth_mechanisms=mechanisms)))
        self._events.append(Helo(name, esmtp))

    def _cmd_rset(self, arg: str) -> None:
        self._reset_transaction()
        self._send(replies.OK)

    def _cmd_noop(self, arg: str) -> None:
        # RFC 5321 section 4.1.1.9: NOOP may carry a string, which is ignored.
        self._send(replies.OK)

    def _cmd_quit(self, arg: str) -> None:
        self._send(replies.bye(self.settings.hostname))
        self._close("client quit")

    def _cmd_vrfy(self, arg: str) -> None:
        if not arg.strip(" "):
            raise CommandError(replies.syntax("VRFY <address>"))
        self._send(replies.VRFY)

    def _cmd_expn(self, arg: str) -> None:
        # RFC 5321 section 3.5.2: EXPN may be disabled; it only helps address harvesting.
        raise CommandError(replies.NOT_IMPLEMENTED)

    def _cmd_help(self, arg: str) -> None:
        self._send(replies.HELP)

    def _cmd_starttls(self, arg: str) -> None:
        self._send(replies.TLS_READY)
        # RFC 3207 section 5: anything pipelined after STARTTLS is plaintext injection.
        self._in.clear()
        self._lines.reset()
        self._enter(Phase.TLS_WAIT)
        self._events.append(StartTLS())

    # ----------------------------------------------------------------- transaction commands

    def _cmd_mail(self, arg: str) -> None:
        self._decision(parse_mail(arg, self.settings, tls_active=self._tls_active))

    def _cmd_rcpt(self, arg: str) -> None:
        txn = self._txn
        assert txn.mail is not None  # the state table checked it
        txn.rcpt_attempts += 1
        event = parse_rcpt(arg, txn.mail, self.settings)
        if len(txn.rcpts) >= self.settings.max_recipients:
            # RFC 5321 section 4.5.3.1.10: not an error, the client retries the rest later;
            # but a client that never stops trying is sending junk.
            self._send(replies.TOO_MANY_RECIPIENTS)
            self._count_junk()
            return
        self._decision(event)

    def _cmd_data(self, arg: str) -> None:
        refused = self._txn.start_data()
        if refused is not None:
            # No room for the content (452 4.3.1): the transaction stays, the client may
            # retry; a client that keeps trying is sending junk.
            self._send(refused)
            self._count_junk()
            return
        self._send(replies.START_DATA)
        self._enter(Phase.DATA)

    def _cmd_bdat(self, arg: str) -> None:
        parsed = parse_bdat(arg)
        if parsed is None:
            # The chunk's length is unknown, so its octets cannot be told apart from
            # commands: answering and reading on would be a command injection. Close.
            self._error(replies.BDAT_SYNTAX)
            if not self.closed:
                self._send(replies.closing(self.settings.hostname, "4.7.0",
                                           "Cannot find the end of a malformed BDAT chunk"))
                self._close("malformed BDAT")
            return
        size, last = parsed
        self._txn.start_bdat(size, last, refusal(TRANSACTION_READY, self))
        self._enter(Phase.BDAT)

    # ----------------------------------------------------------------- AUTH

    def _cmd_auth(self, arg: str) -> None:
        self._auth_outcome(self._auth.start(arg))

    def _auth_outcome(self, outcome: AuthOutcome) -> None:
        if isinstance(outcome, bytes):
            self._out += outcome
            self._enter(Phase.AUTH)
            return
        self._enter(Phase.COMMAND)
        if isinstance(outcome, AuthCredentials):
            self._decision(outcome)
        else:
            self._error(outcome)

