"""CAPABILITY, LOGOUT, ID, STARTTLS, LOGIN, AUTHENTICATE, ENABLE and COMPRESS.

Passwords are checked by the accounts service, the same as for submission; they are never
accepted before TLS (RFC 9051 section 6.2.3 LOGINDISABLED, RFC 8314 section 3).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, assert_never

from mailstead.accounts.login import LoginFailure
from mailstead.core.secret import Secret
from mailstead.imap.base import Action, CommandFailed, State
from mailstead.observability.log import log_event
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import (
    AuthenticateArgs,
    Command,
    CompressArgs,
    EnableArgs,
    IdArgs,
    LoginArgs,
)
from mailstead.proto.sasl import exchange as sasl

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession

log = logging.getLogger("mailstead.imap")

# RFC 5161 section 4 lists what ENABLE can turn on; these are the ones we implement.
# RFC 7162 section 3.2.3: enabling QRESYNC enables CONDSTORE as well.
# UIDONLY: RFC 9586 section 3.
ENABLEABLE = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2", "UIDONLY")

_EXTENSIONS = (
    "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "LIST-EXTENDED",
    "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE", "ESEARCH", "SEARCHRES", "SORT",
    "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "CONDSTORE", "QRESYNC", "QUOTA",
    "QUOTA=RES-STORAGE", "UTF8=ACCEPT", "ID", "BINARY", "STATUS=SIZE",
)
# Object ids, save dates, previews and the APPEND family: RFC 8474 OBJECTID, RFC 8514
# SAVEDATE, RFC 8970 PREVIEW, RFC 3502 MULTIAPPEND, RFC 8508 REPLACE, RFC 4469 CATENATE.
_MESSAGE_EXTENSIONS = ("OBJECTID", "SAVEDATE", "PREVIEW", "MULTIAPPEND", "REPLACE", "CATENATE")

# Search and sort extensions (imap/searching.py, imap/context_search.py,
# proto/imap/esearch.py): ESORT and CONTEXT=SEARCH/SORT (RFC 5267), SORT=DISPLAY (RFC 5957),
# PARTIAL (RFC 9394).
_SEARCH_EXTENSIONS = ("ESORT", "SORT=DISPLAY", "PARTIAL", "CONTEXT=SEARCH", "CONTEXT=SORT")
# RFC 9586: UIDONLY (imap/uidonly.py); RFC 9585: INPROGRESS (imap/progress.py); RFC 5465:
# NOTIFY (imap/notify.py).
_SESSION_EXTENSIONS = ("UIDONLY", "INPROGRESS", "NOTIFY")


def capabilities(s: IMAPSession) -> list[str]:
    """What this session offers now: STARTTLS and LOGINDISABLED only before TLS, AUTH=PLAIN
    only once a password may be sent (RFC 9051 section 6.2.3, RFC 4959 SASL-IR). Before
    authentication literals are capped at 4096 octets, which is what LITERAL- promises
    (RFC 7888 section 5); LITERAL+ (any size) only once logged in."""
    literal = "LITERAL-" if s.state is State.NOT_AUTHENTICATED else "LITERAL+"
    caps = ["IMAP4rev1", "IMAP4rev2", literal, "SASL-IR"]
    # RFC 9051 section 7.2.2: once authenticated, AUTH=, STARTTLS and LOGINDISABLED are no
    # longer advertised (AUTHENTICATE, LOGIN and STARTTLS are not valid in that state).
    if s.state is State.NOT_AUTHENTICATED:
        if not s.tls_active and s.settings.starttls_available:
            caps.append("STARTTLS")
        if s.login_disabled:
            caps.append("LOGINDISABLED")
        else:
            caps.append("AUTH=PLAIN")
    caps += _EXTENSIONS
    caps += _SEARCH_EXTENSIONS
    caps += _SESSION_EXTENSIONS
    caps += _MESSAGE_EXTENSIONS
    if s.settings.compress_available and not s.compressed:
        caps.append("COMPRESS=DEFLATE")
    # RFC 7889 section 3: the largest message APPEND accepts.
    caps.append(f"APPENDLIMIT={s.settings.max_message_size}")
    return caps


async def capability(s: IMAPSession, cmd: Command) -> None:
    s.untagged("CAPABILITY " + " ".join(capabilities(s)))
    await s.finish(cmd, "CAPABILITY completed")


async def logout(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.1.3: BYE, then the tagged OK, then close."""
    s.untagged("BYE Logging out")
    s.tagged(cmd.tag, "OK", "LOGOUT completed")
    s.state = State.LOGOUT
    s.action = Action.CLOSE


async def id_command(s: IMAPSession, cmd: Command) -> None:
    """RFC 2971: log what the client says about itself, name ourselves."""
    if isinstance(cmd.args, IdArgs) and cmd.args.params:
        shown = {k[:30]: (v or "")[:60] for k, v in list(cmd.args.params.items())[:10]}
        log_event(log, "imap.client_id", client=s.client_ip, **{"id": str(shown)})
    s.untagged('ID ("name" "Mailstead" "vendor" "Mailstead")')
    await s.finish(cmd, "ID completed")


async def starttls(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.2.1: the server discards what the client pipelined after it."""
    if s.tls_active or not s.settings.starttls_available:
        text = "TLS is already active" if s.tls_active else "STARTTLS unavailable"
        raise CommandFailed("BAD", text)
    s.tagged(cmd.tag, "OK", "Begin TLS negotiation now")
    s.action = Action.STARTTLS


async def login(s: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    if not isinstance(args, LoginArgs):
        raise CommandFailed("BAD", "LOGIN needs a user name and a password")
    password = Secret(args.password)
    if s.login_disabled:
        raise CommandFailed(
            "NO", "Plaintext login is disabled: use STARTTLS first", "PRIVACYREQUIRED"
        )
    await _check(s, cmd.tag, args.username, password, "LOGIN")


async def authenticate(s: IMAPSession, cmd: Command) -> None:
    """RFC 9051 section 6.2.2 with SASL-IR (RFC 4959); PLAIN only (RFC 4616)."""
    args = cmd.args
    if not isinstance(args, AuthenticateArgs):
        raise CommandFailed("BAD", "AUTHENTICATE needs a mechanism")
    if s.login_disabled:
        raise CommandFailed("NO", "Authentication is disabled before STARTTLS", "PRIVACYREQUIRED")
    outcome = _exchange(s).start(args.mechanism, args.initial_response)
    if isinstance(outcome, sasl.Malformed):
        # Raised, not answered here, so that the session counts it among bad commands.
        raise CommandFailed("BAD", "Invalid base64 in the initial response")
    await _sasl_reply(s, cmd.tag, outcome)


async def sasl_step(s: IMAPSession, line: bytes) -> None:
    """The client's line after a ``+`` challenge; ``*`` cancels (RFC 9051 section 6.2.2)."""
    tag, s.sasl_tag = s.sasl_tag, ""
    await _sasl_reply(s, tag, _exchange(s).respond(line))


def _exchange(s: IMAPSession) -> sasl.SaslExchange:
    # The session owns the SaslServer (and with it the exchange's state); this is only a view.
    return sasl.SaslExchange.wrap(s.sasl)


async def _sasl_reply(s: IMAPSession, tag: str, outcome: sasl.Outcome) -> None:
    """RFC 9051 section 6.2.2: a ``+`` continuation, or the tagged answer that ends it."""
    match outcome:
        case sasl.Continue(challenge):
            s.raw(response.continuation(challenge.decode("ascii")))
            s.sasl_tag = tag
            s.action = Action.SASL
        case sasl.Cancelled():
            s._bad(tag, "Authentication cancelled")
        case sasl.Malformed():
            s._bad(tag, "Invalid base64 in the authentication response")
        case sasl.Unsupported():
            s.tagged(tag, "NO", "Unsupported authentication mechanism", "CANNOT")
        case sasl.Rejected(reason):
            s.tagged(tag, "NO", f"Authentication failed: {reason}", "AUTHENTICATIONFAILED")
        case sasl.Authenticated() if not outcome.acts_as_self:
            # RFC 4616 section 2: we let a user act only as themselves.
            s.tagged(tag, "NO", "Authorization identity must match the user",
                     "AUTHORIZATIONFAILED")
        case sasl.Authenticated(mechanism, _, username, password):
            await _check(s, tag, username, password, mechanism)
        case _:
            assert_never(outcome)


async def _check(s: IMAPSession, tag: str, username: str, password: Secret, how: str) -> None:
    result = await s.ctx.accounts.login(
        username, password, protocol="imap", client_ip=s.client_ip, mechanism=how
    )
    account = result.account
    if not result.ok or account is None:
        log_event(log, "imap.auth_failed", client=s.client_ip, user=username[:100],
                  mechanism=how, reason=result.reason)
        if result.temporary:  # RFC 5530 section 3: UNAVAILABLE, a temporary failure
            s.tagged(tag, "NO", "Too many failed logins from your address, try again later",
                     "UNAVAILABLE")
        elif result.reason is LoginFailure.APP_PASSWORD_REQUIRED:
            s.tagged(tag, "NO", "Two-factor authentication is on for this account: use an "
                     "app-specific password", "AUTHENTICATIONFAILED")
        else:
            # RFC 5530 section 3: AUTHENTICATIONFAILED either way; the text says more when
            # there is something the user can act on.
            s.tagged(tag, "NO", result.detail or "Invalid credentials", "AUTHENTICATIONFAILED")
        return
    if not s.ctx.acquire(account.id, s.settings.max_connections_per_account):
        log_event(log, "imap.too_many_sessions", client=s.client_ip, user=account.address)
        s.tagged(tag, "NO", "Too many connections for this account", "UNAVAILABLE")
        return
    s.account = account
    s.state = State.AUTHENTICATED
    s.watch = s.ctx.store.watch(account.id)
    log_event(log, "imap.login", client=s.client_ip, user=account.address, mechanism=how)
    # RFC 9051 section 6.2.3: the OK may carry the capabilities, saving a round trip.
    s.tagged(tag, "OK", "Logged in", "CAPABILITY " + " ".join(capabilities(s)))


async def enable(s: IMAPSession, cmd: Command) -> None:
    """RFC 5161: ``* ENABLED`` lists what this command newly turned on."""
    wanted = cmd.args.capabilities if isinstance(cmd.args, EnableArgs) else ()
    newly: list[str] = []
    for cap in wanted:
        name = cap.upper()
        todo = ["CONDSTORE", "QRESYNC"] if name == "QRESYNC" else [name]
        for item in todo:
            if item in ENABLEABLE and item not in s.enabled:
                s.enabled.add(item)
                newly.append("IMAP4rev2" if item == "IMAP4REV2" else item)
    s.untagged("ENABLED" + "".join(" " + n for n in newly))
    await s.finish(cmd, "ENABLE completed")


async def compress(s: IMAPSession, cmd: Command) -> None:
    """RFC 4978 section 3: after the OK, both directions are raw DEFLATE."""
    mech = cmd.args.mechanism.upper() if isinstance(cmd.args, CompressArgs) else ""
    if mech != "DEFLATE":
        raise CommandFailed("BAD", "Only COMPRESS DEFLATE is supported")
    if s.compressed or not s.settings.compress_available:
        raise CommandFailed("NO", "Compression is already active", "COMPRESSIONACTIVE")
    s.tagged(cmd.tag, "OK", "DEFLATE active")
    s.compressed = True
    s.action = Action.COMPRESS
