"""What the sign-in, account and admin pages share: the session from the cookie, rendering
with the navigation, redirects, and ``PageKit.page``, the one wrapper every signed-in page
goes through, so that the sign-in check, the admin check and the CSRF check of a POST cannot
be forgotten by a single route. ``PageKit.saving`` (inside ``page``, and around the sign-in
routes) writes back to the store whatever a request changed in its session.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailstead.accounts.service import AccountService
from mailstead.storage.interfaces import Account, Store
from mailstead.web.pages import Pages
from mailstead.web.security import Form, FormRefused, parse_form
from mailstead.web.sessions import (
    COOKIE_HTTP,
    COOKIE_HTTPS,
    Session,
    SessionStore,
    credential_stamp,
)

LOGIN_PATH = "/login"
# Where a request keeps the sessions it read (its ASGI scope), for ``PageKit.saving``.
_SCOPE_KEY = "mailstead.sessions"
NO_STORE = {"cache-control": "no-store"}  # pages with personal data stay out of caches


@dataclass(frozen=True)
class AccountWeb:
    """The services behind the account and admin pages (one per process)."""

    accounts: AccountService
    store: Store
    sessions: SessionStore
    clock: Callable[[], float] = field(default=time.time)


@dataclass(frozen=True)
class SignedIn:
    """The person behind a request: their session, account (read afresh for every request)
    and whether they are an administrator now."""

    session: Session
    account: Account
    admin: bool


Handler = Callable[[Request, SignedIn, Form], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class PageKit:
    """Session, rendering and access-control helpers for one listener."""

    def __init__(self, web: AccountWeb, pages: Pages, *, https: bool) -> None:
        self.web = web
        self.pages = pages
        self.https = https
        self.cookie = COOKIE_HTTPS if https else COOKIE_HTTP

    # Sessions and cookies ----------------------------------------------------------------

    async def session_of(self, request: Request) -> Session | None:
        """The live session of the request's cookie, remembered so that ``saving`` stores
        what the handler changes in it."""
        session = await self.web.sessions.get(request.cookies.get(self.cookie))
        if session is not None:
            request.scope.setdefault(_SCOPE_KEY, []).append(session)
        return session

    def saving(self, endpoint: Endpoint) -> Endpoint:
        """Wraps an endpoint so that the sessions it read through ``session_of`` are saved
        after it, when it changed them (a flash shown or set, a 2FA step, a new stamp)."""

        async def saved(request: Request) -> Response:
            response = await endpoint(request)
            for session in request.scope.get(_SCOPE_KEY, []):
                await self.web.sessions.save(session)
            return response

        return saved

    async def restamp(self, me: SignedIn) -> None:
        """After ``me`` changed its own password: this session goes on with the new one."""
        changed = await self.web.store.get_account_by_id(me.account.id)
        if changed is not None:
            me.session.stamp = credential_stamp(changed.password_hash)

    async def anonymous(self, request: Request) -> Session:
        """The request's session, or a new one (for the sign-in form's CSRF token)."""
        return await self.session_of(request) or await self.web.sessions.new()

    @staticmethod
    def client_ip(request: Request) -> str:
        return request.client.host if request.client else ""

    def with_cookie(self, response: Response, session: Session | None) -> Response:
        """Sets the session cookie when the session is new: HttpOnly (no script reads it),
        SameSite=Strict (no cross-site request carries it), Secure on HTTPS; no Max-Age, so
        it ends with the browser, while the server enforces its own expiry."""
        if session is not None and session.fresh:
            response.set_cookie(
                self.cookie, session.id, path="/", secure=self.https, httponly=True,
                samesite="strict",
            )
            session.fresh = False
        return response

    def clear_cookie(self, response: Response) -> Response:
        response.delete_cookie(self.cookie, path="/", secure=self.https, httponly=True,
                               samesite="strict")
        return response

    # Responses ---------------------------------------------------------------------------

    def render(
        self,
        session: Session | None,
        template: str,
        *,
        status: int = 200,
        me: SignedIn | None = None,
        **context: Any,
    ) -> Response:
        """An HTML page with the navigation of ``me`` and the session's CSRF token."""
        html = self.pages.render(
            template,
            me=me,
            csrf=session.csrf if session is not None else "",
            flash=session.take_flash() if session is not None else "",
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=NO_STORE)
        return self.with_cookie(response, session)

    def render_html(self, session: Session | None, html: str, status: int = 200) -> Response:
        """An already rendered page, with the no-store and cookie handling of ``render``."""
        return self.with_cookie(HTMLResponse(html, status_code=status, headers=NO_STORE),
                                session)

    def refuse(
        self, status: int, message: str, session: Session | None = None,
        me: SignedIn | None = None,
    ) -> Response:
        title = {400: "Bad request", 403: "Not allowed", 404: "Not found",
                 415: "Unsupported form", 429: "Too many attempts"}.get(status, "Error")
        return self.render(session, "error.html", status=status, me=me, title=title,
                           message=message)

    def redirect(self, location: str, session: Session | None = None) -> Response:
        """303 See Other: the browser fetches ``location`` with GET after a POST (RFC 9110
        section 15.4.4), so reloading the result page never repeats the action."""
        response = RedirectResponse(location, status_code=303, headers=NO_STORE)
        return self.with_cookie(response, session)

    # Forms and access control ------------------------------------------------------------

    async def read_form(
        self, request: Request, session: Session, multi: frozenset[str] = frozenset()
    ) -> Form:
        """The POSTed form once its CSRF token matches the session's. Raises FormRefused."""
        form = parse_form(request.headers.get("content-type", ""), await request.body(),
                          multi=multi)
        if not session.csrf_ok(form.get("csrf")):
            raise FormRefused(403, "This form's security token is missing or out of date. "
                                   "Reload the page and try again.")
        return form

    def page(
        self, handler: Handler, *, admin: bool = False, multi: frozenset[str] = frozenset()
    ) -> Endpoint:
        """Wraps a page for signed-in people (``admin``: administrators only). Without a
        session a GET goes to the sign-in page and anything else gets 403; a non-admin gets
        403 on an admin page whatever the method; a POST needs the session's CSRF token."""

        async def endpoint(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None or session.account_id is None:
                if request.method in ("GET", "HEAD"):
                    return self.redirect(LOGIN_PATH)
                return self.refuse(403, "Sign in first.")
            account = await self.web.store.get_account_by_id(session.account_id)
            # Removed while signed in, or its password changed since (here, by the CLI or on
            # another node: this check is what makes the change end the session there).
            if account is None or not session.password_unchanged(account.password_hash):
                await self.web.sessions.drop(session)
                return self.clear_cookie(self.redirect(LOGIN_PATH))
            me = SignedIn(session, account, await self.web.store.is_admin(account.id))
            if admin and not me.admin:
                return self.refuse(403, "This page is for administrators.", session, me)
            form = Form({})
            if request.method == "POST":
                try:
                    form = await self.read_form(request, session, multi)
                except FormRefused as exc:
                    return self.refuse(exc.status, exc.message, session, me)
            return await handler(request, me, form)

        return self.saving(endpoint)
