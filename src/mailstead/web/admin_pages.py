"""The admin pages under /admin: domains with the DNS records to publish, users, aliases,
the outbound queue, blocked networks and recent authentication failures.

Every route is built with ``PageKit.page(..., admin=True)``: the admin flag is read from the
store on every request, so the check happens on the server each time and taking the flag
away takes effect at once. The same services as the CLI do the work.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailstead.accounts.passwords import PasswordRuleError
from mailstead.accounts.security import SecurityError
from mailstead.accounts.service import DEFAULT_QUOTA, AccountError
from mailstead.cli.dns import public_addresses, services_of
from mailstead.config.model import Config
from mailstead.core.errors import AlreadyExists, InUse, NotFound
from mailstead.core.secret import Secret
from mailstead.core.sizes import exact_size, format_size, parse_size
from mailstead.mailauth.records import ZoneSection, domain_records
from mailstead.mailauth.stspolicy import mta_sts_mode, our_policy
from mailstead.storage.interfaces import QueueEntry, Quota
from mailstead.web.account_pages import when
from mailstead.web.pagekit import Handler, PageKit, SignedIn
from mailstead.web.security import Form

PREFIX = "/admin"
MAX_QUEUE_SHOWN = 200  # messages listed on the queue page (the CLI shows them all)
RECENT_FAILURES = 100
_TARGETS = re.compile(r"[\s,]+")
# What the admin forms refuse to act on; the message is shown on the page.
_REFUSED = (AccountError, PasswordRuleError, SecurityError, NotFound, AlreadyExists, InUse)


def _quota(text: str) -> int | None:
    """A quota typed into a form ("2G", "500M", "none"); AccountError when it is not one."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise AccountError(f"quota: {exc}") from None


def _percent(quota: Quota) -> int | None:
    return None if not quota.limit else quota.used * 100 // quota.limit


@dataclass(frozen=True)
class QueuedMessage:
    """The rows of one queued message, for the queue page."""

    queue_id: str
    mail_from: str
    created_at: float
    rows: tuple[QueueEntry, ...]

    @property
    def waiting(self) -> bool:
        """A recipient is still to be delivered: only then is there anything to retry."""
        return any(r.waiting for r in self.rows)


def group_queue(entries: list[QueueEntry], limit: int = MAX_QUEUE_SHOWN) -> list[QueuedMessage]:
    """Queue rows (one per recipient) grouped by message, oldest message first."""
    by_id: dict[str, list[QueueEntry]] = {}
    for entry in entries:
        by_id.setdefault(entry.queue_id, []).append(entry)
    messages = [
        QueuedMessage(qid, rows[0].mail_from, min(r.created_at for r in rows), tuple(rows))
        for qid, rows in by_id.items()
    ]
    messages.sort(key=lambda m: (m.created_at, m.queue_id))
    return messages[:limit]


def ascii_domain(name: str) -> str:
    """The A-label form of a (Unicode) domain, for DNS records (RFC 5890 section 2.3.2.1)."""
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


class AdminPages:
    """The routes under /admin."""

    def __init__(self, kit: PageKit, config: Config) -> None:
        self.kit = kit
        self.web = kit.web
        self.config = config

    def routes(self) -> list[Route]:
        def admin(handler: Handler, multi: frozenset[str] = frozenset()) -> Callable[
            [Request], Awaitable[Response]
        ]:
            return self.kit.page(handler, admin=True, multi=multi)

        return [
            Route(PREFIX, admin(self.index), methods=["GET"]),
            Route(f"{PREFIX}/domains", admin(self.domains), methods=["GET"]),
            Route(f"{PREFIX}/domains", admin(self.domain_add), methods=["POST"]),
            Route(f"{PREFIX}/domains/remove", admin(self.domain_remove), methods=["POST"]),
            Route(f"{PREFIX}/users", admin(self.users), methods=["GET"]),
            Route(f"{PREFIX}/users", admin(self.user_add), methods=["POST"]),
            Route(f"{PREFIX}/users/remove", admin(self.user_remove), methods=["POST"]),
            Route(f"{PREFIX}/users/password", admin(self.user_password), methods=["POST"]),
            Route(f"{PREFIX}/users/admin", admin(self.user_admin), methods=["POST"]),
            Route(f"{PREFIX}/users/quota", admin(self.user_quota), methods=["POST"]),
            Route(f"{PREFIX}/aliases", admin(self.aliases), methods=["GET"]),
            Route(f"{PREFIX}/aliases", admin(self.alias_add), methods=["POST"]),
            Route(f"{PREFIX}/aliases/remove", admin(self.alias_remove), methods=["POST"]),
            Route(f"{PREFIX}/queue", admin(self.queue), methods=["GET"]),
            Route(f"{PREFIX}/queue/retry", admin(self.queue_retry), methods=["POST"]),
            Route(f"{PREFIX}/queue/delete", admin(self.queue_delete), methods=["POST"]),
            Route(f"{PREFIX}/security", admin(self.security), methods=["GET"]),
            Route(f"{PREFIX}/security/unblock", admin(self.unblock), methods=["POST"]),
        ]

    def _done(self, me: SignedIn, where: str, message: str) -> Response:
        me.session.flash = message
        return self.kit.redirect(f"{PREFIX}/{where}", me.session)

    async def index(self, request: Request, me: SignedIn, form: Form) -> Response:
        queue = await self.web.store.list_queue()
        waiting = sum(1 for e in queue if e.waiting)
        return self.kit.render(
            me.session, "admin_index.html", me=me,
            domains=len(await self.web.accounts.list_domains()),
            users=len(await self.web.accounts.list_users()),
            queued=waiting,
            blocked=len(await self.web.accounts.security.blocked()),
        )

    # Domains -----------------------------------------------------------------------------

    async def _records(self, domain: str) -> list[ZoneSection]:
        keys = await self.web.store.dkim_keys(domain)
        return domain_records(
            ascii_domain(domain), self.config.hostname, keys,
            services=services_of(self.config),
            addresses=public_addresses(self.config, []),
            mta_sts_mode=mta_sts_mode(self.config),
            mta_sts_policy_text=our_policy(self.config),
        )

    async def _domains_page(self, me: SignedIn, error: str = "", status: int = 200) -> Response:
        domains = [(d, await self._records(d)) for d in await self.web.accounts.list_domains()]
        return self.kit.render(me.session, "admin_domains.html", status=status, me=me,
                               error=error, domains=domains)

    async def domains(self, request: Request, me: SignedIn, form: Form) -> Response:
        return await self._domains_page(me)

    async def domain_add(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            name = await self.web.accounts.add_domain(form.get("name"))
        except _REFUSED as exc:
            return await self._domains_page(me, str(exc), 400)
        return self._done(me, "domains", f"Added {name}. Publish its DNS records below.")

    async def domain_remove(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            await self.web.accounts.remove_domain(form.get("name"))
        except _REFUSED as exc:
            return await self._domains_page(me, str(exc), 400)
        return self._done(me, "domains", f"Removed {form.get('name').strip()}.")

    # Users -------------------------------------------------------------------------------

    async def _users_page(self, me: SignedIn, error: str = "", status: int = 200) -> Response:
        users = await self.web.accounts.list_users()
        admins = set(await self.web.store.list_admin_ids())
        quotas = {u.id: await self.web.store.get_quota(u.id) for u in users}
        default = self.web.accounts.default_quota
        return self.kit.render(me.session, "admin_users.html", status=status, me=me,
                               error=error, users=users, admins=admins, when=when,
                               quotas=quotas, size=format_size, exact=exact_size, percent=_percent,
                               default_quota="none" if default is None else format_size(default))

    async def users(self, request: Request, me: SignedIn, form: Form) -> Response:
        return await self._users_page(me)

    async def user_add(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            wanted = form.get("quota").strip()
            quota = _quota(wanted) if wanted else DEFAULT_QUOTA
            account = await self.web.accounts.add_user(form.get("address"),
                                                       Secret(form.get("password")), quota)
            if form.get("admin") == "on":
                await self.web.store.set_admin(account.address, True)
        except _REFUSED as exc:
            return await self._users_page(me, str(exc), 400)
        return self._done(me, "users", f"Added {account.address}.")

    async def _target(self, me: SignedIn, form: Form) -> tuple[int, str]:
        """The account a user form names; raises NotFound or AccountError."""
        account = await self.web.accounts.get_user(form.get("address"))
        if account is None:
            raise NotFound(f"no account {form.get('address').strip()[:254]}")
        return account.id, account.address

    async def user_remove(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            ident, address = await self._target(me, form)
            if ident == me.account.id:
                raise AccountError("you cannot remove your own account while signed in")
            await self.web.accounts.remove_user(address)
        except _REFUSED as exc:
            return await self._users_page(me, str(exc), 400)
        await self.web.sessions.drop_account(ident)
        return self._done(me, "users", f"Removed {address} and all its mail.")

    async def user_password(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            ident, address = await self._target(me, form)
            await self.web.accounts.set_password(address, Secret(form.get("password")))
        except _REFUSED as exc:
            return await self._users_page(me, str(exc), 400)
        await self.web.sessions.drop_account(ident, keep=me.session)
        if ident == me.account.id:  # an administrator's own: this session goes on
            await self.kit.restamp(me)
        return self._done(me, "users", f"Set a new password for {address}.")

    async def user_admin(self, request: Request, me: SignedIn, form: Form) -> Response:
        grant = form.get("admin") == "on"
        try:
            ident, address = await self._target(me, form)
            if ident == me.account.id and not grant:
                raise AccountError("you cannot take away your own administrator rights")
            await self.web.store.set_admin(address, grant)
        except _REFUSED as exc:
            return await self._users_page(me, str(exc), 400)
        state = "is now an administrator" if grant else "is no longer an administrator"
        return self._done(me, "users", f"{address} {state}.")

    async def user_quota(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            _ident, address = await self._target(me, form)
            limit = _quota(form.get("quota"))
            await self.web.accounts.set_quota(address, limit)
        except _REFUSED as exc:
            return await self._users_page(me, str(exc), 400)
        shown = "no quota" if limit is None else f"a quota of {format_size(limit)}"
        return self._done(me, "users", f"{address} now has {shown}.")

    # Aliases -----------------------------------------------------------------------------

    async def _aliases_page(self, me: SignedIn, error: str = "", status: int = 200) -> Response:
        return self.kit.render(me.session, "admin_aliases.html", status=status, me=me,
                               error=error, aliases=await self.web.accounts.list_aliases())

    async def aliases(self, request: Request, me: SignedIn, form: Form) -> Response:
        return await self._aliases_page(me)

    async def alias_add(self, request: Request, me: SignedIn, form: Form) -> Response:
        targets = [t for t in _TARGETS.split(form.get("targets")) if t]
        try:
            alias = await self.web.accounts.add_alias(form.get("source"), targets)
        except _REFUSED as exc:
            return await self._aliases_page(me, str(exc), 400)
        return self._done(me, "aliases", f"{alias.source} forwards to {', '.join(alias.targets)}.")

    async def alias_remove(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            await self.web.accounts.remove_alias(form.get("source"))
        except _REFUSED as exc:
            return await self._aliases_page(me, str(exc), 400)
        return self._done(me, "aliases", f"Removed the alias {form.get('source').strip()}.")

    # Outbound queue ----------------------------------------------------------------------

    async def queue(self, request: Request, me: SignedIn, form: Form) -> Response:
        # The same rows as `mailstead queue list` (and `--all` with ?all=1): messages with a
        # recipient still waiting; delivered and bounced ones are history.
        show_all = request.query_params.get("all") == "1"
        entries = await self.web.store.list_queue()
        if not show_all:
            entries = [e for e in entries if e.waiting]
        messages = group_queue(entries)
        return self.kit.render(me.session, "admin_queue.html", me=me, messages=messages,
                               total=len({e.queue_id for e in entries}), when=when,
                               shown=MAX_QUEUE_SHOWN, show_all=show_all)

    async def queue_retry(self, request: Request, me: SignedIn, form: Form) -> Response:
        queue_id = form.get("queue_id").strip()
        count = await self.web.store.retry_queue(queue_id, self.web.clock()) if queue_id else 0
        return self._done(me, "queue", f"{count} recipient(s) of {queue_id} will be retried now."
                          if count else f"{queue_id or 'That message'} has nothing to retry.")

    async def queue_delete(self, request: Request, me: SignedIn, form: Form) -> Response:
        queue_id = form.get("queue_id").strip()
        count = await self.web.store.delete_queue(queue_id) if queue_id else 0
        return self._done(me, "queue", f"Deleted {queue_id} ({count} recipient(s))."
                          if count else f"{queue_id or 'That message'} is not in the queue.")

    # Security ----------------------------------------------------------------------------

    async def _security_page(self, me: SignedIn, error: str = "",
                             status: int = 200) -> Response:
        blocked = await self.web.accounts.security.blocked()
        await self.web.accounts.guard.flush()  # the newest attempts too
        failures = await self.web.store.recent_login_failures(RECENT_FAILURES)
        return self.kit.render(me.session, "admin_security.html", status=status, me=me,
                               error=error, blocked=blocked, failures=failures, when=when)

    async def security(self, request: Request, me: SignedIn, form: Form) -> Response:
        return await self._security_page(me)

    async def unblock(self, request: Request, me: SignedIn, form: Form) -> Response:
        try:
            network = await self.web.accounts.security.unblock(form.get("network"))
        except _REFUSED as exc:
            return await self._security_page(me, str(exc), 400)
        return self._done(me, "security", f"Unblocked {network}.")
