"""The outbound SMTP client: one delivery attempt of one message to the recipients of one
domain, over the route the router computed.

The protocol is ``proto/smtp/client.py`` (sans-I/O); this module owns sockets, TLS and
timeouts. Why not aiosmtplib: it sends one command at a time (no PIPELINING, RFC 2920), reads
replies and writes in one class (DESIGN rules 1 and 4) and gives no hook to refuse plaintext
buffered behind a STARTTLS reply; our core is small and tested byte for byte.

Failures before a transaction starts (no connection, a refusing greeting, TLS that a route
requires but a host cannot give) move on to the next target (RFC 5321 section 5.1). Once
MAIL is sent, the outcome belongs to that server and no other target is tried.
"""

from __future__ import annotations

import asyncio
import encodings.idna
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mailstead.core.dsn import MessageDsn, RecipientDsn
from mailstead.core.reply import Reply
from mailstead.proto.smtp.client import (
    AuthDone,
    ClientEvent,
    Closed,
    Extensions,
    Ready,
    SessionFailed,
    SMTPClientCore,
    TlsReady,
    TransactionResult,
    check_path,
)
from mailstead.queue.mtasts import TlsRptCounters
from mailstead.queue.routing import Route, Target
from mailstead.queue.sessions import Connection, SessionCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RcptResult:
    """What happened to one recipient: the server's reply (or ours, for local decisions) and
    whether it is final (a bounce) rather than worth a retry."""

    rcpt: str
    reply: Reply
    permanent: bool

    @property
    def delivered(self) -> bool:
        return self.reply.is_positive


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One result per recipient, in the order given; ``tls`` describes the protocol and
    cipher when TLS was used; ``peer`` is ``host[address]:port`` of the last server tried
    ("" when none was)."""

    results: list[RcptResult]
    tls: str | None
    peer: str
    # The server advertised DSN (RFC 3461 section 4), so the DSN requests went on with the
    # message and notifying is its job now; False: we report "relayed" ourselves.
    dsn: bool = False


@dataclass(frozen=True, slots=True)
class Requests:
    """What the sender asked of this message's transport: DSNs (RFC 3461), passed on to a
    server that offers DSN (``rcpts`` by recipient as given to ``deliver``), and REQUIRETLS
    (RFC 8689), without which the message is not sent at all."""

    rcpts: Mapping[str, RecipientDsn] = field(default_factory=dict)
    envelope: MessageDsn | None = None
    requiretls: bool = False


def _requiretls_refusal(text: str) -> Reply:
    # RFC 8689's IANA considerations register X.7.30 "REQUIRETLS support required"; permanent: the
    # sender asked that the message go no other way.
    return Reply(550, "5.7.30", f"REQUIRETLS: {text}")


def default_tls_context(verify: bool) -> ssl.SSLContext:
    """The context for STARTTLS to a peer: WebPKI-verified when ``verify`` (MTA-STS enforce,
    smarthosts), else unauthenticated encryption (RFC 7435: better than cleartext)."""
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _needs_utf8(address: str) -> bool:
    return not address.rpartition("@")[0].isascii()


def _ascii_address(address: str) -> str:
    """``address`` with its domain as A-labels (RFC 5890), for a session without SMTPUTF8;
    raises UnicodeError when the domain cannot be encoded."""
    local, sep, domain = address.rpartition("@")
    if not sep or domain.isascii() or domain.startswith("["):
        return address
    labels = [encodings.idna.ToASCII(label).decode("ascii") for label in domain.split(".")]
    return f"{local}@{'.'.join(labels)}"


class _Failure(Exception):
    """This target could not take the message; ``reply`` says why (ours or the server's)."""

    def __init__(self, reply: Reply, *, plaintext_retry: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.plaintext_retry = plaintext_retry


class OutboundClient:
    """Delivers messages to remote servers (see the module docstring).

    ``tls_context_factory(verify)`` builds the TLS context; tests pass one trusting their CA.
    ``tlsrpt`` counts TLS outcomes per policy domain (RFC 8460). ``reuse_time`` > 0 keeps a
    session that ended cleanly that many seconds for the next message to the same target
    (at most ``max_idle`` such sessions; see ``queue.sessions``); ``close`` ends them.
    """

    def __init__(
        self,
        hostname: str,
        *,
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
        data_timeout: float = 600.0,
        tls_context_factory: Callable[[bool], ssl.SSLContext] = default_tls_context,
        tlsrpt: TlsRptCounters | None = None,
        reuse_time: float = 0.0,
        max_idle: int = 100,
    ) -> None:
        SMTPClientCore(hostname)  # validates the EHLO name once, here
        self._hostname = hostname
        self._connect_timeout = connect_timeout
        # RFC 5321 section 4.5.3.2: 5 minutes for the greeting and each command; 10 minutes
        # for the reply to the end of data (4.5.3.2.6).
        self._command_timeout = command_timeout
        self._data_timeout = data_timeout
        self._tls_context_factory = tls_context_factory
        self._tlsrpt = tlsrpt
        self._sessions = SessionCache(reuse_time, max_idle) if reuse_time > 0 else None

    async def close(self) -> None:
        """Ends the idle sessions kept for reuse (QUIT); deliveries may still follow."""
        if self._sessions is not None:
            await self._sessions.close()

    async def deliver(
        self,
        route: Route,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        eight_bit: bool = False,
        dsn: Requests | None = None,
    ) -> AttemptResult:
        """One attempt for ``rcpts`` (all of one domain) in one transaction; never raises for
        network or protocol trouble (that is a temporary result). ``dsn`` goes on to a server
        that offers DSN."""
        request = dsn or Requests()
        if route.kind == "null_mx":
            # RFC 7505 section 4.1: no delivery attempt; X.1.10 "recipient has null MX".
            return self._all(rcpts, Reply(556, "5.1.10", route.reason), "")
        if route.kind == "no_domain":
            # RFC 3463: X.1.2 "bad destination system address".
            return self._all(rcpts, Reply(550, "5.1.2", route.reason), "")
        bad: dict[str, Reply] = {}
        for rcpt in rcpts:
            try:
                check_path(rcpt)
                if not rcpt:
                    raise ValueError("empty recipient")
            except ValueError as exc:
                bad[rcpt] = Reply(553, "5.1.3", f"Address not valid for SMTP: {exc}")
        try:
            check_path(mail_from)
        except ValueError as exc:
            return self._all(rcpts, Reply(553, "5.1.7", f"Sender not valid for SMTP: {exc}"),
                             "")
        sendable = [r for r in rcpts if r not in bad]
        if request.requiretls and not route.tls_required:
            # RFC 8689 section 4.2.1: the MX must be found securely (DNSSEC, which we do not
            # check, or an MTA-STS policy) and its certificate verified; without an enforced
            # policy (or a smarthost over TLS) neither holds.
            return self._all(rcpts, _requiretls_refusal(
                f"the route to {route.reason or 'the recipient domain'} cannot be verified "
                "(no MTA-STS policy in enforce mode), and the sender asked that the message "
                "travel only over verified TLS"), "")
        last = Reply(451, "4.4.1", f"no address to connect to ({route.reason})")
        peer = ""
        outcome: AttemptResult | None = None
        if sendable:
            for target in route.targets:
                peer = f"{target.host}[{target.address}]:{target.port}"
                outcome = await self._reuse(target, peer, route, mail_from, sendable, data,
                                            smtputf8, eight_bit, request)
                if outcome is not None:
                    break
                try:
                    outcome = await self._attempt(target, peer, route, mail_from, sendable,
                                                  data, smtputf8, eight_bit, request,
                                                  use_tls=True)
                except _Failure as failure:
                    if failure.plaintext_retry:
                        try:
                            outcome = await self._attempt(
                                target, peer, route, mail_from, sendable, data, smtputf8,
                                eight_bit, request, use_tls=False)
                        except _Failure as second:
                            failure = second
                    if outcome is None:
                        log.info("delivery to %s failed: %s", peer, failure.reply)
                        last = failure.reply
                        continue
                break
        if outcome is None:
            # RFC 5321 section 5.1: every target failed before a transaction; the last
            # reason is reported, temporary unless the server itself said 5xx.
            outcome = self._all(sendable, last, peer)
        by_rcpt = {r.rcpt: r for r in outcome.results}
        results = [RcptResult(r, bad[r], True) if r in bad else by_rcpt[r] for r in rcpts]
        return AttemptResult(results, outcome.tls, outcome.peer, outcome.dsn)

    @staticmethod
    def _all(rcpts: Sequence[str], reply: Reply, peer: str) -> AttemptResult:
        return AttemptResult([RcptResult(r, reply, reply.is_permanent) for r in rcpts],
                             None, peer)

    @staticmethod
    def _key(target: Target, route: Route) -> tuple[object, ...]:
        """Sessions are shared only between routes asking the same of them: the same target,
        the same TLS demand (a session opened without verification never carries mail that
        MTA-STS or a smarthost requires verified) and the same credentials."""
        smarthost = route.smarthost
        return (target.host.lower(), target.address, target.port, route.tls_required,
                smarthost.tls if smarthost else None, smarthost.username if smarthost else None)

    async def _reuse(
        self, target: Target, peer: str, route: Route, mail_from: str, rcpts: list[str],
        data: bytes, smtputf8: bool, eight_bit: bool, request: Requests,
    ) -> AttemptResult | None:
        """The transaction on an idle session to ``target`` that still answers RSET, or None
        (no such session: the caller connects afresh; nothing was sent but RSET)."""
        if self._sessions is None:
            return None
        key = self._key(target, route)
        while (conn := self._sessions.take(key)) is not None:
            if not await conn.reset():
                conn.close()
                await conn.wait_closed()
                continue
            try:
                return await self._transaction(conn, peer, mail_from, rcpts, data,
                                               smtputf8, eight_bit, request)
            finally:
                await self._release(conn, key)
        return None

    async def _release(self, conn: Connection, key: tuple[object, ...]) -> None:
        """Keeps a session that is idle and healthy for the next message, or ends it."""
        if self._sessions is not None and self._sessions.put(key, conn):
            return
        if conn.core.idle:
            conn.core.quit()
            await conn.event(min(self._command_timeout, 10.0))
        conn.close()
        await conn.wait_closed()

    async def _attempt(
        self, target: Target, peer: str, route: Route, mail_from: str, rcpts: list[str],
        data: bytes, smtputf8: bool, eight_bit: bool, request: Requests, *, use_tls: bool,
    ) -> AttemptResult:
        implicit = route.smarthost is not None and route.smarthost.tls == "implicit"
        verify = route.tls_required
        context = self._tls_context_factory(verify) if (use_tls or verify) else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.address, target.port, ssl=context if implicit else None,
                    server_hostname=target.host if implicit else None),
                self._connect_timeout)
        except ssl.SSLCertVerificationError as exc:
            self._tls_failure(route, rcpts, target, "certificate-host-mismatch"
                              if "hostname" in str(exc) else "validation-failure")
            raise _Failure(Reply(451, "4.7.5", f"{peer}: certificate not valid: "
                                 f"{exc.verify_message}")) from exc
        except TimeoutError as exc:
            raise _Failure(Reply(451, "4.4.1", f"{peer}: connection timed out")) from exc
        except (OSError, ssl.SSLError) as exc:
            raise _Failure(Reply(451, "4.4.1", f"{peer}: connection failed: "
                                 f"{exc.strerror or exc}")) from exc
        conn = Connection(reader, writer, SMTPClientCore(self._hostname),
                          self._command_timeout)
        ready = False
        try:
            await self._session(conn, target, peer, route, implicit=implicit,
                                use_tls=use_tls, context=context, rcpts=rcpts,
                                requiretls=request.requiretls)
            ready = True
        finally:
            if not ready:
                conn.close()
                await conn.wait_closed()
        try:
            return await self._transaction(conn, peer, mail_from, rcpts, data, smtputf8,
                                           eight_bit, request)
        finally:
            await self._release(conn, self._key(target, route))

    async def _ready(self, conn: Connection, peer: str) -> Extensions:
        event = await conn.event()
        if isinstance(event, Ready):
            return event.extensions
        raise _Failure(self._session_reply(peer, event))

    @staticmethod
    def _session_reply(peer: str, event: ClientEvent) -> Reply:
        if isinstance(event, SessionFailed):
            reply = event.reply
            return Reply(reply.code, reply.enhanced,
                         f"{peer} said to {event.stage}: {reply.text}")
        if isinstance(event, Closed):
            if event.reply is not None:
                return Reply(event.reply.code if event.reply.code // 100 in (4, 5) else 451,
                             event.reply.enhanced, f"{peer}: {event.reason}: {event.reply.text}")
            return Reply(451, "4.4.2", f"{peer}: {event.reason}")
        return Reply(451, "4.5.0", f"{peer}: unexpected {type(event).__name__}")

    async def _session(
        self, conn: Connection, target: Target, peer: str, route: Route, *, implicit: bool,
        use_tls: bool, context: ssl.SSLContext | None, rcpts: list[str],
        requiretls: bool = False,
    ) -> None:
        """Greeting, EHLO, STARTTLS and AUTH as the route asks; leaves ``conn`` ready for a
        transaction (``extensions``, ``tls`` set) or raises _Failure."""
        core = conn.core
        extensions = await self._ready(conn, peer)
        if not implicit and use_tls and context is not None and "STARTTLS" in extensions:
            core.start_tls()
            event = await conn.event()
            if isinstance(event, TlsReady):
                extensions = await self._start_tls(conn, target, peer, route, rcpts, context)
            elif route.tls_required:
                self._tls_failure(route, rcpts, target, "starttls-not-supported")
                raise _Failure(self._session_reply(peer, event))
            elif not isinstance(event, SessionFailed):
                raise _Failure(self._session_reply(peer, event))
            # A refused STARTTLS (454) leaves a usable plaintext session (RFC 3207 section 4).
        elif route.tls_required and not implicit:
            self._tls_failure(route, rcpts, target, "starttls-not-supported")
            if requiretls:
                raise _Failure(_requiretls_refusal(f"{peer} does not offer STARTTLS"))
            raise _Failure(Reply(451, "4.7.10", f"{peer} does not offer STARTTLS, which the "
                                 f"route requires ({route.reason})"))
        tls = self._tls_description(conn, route)
        if tls is not None:
            self._tls_success(route, rcpts, target)
        smarthost = route.smarthost
        if smarthost is not None and smarthost.username and smarthost.password:
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in extensions.auth), None)
            if mechanism is None:
                raise _Failure(Reply(451, "4.7.0", f"{peer} offers no AUTH PLAIN or LOGIN"))
            core.auth(mechanism, smarthost.username, smarthost.password)
            event = await conn.event()
            if not isinstance(event, AuthDone):
                # Our credentials are wrong: a configuration error to fix, never a bounce.
                reply = self._session_reply(peer, event)
                raise _Failure(Reply(451, "4.7.8", f"smarthost authentication failed: "
                                     f"{reply.text}"))
        conn.extensions, conn.tls = extensions, tls

    async def _transaction(
        self, conn: Connection, peer: str, mail_from: str, rcpts: list[str], data: bytes,
        smtputf8: bool, eight_bit: bool, request: Requests,
    ) -> AttemptResult:
        """One mail transaction on a ready session; the caller keeps or ends the session."""
        core, extensions, tls = conn.core, conn.extensions, conn.tls
        conn.uses += 1
        need_utf8 = smtputf8 or _needs_utf8(mail_from) or any(_needs_utf8(r) for r in rcpts)
        refusal = self._refusal(extensions, data, need_utf8, eight_bit, peer)
        if refusal is None and request.requiretls and (tls is None or
                                                       "REQUIRETLS" not in extensions):
            # RFC 8689 section 4.2.1: the next hop must offer REQUIRETLS after STARTTLS, so
            # that it too will relay the message only over verified TLS.
            refusal = _requiretls_refusal(f"{peer} does not offer REQUIRETLS")
        if refusal is not None:
            return AttemptResult([RcptResult(r, refusal, True) for r in rcpts], tls, peer)
        params: list[str] = []
        if extensions.size is not None or "SIZE" in extensions:
            params.append(f"SIZE={len(data)}")  # RFC 1870 section 4
        if eight_bit and "8BITMIME" in extensions:
            params.append("BODY=8BITMIME")  # RFC 6152 section 2
        if request.requiretls:
            params.append("REQUIRETLS")  # RFC 8689 section 4.2.1
        if need_utf8:
            params.append("SMTPUTF8")  # RFC 6531 section 3.4
            wire_from, wire_rcpts = mail_from, rcpts
        else:
            try:
                wire_from = _ascii_address(mail_from)
                wire_rcpts = [_ascii_address(r) for r in rcpts]
            except UnicodeError:
                reply = Reply(553, "5.1.3", "an address domain cannot be encoded as IDNA "
                              "A-labels (RFC 5890)")
                return AttemptResult([RcptResult(r, reply, True) for r in rcpts], tls, peer)
        # RFC 3461 section 5.2: a server that offers DSN gets the requests with the message;
        # one that does not gets none (and we report "relayed" where SUCCESS was asked).
        dsn_ok = "DSN" in extensions
        rcpt_params: list[tuple[str, ...]] = []
        if dsn_ok:
            if request.envelope is not None:
                params.extend(request.envelope.parameters())
            for rcpt in rcpts:
                wanted = request.rcpts.get(rcpt)
                rcpt_params.append(wanted.parameters() if wanted is not None else ())
        core.send_mail(wire_from, wire_rcpts, data, mail_params=tuple(params),
                       rcpt_params=rcpt_params)
        event = await conn.event(self._data_timeout)
        if not isinstance(event, TransactionResult):
            # The connection broke during the transaction: the server may or may not have
            # the message; retry later (a duplicate is better than a loss).
            reply = self._session_reply(peer, event)
            if reply.code // 100 != 4:
                reply = Reply(451, "4.4.2", reply.text)
            return AttemptResult([RcptResult(r, reply, False) for r in rcpts], tls, peer)
        results = []
        for i, rcpt in enumerate(rcpts):
            reply = event.final(i)
            results.append(RcptResult(rcpt, reply, reply.is_permanent))
        return AttemptResult(results, tls, peer, dsn_ok)

    async def _start_tls(self, conn: Connection, target: Target, peer: str, route: Route,
                         rcpts: list[str], context: ssl.SSLContext) -> Extensions:
        if getattr(conn.reader, "_buffer", b""):
            # RFC 3207 section 5 (CVE-2011-0411): plaintext arrived behind the 220 reply.
            raise _Failure(Reply(451, "4.7.0", f"{peer} sent data after its STARTTLS reply"))
        try:
            await asyncio.wait_for(
                conn.writer.start_tls(context, server_hostname=target.host),
                self._command_timeout)
        except ssl.SSLCertVerificationError as exc:
            self._tls_failure(route, rcpts, target, "certificate-host-mismatch"
                              if "hostname" in str(exc).lower() else "validation-failure")
            raise _Failure(Reply(451, "4.7.5", f"{peer}: certificate not valid for "
                                 f"{target.host}: {exc.verify_message}")) from exc
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            if route.tls_required:
                self._tls_failure(route, rcpts, target, "validation-failure")
                raise _Failure(Reply(451, "4.7.5", f"{peer}: TLS handshake failed: {exc}")
                               ) from exc
            # Opportunistic TLS (RFC 7435): try this host again without STARTTLS.
            raise _Failure(Reply(451, "4.7.5", f"{peer}: TLS handshake failed: {exc}"),
                           plaintext_retry=True) from exc
        conn.core.tls_started()
        return await self._ready(conn, peer)

    def _tls_description(self, conn: Connection, route: Route) -> str | None:
        ssl_object = conn.writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return None
        cipher = ssl_object.cipher()
        name = cipher[0] if cipher else "?"
        checked = "verified" if route.tls_required else "unverified"
        return f"{ssl_object.version()} {name} {checked}"

    @staticmethod
    def _refusal(extensions: Extensions, data: bytes, need_utf8: bool, eight_bit: bool,
                 peer: str) -> Reply | None:
        """A permanent local decision made from what the server announced."""
        if need_utf8 and "SMTPUTF8" not in extensions:
            # RFC 6531 section 3.2: never send UTF-8 addresses or headers to a server without
            # SMTPUTF8; X.6.7 (RFC 6531 section 3.5) names the failure.
            return Reply(553, "5.6.7", f"{peer} does not support SMTPUTF8, which this "
                         "message needs (internationalized addresses or headers)")
        if eight_bit and "8BITMIME" not in extensions:
            # RFC 6152 section 3: 8-bit content only to a server announcing 8BITMIME.
            return Reply(554, "5.6.3", f"{peer} does not support 8BITMIME and the message "
                         "has 8-bit content")
        if extensions.size is not None and len(data) > extensions.size:
            # RFC 1870 section 6.1: do not send a message larger than the announced SIZE.
            return Reply(552, "5.3.4", f"message of {len(data)} octets exceeds the "
                         f"{extensions.size} octet limit of {peer}")
        return None

    def _policy(self, route: Route, rcpts: list[str]) -> tuple[str, str]:
        if route.policy_domain:
            return route.policy_domain, "sts"
        return rcpts[0].rpartition("@")[2].lower(), "no-policy-found"

    def _tls_success(self, route: Route, rcpts: list[str], target: Target) -> None:
        if self._tlsrpt is not None and route.kind == "mx":
            domain, policy_type = self._policy(route, rcpts)
            self._tlsrpt.success(domain, policy_type, policy=route.policy_lines,
                                 mx_host=target.host, ip=target.address)

    def _tls_failure(self, route: Route, rcpts: list[str], target: Target,
                     result_type: str) -> None:
        if self._tlsrpt is not None and route.kind == "mx":
            domain, policy_type = self._policy(route, rcpts)
            self._tlsrpt.failure(domain, policy_type, result_type, policy=route.policy_lines,
                                 mx_host=target.host, ip=target.address)
