"""Parsing POP3 command lines into a keyword and arguments (RFC 1939 section 3, RFC 2449).

Pure functions on already framed lines; errors are ``CommandError`` carrying the -ERR line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.replies import Pop3Reply

# RFC 2449 section 4: a command line is at most 255 octets including CRLF.
MAX_COMMAND_LINE = 255
# RFC 5034 section 4: SASL responses are not bound by the command limit; a PLAIN response of
# three 255-octet fields (RFC 4616 section 2) is 1024 octets of base64, so this leaves room.
MAX_AUTH_LINE = 2048
# RFC 1939 section 3: keywords are three or four characters; RFC 2449 allows up to four.
_KEYWORD = re.compile(r"[A-Za-z]{3,4}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A message number is a decimal; ten digits are more than any maildrop holds, and bounding
# the length keeps int() cheap whatever the client sends.
_NUMBER = re.compile(r"[0-9]{1,10}")
_LINES = re.compile(r"[0-9]{1,20}")


class CommandError(Exception):
    """The command is refused with ``reply``; it counts as a client error."""

    def __init__(self, reply: Pop3Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Command:
    keyword: str  # upper case
    arg: str  # everything after the first space, verbatim ("" when none)


def decode_line(raw: bytes) -> str:
    """The line as text; raises CommandError for invalid UTF-8 or control characters."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(replies.BAD_UTF8) from None
    if _CONTROL.search(line):
        raise CommandError(replies.BAD_CHARACTER)
    return line


def split_command(line: str) -> Command | None:
    """``KEYWORD[ SP args]``; None when the keyword is not one at all."""
    keyword, _, arg = line.partition(" ")
    if _KEYWORD.fullmatch(keyword) is None:
        return None
    return Command(keyword.upper(), arg)


def arguments(arg: str, least: int, most: int, usage: str) -> list[str]:
    """Split space-separated arguments (RFC 1939 section 3: one SP between them); trailing
    spaces are tolerated, empty arguments are not."""
    text = arg.rstrip(" ")
    parts = text.split(" ") if text else []
    if not least <= len(parts) <= most or "" in parts:
        raise CommandError(replies.syntax(usage))
    return parts


def message_number(text: str, usage: str) -> int:
    """A ``msg`` argument: a decimal message number (RFC 1939 section 5)."""
    if _NUMBER.fullmatch(text) is None:
        raise CommandError(replies.syntax(usage))
    return int(text)


def line_count(text: str, usage: str) -> int:
    """The ``n`` of TOP: a non-negative decimal (RFC 1939 section 7)."""
    if _LINES.fullmatch(text) is None:
        raise CommandError(replies.syntax(usage))
    return int(text)
