"""A web app with the account and admin pages over a real store, for TestClient tests: one
anyio portal runs the store, the services and every request, and the clock is ours. With
``nodes=2`` two apps (two nodes, each with its own services) share the store behind a
round-robin balancer without stickiness."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio.from_thread
import pyotp
from argon2 import PasswordHasher
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send
from webtestlib import make_config

from mailstead.accounts.keys import SecurityKeys
from mailstead.accounts.login import SecuritySettings
from mailstead.accounts.service import AccountService
from mailstead.storage.interfaces import Store
from mailstead.web.app import WebContext, create_app
from mailstead.web.pagekit import AccountWeb
from mailstead.web.security import WebGuard
from mailstead.web.sessions import SessionStore
from storebackends import open_backend

T = TypeVar("T")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE, ALICE_PW = "alice@example.test", "correct horse battery"
ROOT, ROOT_PW = "root@example.test", "staple paper clip"
BASE = "https://mail.example.test"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RoundRobin:
    """A load balancer without sticky routing: each HTTP request goes to the next node;
    ``served`` lists the node of every request so far."""

    def __init__(self, apps: list[WebGuard]) -> None:
        self.apps = apps
        self.served: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = len(self.served) % len(self.apps)
        if scope["type"] == "http":
            self.served.append(node)
        await self.apps[node](scope, receive, send)


@dataclass
class Site:
    client: TestClient
    app: WebGuard
    store: Store
    accounts: AccountService
    sessions: SessionStore
    clock: Clock
    call: Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]
    balancer: RoundRobin | None = None  # with nodes=2

    def run(self, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        result: T = self.call(coro_fn)
        return result

    def sign_in(self, username: str = ALICE, password: str = ALICE_PW) -> Any:
        page = self.client.get("/login")
        return self.client.post("/login", data={
            "csrf": csrf_of(page.text), "username": username, "password": password,
        }, follow_redirects=False)

    def csrf(self, path: str = "/account") -> str:
        return csrf_of(self.client.get(path).text)

    def totp(self, secret: str, offset: float = 0.0) -> str:
        return str(pyotp.TOTP(secret.replace(" ", "")).at(self.clock.now + offset))


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@contextmanager
def site(tmp_path: Path, backend: str = "sqlite", nodes: int = 1) -> Iterator[Site]:
    """The app on https, alice (user) and root (admin) in example.test, over a store of
    ``backend``; with ``nodes`` > 1, that many apps on the one store, requests spread over
    them in turn (``Site.balancer``; ``Site.app``, ``accounts``, ``sessions``: the first)."""
    config = make_config(tmp_path)
    clock = Clock()
    with anyio.from_thread.start_blocking_portal() as portal:
        store = portal.call(open_backend, backend, tmp_path / "data")
        keys = SecurityKeys.load_or_create(tmp_path)  # every node has the same security.key
        services = [
            AccountService(
                store, FAST, clock=clock, keys=keys,
                security=SecuritySettings(max_failures=5, failure_delay=0.0,
                                          max_failure_delay=0.0),
            )
            for _ in range(nodes)
        ]
        try:
            accounts = services[0]
            portal.call(accounts.add_domain, "example.test")
            portal.call(_add_user, accounts, ALICE, ALICE_PW)
            portal.call(_add_user, accounts, ROOT, ROOT_PW)
            portal.call(store.set_admin, ROOT, True)
            apps: list[WebGuard] = []
            node_sessions: list[SessionStore] = []
            for node_accounts in services:
                node_sessions.append(SessionStore(store, keys, clock))
                web = AccountWeb(accounts=node_accounts, store=store,
                                 sessions=node_sessions[-1], clock=clock)
                app = create_app(WebContext(config=config, store=store, account_web=web,
                                            bound={"https": 443}))
                assert isinstance(app, WebGuard)
                apps.append(app)
            balancer = RoundRobin(apps) if nodes > 1 else None
            client = TestClient(balancer or apps[0], base_url=BASE,
                                raise_server_exceptions=True)
            client.portal = portal
            yield Site(client, apps[0], store, accounts, node_sessions[0], clock, portal.call,
                       balancer)
        finally:
            for node_accounts in services:
                portal.call(node_accounts.close)
            portal.call(store.close)


async def _add_user(accounts: AccountService, address: str, password: str) -> None:
    from mailstead.core.secret import Secret

    await accounts.add_user(address, Secret(password))
