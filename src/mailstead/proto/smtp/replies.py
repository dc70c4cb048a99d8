"""Every reply the SMTP server core sends on its own, with its RFC 3463 enhanced status code.

Servers answering decision events may use the ``*_OK`` replies and ``queued`` below. Codes:
RFC 5321 section 4.2 (basic), RFC 3463 and RFC 5248 (enhanced), RFC 2034 section 3 (enhanced
codes on every 2xx/4xx/5xx reply except the greeting and EHLO/HELO).
"""

from __future__ import annotations

from mailstead.core.reply import Reply
from mailstead.proto.smtp.events import SessionSettings


def greeting(hostname: str) -> Reply:
    """RFC 5321 section 4.3.1: the 220 greeting starts with the server's name."""
    return Reply(220, None, f"{hostname} ESMTP Mailstead")


def helo(hostname: str) -> Reply:
    return Reply(250, None, hostname)


def ehlo(hostname: str, keywords: list[str]) -> Reply:
    """RFC 5321 section 4.1.1.1: the name, then one extension keyword per line."""
    return Reply(250, None, "\n".join([hostname, *keywords]))


def ehlo_keywords(
    settings: SessionSettings, *, tls_active: bool, auth_mechanisms: tuple[str, ...]
) -> list[str]:
    """The extensions to advertise; ``auth_mechanisms`` is empty where AUTH is not offered."""
    keywords = [
        "PIPELINING",  # RFC 2920
        f"SIZE {settings.max_message_size}",  # RFC 1870
        "8BITMIME",  # RFC 6152
        "SMTPUTF8",  # RFC 6531
        "ENHANCEDSTATUSCODES",  # RFC 2034
        "CHUNKING",  # RFC 3030
        "DSN",  # RFC 3461 section 4
    ]
    if settings.starttls_available and not tls_active:
        keywords.append("STARTTLS")  # RFC 3207 section 4.2: never once TLS is up
    if tls_active:
        keywords.append("REQUIRETLS")  # RFC 8689 section 4.1: only offered after STARTTLS
    if auth_mechanisms:
        keywords.append("AUTH " + " ".join(auth_mechanisms))  # RFC 4954 section 3
    return keywords


def closing(hostname: str, enhanced: str, why: str) -> Reply:
    """RFC 5321 section 3.8: 421 announces that the server closes the channel."""
    return Reply(421, enhanced, f"{hostname} {why}, closing connection")


def bye(hostname: str) -> Reply:
    return Reply(221, "2.0.0", f"{hostname} closing connection")


def octets_received(size: int) -> Reply:
    """RFC 3030 section 2: the reply to a BDAT chunk that is not the last one."""
    return Reply(250, "2.0.0", f"{size} octets received")


def queued(queue_id: str) -> Reply:
    """What a server answers to MessageData once the message is durable."""
    return Reply(250, "2.0.0", f"OK: queued as {queue_id}")


def auth_challenge(b64: bytes) -> bytes:
    """RFC 4954 section 4: ``334 <base64>``; no enhanced code on a 3xx reply (RFC 2034)."""
    return b"334 " + b64 + b"\r\n"


OK = Reply(250, "2.0.0", "OK")
MAIL_OK = Reply(250, "2.1.0", "Sender OK")
RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
# RFC 5321 section 4.3.2: 354 to DATA. RFC 2034 defines enhanced codes for 2xx/4xx/5xx only.
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
HELP = Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
             "STARTTLS AUTH")
# RFC 5321 section 3.5.3: 252 when the server will not verify but will accept the mail.
VRFY = Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

# Line and command syntax.
# RFC 5321 section 4.5.3.1.10: "500 Line too long" for a line over the limit.
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_EOL_COMMAND = Reply(500, "5.5.2", "Command line contains a bare CR or LF; lines must end "
                         "in CRLF (RFC 5321 2.3.8)")
BAD_CHARACTER = Reply(500, "5.5.2", "Invalid character in command line")
BAD_UTF8 = Reply(500, "5.5.2", "Command line is not valid UTF-8")
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Unrecognized command")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
# RFC 5321 section 4.1.1.11: 555 for an unrecognised MAIL/RCPT parameter.
UNKNOWN_PARAMETER = "Unsupported parameter"

# Sequence (RFC 5321 section 4.1.4, 503 "bad sequence of commands").
NEED_HELO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
# RFC 2920 section 3.1: DATA after pipelined RCPTs that all failed.
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT in a transaction "
                        "(RFC 3030 section 2)")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT (RFC 3030 section 3)")
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT <size> [LAST]")
# RFC 5321 section 4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
# RFC 1870 section 6 and RFC 3463 5.3.4.
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
# RFC 5321 section 2.3.8: bare CR/LF refused (the SMTP smuggling defence).
BARE_EOL_DATA = Reply(554, "5.6.0", "Message refused: bare CR or LF in message data; lines must "
                      "end in CRLF (RFC 5321 2.3.8)")
# RFC 5321 section 4.5.3.1.10 ("500 Line too long") for text lines over RFC 5322 section 2.1.1.
DATA_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long: message lines are limited to 998 "
                           "octets plus CRLF (RFC 5322 2.1.1)")

# AUTH (RFC 4954).
AUTH_UNAVAILABLE = Reply(502, "5.5.1", "AUTH not available on this port")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication "
                            "mechanism")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 response")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")

# STARTTLS (RFC 3207 section 4).
STARTTLS_SYNTAX = Reply(501, "5.5.4", "Syntax: STARTTLS (no parameters allowed)")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TLS_UNAVAILABLE = Reply(502, "5.5.1", "STARTTLS not available")


def syntax(usage: str) -> Reply:
    """501: syntax error in parameters or arguments (RFC 5321 section 4.2.2)."""
    return Reply(501, "5.5.4", f"Syntax: {usage}")
