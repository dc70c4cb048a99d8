"""One IMAP session: the state machine, the dispatch table, and the selected-mailbox updates.

The server feeds parsed commands (``execute``), parse errors (``parse_error``), SASL
continuation lines and IDLE wake-ups; the session answers with bytes to write and an
``Action`` when the server must do something with the connection (TLS, compression, IDLE,
reading a SASL line, closing). Each command family lives in its own module; this module owns
the states in which each command is valid (RFC 9051 section 3, figure in section 3.5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from mailstead.core.errors import (
    AlreadyExists,
    CorruptData,
    DiskFull,
    NotFound,
    StoreError,
)
from mailstead.imap import (
    append,
    auth,
    context_search,
    idle,
    mailboxes,
    messages,
    notify,
    progress,
    quota,
    recent,
    searching,
    uidonly,
)
from mailstead.imap.base import Action, CommandFailed, State
from mailstead.imap.context import IMAPContext, IMAPSettings
from mailstead.imap.names import MailboxNameError
from mailstead.imap.spool import LiteralSpool
from mailstead.observability.log import log_event
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import Command
from mailstead.proto.imap.selected import SelectedView
from mailstead.proto.sasl.mechanisms import SaslServer
from mailstead.storage.interfaces import Account, MailboxWatch

log = logging.getLogger("mailstead.imap")


Handler = Callable[["IMAPSession", Command], Awaitable[None]]

ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
AUTH_ONLY = frozenset({State.AUTHENTICATED})
SELECTED = frozenset({State.SELECTED})

# The dispatch table: command -> (handler, states it is valid in), RFC 9051 section 6.
COMMANDS: dict[str, tuple[Handler, frozenset[State]]] = {
    "CAPABILITY": (auth.capability, ANY),
    "NOOP": (messages.noop, ANY),
    "LOGOUT": (auth.logout, ANY),
    "ID": (auth.id_command, ANY),
    "STARTTLS": (auth.starttls, NOT_AUTH),
    "LOGIN": (auth.login, NOT_AUTH),
    "AUTHENTICATE": (auth.authenticate, NOT_AUTH),
    # RFC 5161 section 3.1: ENABLE is valid in the authenticated state only.
    "ENABLE": (auth.enable, AUTH_ONLY),
    "COMPRESS": (auth.compress, AUTH),
    "SELECT": (mailboxes.select, AUTH),
    "EXAMINE": (mailboxes.select, AUTH),
    "CREATE": (mailboxes.create, AUTH),
    "DELETE": (mailboxes.delete, AUTH),
    "RENAME": (mailboxes.rename, AUTH),
    "SUBSCRIBE": (mailboxes.subscribe, AUTH),
    "UNSUBSCRIBE": (mailboxes.subscribe, AUTH),
    "LIST": (mailboxes.list_command, AUTH),
    "LSUB": (mailboxes.list_command, AUTH),
    "NAMESPACE": (mailboxes.namespace, AUTH),
    "STATUS": (mailboxes.status, AUTH),
    "APPEND": (append.append, AUTH),
    "REPLACE": (append.replace, SELECTED),
    "IDLE": (idle.idle, AUTH),
    "GETQUOTA": (quota.getquota, AUTH),
    "GETQUOTAROOT": (quota.getquotaroot, AUTH),
    "SETQUOTA": (quota.setquota, AUTH),
    "CHECK": (messages.noop, SELECTED),
    "CLOSE": (messages.close, SELECTED),
    "UNSELECT": (messages.unselect, SELECTED),
    "EXPUNGE": (messages.expunge, SELECTED),
    "FETCH": (messages.fetch, SELECTED),
    "STORE": (messages.store, SELECTED),
    "COPY": (messages.copy, SELECTED),
    "MOVE": (messages.copy, SELECTED),
    "SEARCH": (searching.search, SELECTED),
    "SORT": (searching.search, SELECTED),
    "THREAD": (searching.search, SELECTED),
    "CANCELUPDATE": (context_search.cancel_update, SELECTED),
    "NOTIFY": (notify.notify, AUTH),
}

# Output buffered before a long command hands it to the server (see ``flush_output``).
FLUSH_AT = 256 * 1024

# RFC 9051 section 7.5.1 (RFC 3501 section 7.4.1): no EXPUNGE while answering these, unless
# they are the UID variants; SORT and THREAD are searches too (RFC 5256 section 4).
_NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})


class IMAPSession:
    """One client connection's IMAP state, from greeting to LOGOUT."""

    def __init__(
        self,
        ctx: IMAPContext,
        settings: IMAPSettings,
        *,
        client_ip: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.client_ip = client_ip
        self.clock = clock
        self.state = State.NOT_AUTHENTICATED
        self.tls_active = settings.tls_active
        self.compressed = False
        self.account: Account | None = None
        self.view: SelectedView | None = None
        self.watch: MailboxWatch | None = None
        self.enabled: set[str] = set()
        self.sasl = SaslServer(("PLAIN",))
        self.sasl_tag = ""
        self.idle_tag = ""
        self.action = Action.NONE
        self.bad_in_a_row = 0
        self.saved_search: list[int] = []  # RFC 5182 SEARCHRES: UIDs behind "$"
        self.progress = progress.Progress()  # how far the running command is (RFC 9585)
        self.notify: notify.NotifyState | None = None  # RFC 5465 NOTIFY SET, if any
        # RFC 5267 section 4: searches kept up to date (RETURN (UPDATE)), by tag.
        self.search_contexts: dict[str, context_search.SearchContext] = {}
        # Where a long response goes while it is still being produced (the server's send):
        # without one, everything waits for ``execute`` to return.
        self.writer: Callable[[bytes], Awaitable[None]] | None = None
        # The spooled literals of the APPEND or REPLACE being executed, in the order they
        # arrived (the server sets them): MULTIAPPEND and CATENATE send several.
        self.spools: list[LiteralSpool] = []
        self._out: list[bytes] = []

    # ------------------------------------------------------------------ properties

    @property
    def spool(self) -> LiteralSpool | None:
        """The first spooled literal (a plain APPEND has at most one)."""
        return self.spools[0] if self.spools else None

    @spool.setter
    def spool(self, value: LiteralSpool | None) -> None:
        self.spools = [] if value is None else [value]

    @property
    def utf8(self) -> bool:
        """Mailbox names and strings in UTF-8 (RFC 6855 section 3, RFC 9051 section 5.1)."""
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def uidonly(self) -> bool:
        """RFC 9586: no message sequence numbers, either way."""
        return "UIDONLY" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def enable_condstore(self) -> None:
        """RFC 7162 section 3.1: a CONDSTORE-enabling command was used. The first one while
        a mailbox is selected reports its HIGHESTMODSEQ, which the client did not get at
        SELECT (an untagged OK before the command's own responses, as Dovecot does)."""
        first = "CONDSTORE" not in self.enabled
        self.enabled.add("CONDSTORE")
        if self.view is not None:
            self.view.condstore = True
            if first:
                # RFC 7162 section 3.1.2.1: the mod-sequence this session's view is at, so
                # changes not yet reported to it are not skipped by the client.
                self.untagged(f"OK [HIGHESTMODSEQ {self.view.highestmodseq}] Highest")

    @property
    def login_disabled(self) -> bool:
        """RFC 9051 section 6.2.3 LOGINDISABLED: no plaintext passwords before TLS, except
        from this host or a trusted network (``IMAPSettings.plaintext_auth``)."""
        return not (self.tls_active or self.settings.plaintext_auth)

    # ------------------------------------------------------------------ output

    def untagged(self, text: str | bytes) -> None:
        self._out.append(response.untagged(text))

    def raw(self, data: bytes) -> None:
        self._out.append(data)

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        resp_code = f"[{code}]".encode("utf-8", "replace") if code else None
        self._out.append(response.tagged(tag, status, text, resp_code))

    def take_output(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    async def flush_output(self) -> None:
        """Hands the output so far to ``writer`` once it passes FLUSH_AT octets, so that a
        FETCH of a whole mailbox streams in bounded memory (and the client starts reading)
        instead of being joined into one giant bytes object."""
        if self.writer is not None and sum(map(len, self._out)) >= FLUSH_AT:
            await self.writer(self.take_output())

    def greeting(self) -> bytes:
        """The untagged OK greeting with the capabilities (RFC 9051 section 7.1.1)."""
        return (
            f"* OK [CAPABILITY {' '.join(auth.capabilities(self))}] "
            f"{self.settings.hostname} Mailstead IMAP ready\r\n"
        ).encode()

    # ------------------------------------------------------------------ commands

    async def execute(self, cmd: Command) -> bytes:
        """Run one parsed command; returns every byte to send. Never raises for anything the
        client did; store failures become NO [UNAVAILABLE]."""
        self.action = Action.NONE
        entry = COMMANDS.get(cmd.name)
        if entry is None:
            self._bad(cmd.tag, f"Unknown command {cmd.name[:30]}")
            return self.take_output()
        handler, states = entry
        if self.state not in states:
            self._bad(cmd.tag, f"{cmd.name} is not valid in the {self.state.value} state",
                      "CLIENTBUG" if self.state is not State.NOT_AUTHENTICATED else None)
            return self.take_output()
        if self.uidonly and (why := uidonly.refusal(cmd)) is not None:
            # RFC 9586 section 3.1: a command with sequence numbers is BAD [UIDREQUIRED].
            self._bad(cmd.tag, why, "UIDREQUIRED")
            return self.take_output()
        self.progress = progress.Progress()
        try:
            async with progress.reporting(cmd.tag, cmd.name, self.progress,
                                          self.settings.progress_interval, self.writer):
                await handler(self, cmd)
        except CommandFailed as exc:
            if exc.status == "BAD":
                self._bad(cmd.tag, exc.text, exc.code)
                return self.take_output()
            self.tagged(cmd.tag, exc.status, exc.text, exc.code)
        except MailboxNameError as exc:
            self.tagged(cmd.tag, "NO", str(exc), "CANNOT")
        except NotFound:
            self.tagged(cmd.tag, "NO", "No such mailbox", "NONEXISTENT")
        except AlreadyExists:
            self.tagged(cmd.tag, "NO", "Mailbox already exists", "ALREADYEXISTS")
        except CorruptData as exc:  # logged and counted where it was found
            log.error("IMAP %s met damaged stored data: %s", cmd.name, exc)
            # RFC 5530 section 3: SERVERBUG; retrying cannot help until an admin repairs it.
            self.tagged(cmd.tag, "NO", "Stored data is damaged; the administrator has been "
                        "told", "SERVERBUG")
        except DiskFull as exc:  # the store logs it, rate-limited
            log.debug("IMAP %s refused: %s", cmd.name, exc)
            # RFC 5530 section 3: UNAVAILABLE, a temporary failure; the client may retry.
            self.tagged(cmd.tag, "NO", "The server is short of disk space; delete mail or "
                        "try again later", "UNAVAILABLE")
        except StoreError:
            log.exception("store failure in %s", cmd.name)
            self.tagged(cmd.tag, "NO", "Temporary storage failure, try again later",
                        "UNAVAILABLE")
        except Exception:
            log.exception("IMAP %s failed", cmd.name)
            self.tagged(cmd.tag, "NO", "Internal server error", "SERVERBUG")
        self.bad_in_a_row = 0
        return self.take_output()

    def parse_error(
        self, tag: str | None, text: str, status: str = "BAD", code: str | None = None
    ) -> bytes:
        """A command the framer or parser refused: ``tag BAD`` (``* BAD`` without a usable
        tag), or the NO it asked for (``NO [BADCHARSET ...]``, ``NO [TOOBIG]``)."""
        if status == "BAD":
            self._bad(tag or "*", text, code)
        else:
            self.tagged(tag or "*", status, text, code)
        return self.take_output()

    def literal_too_big(self, tag: str | None, limit: int, *, sync: bool) -> bytes:
        """A literal over ``limit``: ``NO [TOOBIG]`` (RFC 7889 section 4). After a
        non-synchronising one the octets are already coming: RFC 7888 section 4 lets the
        server close rather than read them, so ``* BYE`` follows and the session ends."""
        self.tagged(tag or "*", "NO", f"Literal larger than {limit} octets", "TOOBIG")
        if not sync:
            self.untagged("BYE Literal too big, closing the connection")
            self.state = State.LOGOUT
            self.action = Action.CLOSE
            log_event(log, "imap.literal_too_big", client=self.client_ip)
        return self.take_output()

    def _bad(self, tag: str, text: str, code: str | None = None) -> None:
        self.tagged(tag, "BAD", text, code)
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.settings.max_bad_commands:
            self.untagged("BYE Too many invalid commands")
            self.state = State.LOGOUT
            self.action = Action.CLOSE
            log_event(log, "imap.too_many_errors", client=self.client_ip)

    async def finish(self, cmd: Command, text: str, code: str | None = None) -> None:
        """The tagged OK of a successful command, after the untagged updates of changes by
        other sessions (RFC 9051 section 7: any command may carry them)."""
        await self.updates(cmd)
        self.tagged(cmd.tag, "OK", text, code)

    # ------------------------------------------------------------------ updates

    async def updates(self, cmd: Command | None, *, expunge: bool = True) -> None:
        """Untagged EXISTS/EXPUNGE/FETCH for changes by others, before the tagged reply.

        ``cmd`` None means NOOP/IDLE-like points where expunges may always be sent (unless
        ``expunge`` is False: NOTIFY SELECTED-DELAYED between commands).
        """
        view = self.view
        if view is None or self.state is not State.SELECTED:
            return
        allow = expunge and (cmd is None or cmd.uid or cmd.name not in _NO_EXPUNGE_DURING)
        try:
            changes = await self.ctx.store.changes_since(view.mailbox_id, view.highestmodseq)
        except NotFound:
            self.close_mailbox()
            self.untagged("BYE [UNAVAILABLE] The selected mailbox was deleted")
            self.state = State.LOGOUT
            self.action = Action.CLOSE
            return
        before = view.uids[-1] if view.uids else 0
        lines = view.apply(changes, allow_expunge=allow)
        if view.invalid:
            self.close_mailbox()
            self.untagged("BYE [UNAVAILABLE] The selected mailbox was recreated")
            self.state = State.LOGOUT
            self.action = Action.CLOSE
            return
        new = [u for u in view.uids if u > before]
        if new:
            view.add_recent(await recent.of_new(self.ctx.store, view, new, rev2=self.rev2))
            if view.show_recent and not self.rev2:
                lines.append(f"* {len(view.recent)} RECENT\r\n".encode())
        for line in lines:
            self.raw(line)
        await context_search.refresh(self)

    def close_mailbox(self) -> None:
        self.view = None
        context_search.drop_all(self)
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    # ------------------------------------------------------------------ SASL, IDLE, TLS

    async def sasl_continue(self, line: bytes) -> bytes:
        """The client's answer to a ``+`` challenge during AUTHENTICATE."""
        self.action = Action.NONE
        await auth.sasl_step(self, line)
        return self.take_output()

    async def idle_wakeup(self) -> bytes:
        """Mailbox changes while in IDLE (RFC 2177: untagged responses at any time)."""
        if self.notify is None:
            await self.updates(None)
        else:  # the same, with what NOTIFY asks for besides (RFC 5465 section 3)
            await notify.wakeup(self, in_idle=True)
        return self.take_output()

    @property
    def notifying(self) -> bool:
        """NOTIFY SET is active: changes are pushed between commands too (RFC 5465)."""
        return self.notify is not None and self.watch is not None

    async def notify_wakeup(self) -> bytes:
        """The account changed while no command runs: what NOTIFY asks for (RFC 5465)."""
        try:
            await notify.wakeup(self)
        except StoreError:
            log.exception("NOTIFY could not read the changes")
        return self.take_output()

    async def idle_done(self, line: bytes) -> bytes:
        """The line that ends IDLE: ``DONE`` (RFC 2177 section 3), anything else is BAD."""
        self.action = Action.NONE
        tag, self.idle_tag = self.idle_tag, ""
        if line.strip().upper() != b"DONE":
            self._bad(tag, "Expected DONE to end IDLE")
            return self.take_output()
        await self.updates(None)
        self.tagged(tag, "OK", "IDLE terminated")
        return self.take_output()

    def tls_started(self) -> None:
        """STARTTLS finished: capabilities change (RFC 9051 section 6.2.1)."""
        self.tls_active = True

    def timeout(self) -> bytes:
        """The autologout timer fired (RFC 9051 section 5.4)."""
        self.state = State.LOGOUT
        return b"* BYE Autologout; idle for too long\r\n"

    def shutdown(self) -> bytes:
        self.state = State.LOGOUT
        return b"* BYE [UNAVAILABLE] Server shutting down\r\n"

    async def close(self) -> None:
        """The connection is gone: release the account slot and the watch."""
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.account is not None:
            self.ctx.release(self.account.id)
            self.account = None
        self.view = None
