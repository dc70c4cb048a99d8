"""The composition root: config -> storage -> services -> servers. The only module that knows
every part (DESIGN.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from dataclasses import dataclass

from mailstead.accounts.service import AccountService
from mailstead.config import Config, HostPort
from mailstead.core.errors import ConfigError
from mailstead.delivery.service import DeliveryService
from mailstead.imap.context import IMAPContext
from mailstead.observability.log import log_event, setup_logging
from mailstead.servers.imap import IMAPListenerSettings, IMAPServer
from mailstead.servers.listener import Listener, make_tls_context
from mailstead.servers.pop3 import Maildrops, POP3ListenerSettings, POP3Server
from mailstead.servers.smtp import SMTPListenerSettings, SMTPServer
from mailstead.storage import open_store

log = logging.getLogger("mailstead.app")

# How long a stopping server lets busy sessions finish their transaction (SIGTERM).
SHUTDOWN_GRACE = 30.0

# Listeners of later issues: configured ones are reported, not silently ignored.
_NOT_YET = ("http", "https")


@dataclass(frozen=True, slots=True)
class _SMTPPort:
    name: str
    submission: bool
    implicit_tls: bool


_SMTP_PORTS = (
    _SMTPPort("smtp", submission=False, implicit_tls=False),
    _SMTPPort("submission", submission=True, implicit_tls=False),
    _SMTPPort("submissions", submission=True, implicit_tls=True),
)


def _load_tls(config: Config) -> ssl.SSLContext:
    try:
        return make_tls_context(config.tls.cert, config.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {config.tls.cert} / key {config.tls.key}: {exc}; "
            "fix [tls] cert and key in the config file"
        ) from exc


async def run(config: Config) -> None:
    """Starts every configured listener and serves until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    tls = _load_tls(config)
    store = await open_store(config.data_dir)
    stopping = asyncio.Event()
    listeners: list[Listener] = []
    try:
        accounts = AccountService(store)
        delivery = DeliveryService(store, config.hostname)
        for port in _SMTP_PORTS:
            address: HostPort | None = getattr(config.listen, port.name)
            if address is None:
                continue
            server = SMTPServer(
                SMTPListenerSettings(
                    name=port.name,
                    hostname=config.hostname,
                    submission=port.submission,
                    implicit_tls=port.implicit_tls,
                    max_message_size=config.smtp.max_message_size,
                    max_recipients=config.smtp.max_recipients,
                    max_errors=config.smtp.max_errors,
                    idle_timeout=config.smtp.idle_timeout,
                ),
                delivery,
                accounts,
                tls,
                stopping,
            )
            listeners.append(Listener(
                port.name, address.host, address.port, server.session,
                ssl_context=tls if port.implicit_tls else None,
                max_connections=config.smtp.max_connections,
                max_connections_per_ip=config.smtp.max_connections_per_ip,
                refuse=server.refusal,
            ))
        # POP3 (issue 4): 110 with STLS, 995 with implicit TLS; both share one Maildrops,
        # whose per-account lock makes a second session on either port get [IN-USE].
        maildrops = Maildrops(store)
        for name, implicit in (("pop3", False), ("pop3s", True)):
            address = getattr(config.listen, name)
            if address is None:
                continue
            pop3 = POP3Server(
                POP3ListenerSettings(
                    name=name,
                    hostname=config.hostname,
                    implicit_tls=implicit,
                    max_errors=config.pop3.max_errors,
                    idle_timeout=config.pop3.idle_timeout,
                    auth_failure_delay=config.pop3.auth_failure_delay,
                ),
                maildrops, accounts, tls, stopping,
            )
            listeners.append(Listener(
                name, address.host, address.port, pop3.session,
                ssl_context=tls if implicit else None,
                max_connections=config.pop3.max_connections,
                max_connections_per_ip=config.pop3.max_connections_per_ip,
                refuse=pop3.refusal,
            ))
        # IMAP (issue 3): 143 with STARTTLS, 993 with implicit TLS; one IMAPContext shares
        # \Recent bookkeeping and per-account session counts between both ports.
        imap_ctx = IMAPContext(store, accounts)
        for name, implicit in (("imap", False), ("imaps", True)):
            address = getattr(config.listen, name)
            if address is None:
                continue
            imap = IMAPServer(
                IMAPListenerSettings(
                    name=name,
                    hostname=config.hostname,
                    implicit_tls=implicit,
                    max_message_size=config.imap.max_literal or config.smtp.max_message_size,
                    max_bad_commands=config.imap.max_bad_commands,
                    max_connections_per_account=config.imap.max_connections_per_account,
                    idle_timeout=config.imap.idle_timeout,
                ),
                imap_ctx, tls, stopping,
            )
            listeners.append(Listener(
                name, address.host, address.port, imap.session,
                ssl_context=tls if implicit else None,
                max_connections=config.imap.max_connections,
                max_connections_per_ip=config.imap.max_connections_per_ip,
                refuse=imap.refusal,
            ))
        for name in _NOT_YET:
            if getattr(config.listen, name) is not None:
                log_event(log, "listener.not_implemented", listener=name,
                          note="this version does not serve it yet")
        for listener in listeners:
            try:
                await listener.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {listener.host}:{listener.port} for {listener.name}: "
                    f"{exc.strerror or exc}; change [listen] {listener.name} or free the port"
                ) from exc
            assert listener.bound is not None
            host, port_no = listener.bound
            shown = f"[{host}]" if ":" in host else host
            print(f"mailstead: {listener.name} listening on {shown}:{port_no}", flush=True)

        stop = asyncio.Event()

        def _reload() -> None:
            # Check the pair in a scratch context first: a failed load_cert_chain on the live
            # context can leave it with the new certificate and no key, and then no handshake
            # succeeds. Listeners keep the live context, so the good pair is loaded into it.
            try:
                make_tls_context(config.tls.cert, config.tls.key)
                tls.load_cert_chain(str(config.tls.cert), str(config.tls.key))
                log_event(log, "tls.reloaded", cert=str(config.tls.cert))
            except (OSError, ssl.SSLError) as exc:
                log_event(log, "tls.reload_failed", cert=str(config.tls.cert), error=str(exc),
                          note="still serving the previous certificate")

        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload)
        print("mailstead: ready", flush=True)
        log_event(log, "server.ready", hostname=config.hostname, listeners=len(listeners))
        await stop.wait()
        log_event(log, "server.stopping")
        stopping.set()
        for listener in listeners:
            listener.stop_accepting()
        await asyncio.gather(*(lst.wait_sessions(SHUTDOWN_GRACE) for lst in listeners))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        for listener in listeners:
            listener.stop_accepting()
        await store.close()
        log_event(log, "server.stopped")


def serve(config: Config) -> int:
    """Runs the server in this process (uvloop when installed); returns the exit code."""
    setup_logging(config.log.level)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run(config))
    except ConfigError as exc:
        print(f"mailstead: {exc}", file=sys.stderr)
        return 1
    return 0
