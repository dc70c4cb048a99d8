"""The sans-I/O SMTP client core: replies in, commands out, one transaction per session.

DESIGN rule 1. The I/O side feeds what the server sent with ``receive_data`` (``b""`` for end
of file), pulls events with ``next_event`` until ``NEED_DATA``, acts on them (``start_tls``,
``auth``, ``send_mail``, ``quit``) and writes ``data_to_send()``. The core owns EHLO (with the
HELO fallback of RFC 5321 section 4.1.4), PIPELINING (RFC 2920), the reply grammar and the
per-recipient bookkeeping. Hostile input never raises: a malformed reply becomes ``Closed``.

Replies may end in a bare LF: like Postfix's client we strip a trailing CR and split on LF,
since the server is not the party that can smuggle anything into our output.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from mailstead.core.reply import Reply
from mailstead.core.secret import Secret

# RFC 5321 section 4.5.3.1.5 allows 512 octets per reply line; real servers exceed it, so
# we allow four times that (Postfix: line_length_limit 2048) before calling the reply broken.
MAX_REPLY_LINE = 2048
# A multi-line reply longer than this is hostile (an EHLO reply is about a dozen lines).
MAX_REPLY_LINES = 200

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)(.*)", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
_EOL = re.compile(rb"\r\n|\r|\n")
_UNSAFE_PATH = re.compile(r"[\x00-\x20\x7f<>]")


class NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server announced in its EHLO reply (RFC 5321 section 4.1.1.1); all empty
    after a HELO fallback."""

    keywords: frozenset[str] = frozenset()  # upper-cased keywords
    size: int | None = None  # RFC 1870: the announced limit, None when absent or 0 (none)
    auth: tuple[str, ...] = ()  # RFC 4954 mechanisms, upper-cased

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @classmethod
    def parse(cls, reply: Reply) -> Extensions:
        keywords: set[str] = set()
        size: int | None = None
        auth: list[str] = []
        for line in reply.text.split("\n")[1:]:  # the first line is the server's name
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            keywords.add(keyword)
            if keyword == "SIZE" and len(words) > 1 and words[1].isdigit():
                size = int(words[1]) or None  # RFC 1870 section 4: 0 means no fixed limit
            elif keyword == "AUTH":
                auth.extend(w.upper() for w in words[1:])
        return cls(frozenset(keywords), size, tuple(auth))


@dataclass(frozen=True, slots=True)
class Ready:
    """EHLO (or the HELO fallback) was accepted: choose STARTTLS, AUTH or a transaction."""

    extensions: Extensions
    reply: Reply
    esmtp: bool


@dataclass(frozen=True, slots=True)
class TlsReady:
    """The server answered 220 to STARTTLS and sent nothing more: wrap the connection in TLS,
    then call ``tls_started`` (which sends EHLO again, RFC 3207 section 4.2)."""


@dataclass(frozen=True, slots=True)
class AuthDone:
    """AUTH succeeded (235, RFC 4954 section 6)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """The server refused the session before any transaction (greeting, EHLO and HELO,
    STARTTLS or AUTH); ``stage`` names the step. Call ``quit`` and try another server."""

    stage: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The outcome of ``send_mail``: the MAIL reply, one reply per recipient in order (the
    MAIL reply again when MAIL failed), and the reply to the end of data (None when no data
    was sent because no recipient was accepted)."""

    mail: Reply
    rcpts: tuple[Reply, ...]
    data: Reply | None

    def final(self, index: int) -> Reply:
        """What recipient ``index`` finally got: its RCPT failure or the data reply."""
        rcpt = self.rcpts[index]
        if not self.mail.is_positive or not rcpt.is_positive or self.data is None:
            return rcpt if self.mail.is_positive else self.mail
        return self.data


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: QUIT was answered, the server sent 421 (RFC 5321 section 3.8) or
    closed the connection, or it broke the protocol. ``reply`` is the server's last word when
    there was one; the connection must be closed."""

    reason: str
    reply: Reply | None = None


ClientEvent = Ready | TlsReady | AuthDone | SessionFailed | TransactionResult | Closed


class _Stage(Enum):
    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    AUTH_USER = "AUTH LOGIN username"
    AUTH_SECOND = "AUTH LOGIN second step"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BODY = "end of data"
    RSET = "RSET"
    QUIT = "QUIT"


def _reply_from_lines(code: int, lines: list[str]) -> Reply:
    """Builds a Reply, taking the RFC 3463 enhanced code off every line that carries it."""
    enhanced: str | None = None
    texts = []
    for line in lines:
        match = _ENHANCED.match(line)
        if match and int(match.group(1)) == code // 100:
            enhanced = enhanced or f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
            line = line[match.end() :]
        texts.append(line)
    return Reply(code, enhanced, "\n".join(texts))


def normalise_body(data: bytes) -> bytes:
    """``data`` with every line ending made CRLF (a bare CR or LF never reaches the wire,
    RFC 5321 section 2.3.8), ending in CRLF, then dot-stuffed (section 4.5.2) and terminated
    with CRLF "." CRLF."""
    if b"\r" in data or b"\n" in data:
        # Fast path: most messages already use CRLF only.
        crlf = data.count(b"\r\n")
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            data = _EOL.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def check_path(address: str) -> str:
    """The ``<...>`` content for ``address``; raises ValueError for text that would break the
    command line (controls, spaces outside quotes, angle brackets: command injection)."""
    local, sep, _domain = address.rpartition("@")
    if address and not sep:
        raise ValueError(f"not an address: {address!r}")
    unquoted = local[1:-1] if local.startswith('"') and local.endswith('"') else None
    outside = address if unquoted is None else address[len(local) :]
    if _UNSAFE_PATH.search(outside) or (
        unquoted is not None and re.search(r"[\x00-\x1f\x7f]", unquoted)
    ):
        raise ValueError(f"unsafe characters in address: {address!r}")
    return address


class SMTPClientCore:
    """One client session's protocol state (see the module docstring for the contract)."""

    def __init__(self, hostname: str) -> None:
        if not hostname or _UNSAFE_PATH.search(hostname):
            raise ValueError(f"bad EHLO name: {hostname!r}")
        self._hostname = hostname
        self._in = bytearray()
        self._out = bytearray()
        self._pending: deque[_Stage] = deque([_Stage.GREETING])
        self._events: deque[ClientEvent] = deque()
        self._lines: list[str] = []  # the lines of a multi-line reply read so far
        self._code: int | None = None
        self._closed = False
        self._extensions = Extensions()
        self._tls = False
        # The running transaction.
        self._pipelined = False
        self._rcpts: list[str] = []
        self._rcpt_params: list[tuple[str, ...]] = []
        self._body = b""
        self._mail: Reply | None = None
        self._rcpt_replies: list[Reply] = []
        self._data_sent = False
        self._login: tuple[str, Secret] | None = None

    # -- the I/O side ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def extensions(self) -> Extensions:
        return self._extensions

    @property
    def idle(self) -> bool:
        """True when no reply is awaited (a new command may be issued)."""
        return not self._pending and not self._closed

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` means the server closed the connection."""
        if self._closed:
            return
        if not data:
            self._close("the server closed the connection"
                        + (f" while waiting for the {self._pending[0].value} reply"
                           if self._pending else ""))
            return
        self._in += data
        self._parse()

    def next_event(self) -> ClientEvent | NeedData:
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    # -- decisions ---------------------------------------------------------------------------

    def start_tls(self) -> None:
        """Send STARTTLS (RFC 3207); answered by ``TlsReady`` or ``SessionFailed``."""
        self._require_idle()
        self._command(_Stage.STARTTLS, b"STARTTLS")

    def tls_started(self) -> None:
        """The TLS handshake is done: forget what EHLO said and say EHLO again (RFC 3207
        section 4.2)."""
        self._tls = True
        self._extensions = Extensions()
        self._command(_Stage.EHLO, b"EHLO " + self._hostname.encode("ascii"))

    def auth(self, mechanism: str, username: str, password: Secret) -> None:
        """AUTH PLAIN with an initial response (RFC 4616, RFC 4954 section 4) or AUTH LOGIN;
        answered by ``AuthDone`` or ``SessionFailed``."""
        self._require_idle()
        if mechanism == "PLAIN":
            token = f"\0{username}\0{password.reveal()}".encode()
            self._command(_Stage.AUTH, b"AUTH PLAIN " + base64.b64encode(token))
        elif mechanism == "LOGIN":
            self._login = (username, password)
            self._command(_Stage.AUTH_USER, b"AUTH LOGIN")
        else:
            raise ValueError(f"unsupported mechanism {mechanism}")

    def send_mail(
        self,
        mail_from: str,
        rcpts: list[str],
        data: bytes,
        *,
        mail_params: tuple[str, ...] = (),
        rcpt_params: Sequence[tuple[str, ...]] = (),
    ) -> None:
        """Start one transaction. ``mail_params`` are ESMTP parameters for MAIL (e.g. SIZE=,
        BODY=8BITMIME, SMTPUTF8), checked by the caller against ``extensions``;
        ``rcpt_params[i]`` those of the i-th RCPT (NOTIFY=, ORCPT=), none when short. With
        PIPELINING, MAIL, every RCPT and DATA go out in one batch (RFC 2920 section 3.1);
        without it, one command at a time. Answered by one ``TransactionResult``."""
        self._require_idle()
        if not rcpts:
            raise ValueError("a transaction needs at least one recipient")
        check_path(mail_from)
        for rcpt in rcpts:
            if not rcpt:
                raise ValueError("empty recipient")
            check_path(rcpt)
        for param in (*mail_params, *(p for ps in rcpt_params for p in ps)):
            if _UNSAFE_PATH.search(param):
                raise ValueError(f"bad MAIL/RCPT parameter {param!r}")
        self._rcpt_params = [tuple(p) for p in rcpt_params]
        self._pipelined = "PIPELINING" in self._extensions
        self._rcpts = list(rcpts)
        self._body = normalise_body(data)
        self._mail = None
        self._rcpt_replies = []
        self._data_sent = False
        mail = f"MAIL FROM:<{mail_from}>" + "".join(" " + p for p in mail_params)
        self._command(_Stage.MAIL, mail.encode("utf-8"))
        if self._pipelined:
            for i in range(len(rcpts)):
                self._command(_Stage.RCPT, self._rcpt_line(i))
            self._command(_Stage.DATA, b"DATA")

    def _rcpt_line(self, i: int) -> bytes:
        params = self._rcpt_params[i] if i < len(self._rcpt_params) else ()
        return (f"RCPT TO:<{self._rcpts[i]}>" + "".join(" " + p for p in params)).encode()

    def reset(self) -> None:
        """RSET (RFC 5321 section 4.1.1.5), before another transaction on this session."""
        self._require_idle()
        self._command(_Stage.RSET, b"RSET")

    def quit(self) -> None:
        """QUIT (RFC 5321 section 4.1.1.10); ends with ``Closed``. Harmless when closed."""
        if self._closed or _Stage.QUIT in self._pending:
            return
        self._command(_Stage.QUIT, b"QUIT")

    # -- internals ---------------------------------------------------------------------------

    def _require_idle(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")
        if self._pending:
            raise RuntimeError(f"still waiting for the {self._pending[0].value} reply")

    def _command(self, stage: _Stage, line: bytes) -> None:
        self._out += line + b"\r\n"
        self._pending.append(stage)

    def _close(self, reason: str, reply: Reply | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._in.clear()
            self._events.append(Closed(reason, reply))

    def _parse(self) -> None:
        while not self._closed:
            end = self._in.find(b"\n")
            if end < 0:
                if len(self._in) > MAX_REPLY_LINE:
                    self._close("reply line too long")
                return
            raw = bytes(self._in[:end])
            del self._in[: end + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_REPLY_LINE:
                self._close("reply line too long")
                return
            match = _REPLY_LINE.fullmatch(raw)
            if match is None or b"\r" in raw:
                self._close(f"malformed reply line {raw[:80]!r}")
                return
            code = int(match.group(1))
            if self._code is not None and code != self._code:
                # RFC 5321 section 4.2.1: every line of a multi-line reply has the same code.
                self._close("inconsistent codes in a multi-line reply")
                return
            self._code = code
            self._lines.append(match.group(3).decode("utf-8", "replace"))
            if len(self._lines) > MAX_REPLY_LINES:
                self._close("reply has too many lines")
                return
            if match.group(2) == b"-":
                continue
            reply = _reply_from_lines(code, self._lines)
            self._lines = []
            self._code = None
            self._on_reply(reply)

    def _on_reply(self, reply: Reply) -> None:
        if not self._pending:
            if reply.code == 421:
                self._close("the server is closing the connection", reply)
            else:
                self._close("unexpected reply with no command outstanding", reply)
            return
        stage = self._pending.popleft()
        if reply.code == 421 and stage is not _Stage.QUIT:
            # RFC 5321 section 3.8: 421 may answer any command; the server then closes.
            if stage in (_Stage.MAIL, _Stage.RCPT, _Stage.DATA, _Stage.BODY):
                self._finish_transaction_with(reply)
            self._close("the server is closing the connection", reply)
            return
        handler = getattr(self, "_on_" + stage.name.lower())
        handler(reply)

    def _on_greeting(self, reply: Reply) -> None:
        if reply.code != 220:
            # RFC 5321 section 3.1: 554 (or anything but 220) means "no service here".
            self._events.append(SessionFailed("greeting", reply))
            return
        self._command(_Stage.EHLO, b"EHLO " + self._hostname.encode("ascii"))

    def _on_ehlo(self, reply: Reply) -> None:
        if reply.code == 250:
            self._extensions = Extensions.parse(reply)
            self._events.append(Ready(self._extensions, reply, esmtp=True))
        elif reply.code in (500, 502) and not self._tls:
            # RFC 5321 section 4.1.4: fall back to HELO when EHLO is not recognised.
            self._command(_Stage.HELO, b"HELO " + self._hostname.encode("ascii"))
        else:
            self._events.append(SessionFailed("EHLO", reply))

    def _on_helo(self, reply: Reply) -> None:
        if reply.code == 250:
            self._extensions = Extensions()
            self._events.append(Ready(self._extensions, reply, esmtp=False))
        else:
            self._events.append(SessionFailed("HELO", reply))

    def _on_starttls(self, reply: Reply) -> None:
        if reply.code != 220:
            self._events.append(SessionFailed("STARTTLS", reply))
        elif self._in:
            # RFC 3207 section 5 / CVE-2011-0411: bytes after the 220 were sent in the clear
            # and would be read as if they came over TLS. Refuse the session.
            self._close("the server sent data after its STARTTLS reply", reply)
        else:
            self._events.append(TlsReady())

    def _on_auth(self, reply: Reply) -> None:
        if reply.code == 235:
            self._events.append(AuthDone(reply))
        else:
            self._login = None
            if reply.code == 334:
                self._out += b"*\r\n"  # RFC 4954 section 4: cancel an unexpected challenge
                self._pending.append(_Stage.AUTH)
                return
            self._events.append(SessionFailed("AUTH", reply))

    def _on_auth_user(self, reply: Reply) -> None:
        if reply.code != 334 or self._login is None:
            self._login = None
            self._events.append(SessionFailed("AUTH", reply))
            return
        self._out += base64.b64encode(self._login[0].encode()) + b"\r\n"
        self._pending.append(_Stage.AUTH_SECOND)

    def _on_auth_second(self, reply: Reply) -> None:
        if reply.code != 334 or self._login is None:
            self._login = None
            self._events.append(SessionFailed("AUTH", reply))
            return
        self._out += base64.b64encode(self._login[1].reveal().encode()) + b"\r\n"
        self._login = None
        self._pending.append(_Stage.AUTH)

    def _on_mail(self, reply: Reply) -> None:
        self._mail = reply
        if self._pipelined:
            return  # the RCPT and DATA replies follow
        if not reply.is_positive:
            self._finish(None)
        else:
            self._command(_Stage.RCPT, self._rcpt_line(0))

    def _on_rcpt(self, reply: Reply) -> None:
        self._rcpt_replies.append(reply)
        if self._pipelined:
            return
        done = len(self._rcpt_replies)
        if done < len(self._rcpts):
            self._command(_Stage.RCPT, self._rcpt_line(done))
        elif any(r.is_positive for r in self._rcpt_replies):
            self._command(_Stage.DATA, b"DATA")
        else:
            self._finish(None)

    def _on_data(self, reply: Reply) -> None:
        mail_ok = self._mail is not None and self._mail.is_positive
        accepted = mail_ok and any(r.is_positive for r in self._rcpt_replies)
        if reply.code == 354:
            if accepted:
                self._out += self._body
                self._data_sent = True
            else:
                # RFC 2920 section 3.1: DATA accepted although every RCPT failed; end the
                # empty data at once, and report no delivery.
                self._out += b".\r\n"
            self._pending.append(_Stage.BODY)
            return
        self._finish(reply if accepted else None)

    def _on_body(self, reply: Reply) -> None:
        self._finish(reply if self._data_sent else None)

    def _on_rset(self, reply: Reply) -> None:
        if not reply.is_positive:
            self._close("RSET refused", reply)

    def _on_quit(self, reply: Reply) -> None:
        self._close("QUIT answered", reply)

    def _finish_transaction_with(self, reply: Reply) -> None:
        """A 421 in the middle of a transaction: everything unanswered gets that reply."""
        if self._mail is None:
            self._mail = reply
        while len(self._rcpt_replies) < len(self._rcpts):
            self._rcpt_replies.append(reply)
        accepted = self._mail.is_positive and any(r.is_positive for r in self._rcpt_replies)
        self._finish(reply if accepted else None)

    def _finish(self, data: Reply | None) -> None:
        mail = self._mail or Reply(451, "4.3.0", "no reply to MAIL")
        rcpts = list(self._rcpt_replies)
        if not mail.is_positive:
            rcpts = [mail] * len(self._rcpts)
        while len(rcpts) < len(self._rcpts):
            rcpts.append(mail if not mail.is_positive else Reply(451, "4.3.0", "not attempted"))
        self._events.append(TransactionResult(mail, tuple(rcpts), data))
        self._body = b""
