"""Self-service pages: the overview with recent sign-ins, changing the password, turning
two-factor authentication on (QR code, secret, confirmation code, recovery codes shown once)
and off, app passwords (created and shown once, listed, revoked) and the settings card.

Secrets never travel in a URL: every action is a POST whose result page is rendered in the
response itself (``no-store``), never behind a redirect that would have to carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailstead.accounts import apppasswords
from mailstead.accounts.login import LoginFailure
from mailstead.accounts.passwords import MAX_LENGTH, PasswordRuleError
from mailstead.accounts.security import SecurityError
from mailstead.accounts.service import AccountError
from mailstead.config.model import Config
from mailstead.core.errors import NotFound
from mailstead.core.secret import Secret
from mailstead.web.card import qr_svg, render_card_page
from mailstead.web.client_settings import client_settings, web_base_url
from mailstead.web.mobileconfig import ProfileSigner
from mailstead.web.pagekit import PageKit, SignedIn
from mailstead.web.security import Form

RECENT_LOGINS = 20


def when(ts: float | None) -> str:
    """A Unix time as people read it in a table (UTC, minutes)."""
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def secret_groups(secret: str) -> str:
    """A base32 secret in groups of four, as authenticator apps let people type it."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


class AccountPages:
    """The routes under /account."""

    def __init__(
        self, kit: PageKit, config: Config, bound: Mapping[str, int], signer: ProfileSigner
    ) -> None:
        self.kit = kit
        self.web = kit.web
        self.config = config
        self.bound = bound  # live: the listeners' ports are filled in as they start
        self.signer = signer

    def routes(self) -> list[Route]:
        page = self.kit.page
        return [
            Route("/account", page(self.overview), methods=["GET"]),
            Route("/account/password", page(self.password_form), methods=["GET"]),
            Route("/account/password", page(self.password), methods=["POST"]),
            Route("/account/2fa", page(self.two_factor), methods=["GET"]),
            Route("/account/2fa/confirm", page(self.two_factor_confirm), methods=["POST"]),
            Route("/account/2fa/disable", page(self.two_factor_disable), methods=["POST"]),
            Route("/account/app-passwords", page(self.app_passwords), methods=["GET"]),
            Route("/account/app-passwords", page(self.app_password_add,
                                                 multi=frozenset({"protocols"})),
                  methods=["POST"]),
            Route("/account/app-passwords/revoke", page(self.app_password_revoke),
                  methods=["POST"]),
            Route("/account/setup", page(self.setup), methods=["GET"]),
        ]

    async def _password_ok(self, request: Request, me: SignedIn, password: str) -> bool:
        """Whether ``password`` is the account password, checked through ``login`` so that
        guessing here is throttled, blocked and audited like anywhere else. An app password
        does not count."""
        if not password or len(password) > MAX_LENGTH:
            return False
        result = await self.web.accounts.login(
            me.account.address, Secret(password), protocol="web",
            client_ip=self.kit.client_ip(request), mechanism="password-check",
        )
        if result.ok:
            return result.app_password_name is None
        return result.reason is LoginFailure.APP_PASSWORD_REQUIRED

    # Overview ----------------------------------------------------------------------------

    async def overview(self, request: Request, me: SignedIn, form: Form) -> Response:
        security = self.web.accounts.security
        enabled, codes_left = await security.two_factor_status(me.account.address)
        apps = await security.list_app_passwords(me.account.address)
        logins = await security.logins(me.account.address, RECENT_LOGINS)
        return self.kit.render(
            me.session, "account.html", me=me, two_factor=enabled, codes_left=codes_left,
            app_count=len(apps), logins=logins, when=when,
        )

    # Password ----------------------------------------------------------------------------

    def _password_page(self, me: SignedIn, error: str = "", status: int = 200) -> Response:
        return self.kit.render(me.session, "password.html", status=status, me=me, error=error)

    async def password_form(self, request: Request, me: SignedIn, form: Form) -> Response:
        return self._password_page(me)

    async def password(self, request: Request, me: SignedIn, form: Form) -> Response:
        new, again = form.get("new"), form.get("again")
        if not await self._password_ok(request, me, form.get("current")):
            return self._password_page(me, "The current password is not right.", 403)
        if new != again:
            return self._password_page(me, "The two new passwords differ.", 400)
        try:
            await self.web.accounts.set_password(me.account.address, Secret(new))
        except (AccountError, PasswordRuleError, NotFound) as exc:
            return self._password_page(me, str(exc), 400)
        # Anyone else signed in with the old password is signed out (on other nodes at
        # their next request); this session goes on with the new one.
        await self.web.sessions.drop_account(me.account.id, keep=me.session)
        await self.kit.restamp(me)
        me.session.flash = "Your password is changed. Other sessions were signed out."
        return self.kit.redirect("/account", me.session)

    # Two-factor authentication -----------------------------------------------------------

    async def _two_factor_page(self, me: SignedIn, error: str = "",
                               status: int = 200) -> Response:
        security = self.web.accounts.security
        enabled, codes_left = await security.two_factor_status(me.account.address)
        setup = None
        if not enabled:
            setup = me.session.setup
            if setup is None or setup.address != me.account.address:
                setup = await security.begin_two_factor(me.account.address)
                me.session.setup = setup  # kept server-side until confirmed
        return self.kit.render(
            me.session, "twofactor.html", status=status, me=me, error=error,
            enabled=enabled, codes_left=codes_left,
            secret=secret_groups(setup.secret) if setup else "",
            qr=qr_svg(setup.uri) if setup else "",
        )

    async def two_factor(self, request: Request, me: SignedIn, form: Form) -> Response:
        return await self._two_factor_page(me)

    async def two_factor_confirm(self, request: Request, me: SignedIn, form: Form) -> Response:
        setup = me.session.setup
        if setup is None or setup.address != me.account.address:
            return await self._two_factor_page(me, "Scan the new code and try again.", 400)
        try:
            codes = await self.web.accounts.security.confirm_two_factor(
                setup, form.get("code")[:64]
            )
        except SecurityError as exc:
            return await self._two_factor_page(me, str(exc), 400)
        me.session.setup = None
        return self.kit.render(me.session, "recovery.html", me=me, codes=codes)

    async def two_factor_disable(self, request: Request, me: SignedIn, form: Form) -> Response:
        if not await self._password_ok(request, me, form.get("password")):
            return await self._two_factor_page(me, "The password is not right.", 403)
        await self.web.accounts.security.disable_two_factor(me.account.address)
        me.session.flash = "Two-factor authentication is off. Your app passwords still work."
        return self.kit.redirect("/account/2fa", me.session)

    # App passwords -----------------------------------------------------------------------

    async def _apps_page(
        self, me: SignedIn, *, error: str = "", status: int = 200,
        created: tuple[str, str] | None = None,
    ) -> Response:
        apps = await self.web.accounts.security.list_app_passwords(me.account.address)
        return self.kit.render(
            me.session, "apppasswords.html", status=status, me=me, error=error, apps=apps,
            created=created, protocols=apppasswords.PROTOCOLS, when=when,
        )

    async def app_passwords(self, request: Request, me: SignedIn, form: Form) -> Response:
        return await self._apps_page(me)

    async def app_password_add(self, request: Request, me: SignedIn, form: Form) -> Response:
        chosen = form.all("protocols")
        if any(p not in apppasswords.PROTOCOLS for p in chosen):
            return await self._apps_page(me, error="Unknown protocol.", status=400)
        # Every box ticked (or none) means every protocol.
        protocols = ",".join(chosen) if 0 < len(chosen) < len(apppasswords.PROTOCOLS) else None
        try:
            app, text = await self.web.accounts.security.add_app_password(
                me.account.address, form.get("name"), protocols
            )
        except SecurityError as exc:
            return await self._apps_page(me, error=str(exc), status=400)
        return await self._apps_page(me, created=(app.name, text))

    async def app_password_revoke(
        self, request: Request, me: SignedIn, form: Form
    ) -> Response:
        name = form.get("name")
        try:
            await self.web.accounts.security.revoke_app_password(me.account.address, name)
        except NotFound:
            return await self._apps_page(me, error="There is no such app password.", status=404)
        me.session.flash = f"The app password “{name.strip()}” is revoked."
        return self.kit.redirect("/account/app-passwords", me.session)

    # Settings card -----------------------------------------------------------------------

    async def setup(self, request: Request, me: SignedIn, form: Form) -> Response:
        settings = client_settings(self.config, me.account.address, self.bound)
        html = render_card_page(
            self.kit.pages, self.config, settings,
            base_url=web_base_url(self.config, self.bound),
            profile_signed=self.signer.will_sign(),
            extra={"me": me, "csrf": me.session.csrf, "flash": me.session.take_flash()},
        )
        return self.kit.render_html(me.session, html)
