"""Structured logging: one logfmt line per event on standard error.

Values come from the network, so every value is quoted and escaped such that no input can
start a new line (and so forge an entry), and a ``Secret`` is printed as ``***``, never revealed.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import cast

from mailstead.core.secret import Secret

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-]+")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.\-]")
_HANDLER_NAME = "mailstead-stderr"
MAX_VALUE = 2000  # characters of one value kept in a line; the rest is cut
_NO_FILE = "(unknown file)"  # what logging itself records when it cannot find the caller


def escape(text: str) -> str:
    """``text`` with backslash, quote and every non-printable character (CR, LF, U+2028...)
    escaped, so it stays on one line whatever it contains."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text  # the common case, without a per-character loop
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def format_value(value: object) -> str:
    """One logfmt value: bare when it is a simple token, else double-quoted and escaped."""
    kind = type(value)
    if kind is int:
        return str(value)  # digits and "-" only: always bare (bool is another type)
    if kind is str:
        text = cast(str, value)  # the common case first (a subclass takes the str() path)
    elif isinstance(value, Secret):
        return "***"
    elif value is None:
        return '""'
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    else:
        try:
            text = str(value)
        except Exception:  # a hostile or broken __str__ must not break logging
            text = f"<unprintable {type(value).__name__}>"
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + "..."
    if _BARE.fullmatch(text):
        return text
    return f'"{escape(text)}"'


def format_event(event: str, /, **fields: object) -> str:
    """``event key=value ...``: the event name is made a bare token, keys are sanitised."""
    name = _KEY_BAD.sub("_", event) or "event"
    parts = [name]
    for key, value in fields.items():
        # An ASCII identifier (every key in our code) is already clean: no regex for it.
        clean = key if key.isidentifier() and key.isascii() else _KEY_BAD.sub("_", key) or "_"
        parts.append(f"{clean}={format_value(value)}")
    return " ".join(parts)


def log_event(logger: logging.Logger, event: str, /, **fields: object) -> None:
    """Log ``event`` with ``fields`` at INFO as one logfmt line."""
    log_event_at(logger, logging.INFO, event, **fields)


def log_event_at(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    """Like ``log_event`` at another level (``logging.WARNING``...); formats nothing when the
    level is disabled, so debug events cost little."""
    if logger.isEnabledFor(level):
        # The record is made directly: ``Logger.log`` would walk the stack to find the caller
        # (``findCaller``) for a file name and line that our format never shows, and that
        # walk costs more than the rest of an event on the delivery hot path.
        message = format_event(event, **fields)
        logger.handle(logger.makeRecord(logger.name, level, _NO_FILE, 0, message, (), None))


def _one_line(text: str) -> str:
    """Escape only what breaks a line; quoting is left alone (logfmt lines have none to fix)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else escape(ch) for ch in text)


class OneLineFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER message``; messages and tracebacks from any library are escaped too,
    so the one-line-per-event rule holds for records we did not format ourselves.

    The same text as ``Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")``, built
    without the generic machinery: the date part is formatted once per second, since every SMTP
    transaction logs a line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        second = int(record.created)
        if second != self._second:  # a race between threads only formats the same text twice
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        record.asctime = f"{self._stamp},{int(record.msecs):03d}"
        text = f"{record.asctime} {record.levelname} {record.name} {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return _one_line(text)


def setup_logging(level: str) -> None:
    """Send log records at ``level`` and above to stderr, one line each. Calling it again
    replaces our handler instead of adding a second one. Raises ValueError for a bad level."""
    number = LEVELS.get(level.strip().lower())
    if number is None:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(number)
    # Our format shows neither process nor thread; not collecting them makes every record
    # cheaper (os.getpid, the multiprocessing lookup and the thread name on each line).
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logThreads = False
