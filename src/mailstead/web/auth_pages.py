"""Sign-in and sign-out: the account password through ``AccountService.login`` (so the web
shares the block list, failure delays and audit of every mail protocol), then a TOTP or
recovery code when two-factor authentication is on. App passwords never open the web pages:
they are for mail programs, and a stolen one must not let anyone turn 2FA off or make more.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailstead.accounts.login import LoginFailure
from mailstead.accounts.service import MAX_ADDRESS
from mailstead.accounts.throttle import network_key
from mailstead.accounts.twofactor import CodeCheck
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import LoginRecord, address_key
from mailstead.web.pagekit import LOGIN_PATH, PageKit
from mailstead.web.security import FormRefused
from mailstead.web.sessions import MAX_CODE_ATTEMPTS, PENDING_TIMEOUT, PendingSignIn, Session

CODE_PATH = "/login/code"
HOME = "/account"
_WRONG = "Wrong address or password."


class AuthPages:
    """The routes of signing in and out."""

    def __init__(self, kit: PageKit) -> None:
        self.kit = kit
        self.web = kit.web

    def routes(self) -> list[Route]:
        # ``saving``: a pending sign-in, a wrong-code count or a shown flash reaches the
        # store (sessions created here are stored complete by ``SessionStore.new``).
        saving = self.kit.saving
        return [
            Route(LOGIN_PATH, saving(self.login_form), methods=["GET"]),
            Route(LOGIN_PATH, saving(self.login), methods=["POST"]),
            Route(CODE_PATH, saving(self.code_form), methods=["GET"]),
            Route(CODE_PATH, saving(self.code), methods=["POST"]),
            Route("/logout", saving(self.logout), methods=["POST"]),
        ]

    def _login_page(self, session: Session, error: str = "", status: int = 200,
                    username: str = "") -> Response:
        return self.kit.render(session, "login.html", status=status, error=error,
                               username=username)

    async def login_form(self, request: Request) -> Response:
        session = await self.kit.anonymous(request)
        if session.account_id is not None:
            return self.kit.redirect(HOME)
        if session.pending is not None:
            return self.kit.redirect(CODE_PATH, session)
        return self._login_page(session)

    async def login(self, request: Request) -> Response:
        session = await self.kit.session_of(request)
        if session is None:
            # No cookie (or an expired one): the form again, with a session made now; said
            # on the page rather than stored as a message, so such posts store nothing.
            fresh = await self.web.sessions.new()
            return self._login_page(fresh, "Your session had expired. Please sign in again.",
                                    400)
        try:
            form = await self.kit.read_form(request, session)
        except FormRefused as exc:
            return self.kit.refuse(exc.status, exc.message, session)
        username = form.get("username").strip()[: MAX_ADDRESS + 1]
        password = form.get("password")
        if not username or not password:
            return self._login_page(session, "Type your address and password.", 400, username)
        result = await self.web.accounts.login(
            username, Secret(password), protocol="web", client_ip=self.kit.client_ip(request),
            mechanism="password",
        )
        if result.temporary:
            return self._login_page(
                session, "Too many failed sign-ins from your network: try again later.",
                429, username,
            )
        if result.ok and result.account is not None:
            if result.app_password_name is not None:
                return self._login_page(
                    session, "App passwords work only in mail programs. Sign in here with "
                    "your account password.", 403, username,
                )
            signed = await self.web.sessions.sign_in(session, result.account.id,
                                                     result.account.address,
                                                     result.account.password_hash)
            return self.kit.redirect(HOME, signed)
        if result.reason is LoginFailure.APP_PASSWORD_REQUIRED:
            # The password was right and 2FA is on: ask for the code, under a new session id.
            account = await self.web.accounts.get_user(username)
            if account is None:  # removed in between
                return self._login_page(session, _WRONG, 403, username)
            session.pending = PendingSignIn(account.id, account.address,
                                            self.web.clock() + PENDING_TIMEOUT)
            return self.kit.redirect(CODE_PATH, await self.web.sessions.renew(session))
        return self._login_page(session, _WRONG, 403, username)

    def _pending(self, session: Session | None) -> PendingSignIn | None:
        if session is None or session.pending is None:
            return None
        if session.pending.until < self.web.clock():
            session.pending = None
            session.flash = "The sign-in took too long. Please start again."
            return None
        return session.pending

    async def code_form(self, request: Request) -> Response:
        session = await self.kit.session_of(request)
        if self._pending(session) is None:
            return self.kit.redirect(LOGIN_PATH, session)
        return self.kit.render(session, "code.html", error="")

    def _audit(self, request: Request, pending: PendingSignIn, ok: bool, reason: str) -> None:
        self.web.accounts.guard.audit(LoginRecord(
            at=self.web.clock(), account_id=pending.account_id, username=pending.address,
            protocol="web", client_ip=self.kit.client_ip(request), mechanism="totp",
            success=ok, reason=reason,
        ))

    async def code(self, request: Request) -> Response:
        session = await self.kit.session_of(request)
        pending = self._pending(session)
        if session is None or pending is None:
            return self.kit.redirect(LOGIN_PATH, session)
        try:
            form = await self.kit.read_form(request, session)
        except FormRefused as exc:
            return self.kit.refuse(exc.status, exc.message, session)
        guard = self.web.accounts.guard
        ip = self.kit.client_ip(request)
        network = network_key(ip)
        trusted = not ip or guard.trusted(ip)
        if not trusted and await guard.blocked(network):
            session.pending = None
            return self._login_page(
                session, "Too many failed sign-ins from your network: try again later.", 429
            )
        user_key = address_key(pending.address)
        # Reserved when it starts, as a password attempt is: parallel code guesses stop at
        # the limit of failures instead of all racing past it.
        place = guard.throttle.begin(network, user_key)
        try:
            if not trusted and not (await guard.admit(network, user_key, place)).allowed:
                session.pending = None
                return self._login_page(
                    session, "Too many failed sign-ins from your network: try again later.",
                    429,
                )
            account = await self.web.store.get_account_by_id(pending.account_id)
            code = form.get("code").strip()[:64]
            check = CodeCheck.WRONG
            if account is not None and code:
                check = await self.web.accounts.check_second_factor(account, code)
            ok = check is CodeCheck.OK
            if not ok and not trusted:  # counted on every node when the store is shared
                await guard.failed(network, user_key)
        finally:
            guard.throttle.end(network, user_key)
        if ok and account is not None:
            self._audit(request, pending, True, "ok")
            signed = await self.web.sessions.sign_in(session, account.id, account.address,
                                                     account.password_hash)
            return self.kit.redirect(HOME, signed)
        self._audit(request, pending, False, "bad_second_factor")
        # A wrong code counted like a wrong password above (the same per-network failure
        # counters and blocks, no delay here), and a few of them send the person back to
        # the password.
        pending.attempts += 1
        if pending.attempts >= MAX_CODE_ATTEMPTS:
            session.pending = None
            session.flash = "Too many wrong codes. Please sign in again."
            return self.kit.redirect(LOGIN_PATH, session)
        if check is CodeCheck.REUSED:
            # RFC 6238 section 5.2: each code opens one sign-in; this one did already.
            error = "This code was already used; wait for the next one."
        else:
            error = "That code is not right. Type the current code."
        return self.kit.render(session, "code.html", status=403, error=error)

    async def logout(self, request: Request) -> Response:
        session = await self.kit.session_of(request)
        if session is None:
            return self.kit.clear_cookie(self.kit.redirect(LOGIN_PATH))
        try:
            await self.kit.read_form(request, session)
        except FormRefused as exc:
            return self.kit.refuse(exc.status, exc.message, session)
        await self.web.sessions.drop(session)
        # Only a signed-in session's sign-out is worth a message (and a stored row).
        fresh = await self.web.sessions.new(
            flash="You are signed out." if session.account_id is not None else "")
        return self.kit.redirect(LOGIN_PATH, fresh)
