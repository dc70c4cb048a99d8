"""Runs the web application on uvicorn inside the server's own event loop, next to the mail
listeners: our own listening socket (so a bind error is reported like any listener's), the
shared TLS context (so a SIGHUP-reloaded certificate serves new HTTPS connections too), no
signal handlers of uvicorn's (app.py owns SIGTERM/SIGHUP), and a deadline for request headers,
which uvicorn lacks (a client trickling a header byte at a time would hold a connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailstead.accounts.installkey import open_keys
from mailstead.accounts.service import AccountService
from mailstead.config.model import Config, HostPort
from mailstead.core.errors import ConfigError
from mailstead.storage.interfaces import Store
from mailstead.web.app import WebContext, create_app
from mailstead.web.mobileconfig import ProfileSigner
from mailstead.web.pagekit import AccountWeb
from mailstead.web.security import ASGIApp, WebGuard, https_redirect, log_slow_client
from mailstead.web.sessions import SessionStore

log = logging.getLogger("mailstead.web")

# Seconds a connection may take to send a complete request head (line and headers), from
# connect or from the end of the previous response. RFC 9112 section 9.3 lets a server close
# idle connections; 20 s is well above any real client.
HEADER_TIMEOUT = 20.0
KEEPALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection is kept (uvicorn's default)
MAX_HEAD = 16 * 1024  # bytes of request line plus headers (RFC 9110 section 15.5.14: 431/400)
MAX_CONNECTIONS = 1000  # connections and running requests; beyond it uvicorn answers 503


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline."""

    header_timeout = HEADER_TIMEOUT
    listener_name = "http"
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the request head is complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            client = self.client[0] if self.client else ""
            log_slow_client(self.listener_name, client, "request head")
            self.transport.close()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handling: the process's SIGTERM handler (app.py)
    stops every listener together through ``should_exit``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket for ``host``:``port``; raises OSError like create_server."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class WebServer:
    """One HTTP or HTTPS listener serving ``app``; ``start`` binds (OSError on failure),
    ``stop`` lets running requests finish within a grace period."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        app: ASGIApp,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        grace: float = 30.0,
        after_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._after_stop = after_stop
        self.host = host
        self.port = port
        self.bound: tuple[str, int] | None = None
        self._app = app
        self._ssl = ssl_context
        self._max = max_connections
        self._header_timeout = header_timeout
        self._grace = grace
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    def _config(self) -> uvicorn.Config:
        protocol = type(
            "GuardedH11", (_GuardedH11,),
            {"header_timeout": self._header_timeout, "listener_name": self.name},
        )
        shared = self._ssl

        def context(_config: uvicorn.Config, _default: Any) -> ssl.SSLContext:
            assert shared is not None
            return shared  # the live context app.py reloads on SIGHUP

        return uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,  # WebGuard logs one structured line per request instead
            server_header=False,
            proxy_headers=False,  # no proxy is trusted: the peer address is the client
            http=protocol,
            ws="none",
            limit_concurrency=self._max,
            timeout_keep_alive=KEEPALIVE_TIMEOUT,
            timeout_graceful_shutdown=max(1, int(self._grace)),
            h11_max_incomplete_event_size=MAX_HEAD,
            ssl_context_factory=context if shared is not None else None,
        )

    async def start(self) -> None:
        sock = _bind(self.host, self.port)
        name = sock.getsockname()
        self.bound = (str(name[0]), int(name[1]))
        # uvicorn logs its start-up chatter at INFO; our own lines say what matters.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        server = _EmbeddedServer(self._config())
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                sock.close()
                exc = self._task.exception()
                raise OSError(f"the {self.name} server did not start: {exc}")
            await asyncio.sleep(0.01)

    def stop_accepting(self) -> None:
        """Closes the listening socket at once (a newcomer is refused, as on the mail ports)
        and asks uvicorn to stop, which ends idle connections and lets running requests end."""
        if self._server is not None:
            for server in self._server.servers:
                server.close()
            self._server.should_exit = True

    async def wait_stopped(self, timeout: float) -> None:
        """Waits for the shutdown started by ``stop_accepting``; cancels it after ``timeout``."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:
            log.exception("the %s server failed while stopping", self.name)
        if self._after_stop is not None:
            done, self._after_stop = self._after_stop, None
            try:
                await done()
            except Exception:
                log.exception("the %s server failed to finish its work on stop", self.name)


async def start_web(
    config: Config,
    store: Store,
    tls: ssl.SSLContext,
    bound: dict[str, int],
    servers: list[WebServer],
    *,
    grace: float = 30.0,
    accounts: AccountService | None = None,
) -> None:
    """Starts ``listen.https`` then ``listen.http``, appending each to ``servers`` once it
    listens (so the caller stops whatever started, even when a later one fails) and recording
    its port in ``bound``, which the apps read per request. With both on, HTTP only redirects
    to HTTPS. Raises ConfigError when a port cannot be bound.

    ``accounts`` should be the process's one AccountService, so that web sign-ins share the
    in-memory failure counters of the mail protocols; without it the web makes its own
    (blocks are shared through the store either way) and writes its audit rows on stop."""
    signer = ProfileSigner(config.tls.cert, config.tls.key)
    after_stop: Callable[[], Awaitable[None]] | None = None
    if accounts is None:
        accounts = await AccountService.open(store, config)
        after_stop = accounts.close
    # Sessions live in the store, so every node serves every browser; the enrolment secrets
    # in them are encrypted with the security.key every node shares.
    keys = accounts.keys
    if keys is None:
        keys = await open_keys(store, Path(config.data_dir))
    web = AccountWeb(accounts=accounts, store=store,
                     sessions=SessionStore(store, keys, time.time))
    ctx = WebContext(config=config, store=store, bound=bound, signer=signer, account_web=web)
    for name in ("https", "http"):
        endpoint: HostPort | None = getattr(config.listen, name)
        if endpoint is None:
            continue
        https = name == "https"
        app: ASGIApp
        if not https and "https" in bound:
            app = WebGuard(https_redirect(bound["https"], config.hostname),
                           listener=name, https=False)
        else:
            app = create_app(ctx, listener=name, https=https)
        server = WebServer(name, endpoint.host, endpoint.port, app,
                           ssl_context=tls if https else None, grace=grace,
                           after_stop=after_stop)
        after_stop = None  # once, with the first server
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {endpoint} for {name}: {exc.strerror or exc}; "
                f"change [listen] {name} or free the port"
            ) from exc
        servers.append(server)
        assert server.bound is not None
        bound[name] = server.bound[1]
