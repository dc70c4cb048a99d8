"""The settings card: what a person types into a mail client to use an account.

Built from the configured listeners and hostname, so it is true for this installation; for a
loopback (``--dev``) install it names the loopback address because the .test hostname does
not resolve.
"""

from __future__ import annotations

import ipaddress
import textwrap

from mailstead.config.model import Config, HostPort
from mailstead.core.certs import certificate_fingerprint

_WILDCARDS = ("0.0.0.0", "::")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _server(config: Config, endpoint: HostPort) -> str:
    """The name a client should connect to for ``endpoint``."""
    if _is_loopback(endpoint.host):
        return endpoint.host
    return config.hostname


def _lines(config: Config, title: str, options: list[tuple[HostPort | None, str]]) -> list[str]:
    enabled = [(ep, sec) for ep, sec in options if ep is not None]
    if not enabled:
        return []
    out = [title]
    for endpoint, security in enabled:
        assert endpoint is not None
        port = "(any free port)" if endpoint.port == 0 else str(endpoint.port)
        out.append(
            f"  Server: {_server(config, endpoint):<24} Port: {port:<6} Security: {security}"
        )
    return [*out, ""]


def render_card(config: Config, address: str, password: str | None = None) -> str:
    """The card for ``address``; ``password`` is shown when given (the demo account),
    otherwise the card says to use the password that was set."""
    listen = config.listen
    out = [
        f"Mail client settings for {address}",
        "",
        f"  Username: {address}   (always the full address)",
        f"  Password: {password if password is not None else '(the one you set)'}",
        "",
    ]
    out += _lines(
        config,
        "Incoming mail: IMAP (recommended; keeps mail on the server)",
        [(listen.imaps, "SSL/TLS"), (listen.imap, "STARTTLS")],
    )
    out += _lines(
        config,
        "Incoming mail: POP3 (downloads mail to one device)",
        [(listen.pop3s, "SSL/TLS"), (listen.pop3, "STARTTLS")],
    )
    outgoing = _lines(
        config,
        "Outgoing mail: SMTP (authentication: normal password, same username and password)",
        [(listen.submissions, "SSL/TLS"), (listen.submission, "STARTTLS")],
    )
    out += outgoing or ["Outgoing mail: no submission listener is configured", ""]
    notes: list[str] = []
    endpoints = [ep for _, ep in listen.items()]
    if any(_is_loopback(ep.host) for ep in endpoints):
        notes.append(
            f"This server listens on loopback only: use 127.0.0.1 as the server name "
            f"({config.hostname} is not in public DNS)."
        )
    if any(ep.host in _WILDCARDS for ep in endpoints):
        notes.append(f"{config.hostname} must resolve to this server (DNS A/AAAA records).")
    default_cert = config.data_dir / "tls" / "cert.pem"
    fingerprint: str | None = None
    if config.tls.cert == default_cert:
        notes.append(
            "The certificate is self-signed (made by mailstead init): your mail client will "
            "warn once; accept it only if its SHA-256 fingerprint is the one below."
        )
        try:
            fingerprint = certificate_fingerprint(default_cert)
        except (OSError, ValueError):
            fingerprint = "(the certificate file cannot be read right now)"
    if notes:
        out.append("Notes")
        for note in notes:
            out += textwrap.wrap(note, 88, initial_indent="  - ", subsequent_indent="    ")
        if fingerprint is not None:
            out.append(f"    {fingerprint}")
    return "\n".join(out).rstrip("\n") + "\n"
