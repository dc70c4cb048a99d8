"""The sans-I/O ManageSieve server core (RFC 5804): bytes in, events out, decisions in,
bytes out (DESIGN rule 1).

Commands are handled one at a time: while a decision event waits for its answer no further
command is read, so pipelined commands get their responses in order. The state table
``_STATES`` says where each command is valid. Client bytes never raise out of the core and
its buffers are bounded by the settings.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum

from mailstead.proto.managesieve.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    Event,
    ManageSieveSettings,
    ScriptRequest,
    Sentinel,
    StartTLS,
)
from mailstead.proto.managesieve.framing import (
    Atom,
    FrameError,
    Str,
    Word,
    parse_command,
    quote,
    valid_script_name,
)
from mailstead.proto.sasl import exchange as sasl
from mailstead.sieve.compile import compile_script
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.parser import SieveError


class State(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


_N, _A = State.NOT_AUTHENTICATED, State.AUTHENTICATED
# RFC 5804 section 2: which commands each state accepts.
_STATES: dict[str, frozenset[State]] = {
    "CAPABILITY": frozenset({_N, _A}),
    "LOGOUT": frozenset({_N, _A}),
    "NOOP": frozenset({_N, _A}),
    "STARTTLS": frozenset({_N}),
    "AUTHENTICATE": frozenset({_N}),
    "UNAUTHENTICATE": frozenset({_A}),
    "PUTSCRIPT": frozenset({_A}),
    "CHECKSCRIPT": frozenset({_A}),
    "LISTSCRIPTS": frozenset({_A}),
    "SETACTIVE": frozenset({_A}),
    "GETSCRIPT": frozenset({_A}),
    "DELETESCRIPT": frozenset({_A}),
    "RENAMESCRIPT": frozenset({_A}),
    "HAVESPACE": frozenset({_A}),
}
# Arguments each command takes (minimum, maximum).
_ARITY: dict[str, tuple[int, int]] = {
    "CAPABILITY": (0, 0), "LOGOUT": (0, 0), "NOOP": (0, 1), "STARTTLS": (0, 0),
    "AUTHENTICATE": (1, 2), "UNAUTHENTICATE": (0, 0), "PUTSCRIPT": (2, 2),
    "CHECKSCRIPT": (1, 1), "LISTSCRIPTS": (0, 0), "SETACTIVE": (1, 1), "GETSCRIPT": (1, 1),
    "DELETESCRIPT": (1, 1), "RENAMESCRIPT": (2, 2), "HAVESPACE": (2, 2),
}


def response(kind: str, text: str = "", code: str | None = None) -> bytes:
    """``OK``/``NO``/``BYE`` [SP "(" code ")"] [SP string] CRLF (RFC 5804 section 4)."""
    out = kind.encode()
    if code:
        out += b" (" + code.encode("ascii", "replace") + b")"
    if text:
        out += b" " + quote(text)
    return out + b"\r\n"


class ManageSieveCore:
    """One ManageSieve session; see ``events.py`` for the calling contract."""

    def __init__(self, settings: ManageSieveSettings, limits: SieveLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or SieveLimits(max_script_size=settings.max_script_size)
        self.state = State.NOT_AUTHENTICATED
        self.authenticated_as: str | None = None
        self._tls = settings.tls_active
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: Credentials | ScriptRequest | None = None
        self._tls_wait = False
        self._sasl_active = False
        self._errors = 0
        self._exchange = sasl.SaslExchange(settings.sasl_mechanisms)
        self._handlers: dict[str, Callable[[list[bytes]], None]] = {
            "CAPABILITY": self._cmd_capability,
            "LOGOUT": self._cmd_logout,
            "NOOP": self._cmd_noop,
            "STARTTLS": self._cmd_starttls,
            "AUTHENTICATE": self._cmd_authenticate,
            "UNAUTHENTICATE": self._cmd_unauthenticate,
            "PUTSCRIPT": self._cmd_putscript,
            "CHECKSCRIPT": self._cmd_checkscript,
            "HAVESPACE": self._cmd_havespace,
            "RENAMESCRIPT": self._cmd_names,
            "SETACTIVE": self._cmd_names,
            "GETSCRIPT": self._cmd_names,
            "DELETESCRIPT": self._cmd_names,
            "LISTSCRIPTS": self._cmd_listscripts,
        }
        self._command = ""
        self._out += self._capabilities() + response("OK", "Mailstead ManageSieve ready")

    # The server side of the contract -------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed."""
        if self.state is State.CLOSED:
            return
        if not data:
            self._close("peer closed the connection")
            return
        if self._tls_wait:
            return  # RFC 5804 section 2.2: nothing the client sent before TLS is kept
        self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | Sentinel:
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None or self._tls_wait:
                return PAUSED if self._pending is not None else NEED_DATA
            if self.state is State.CLOSED:
                return NEED_DATA
            if not self._step():
                return self._events.popleft() if self._events else NEED_DATA

    def tls_started(self) -> None:
        """TLS is up: the session starts over and the capabilities go out again (RFC 5804
        section 2.2)."""
        self._tls_wait = False
        self._tls = True
        self._in.clear()
        self._out += self._capabilities() + response("OK", "TLS negotiation successful")

    def login_ok(self, user: str) -> None:
        assert isinstance(self._pending, Credentials)
        self._pending = None
        self.state = State.AUTHENTICATED
        self.authenticated_as = user
        self._out += response("OK", "Logged in")

    def login_failed(self, text: str = "Authentication failed", code: str | None = None) -> None:
        assert isinstance(self._pending, Credentials)
        self._pending = None
        self._out += response("NO", text, code)
        self._error()

    def ok(self, text: str = "Done", code: str | None = None) -> None:
        """The pending script command succeeded."""
        assert isinstance(self._pending, ScriptRequest)
        self._pending = None
        self._out += response("OK", text, code)

    def no(self, text: str, code: str | None = None) -> None:
        """The pending script command failed (e.g. code NONEXISTENT, ACTIVE, ALREADYEXISTS,
        QUOTA/MAXSCRIPTS, TRYLATER: RFC 5804 section 1.3)."""
        assert isinstance(self._pending, ScriptRequest)
        self._pending = None
        self._out += response("NO", text, code)

    def script_list(self, scripts: list[tuple[str, bool]]) -> None:
        """The answer to LISTSCRIPTS: (name, active) pairs (RFC 5804 section 2.7)."""
        assert isinstance(self._pending, ScriptRequest)
        self._pending = None
        for name, active in scripts:
            self._out += quote(name) + (b" ACTIVE" if active else b"") + b"\r\n"
        self._out += response("OK", "Listscripts completed")

    def script(self, content: str) -> None:
        """The answer to GETSCRIPT (RFC 5804 section 2.9): the script as a literal."""
        assert isinstance(self._pending, ScriptRequest)
        self._pending = None
        raw = content.encode("utf-8")
        self._out += b"{%d}\r\n" % len(raw) + raw + b"\r\n" + response("OK", "Getscript completed")

    def shutdown(self) -> None:
        self._out += response("BYE", "Server shutting down", "TRYLATER")
        self._close("shutdown")

    def timeout(self) -> None:
        self._out += response("BYE", "Idle timeout")
        self._close("idle timeout")

    # Internals -----------------------------------------------------------------------

    def _close(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._events.append(ConnectionClosed(reason))

    def _error(self) -> None:
        self._errors += 1
        if self._errors >= self.settings.max_errors:
            self._out += response("BYE", "Too many errors")
            self._close("too many errors")

    def _capabilities(self) -> bytes:
        # RFC 5804 section 1.7: the capability response.
        mechs = ""
        if self._tls or not self.settings.auth_requires_tls:
            mechs = " ".join(self.settings.sasl_mechanisms)
        caps: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", "Mailstead"),
            ("SASL", mechs),
            ("SIEVE", " ".join(self.settings.extensions)),
            ("MAXREDIRECTS", str(self.settings.max_redirects)),
            ("VERSION", "1.0"),
        ]
        if self.settings.starttls_available and not self._tls:
            caps.append(("STARTTLS", None))
        out = b""
        for name, value in caps:
            out += quote(name) + (b" " + quote(value) if value is not None else b"") + b"\r\n"
        return out

    def _step(self) -> bool:
        """Handle one complete command from the buffer; False when more input is needed."""
        max_literal = self.settings.max_script_size + 1024
        try:
            parsed = parse_command(self._in, max_literal)
        except FrameError as exc:
            del self._in[: exc.skip]
            if exc.fatal:
                self._out += response("BYE", exc.message)
                self._close(exc.message)
                return False
            self._out += response("NO", f"Syntax error: {exc.message}")
            self._error()
            return True
        if parsed is None:
            return False
        words, used = parsed
        del self._in[:used]
        if self._sasl_active:
            self._sasl_line(words)
            return True
        self._dispatch(words)
        return True

    def _dispatch(self, words: list[Word]) -> None:
        if not words or not isinstance(words[0], Atom):
            self._syntax("expected a command name")
            return
        name = words[0].value.upper()
        handler = self._handlers.get(name)
        if handler is None:
            self._syntax("unknown command")
            return
        if self.state not in _STATES[name]:
            text = ("Authenticate first" if self.state is State.NOT_AUTHENTICATED
                    else "Not allowed now")
            self._out += response("NO", text)
            self._error()
            return
        args: list[bytes] = []
        for w in words[1:]:
            if isinstance(w, Str):
                args.append(w.value)
            elif name in ("HAVESPACE", "NOOP") and w.value.isdigit():
                args.append(w.value.encode())
            else:
                self._syntax(f"{name}: arguments must be strings")
                return
        low, high = _ARITY[name]
        if not low <= len(args) <= high:
            self._syntax(f"{name} takes {low}" + (f" to {high}" if high != low else "")
                         + " argument(s)")
            return
        self._command = name
        handler(args)

    def _syntax(self, text: str) -> None:
        self._out += response("NO", f"Syntax error: {text}")
        self._error()

    def _cmd_capability(self, _args: list[bytes]) -> None:
        self._out += self._capabilities() + response("OK", "Capability completed")

    def _cmd_logout(self, _args: list[bytes]) -> None:
        self._out += response("OK", "Logout completed")
        self._close("logout")

    def _cmd_noop(self, args: list[bytes]) -> None:
        # RFC 5804 section 2.13: a tag argument is echoed in a TAG response code.
        if args:
            tag = args[0].decode("utf-8", "replace")
            self._out += b"OK (TAG " + quote(tag) + b') "Done"\r\n'
        else:
            self._out += response("OK", "Done")

    def _cmd_starttls(self, _args: list[bytes]) -> None:
        if self._tls or not self.settings.starttls_available:
            self._out += response("NO", "TLS is not available here")
            return
        self._out += response("OK", "Begin TLS negotiation")
        self._in.clear()  # RFC 5804 section 2.2: discard pipelined input (injection defence)
        self._tls_wait = True
        self._events.append(StartTLS())

    def _cmd_authenticate(self, args: list[bytes]) -> None:
        if self.settings.auth_requires_tls and not self._tls:
            self._out += response("NO", "Use STARTTLS first", "ENCRYPT-NEEDED")
            self._error()
            return
        mech = args[0].decode("ascii", "replace")
        initial = args[1] if len(args) > 1 else None
        self._sasl_outcome(self._exchange.start(mech, initial if initial is None else
                                                (initial or b"=")))

    def _sasl_line(self, words: list[Word]) -> None:
        # RFC 5804 section 2.1: the client answers with a string; "*" cancels.
        if len(words) != 1 or not isinstance(words[0], Str):
            self._exchange.cancel()
            self._sasl_active = False
            self._syntax("expected a base64 string")
            return
        value = words[0].value
        self._sasl_outcome(self._exchange.respond(value if value else b""))

    def _sasl_outcome(self, outcome: sasl.Outcome) -> None:
        self._sasl_active = False
        match outcome:
            case sasl.Continue(challenge):
                self._sasl_active = True
                self._out += quote(challenge) + b"\r\n"
            case sasl.Authenticated(mechanism, authzid, username, password):
                self._pending = Credentials(mechanism, authzid, username, password)
                self._events.append(self._pending)
            case sasl.Cancelled():
                self._out += response("NO", "Authentication cancelled")
            case sasl.Malformed():
                self._out += response("NO", "Invalid base64 in the SASL data")
                self._error()
            case sasl.Unsupported():
                self._out += response("NO", "Unsupported SASL mechanism")
                self._error()
            case sasl.Rejected(reason):
                self._out += response("NO", f"Malformed authentication data: {reason}")
                self._error()

    def _cmd_unauthenticate(self, _args: list[bytes]) -> None:
        # RFC 5804 section 2.14: back to the non-authenticated state.
        self.state = State.NOT_AUTHENTICATED
        self.authenticated_as = None
        self._out += response("OK", "Unauthenticate completed")

    def _name(self, raw: bytes) -> str | None:
        name = valid_script_name(raw)
        if name is None:
            self._out += response("NO", "Invalid script name (RFC 5804 section 1.6)")
        return name

    def _request(self, *args: str) -> None:
        self._pending = ScriptRequest(self._command, args)
        self._events.append(self._pending)

    def _check(self, raw: bytes) -> str | None:
        """The script as text when it compiles; else the NO response is queued."""
        if len(raw) > self.settings.max_script_size:
            self._out += response("NO", "Script is too large", "QUOTA/MAXSIZE")
            return None
        try:
            compile_script(raw, self.limits)
        except SieveError as exc:
            self._out += response("NO", str(exc))
            return None
        return raw.decode("utf-8")

    def _cmd_putscript(self, args: list[bytes]) -> None:
        name = self._name(args[0])
        if name is None:
            return
        content = self._check(args[1])
        if content is not None:
            self._request(name, content)

    def _cmd_checkscript(self, args: list[bytes]) -> None:
        # A script that compiles still goes to the server, which checks what needs the
        # store (vacation :from must be the account's own address, RFC 5230 section 4.2).
        content = self._check(args[0])
        if content is not None:
            self._request(content)

    def _cmd_havespace(self, args: list[bytes]) -> None:
        name = self._name(args[0])
        if name is None:
            return
        size = args[1]
        if not size.isdigit() or len(size) > 12:
            self._syntax("HAVESPACE name size")
            return
        if int(size) > self.settings.max_script_size:
            self._out += response("NO", "Script is too large", "QUOTA/MAXSIZE")
            return
        self._request(name, size.decode())

    def _cmd_names(self, args: list[bytes]) -> None:
        if self._command == "SETACTIVE" and args[0] == b"":
            self._request("")  # RFC 5804 section 2.8: "" deactivates every script
            return
        names: list[str] = []
        for raw in args:
            name = self._name(raw)
            if name is None:
                return
            names.append(name)
        self._request(*names)

    def _cmd_listscripts(self, _args: list[bytes]) -> None:
        self._request()
