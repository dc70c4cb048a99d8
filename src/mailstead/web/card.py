"""The settings card as a web page (``/setup?email=...``): the same settings as ``mailstead
client-setup``, plus a QR code that an iPhone camera opens to install the Apple profile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import segno
from markupsafe import Markup

from mailstead.config.model import Config
from mailstead.web.client_settings import ClientSettings, certificate_info, notes
from mailstead.web.pages import Pages

PROFILE_PATH = "/apple/profile.mobileconfig"


def profile_url(base_url: str, address: str) -> str:
    """The absolute URL of ``address``'s Apple profile on this server."""
    return f"{base_url}{PROFILE_PATH}?{urlencode({'email': address})}"


def qr_svg(url: str) -> Markup:
    """``url`` as an inline SVG QR code (ISO/IEC 18004, error correction level M). segno
    draws only the module pattern, never the URL's text, so the SVG is safe as markup."""
    code = segno.make(url, error="m")
    return Markup(code.svg_inline(scale=4, border=2, dark="#000", light="#fff"))  # noqa: S704


def render_card_page(
    pages: Pages,
    config: Config,
    settings: ClientSettings,
    *,
    base_url: str | None,
    profile_signed: bool,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The HTML card for ``settings``; without a web base URL or IMAP/submission there is no
    profile link, and the page says why. ``extra`` adds template values (the navigation of a
    signed-in person)."""
    url: str | None = None
    missing = ""
    if base_url is None:
        missing = "No web listener is configured, so the profile cannot be downloaded."
    elif settings.preferred("imap") is None or settings.preferred("smtp") is None:
        missing = "IMAP or mail submission is off on this server: no Apple profile."
    else:
        url = profile_url(base_url, settings.address)
    try:
        cert = certificate_info(config.tls.cert)
    except (OSError, ValueError):
        cert = None
    return pages.render(
        "card.html",
        s=settings,
        groups=[
            ("Incoming mail: IMAP (recommended)", settings.imap),
            ("Incoming mail: POP3", settings.pop3),
            ("Outgoing mail: SMTP", settings.smtp),
        ],
        profile_url=url,
        profile_missing=missing,
        profile_signed=profile_signed,
        qr_svg=qr_svg(url) if url else Markup(""),
        notes=notes(config),
        cert=cert,
        **(extra or {}),
    )
