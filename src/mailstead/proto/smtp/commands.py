"""Parsing of SMTP command lines (RFC 5321 section 4.1): verb, MAIL/RCPT arguments and ESMTP
parameters, BDAT and EHLO arguments. Pure functions raising ``CommandError`` with the reply."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstead.core.dsn import (
    DsnParameterError,
    MessageDsn,
    RecipientDsn,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
)
from mailstead.core.errors import ProtocolReplyError
from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies


class CommandError(ProtocolReplyError):
    """The command cannot be accepted; ``reply`` says why."""


@dataclass(frozen=True, slots=True)
class Command:
    verb: str  # upper case
    arg: str  # everything after the first space, unchanged ("" when none)


# RFC 5321 section 4.1.1: a verb is letters; a few digits are tolerated for extensions.
_VERB = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}")
# RFC 5321 section 4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# RFC 5321 section 4.1.2: esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 section 3.3 adds
# UTF8-non-ascii.
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\ud7ff\ue000-\U0010ffff]+")
# RFC 3461 section 4: xtext = *( xchar / hexchar ), hexchar = "+" 2(HEX uppercase).
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")
# RFC 1870 section 3: size-value = 1*20DIGIT.
_SIZE = re.compile(r"[0-9]{1,20}")
# RFC 3030 section 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ], chunk-size = 1*DIGIT.
# Eighteen digits is more than any size we accept and keeps the integer small.
_BDAT = re.compile(r"([0-9]{1,18})(?: ([Ll][Aa][Ss][Tt]))?")
# EHLO/HELO argument: RFC 5321 section 4.1.1.1 Domain or address-literal, A-labels only
# (RFC 6531 section 3.7.1). Checked loosely: one token of visible ASCII, at most 255 octets.
_HELO = re.compile(r"[\x21-\x7e]{1,255}")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

BODY_TYPES = ("7BIT", "8BITMIME", "BINARYMIME")


def echo(text: str, limit: int = 40) -> str:
    """Client text made safe to quote in a reply: RFC 5321 section 4.2 reply text is printable
    ASCII, so anything else is escaped, and it is cut short."""
    return text[:limit].encode("ascii", "backslashreplace").decode("ascii")


def has_control_characters(line: str) -> bool:
    """True when the line holds C0 controls or DEL, which no SMTP command may contain."""
    return _CONTROL.search(line) is not None


def split_command(line: str) -> Command | None:
    """Split ``VERB[ SP arg]``; None when the verb is not a verb at all."""
    verb, _, arg = line.partition(" ")
    if _VERB.fullmatch(verb) is None:
        return None
    return Command(verb.upper(), arg)


def split_path_argument(arg: str, prefix: str, usage: str) -> tuple[str, str]:
    """Split ``FROM:<path> params`` into the path (with brackets) and the parameter text.

    Spaces after the colon are tolerated (common, harmless); the brackets are not optional.
    """
    if arg[: len(prefix)].upper() != prefix:
        raise CommandError(replies.syntax(usage))
    rest = arg[len(prefix) :].lstrip(" ")
    if not rest.startswith("<"):
        raise CommandError(replies.syntax(usage))
    in_quotes = False
    i = 1
    n = len(rest)
    while i < n:
        ch = rest[i]
        if in_quotes and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == ">" and not in_quotes:
            path, params = rest[: i + 1], rest[i + 1 :]
            if params and not params.startswith(" "):
                raise CommandError(replies.syntax(usage))
            return path, params.strip(" ")
        i += 1
    raise CommandError(replies.syntax(usage))


def parse_parameters(text: str) -> dict[str, str | None]:
    """Parse ``KEY[=VALUE] ...`` (RFC 5321 section 4.1.2 Mail-parameters); keys upper-cased."""
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if _KEYWORD.fullmatch(key) is None or (eq and _VALUE.fullmatch(value) is None):
            raise CommandError(Reply(501, "5.5.4", f"Invalid parameter syntax: {echo(item)}"))
        ukey = key.upper()
        if ukey in params:
            raise CommandError(Reply(501, "5.5.4", f"Duplicate parameter: {ukey}"))
        params[ukey] = value if eq else None
    return params


@dataclass(frozen=True, slots=True)
class MailParameters:
    size: int | None
    body: str | None
    smtputf8: bool
    auth: str | None
    dsn: MessageDsn | None = None  # RET= / ENVID= (RFC 3461), None when neither was given
    requiretls: bool = False  # REQUIRETLS (RFC 8689 section 4)


def _dsn_error(exc: DsnParameterError) -> CommandError:
    # RFC 3461 section 4: a malformed DSN parameter is a syntax error in the parameters.
    return CommandError(Reply(501, "5.5.4", f"Invalid DSN parameter: {exc}"))


def check_mail_parameters(
    params: dict[str, str | None], *, tls_active: bool = False
) -> MailParameters:
    """Validate the parameters MAIL accepts: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030),
    SMTPUTF8 (RFC 6531), AUTH (RFC 4954 section 5), RET and ENVID (RFC 3461) and, on a TLS
    session, REQUIRETLS (RFC 8689); anything else is 555."""
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    auth: str | None = None
    ret: str | None = None
    envid: str | None = None
    requiretls = False
    for key, value in params.items():
        if key == "SIZE":
            if value is None or _SIZE.fullmatch(value) is None:
                raise CommandError(replies.syntax("SIZE=<number of octets> (RFC 1870)"))
            size = int(value)
        elif key == "BODY":
            # ASCII case-insensitive only: str.upper() turns "7b\u0131t" (dotless i) into "7BIT".
            if value is None or not value.isascii() or value.upper() not in BODY_TYPES:
                raise CommandError(replies.syntax("BODY=7BIT|8BITMIME|BINARYMIME"))
            body = value.upper()
        elif key == "SMTPUTF8":
            if value is not None:
                raise CommandError(replies.syntax("SMTPUTF8 takes no value (RFC 6531)"))
            smtputf8 = True
        elif key == "AUTH":
            if value is None or (value != "<>" and _XTEXT.fullmatch(value) is None):
                raise CommandError(replies.syntax("AUTH=<xtext>|<> (RFC 4954 section 5)"))
            auth = value
        elif key == "RET":
            try:
                ret = parse_ret(value)
            except DsnParameterError as exc:
                raise _dsn_error(exc) from None
        elif key == "ENVID":
            try:
                envid = parse_envid(value)
            except DsnParameterError as exc:
                raise _dsn_error(exc) from None
        elif key == "REQUIRETLS":
            if value is not None:
                raise CommandError(replies.syntax("REQUIRETLS takes no value (RFC 8689)"))
            if not tls_active:
                # RFC 8689 section 4.1: offered only after STARTTLS, so it means nothing in
                # plaintext; section 5 names 5.7.10 for "encryption needed".
                raise CommandError(Reply(530, "5.7.10",
                                         "REQUIRETLS needs a TLS session: use STARTTLS first"))
            requiretls = True
        else:
            raise CommandError(Reply(555, "5.5.4", f"{replies.UNKNOWN_PARAMETER}: {echo(key)}"))
    dsn = MessageDsn(ret, envid) if ret is not None or envid is not None else None
    return MailParameters(size, body, smtputf8, auth, dsn, requiretls)


def check_rcpt_parameters(params: dict[str, str | None]) -> RecipientDsn | None:
    """RCPT takes NOTIFY and ORCPT (RFC 3461 sections 4.1, 4.2); anything else is 555 (RFC
    5321 section 4.1.1.11). None when neither was given."""
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for key, value in params.items():
        try:
            if key == "NOTIFY":
                notify = parse_notify(value)
            elif key == "ORCPT":
                orcpt = parse_orcpt(value)
            else:
                raise CommandError(Reply(555, "5.5.4",
                                         f"{replies.UNKNOWN_PARAMETER}: {echo(key)}"))
        except DsnParameterError as exc:
            raise _dsn_error(exc) from None
    if notify is None and orcpt is None:
        return None
    return RecipientDsn(notify, orcpt)


def parse_bdat(arg: str) -> tuple[int, bool] | None:
    """``<size> [LAST]`` -> (size, last), or None when malformed."""
    match = _BDAT.fullmatch(arg)
    if match is None:
        return None
    return int(match.group(1)), match.group(2) is not None


def parse_helo(arg: str) -> str | None:
    """The EHLO/HELO name, or None when missing or malformed."""
    name = arg.strip(" ")
    if _HELO.fullmatch(name) is None:
        return None
    return name
