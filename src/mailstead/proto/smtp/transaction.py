"""The mail transaction (RFC 5321 section 3.3): the envelope the server accepted, and the
reading of its content with DATA (RFC 5321 section 4.1.1.4) or BDAT chunks (RFC 3030).

``Transaction`` holds no I/O and sends nothing: the core feeds it the input buffer while in
the DATA or BDAT phase and turns each ``ContentOutcome`` into a reply or a decision event. The
content goes to the session's ``ContentSink`` as it arrives, never into one buffer here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstead.core.address import Address
from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import MailFrom, MessageData, SessionSettings
from mailstead.proto.smtp.framing import BdatReader, DataProblem, DataReader, LineEndCheck
from mailstead.proto.smtp.sink import BufferSink, ContentSink

_DATA_PROBLEM_REPLY = {
    DataProblem.BARE_EOL: replies.BARE_EOL_DATA,
    DataProblem.TOO_BIG: replies.TOO_BIG,
    DataProblem.LINE_TOO_LONG: replies.DATA_LINE_TOO_LONG,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """The content was read to its end and is refused with ``reply`` (counted as an error).
    ``reset``: the transaction was abandoned too, which the core reports as TransactionReset."""

    reply: Reply
    reset: bool


# What the end of a DATA body or of a BDAT chunk leads to: the whole message (a decision for
# the server), a refusal, or the reply to an intermediate BDAT chunk.
ContentOutcome = MessageData | Refusal | Reply


class Transaction:
    """One session's transaction state; ``reset`` starts over (RSET, EHLO, end of message)."""

    __slots__ = (
        "_bdat_abort",
        "_bdat_eol",
        "_bdat_last",
        "_bdat_refusal",
        "_bdat_size",
        "_bdat_total",
        "_open",
        "_settings",
        "_sink",
        "bdat",
        "bdat_used",
        "data",
        "mail",
        "rcpt_attempts",
        "rcpts",
    )

    def __init__(self, settings: SessionSettings, sink: ContentSink | None = None) -> None:
        self._settings = settings
        self._sink: ContentSink = sink if sink is not None else BufferSink()
        self._open = False  # the sink holds (part of) this transaction's content
        self.mail: MailFrom | None = None
        self.rcpts: list[Address] = []
        self.rcpt_attempts = 0
        self.bdat_used = False
        self.data: DataReader | None = None  # set while reading DATA content
        self.bdat: BdatReader | None = None  # set while reading one BDAT chunk
        self._bdat_total = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        self._bdat_abort = False  # the refusal ends the transaction (the sink refused)
        self._bdat_size = 0
        # The line-end judge of the BDAT message, across its chunks (None before the first).
        self._bdat_eol: LineEndCheck | None = None

    def reset(self) -> bool:
        """Forget the transaction; True when one was in progress."""
        active = self.mail is not None
        self.mail = None
        self.rcpts = []
        self.rcpt_attempts = 0
        self.bdat_used = False
        self._bdat_total = 0
        self._bdat_eol = None
        self._release()
        return active

    def drop_readers(self) -> None:
        """The session is over: release whatever content was buffered."""
        self.data = None
        self.bdat = None
        self._release()

    def _release(self) -> None:
        if self._open:
            self._open = False
            self._sink.close()

    def _start_content(self) -> Reply | None:
        """Open the sink for a new message; its refusal when it has no room."""
        self._release()
        refused = self._sink.open()
        if refused is None:
            self._open = True
        else:
            self._sink.close()
        return refused

    def _content(self, via_bdat: bool) -> MessageData:
        mail = self.mail
        assert mail is not None
        sink = self._sink
        data = sink.getvalue() if isinstance(sink, BufferSink) else b""
        return MessageData(data, mail.sender, tuple(self.rcpts), via_bdat)

    # ----------------------------------------------------------------- DATA

    def start_data(self) -> Reply | None:
        """DATA passed the sequence checks: read the content that follows, or return the
        sink's refusal (then no 354 is sent and the transaction stays as it was)."""
        refused = self._start_content()
        if refused is not None:
            return refused
        self.data = DataReader(self._settings.max_message_size, self._settings.max_data_line,
                               self._sink.write)
        return None

    def feed_data(self, inbuf: bytearray) -> ContentOutcome | None:
        """Consume DATA content from ``inbuf``; None until CRLF "." CRLF is seen, after which
        ``inbuf`` holds what the client pipelined behind it."""
        reader = self.data
        assert reader is not None
        if not inbuf:
            return None
        done = reader.feed(inbuf)
        if done is None:
            return None
        self.data = None
        failed = self._sink.failure()
        if done.problem is not None or failed is not None:
            # The data was read to its end, so no byte of it is taken as a command.
            self.reset()
            if done.problem is not None:
                return Refusal(_DATA_PROBLEM_REPLY[done.problem], reset=True)
            assert failed is not None
            return Refusal(failed, reset=True)
        return self._content(via_bdat=False)

    # ----------------------------------------------------------------- BDAT

    def start_bdat(self, size: int, last: bool, refusal: Reply | None) -> None:
        """``BDAT size [LAST]`` was parsed: read the chunk, keeping it only when it can be
        used. A chunk that is refused (``refusal``) or that would make the message too big is
        still read to its end and discarded (RFC 3030 section 2)."""
        over = self._bdat_total + size > self._settings.max_message_size
        self._bdat_abort = False
        if refusal is None and not self._open:
            # The first chunk of a message: the sink must have room for it. RFC 3030
            # section 2: after a refused chunk the client sends no more, so the
            # transaction is abandoned rather than left to go on without this chunk.
            refusal = self._start_content()
            self._bdat_abort = refusal is not None
        self._bdat_refusal = refusal
        self._bdat_last = last
        self._bdat_size = size
        keep = refusal is None and not over
        if keep and self._bdat_eol is None:
            mail = self.mail
            assert mail is not None
            self._bdat_eol = LineEndCheck(header_only=mail.body == "BINARYMIME")
        self.bdat = BdatReader(size, keep=keep, out=self._sink.write,
                               check=self._bdat_eol if keep else None)

    def feed_bdat(self, inbuf: bytearray) -> ContentOutcome | None:
        """Consume the chunk's octets from ``inbuf``; None until the chunk is complete."""
        reader = self.bdat
        assert reader is not None
        chunk = reader.feed(inbuf)
        if chunk is None:
            return None
        self.bdat = None
        if self._bdat_refusal is not None:
            refusal, self._bdat_refusal = self._bdat_refusal, None
            if self._bdat_abort:
                self.reset()
            return Refusal(refusal, reset=self._bdat_abort)
        self.bdat_used = True
        self._bdat_total += self._bdat_size
        if self._bdat_total > self._settings.max_message_size:
            # RFC 1870 section 6.3 / RFC 3030 section 2: refused once the chunk is consumed.
            self.reset()
            return Refusal(replies.TOO_BIG, reset=True)
        failed = self._sink.failure()
        if failed is not None:
            self.reset()
            return Refusal(failed, reset=True)
        eol = self._bdat_eol
        assert eol is not None
        if self._bdat_last:
            eol.finish()
        if eol.fault:
            # RFC 5321 section 2.3.8: BDAT content gets DATA's bare CR/LF rule, so that the
            # header our checks read is the header every later reader sees.
            self.reset()
            return Refusal(replies.BARE_EOL_DATA, reset=True)
        if not self._bdat_last:
            return replies.octets_received(self._bdat_size)
        return self._content(via_bdat=True)
