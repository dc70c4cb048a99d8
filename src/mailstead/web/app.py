"""The web application (Starlette, ASGI): client autoconfiguration, the Apple profile, the
settings card, and (when ``WebContext.account_web`` is given) the sign-in, self-service and
admin pages. Built by ``create_app`` from the config and the store; no global state.

Every address a request names is answered only for a local domain, and never depending on
whether the account exists, so these public endpoints cannot be used to enumerate accounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from mailstead.config.model import Config
from mailstead.mailauth.stspolicy import POLICY_HOST_PREFIX, POLICY_PATH, our_policy
from mailstead.web import autoconfig, autodiscover, mobileconfig
from mailstead.web.account_pages import AccountPages
from mailstead.web.admin_pages import AdminPages
from mailstead.web.auth_pages import AuthPages
from mailstead.web.card import PROFILE_PATH, render_card_page
from mailstead.web.client_settings import (
    ClientSettings,
    NotAnAddress,
    client_settings,
    parse_client_address,
    web_base_url,
)
from mailstead.web.pagekit import AccountWeb, PageKit
from mailstead.web.pages import Pages, stylesheet
from mailstead.web.security import ASGIApp, WebGuard, redirect_host

# Answers that depend only on the configuration may be cached briefly by clients.
_CACHE_SHORT = "public, max-age=300"


class DomainLookup(TypingProtocol):
    """The one store query the web service needs for now (a subset of storage.Store)."""

    async def is_local_domain(self, name: str) -> bool: ...


@dataclass(frozen=True)
class WebContext:
    """What the routes need: config, store, the listeners' real ports, the profile signer."""

    config: Config
    store: DomainLookup
    bound: Mapping[str, int] = field(default_factory=dict)
    signer: mobileconfig.ProfileSigner | None = None
    account_web: AccountWeb | None = None  # None: no sign-in, account or admin pages


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _one(request: Request, name: str, *, required: bool = True) -> str | None:
    """The single value of query parameter ``name``; a repeated parameter is refused, since
    two values could be checked on one and used on the other."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _BadRequest(400, f"the parameter {name} is given more than once")
    if not values:
        if required:
            raise _BadRequest(400, f"the parameter {name} is missing")
        return None
    return values[0]


class _Routes:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.pages = Pages(ctx.config.hostname)
        self.signer = ctx.signer or mobileconfig.ProfileSigner(
            ctx.config.tls.cert, ctx.config.tls.key
        )
        self.css = stylesheet()

    async def _settings(self, text: str) -> ClientSettings:
        try:
            address, domain = parse_client_address(text)
        except NotAnAddress as exc:
            raise _BadRequest(400, f"not a valid e-mail address: {exc}") from None
        if not await self.ctx.store.is_local_domain(domain):
            raise _BadRequest(404, "this server does not handle mail for that domain")
        return client_settings(self.config, address, self.ctx.bound)

    async def _domain_from_host(self, request: Request) -> ClientSettings:
        """Autoconfig without ``emailaddress``: the domain from the Host the client asked
        (autoconfig.DOMAIN or DOMAIN itself)."""
        host = redirect_host(request.headers.get("host", "").encode("latin-1"), "")
        domain = host.rstrip(".").removeprefix("autoconfig.")
        try:
            _, domain = parse_client_address(f"postmaster@{domain}")
        except NotAnAddress:
            raise _BadRequest(400, "the parameter emailaddress is missing") from None
        if not await self.ctx.store.is_local_domain(domain):
            raise _BadRequest(404, "this server does not handle mail for that domain")
        return client_settings(self.config, "", self.ctx.bound, domain=domain)

    def _base_url(self) -> str | None:
        return web_base_url(self.config, self.ctx.bound)

    async def autoconfig(self, request: Request) -> Response:
        text = _one(request, "emailaddress", required=False)
        settings = await (
            self._settings(text) if text is not None else self._domain_from_host(request)
        )
        return Response(
            autoconfig.autoconfig_xml(settings),
            media_type=autoconfig.CONTENT_TYPE,
            headers={"cache-control": _CACHE_SHORT},
        )

    async def autodiscover_xml(self, request: Request) -> Response:
        body = await request.body()
        try:
            address = autodiscover.parse_pox_request(body)
            settings = await self._settings(address)
        except autodiscover.AutodiscoverError as exc:
            return Response(autodiscover.pox_error(exc), status_code=400,
                            media_type=autodiscover.CONTENT_TYPE)
        except _BadRequest as exc:
            error = autodiscover.AutodiscoverError(exc.message)
            return Response(autodiscover.pox_error(error), status_code=exc.status,
                            media_type=autodiscover.CONTENT_TYPE)
        return Response(autodiscover.pox_response(settings),
                        media_type=autodiscover.CONTENT_TYPE,
                        headers={"cache-control": "no-store"})

    async def autodiscover_json(self, request: Request) -> Response:
        email = request.path_params.get("email") or _one(request, "Email")
        protocol = _one(request, "Protocol")
        try:
            await self._settings(email or "")
        except _BadRequest as exc:
            return JSONResponse(autodiscover.json_error("InvalidUser", exc.message),
                                status_code=exc.status)
        if (protocol or "").lower() != "autodiscoverv1":
            # Exchange answers other protocols (ActiveSync, EWS) with this error.
            return JSONResponse(
                autodiscover.json_error("InvalidProtocol",
                                        f"The given protocol value '{protocol}' is invalid."),
                status_code=400,
            )
        base = self._base_url()
        if base is None:  # cannot happen while we serve this request; kept for mypy
            raise _BadRequest(404, "no web listener")
        return JSONResponse(autodiscover.json_response(f"{base}/autodiscover/autodiscover.xml"))

    async def profile(self, request: Request) -> Response:
        settings = await self._settings(_one(request, "email") or "")
        try:
            plist = mobileconfig.build_profile(settings)
        except mobileconfig.ProfileError as exc:
            raise _BadRequest(404, str(exc)) from None
        signed = self.signer.sign(plist)
        filename = f"{settings.domain}.mobileconfig".replace('"', "")
        return Response(
            signed.data,
            media_type=mobileconfig.CONTENT_TYPE,
            headers={
                "content-disposition": f'attachment; filename="{filename}"',
                "cache-control": "no-store",
            },
        )

    async def setup(self, request: Request) -> Response:
        settings = await self._settings(_one(request, "email") or "")
        html = render_card_page(
            self.pages, self.config, settings,
            base_url=self._base_url(), profile_signed=self.signer.will_sign(),
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def css_file(self, request: Request) -> Response:
        return Response(self.css, media_type="text/css; charset=utf-8",
                        headers={"cache-control": "public, max-age=3600"})

    async def mta_sts(self, request: Request) -> Response:
        """Our MTA-STS policy (RFC 8461 section 3.3: only over HTTPS, only as
        mta-sts.DOMAIN of a local domain, text/plain, no redirects)."""
        host = redirect_host(request.headers.get("host", "").encode("latin-1"), "")
        host = host.rstrip(".")
        domain = host[len(POLICY_HOST_PREFIX):] if host.startswith(POLICY_HOST_PREFIX) else ""
        if not domain or not await self.ctx.store.is_local_domain(domain):
            raise _BadRequest(404, "no MTA-STS policy here: ask mta-sts.DOMAIN of a mail domain")
        return Response(our_policy(self.config), media_type="text/plain",
                        headers={"cache-control": _CACHE_SHORT})

    async def index(self, request: Request) -> Response:
        if self.ctx.account_web is not None:
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse(
            f"Mailstead mail server {self.config.hostname}. Mail settings: /setup?email=ADDRESS\n"
        )


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _BadRequest)
    accepts_html = "text/html" in request.headers.get("accept", "")
    if accepts_html and request.url.path == "/setup":
        pages = Pages(request.app.state.hostname)
        title = "Not found" if exc.status == 404 else "Bad request"
        return HTMLResponse(pages.render("error.html", title=title, message=exc.message),
                            status_code=exc.status)
    return PlainTextResponse(exc.message + "\n", status_code=exc.status)


def create_app(ctx: WebContext, *, listener: str = "https", https: bool = True) -> ASGIApp:
    """The whole web service for one listener, wrapped in ``WebGuard`` (headers, limits,
    request log)."""
    r = _Routes(ctx)
    routes = [
        Route("/", r.index, methods=["GET"]),
        Route("/.well-known/autoconfig/mail/config-v1.1.xml", r.autoconfig, methods=["GET"]),
        Route("/mail/config-v1.1.xml", r.autoconfig, methods=["GET"]),
        Route("/autodiscover/autodiscover.xml", r.autodiscover_xml, methods=["POST"]),
        Route("/Autodiscover/Autodiscover.xml", r.autodiscover_xml, methods=["POST"]),
        Route("/autodiscover/autodiscover.json", r.autodiscover_json, methods=["GET"]),
        Route("/autodiscover/autodiscover.json/v1.0/{email}", r.autodiscover_json,
              methods=["GET"]),
        Route(PROFILE_PATH, r.profile, methods=["GET"]),
        Route("/setup", r.setup, methods=["GET"]),
        Route("/static/mailstead.css", r.css_file, methods=["GET"]),
    ]
    if https:
        routes.append(Route(POLICY_PATH, r.mta_sts, methods=["GET"]))
    if ctx.account_web is not None:
        kit = PageKit(ctx.account_web, r.pages, https=https)
        routes += AuthPages(kit).routes()
        routes += AccountPages(kit, ctx.config, ctx.bound, r.signer).routes()
        routes += AdminPages(kit, ctx.config).routes()
    app = Starlette(routes=routes, exception_handlers={_BadRequest: _bad_request})
    app.state.hostname = ctx.config.hostname
    return WebGuard(app, listener=listener, https=https)
