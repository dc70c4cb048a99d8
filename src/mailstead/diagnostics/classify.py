"""Turns what a connection attempt ran into (an OS error, a TLS error, a greeting, a login
reply) into a cause a person can act on, with the fix in plain words.

Pure functions over values, no I/O (DESIGN rule 1 in spirit): the probes in ``probe.py``
collect the facts, this module decides what they mean, and both are tested separately. The
reply patterns cover Mailstead's own texts and those of common servers and providers.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from dataclasses import dataclass
from enum import Enum


class Cause(Enum):
    """Why a client setting works or not; the value is a stable name for JSON and tests."""

    OK = "ok"
    LOGIN_NOT_TESTED = "login_not_tested"  # the connection works; no password was given
    NO_ADDRESS = "no_address"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMED_OUT = "timed_out"
    DROPPED = "dropped"  # accepted, then nothing: no greeting, no TLS handshake
    CLOSED = "closed"
    EXPECTS_STARTTLS = "expects_starttls"  # SSL/TLS tried on a port that speaks plain first
    EXPECTS_SSL = "expects_ssl"  # plain text tried on an implicit-TLS port
    NO_STARTTLS = "no_starttls"
    CERT_EXPIRED = "cert_expired"
    CERT_NAME = "cert_name"
    CERT_UNTRUSTED = "cert_untrusted"
    CERT_OTHER = "cert_other"
    TLS_FAILED = "tls_failed"
    WRONG_PROTOCOL = "wrong_protocol"
    REJECTED = "rejected"  # the server refused the session in its greeting
    LOGIN_BEFORE_TLS = "login_before_tls"
    PLAINTEXT_LOGIN = "plaintext_login"  # the server would take a password unencrypted
    NO_AUTH = "no_auth"
    USERNAME_FORM = "username_form"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - a cause name, not a password
    APP_PASSWORD = "app_password"  # noqa: S105
    WEB_LOGIN = "web_login"
    BLOCKED = "blocked"
    IN_USE = "in_use"  # POP3: the password is right but another session holds the maildrop
    TEMPORARY = "temporary"
    PROTOCOL_ERROR = "protocol_error"


_WORDS: dict[Cause, tuple[str, str]] = {
    Cause.OK: ("works", ""),
    Cause.LOGIN_NOT_TESTED: (
        "the connection and TLS work; the login was not tried (no password given)",
        "give the password with --password-stdin to test the login too",
    ),
    Cause.NO_ADDRESS: (
        "the server name does not resolve to an address",
        "check the server name for typos; the domain may use another name for mail",
    ),
    Cause.REFUSED: (
        "connection refused: nothing listens on this port",
        "use another port (see the table); this server does not offer this service here",
    ),
    Cause.UNREACHABLE: (
        "the network cannot reach the server (no route)",
        "check the network connection and the server's address",
    ),
    Cause.TIMED_OUT: (
        "the connection timed out: a firewall is dropping this port",
        "try the other port for the same service (465 instead of 587 or the other way, "
        "993 instead of 143, 995 instead of 110), or ask the network's administrator to "
        "open it",
    ),
    Cause.DROPPED: (
        "the connection was accepted but the server never answered (a firewall or proxy "
        "swallows this port)",
        "try the other port for the same service (465 instead of 587 or the other way, "
        "993 instead of 143, 995 instead of 110)",
    ),
    Cause.CLOSED: (
        "the server closed the connection without a greeting",
        "the server may be overloaded or refusing your address; try again later",
    ),
    Cause.EXPECTS_STARTTLS: (
        "TLS handshake failed on connect: this port speaks plain text first and expects "
        "STARTTLS",
        "turn SSL/TLS off and STARTTLS on for this port (or keep SSL/TLS and use the "
        "SSL port: 993, 995 or 465)",
    ),
    Cause.EXPECTS_SSL: (
        "no plain-text greeting: this port expects SSL/TLS from the first byte",
        "turn SSL/TLS on (not STARTTLS) for this port (or keep STARTTLS and use "
        "the STARTTLS port: 143, 110 or 587)",
    ),
    Cause.NO_STARTTLS: (
        "the server does not offer STARTTLS on this port",
        "use the SSL/TLS port instead (993, 995 or 465); never send a password unencrypted",
    ),
    Cause.CERT_EXPIRED: (
        "the server's certificate has expired",
        "the server's administrator must renew the certificate; do not accept it permanently",
    ),
    Cause.CERT_NAME: (
        "the server's certificate is for another name",
        "use the server name the certificate is for (see the details), or the administrator "
        "must get a certificate that covers this name",
    ),
    Cause.CERT_UNTRUSTED: (
        "the server's certificate is not trusted (self-signed or from an unknown authority)",
        "the administrator should install a certificate from a public authority (Let's "
        "Encrypt); accept this one only if its fingerprint matches what the administrator "
        "gave you",
    ),
    Cause.CERT_OTHER: (
        "the server's certificate could not be verified",
        "the administrator must fix the certificate (see the details)",
    ),
    Cause.TLS_FAILED: (
        "the TLS handshake failed",
        "the server's TLS settings do not match this client (see the details)",
    ),
    Cause.WRONG_PROTOCOL: (
        "another service answers on this port",
        "check the port number: it belongs to another protocol",
    ),
    Cause.REJECTED: (
        "the server refused the session when it greeted",
        "read the server's reason in the details; your address may be refused",
    ),
    Cause.LOGIN_BEFORE_TLS: (
        "login refused before TLS: the server only takes a password over an encrypted "
        "connection",
        "turn STARTTLS on for this port, or use SSL/TLS on port 993, 995 or 465",
    ),
    Cause.PLAINTEXT_LOGIN: (
        "the server would take the password unencrypted on this port",
        "turn STARTTLS or SSL/TLS on; the password was not sent to test it",
    ),
    Cause.NO_AUTH: (
        "the server offers no login on this port (port 25 is for mail between servers)",
        "send mail through port 587 (STARTTLS) or 465 (SSL/TLS) instead",
    ),
    Cause.USERNAME_FORM: (
        "the login name was refused, but the full e-mail address works",
        "use the full e-mail address as the user name",
    ),
    Cause.WRONG_PASSWORD: (
        "the server refused the user name or password",
        "check the password (and that the user name is the full address); reset it if "
        "needed",
    ),
    Cause.APP_PASSWORD: (
        "the account has two-factor authentication on: the server wants an app-specific "
        "password, not the account password",
        "create an app-specific password for this device (in the account's security "
        "settings, or: mailstead app-password add ADDRESS --name DEVICE) and use it here",
    ),
    Cause.WEB_LOGIN: (
        "the provider wants a sign-in through its web page (or an app password / OAuth) "
        "before it allows password logins",
        "sign in on the provider's web site, then create an app-specific password or "
        "use a client that supports OAuth",
    ),
    Cause.BLOCKED: (
        "the server is blocking your address after too many failed logins",
        "wait until the block expires (usually 15 minutes to an hour) with every device "
        "that has the old password turned off, or ask the administrator to lift it "
        "(mailstead security unblock IP)",
    ),
    Cause.IN_USE: (
        "the password is right, but another POP3 session (another device) holds the mailbox",
        "close the other POP3 client, or use IMAP, which lets several devices in at once",
    ),
    Cause.TEMPORARY: (
        "the server answered with a temporary failure",
        "try again later; if it persists, a block after failed logins is likely",
    ),
    Cause.PROTOCOL_ERROR: (
        "the server answered something unexpected",
        "see the details; the server may not be a standard mail server",
    ),
}


def words(cause: Cause) -> str:
    """What ``cause`` means, in one sentence."""
    return _WORDS[cause][0]


def fix(cause: Cause) -> str:
    """What to change for ``cause`` ("" when nothing)."""
    return _WORDS[cause][1]


def is_success(cause: Cause) -> bool:
    """The setting works (the login too, or it was not tested)."""
    return cause in (Cause.OK, Cause.LOGIN_NOT_TESTED)


# ---------------------------------------------------------------------------------------------
# Connections and TLS

def classify_connect_error(exc: BaseException) -> Cause:
    """The cause of a failed TCP connect."""
    if isinstance(exc, socket.gaierror):
        return Cause.NO_ADDRESS
    if isinstance(exc, TimeoutError):
        return Cause.TIMED_OUT
    if isinstance(exc, ConnectionRefusedError):
        return Cause.REFUSED
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return Cause.UNREACHABLE
        if exc.errno == errno.ECONNREFUSED:
            return Cause.REFUSED
        if exc.errno == errno.ETIMEDOUT:
            return Cause.TIMED_OUT
        # asyncio raises a plain OSError listing every address's error when all failed.
        text = str(exc).lower()
        if "refused" in text:
            return Cause.REFUSED
        if "timed out" in text:
            return Cause.TIMED_OUT
        if "unreachable" in text:
            return Cause.UNREACHABLE
    return Cause.PROTOCOL_ERROR


# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h).
_X509_NOT_YET_VALID = 9
_X509_EXPIRED = 10
_X509_SELF_SIGNED = 18
_X509_SELF_SIGNED_IN_CHAIN = 19
_X509_NO_LOCAL_ISSUER = 20
_X509_UNABLE_TO_VERIFY_LEAF = 21
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_MISMATCH = 64
_UNTRUSTED = (_X509_SELF_SIGNED, _X509_SELF_SIGNED_IN_CHAIN, _X509_NO_LOCAL_ISSUER,
              _X509_UNABLE_TO_VERIFY_LEAF, 2)

# What OpenSSL says when the first bytes from the server are not a TLS record: the server
# sent its plain-text greeting ("220 ...", "* OK", "+OK") in answer to our ClientHello.
_NOT_TLS = ("wrong version number", "packet length too long", "record layer failure",
            "unknown protocol", "http request", "wrong_version_number", "record_layer_failure")


def classify_tls_error(exc: BaseException) -> Cause:
    """The cause of a failed TLS handshake. EXPECTS_STARTTLS here is a suspicion the probe
    confirms by reading a plain greeting on a new connection."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == _X509_EXPIRED:
            return Cause.CERT_EXPIRED
        if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH):
            return Cause.CERT_NAME
        if code in _UNTRUSTED:
            return Cause.CERT_UNTRUSTED
        if code == _X509_NOT_YET_VALID:
            return Cause.CERT_OTHER
        return Cause.CERT_OTHER
    if isinstance(exc, TimeoutError):
        return Cause.DROPPED
    text = str(exc).lower()
    if any(marker in text for marker in _NOT_TLS):
        return Cause.EXPECTS_STARTTLS
    if isinstance(exc, ConnectionResetError | BrokenPipeError) or "eof" in text:
        return Cause.TLS_FAILED
    return Cause.TLS_FAILED


def looks_like_tls(data: bytes) -> bool:
    """``data`` starts like a TLS record (RFC 8446 section 5.1: content type 20-23, version
    major 3): what an implicit-TLS port sends when it gets plain text."""
    return len(data) >= 3 and 20 <= data[0] <= 23 and data[1] == 3


# ---------------------------------------------------------------------------------------------
# Greetings

PROTOCOLS = ("imap", "pop3", "smtp")


def greeting_protocol(line: bytes) -> str | None:
    """Which protocol a first line comes from: "smtp" (RFC 5321 section 4.2: a 3-digit code),
    "imap" (RFC 9051 section 7.1: ``* OK``, ``* PREAUTH`` or ``* BYE``), "pop3" (RFC 1939
    section 4: ``+OK``/``-ERR``), "managesieve" (RFC 5804 section 1.7: a quoted capability
    name), "http" or None."""
    text = line.lstrip()
    if re.match(rb"\d{3}([ -]|\r?$)", text):
        return "smtp"
    if re.match(rb"\* (OK|PREAUTH|BYE)\b", text, re.IGNORECASE):
        return "imap"
    if re.match(rb"(\+OK|-ERR)\b", text, re.IGNORECASE):
        return "pop3"
    if re.match(rb'"[A-Za-z-]+"( |\r?$)', text):
        return "managesieve"
    if text.upper().startswith(b"HTTP/"):
        return "http"
    return None


def greeting_refusal(protocol: str, line: bytes) -> bool:
    """The greeting refuses service: SMTP 554 (RFC 5321 section 3.1) or any 4xx/5xx, IMAP
    ``* BYE`` (RFC 9051 section 7.1.5), POP3 ``-ERR``."""
    text = line.lstrip()
    if protocol == "smtp":
        return text[:1] in (b"4", b"5")
    if protocol == "imap":
        return text[:5].upper() == b"* BYE"
    if protocol == "managesieve":
        return text[:3].upper() == b"BYE"
    return text[:4].upper() == b"-ERR"


# ---------------------------------------------------------------------------------------------
# Login replies

@dataclass(frozen=True, slots=True)
class LoginReply:
    """A login answer reduced to what matters: success, the response code (SMTP "535 5.7.8",
    IMAP "AUTHENTICATIONFAILED", POP3 "AUTH"), a temporary flag and the text."""

    ok: bool
    code: str
    text: str
    temporary: bool = False


_APP_PASSWORD = re.compile(
    r"app(lication)?[- ]?specific[- ]password|app[- ]password|two[- ]factor|2fa\b|"
    r"second factor|multi[- ]factor",
    re.IGNORECASE,
)
# Gmail "534-5.7.14 Please log in with your web browser", "5.7.9 ... WebLoginRequired";
# Microsoft 365 "5.7.139 Authentication unsuccessful, basic authentication is disabled".
_WEB_LOGIN = re.compile(
    r"web ?login ?required|log ?in (with|via|through) your web browser|"
    r"basic authentication is disabled|5\.7\.14\b|5\.7\.139\b",
    re.IGNORECASE,
)
_BLOCKED = re.compile(
    r"too many (failed |bad |invalid |unsuccessful )?(login|logon|auth\w*|attempt|password)|"
    r"(temporarily |been )?(blocked|banned|locked out)|account (is )?locked",
    re.IGNORECASE,
)
# RFC 4954 section 4/6 (538 5.7.11, 530 5.7.0), RFC 9051 PRIVACYREQUIRED, Dovecot's
# "Plaintext authentication disallowed on non-secure (SSL/TLS) connections", Postfix/Gmail
# "Must issue a STARTTLS command first".
_NEEDS_TLS = re.compile(
    r"privacyrequired|starttls|plaintext (authentication|login) (is )?(disallowed|disabled)|"
    r"encryption required|\b5\.7\.11\b|\b538\b|must issue a starttls",
    re.IGNORECASE,
)


def classify_login(reply: LoginReply) -> Cause:
    """The cause of a login answer: app password required, web login required, blocked after
    failures, login refused before TLS, temporary failure, or a plain wrong password."""
    if reply.ok:
        return Cause.OK
    both = f"{reply.code} {reply.text}"
    if _APP_PASSWORD.search(both) or re.match(r"534\b.*5\.7\.9\b", reply.code):
        return Cause.APP_PASSWORD
    if _WEB_LOGIN.search(both):
        return Cause.WEB_LOGIN
    if _BLOCKED.search(reply.text):
        return Cause.BLOCKED
    if _NEEDS_TLS.search(both):
        return Cause.LOGIN_BEFORE_TLS
    if reply.code.upper() == "IN-USE":  # RFC 2449 section 8.1.1: authenticated, but locked
        return Cause.IN_USE
    if reply.temporary:
        return Cause.TEMPORARY
    return Cause.WRONG_PASSWORD
