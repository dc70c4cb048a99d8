"""The sans-I/O SMTP server core: bytes in, events out, decisions in, bytes out (DESIGN rule 1).

``SMTPServerCore`` owns the session's state transitions (RFC 5321 section 4.1.4 sequencing,
RFC 3207 STARTTLS, RFC 4954 AUTH, RFC 3030 CHUNKING, RFC 2920 PIPELINING). It answers alone
whatever needs no policy and stops at each decision event (MailFrom, RcptTo, MessageData,
AuthCredentials) until the server answers it, so pipelined commands are handled strictly in
order and the replies come out in order. Client bytes never raise out of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum

from mailstead.core.address import Address, AddressError, parse_path
from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.auth import AuthOutcome, SmtpAuth
from mailstead.proto.smtp.commands import (
    CommandError,
    check_mail_parameters,
    check_rcpt_parameters,
    has_control_characters,
    parse_bdat,
    parse_helo,
    parse_parameters,
    split_command,
    split_path_argument,
)
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
from mailstead.proto.smtp.framing import (
    BadLine,
    BdatReader,
    DataProblem,
    DataReader,
    LineProblem,
    LineReader,
)

# RFC 4954 section 4: a client may send AUTH lines (initial response included) up to 12288
# octets, more than the ordinary command line limit.
AUTH_LINE_LIMIT = 12288

_DATA_PROBLEM_REPLY = {
    DataProblem.BARE_EOL: replies.BARE_EOL_DATA,
    DataProblem.TOO_BIG: replies.TOO_BIG,
    DataProblem.LINE_TOO_LONG: replies.DATA_LINE_TOO_LONG,
}


class _Phase(Enum):
    COMMAND = "command"  # reading command lines
    AUTH = "auth"  # reading SASL responses after a 334 challenge
    DATA = "data"  # reading DATA content
    BDAT = "bdat"  # reading a BDAT chunk
    TLS_WAIT = "tls wait"  # StartTLS emitted; every byte is dropped until tls_started()
    CLOSED = "closed"


class SMTPServerCore:
    """One SMTP session; see ``mailstead.proto.smtp.events`` for the calling contract."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.helo_name: str | None = None
        self.authenticated_as: str | None = None
        self.closed = False
        self._tls_active = settings.tls_active
        self._esmtp = False
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._phase = _Phase.COMMAND
        self._lines = LineReader()
        self._events: deque[Event] = deque()
        self._pending: MailFrom | RcptTo | MessageData | AuthCredentials | None = None
        self._errors = 0
        self._auth = SmtpAuth(settings.auth_mechanisms)
        self._data: DataReader | None = None
        self._bdat: BdatReader | None = None
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        self._bdat_size_claimed = 0
        # The transaction (RFC 5321 section 3.3).
        self._mail: MailFrom | None = None
        self._rcpts: list[Address] = []
        self._rcpt_attempts = 0
        self._bdat_chunks: list[bytes] = []
        self._bdat_total = 0
        self._bdat_used = False
        self._commands: dict[str, Callable[[str], None]] = {
            "EHLO": self._cmd_ehlo,
            "HELO": self._cmd_helo,
            "MAIL": self._cmd_mail,
            "RCPT": self._cmd_rcpt,
            "DATA": self._cmd_data,
            "BDAT": self._cmd_bdat,
            "RSET": self._cmd_rset,
            "NOOP": self._cmd_noop,
            "QUIT": self._cmd_quit,
            "VRFY": self._cmd_vrfy,
            "EXPN": self._cmd_expn,
            "HELP": self._cmd_help,
            "STARTTLS": self._cmd_starttls,
            "AUTH": self._cmd_auth,
        }
        self._send(replies.greeting(settings.hostname))

    # ----------------------------------------------------------------- public API

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

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self.closed:
            return
        if not data:
            self._eof = True
        elif self._phase is not _Phase.TLS_WAIT:
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
            if self._phase is not _Phase.TLS_WAIT and self._step():
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
        if isinstance(pending, MailFrom):
            if reply.is_positive:
                self._mail = pending
        elif isinstance(pending, RcptTo):
            if reply.is_positive:
                self._rcpts.append(pending.recipient)
        else:
            # RFC 5321 section 4.1.1.4: the transaction ends with the reply, whatever it is.
            self._reset_transaction()
        # Policy refusals are not protocol errors and are not counted; a policy that wants
        # the client gone answers 421 (RFC 5321 section 3.8).
        self._send(reply)
        if reply.code == 421:
            self._close("server answered 421")

    def auth_result(self, ok: bool, reply: Reply | None = None) -> None:
        """Answer the pending AuthCredentials: 235 2.7.0, or ``reply`` / 535 5.7.8."""
        if self.closed:
            return
        pending = self._pending
        if not isinstance(pending, AuthCredentials):
            raise RuntimeError(f"auth_result() without pending credentials: {pending!r}")
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
        if self._phase is not _Phase.TLS_WAIT:
            raise RuntimeError("tls_started() without a StartTLS event")
        self._tls_active = True
        self.helo_name = None
        self._esmtp = False
        self.authenticated_as = None
        self._auth.cancel()
        self._reset_transaction()
        self._in.clear()
        self._lines.reset()
        self._phase = _Phase.COMMAND
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

    def _send(self, reply: Reply) -> None:
        self._out += reply.render()

    def _error(self, reply: Reply) -> None:
        """Send an error reply and count it; too many errors end the session."""
        self._send(reply)
        self._errors += 1
        if self._errors >= self.settings.max_errors and not self.closed:
            self._send(replies.closing(self.settings.hostname, "4.7.0", "Too many errors"))
            self._close("too many errors")

    def _close(self, reason: str) -> None:
        self.closed = True
        self._phase = _Phase.CLOSED
        self._pending = None
        self._in.clear()
        self._data = None
        self._bdat = None
        self._bdat_chunks.clear()
        self._events.append(ConnectionClosed(reason))

    def _decision(self, event: MailFrom | RcptTo | MessageData | AuthCredentials) -> None:
        self._pending = event
        self._events.append(event)

    def _reset_transaction(self) -> bool:
        """Forget the transaction; True when one was in progress."""
        active = self._mail is not None
        self._mail = None
        self._rcpts = []
        self._rcpt_attempts = 0
        self._bdat_chunks = []
        self._bdat_total = 0
        self._bdat_used = False
        return active

    def _step(self) -> bool:
        """Make progress on the input; False when nothing more can be done without bytes."""
        if self._phase is _Phase.DATA:
            return self._step_data()
        if self._phase is _Phase.BDAT:
            return self._step_bdat()
        in_auth = self._phase is _Phase.AUTH
        limit = self.settings.max_command_line
        if in_auth or self.auth_offered:
            limit = max(limit, AUTH_LINE_LIMIT)
        line = self._lines.read_line(self._in, limit)
        if line is None:
            return False
        if isinstance(line, BadLine):
            if in_auth:
                self._auth.cancel()
                self._phase = _Phase.COMMAND
            too_long = line.problem is LineProblem.TOO_LONG
            self._error(replies.LINE_TOO_LONG if too_long else replies.BARE_EOL_COMMAND)
        elif in_auth:
            self._auth_line(line)
        else:
            self._command_line(line)
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
        handler = self._commands.get(command.verb) if command is not None else None
        if command is None or handler is None:
            self._error(replies.UNKNOWN_COMMAND)
            return
        if command.verb != "AUTH" and len(raw) + 2 > self.settings.max_command_line:
            # Only AUTH may use the longer RFC 4954 line (RFC 5321 section 4.5.3.1.4).
            self._error(replies.LINE_TOO_LONG)
            return
        try:
            handler(command.arg)
        except CommandError as exc:
            self._error(exc.reply)

    # ----------------------------------------------------------------- DATA / BDAT

    def _step_data(self) -> bool:
        assert self._data is not None
        if not self._in:
            return False
        done = self._data.feed(self._in)
        if done is None:
            return False
        self._data = None
        self._phase = _Phase.COMMAND
        if done.problem is not None:
            reply = _DATA_PROBLEM_REPLY[done.problem]
            self._reset_transaction()
            self._events.append(TransactionReset(reply))
            self._error(reply)
            return True
        assert self._mail is not None
        self._decision(MessageData(done.content, self._mail.sender, tuple(self._rcpts), False))
        return True

    def _step_bdat(self) -> bool:
        assert self._bdat is not None
        chunk = self._bdat.feed(self._in)
        if chunk is None:
            return False
        self._bdat = None
        self._phase = _Phase.COMMAND
        if self._bdat_refusal is not None:
            # RFC 3030 section 2: the chunk is read and discarded, then refused.
            refusal, self._bdat_refusal = self._bdat_refusal, None
            self._error(refusal)
            return True
        assert self._mail is not None
        self._bdat_used = True
        self._bdat_total += self._bdat_size_claimed
        if self._bdat_total > self.settings.max_message_size:
            # RFC 1870 section 6.3 / RFC 3030 section 2: refused after the chunk is consumed.
            self._reset_transaction()
            self._events.append(TransactionReset(replies.TOO_BIG))
            self._error(replies.TOO_BIG)
            return True
        self._bdat_chunks.append(chunk)
        if not self._bdat_last:
            self._send(replies.octets_received(self._bdat_size_claimed))
            return True
        data = b"".join(self._bdat_chunks)
        self._bdat_chunks = []
        self._decision(MessageData(data, self._mail.sender, tuple(self._rcpts), True))
        return True

    # ----------------------------------------------------------------- commands

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
        if self._reset_transaction():
            self._events.append(TransactionReset(None))
        self.helo_name = name
        self._esmtp = esmtp
        hostname = self.settings.hostname
        if not esmtp:
            self._send(replies.helo(hostname))
        else:
            keywords = [
                "PIPELINING",  # RFC 2920
                f"SIZE {self.settings.max_message_size}",  # RFC 1870
                "8BITMIME",  # RFC 6152
                "SMTPUTF8",  # RFC 6531
                "ENHANCEDSTATUSCODES",  # RFC 2034
                "CHUNKING",  # RFC 3030
            ]
            if self.settings.starttls_available and not self._tls_active:
                keywords.append("STARTTLS")  # RFC 3207 section 4.2: never once TLS is up
            if self.auth_offered:
                keywords.append("AUTH " + " ".join(self._auth.mechanisms))  # RFC 4954 section 3
            self._send(replies.ehlo(hostname, keywords))
        self._events.append(Helo(name, esmtp))

    def _cmd_mail(self, arg: str) -> None:
        usage = "MAIL FROM:<address> [parameters]"
        if self.helo_name is None:
            raise CommandError(replies.NEED_HELO)
        if self.settings.submission and self.authenticated_as is None:
            raise CommandError(replies.AUTH_REQUIRED)  # RFC 4954 section 6
        if self._mail is not None:
            raise CommandError(replies.NESTED_MAIL)
        path, param_text = split_path_argument(arg, "FROM:", usage)
        params = parse_parameters(param_text)
        checked = check_mail_parameters(params)
        if checked.size is not None and checked.size > self.settings.max_message_size:
            raise CommandError(replies.TOO_BIG)  # RFC 1870 section 6.2
        try:
            sender = parse_path(path, null_allowed=True, smtputf8=checked.smtputf8)
        except AddressError as exc:
            reply = exc.reply
            if reply.enhanced == "5.1.3":
                # RFC 3463: 5.1.7 is the sender's counterpart of 5.1.3.
                reply = Reply(reply.code, "5.1.7", reply.text)
            raise CommandError(reply) from None
        self._decision(MailFrom(sender, params, checked.size, checked.body, checked.smtputf8))

    def _cmd_rcpt(self, arg: str) -> None:
        if self._mail is None:
            raise CommandError(replies.NEED_MAIL)
        self._rcpt_attempts += 1
        path, param_text = split_path_argument(arg, "TO:", "RCPT TO:<address> [parameters]")
        check_rcpt_parameters(parse_parameters(param_text))
        if path.lower() == "<postmaster>":
            # RFC 5321 section 4.1.1.3: "<Postmaster>" without a domain is this server's.
            recipient: Address | None = Address(path[1:-1], self.settings.hostname.lower())
        else:
            try:
                recipient = parse_path(path, null_allowed=False, smtputf8=self._mail.smtputf8)
            except AddressError as exc:
                raise CommandError(exc.reply) from None
        assert recipient is not None
        if len(self._rcpts) >= self.settings.max_recipients:
            # RFC 5321 section 4.5.3.1.10: not an error, the client retries the rest later.
            self._send(replies.TOO_MANY_RECIPIENTS)
            return
        self._decision(RcptTo(recipient, {}))

    def _cmd_data(self, arg: str) -> None:
        if arg:
            raise CommandError(replies.syntax("DATA (no parameters allowed)"))
        self._check_transaction_ready()
        assert self._mail is not None
        if self._bdat_used:
            raise CommandError(replies.DATA_AFTER_BDAT)
        if self._mail.body == "BINARYMIME":
            raise CommandError(replies.BINARYMIME_NEEDS_BDAT)
        self._send(replies.START_DATA)
        self._data = DataReader(self.settings.max_message_size, self.settings.max_data_line)
        self._phase = _Phase.DATA

    def _check_transaction_ready(self) -> None:
        if self._mail is None:
            raise CommandError(replies.NEED_MAIL)
        if not self._rcpts:
            # RFC 2920 section 3.1: 554 when every (pipelined) RCPT was refused.
            raise CommandError(
                replies.NO_VALID_RECIPIENTS if self._rcpt_attempts else replies.NEED_RCPT
            )

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
        refusal: Reply | None = None
        try:
            self._check_transaction_ready()
        except CommandError as exc:
            refusal = exc.reply
        over = self._bdat_total + size > self.settings.max_message_size
        self._bdat_refusal = refusal
        self._bdat_last = last
        self._bdat_size_claimed = size
        self._bdat = BdatReader(size, keep=refusal is None and not over)
        self._phase = _Phase.BDAT

    def _cmd_rset(self, arg: str) -> None:
        if arg:
            raise CommandError(replies.syntax("RSET (no parameters allowed)"))
        if self._reset_transaction():
            self._events.append(TransactionReset(None))
        self._send(replies.OK)

    def _cmd_noop(self, arg: str) -> None:
        # RFC 5321 section 4.1.1.9: NOOP may carry a string, which is ignored.
        self._send(replies.OK)

    def _cmd_quit(self, arg: str) -> None:
        if arg:
            raise CommandError(replies.syntax("QUIT (no parameters allowed)"))
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
        if arg:
            raise CommandError(replies.STARTTLS_SYNTAX)  # RFC 3207 section 4
        if self._tls_active:
            # RFC 3207 section 4.2: no second negotiation; a sequence error (RFC 5321 4.2.4).
            raise CommandError(replies.TLS_ALREADY_ACTIVE)
        if not self.settings.starttls_available:
            raise CommandError(replies.TLS_UNAVAILABLE)
        self._send(replies.TLS_READY)
        # RFC 3207 section 5: anything pipelined after STARTTLS is plaintext injection.
        self._in.clear()
        self._lines.reset()
        self._phase = _Phase.TLS_WAIT
        self._events.append(StartTLS())

    # ----------------------------------------------------------------- AUTH

    def _cmd_auth(self, arg: str) -> None:
        if not self.settings.submission or not self._auth.mechanisms:
            # RFC 5321 section 4.2.4: 502, the command is recognised but not offered here.
            raise CommandError(replies.AUTH_UNAVAILABLE)
        if self.helo_name is None:
            raise CommandError(replies.NEED_HELO)
        if self.authenticated_as is not None:
            raise CommandError(replies.ALREADY_AUTHENTICATED)  # RFC 4954 section 4
        if self._mail is not None:
            raise CommandError(replies.AUTH_IN_TRANSACTION)  # RFC 4954 section 4
        if not self._tls_active and self.settings.auth_requires_tls:
            raise CommandError(replies.ENCRYPTION_REQUIRED)  # RFC 4954 section 6
        self._auth_outcome(self._auth.start(arg))

    def _auth_line(self, line: bytes) -> None:
        self._auth_outcome(self._auth.line(line))

    def _auth_outcome(self, outcome: AuthOutcome) -> None:
        if isinstance(outcome, bytes):
            self._out += outcome
            self._phase = _Phase.AUTH
            return
        self._phase = _Phase.COMMAND
        if isinstance(outcome, AuthCredentials):
            self._decision(outcome)
        else:
            self._error(outcome)
