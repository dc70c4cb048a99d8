"""MAIL and RCPT (RFC 5321 sections 4.1.1.2 and 4.1.1.3): from the command argument to the
decision event, or a ``CommandError`` with the reply. Pure functions; the sequence rules are
checked before, from the state table."""

from __future__ import annotations

from mailstead.core.address import Address, AddressError, parse_path
from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.commands import (
    CommandError,
    check_mail_parameters,
    check_rcpt_parameters,
    parse_parameters,
    split_path_argument,
)
from mailstead.proto.smtp.events import MailFrom, RcptTo, SessionSettings

MAIL_USAGE = "MAIL FROM:<address> [parameters]"
RCPT_USAGE = "RCPT TO:<address> [parameters]"


def parse_mail(arg: str, settings: SessionSettings, *, tls_active: bool = False) -> MailFrom:
    """The MailFrom event for ``FROM:<path> [parameters]``; raises CommandError."""
    path, param_text = split_path_argument(arg, "FROM:", MAIL_USAGE)
    params = parse_parameters(param_text)
    checked = check_mail_parameters(params, tls_active=tls_active)
    if checked.size is not None and checked.size > settings.max_message_size:
        raise CommandError(replies.TOO_BIG)  # RFC 1870 section 6.2
    try:
        sender = parse_path(path, null_allowed=True, smtputf8=checked.smtputf8)
    except AddressError as exc:
        reply = exc.reply
        if reply.enhanced == "5.1.3":
            # RFC 3463: 5.1.7 is the sender's counterpart of 5.1.3.
            reply = Reply(reply.code, "5.1.7", reply.text)
        raise CommandError(reply) from None
    return MailFrom(sender, params, checked.size, checked.body, checked.smtputf8,
                    dsn=checked.dsn, requiretls=checked.requiretls)


def parse_rcpt(arg: str, mail: MailFrom, settings: SessionSettings) -> RcptTo:
    """The RcptTo event for ``TO:<path> [parameters]`` in the transaction ``mail`` started;
    raises CommandError."""
    path, param_text = split_path_argument(arg, "TO:", RCPT_USAGE)
    dsn = check_rcpt_parameters(parse_parameters(param_text))
    if path.isascii() and path.lower() == "<postmaster>":
        # RFC 5321 section 4.1.1.3: "<Postmaster>" without a domain is this server's.
        return RcptTo(Address(path[1:-1], settings.hostname.lower()), {}, dsn)
    try:
        recipient = parse_path(path, null_allowed=False, smtputf8=mail.smtputf8)
    except AddressError as exc:
        raise CommandError(exc.reply) from None
    assert recipient is not None  # null_allowed=False
    return RcptTo(recipient, {}, dsn)
