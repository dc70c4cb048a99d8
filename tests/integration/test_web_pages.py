"""The account and admin pages of a real ``mailstead serve`` over HTTPS: a non-admin gets 403
on every admin route (the routes are enumerated from the application itself, so a new one
cannot be missed), a form posted without its CSRF token is refused, and an administrator made
with ``mailstead user add --admin`` (or ``user admin``) gets in."""

from __future__ import annotations

import re
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    HOSTNAME,
    Browser,
    Server,
    ServerError,
    Users,
    init_data_dir,
    make_message,
    rewrite_tables,
    run_cli,
    tls_context,
)
from starlette.routing import Route

from mailstead.config.loader import load_config
from mailstead.web.app import WebContext, create_app
from mailstead.web.security import WebGuard

ALICE, ALICE_PW = "alice@example.test", "correct horse battery"
ROOT, ROOT_PW = "root@example.test", "staple paper clip"
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("webpages") / "data"
    init_data_dir(data, Users(passwords={ALICE: ALICE_PW}))
    run_cli("user", "add", ROOT, "--admin", "--password-stdin", "--data-dir", str(data),
            stdin=ROOT_PW + "\n")
    # Outbound mail goes to a relay that refuses connections: it waits in the queue.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    rewrite_tables(data / "mailstead.toml", {"queue": {"smarthost": {
        "*": {"host": "127.0.0.1", "port": closed, "tls": "none"}}}})
    srv = Server(data).start(timeout=30)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_text()[-5000:]
        assert "Traceback" not in srv.log_text(), srv.log_text()[-5000:]


def _admin_routes(data_dir: Path) -> list[tuple[str, str]]:
    """Every (method, path) under /admin, from an app built like the server's."""
    from mailstead.web.pagekit import AccountWeb
    from mailstead.web.sessions import SessionStore

    unused: Any = object()  # building the routes touches neither the store nor the services
    web = AccountWeb(accounts=unused, store=unused,
                     sessions=SessionStore(unused, unused, lambda: 0.0))
    app = create_app(WebContext(config=load_config(data_dir), store=unused, account_web=web))
    assert isinstance(app, WebGuard)
    routes = [(m, r.path) for r in app.app.routes  # type: ignore[attr-defined]
              if isinstance(r, Route) and r.path.startswith("/admin")
              for m in sorted(r.methods or ()) if m != "HEAD"]
    assert len(routes) >= 15, routes
    return routes


def test_non_admin_gets_403_on_every_admin_route(server: Server) -> None:
    routes = _admin_routes(server.data_dir)
    alice = Browser(server)
    assert alice.sign_in(ALICE, ALICE_PW) == 303
    token = alice.csrf()
    for method, path in routes:
        form = {"csrf": token, "name": "example.test", "address": ALICE, "source": "x@y.test",
                "queue_id": "x", "network": "192.0.2.1", "password": "a long password"}
        status, _, text = alice.request(method, path, form if method == "POST" else None)
        assert status == 403, (method, path, status)
        assert "for administrators" in text
    assert "example.test" in run_cli("domain", "list", "--data-dir", str(server.data_dir))
    # The admin made with `user add --admin` gets every admin page.
    root = Browser(server)
    assert root.sign_in(ROOT, ROOT_PW) == 303
    for method, path in routes:
        if method == "GET":
            status, _, text = root.request("GET", path)
            assert status == 200, (path, text[:500])
    # Taking the flag away with the CLI applies to the running server's next request.
    run_cli("user", "admin", ROOT, "--off", "--data-dir", str(server.data_dir))
    assert root.request("GET", "/admin")[0] == 403
    run_cli("user", "admin", ROOT, "--data-dir", str(server.data_dir))
    assert root.request("GET", "/admin")[0] == 200


def test_forms_without_csrf_token_are_refused(server: Server) -> None:
    alice = Browser(server)
    # The sign-in form itself carries a token.
    alice.csrf("/login")
    status, _, _ = alice.request("POST", "/login", {"username": ALICE, "password": ALICE_PW})
    assert status == 403
    assert alice.sign_in(ALICE, ALICE_PW) == 303
    for path, form in (
        ("/account/app-passwords", {"name": "sneaky"}),
        ("/account/password", {"current": ALICE_PW, "new": "hijacked pass", "again":
                               "hijacked pass"}),
        ("/logout", {}),
    ):
        status, _, text = alice.request("POST", path, form)
        assert status == 403, (path, status)
        assert "security token" in text
    status, _, html = alice.request("GET", "/account/app-passwords")
    assert "sneaky" not in html
    # A cross-site POST with another session's token fails too.
    other = Browser(server)
    foreign = other.csrf("/login")
    status, _, _ = alice.request("POST", "/account/app-passwords",
                                 {"csrf": foreign, "name": "sneaky"})
    assert status == 403
    # The password did not change.
    assert Browser(server).sign_in(ALICE, ALICE_PW) == 303


def _queue_ids_of_page(html: str) -> set[str]:
    return set(re.findall(r"<h2><code>([^<]+)</code></h2>", html))


def _queue_ids_of_cli(server: Server, *extra: str) -> set[str]:
    out = run_cli("queue", "list", *extra, "--data-dir", str(server.data_dir))
    return {line.split()[0] for line in out.splitlines()[1:-1]} if "QUEUE ID" in out else set()


def test_the_queue_page_and_the_cli_show_the_same_queue(server: Server) -> None:
    """One truth: the page lists what `mailstead queue list` lists (messages still waiting),
    and with ?all=1 what `--all` lists; a message with nothing left to deliver offers no
    Retry button."""
    for n in range(2):
        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=15) as smtp:
            smtp.starttls(context=tls_context(server.cert_path, HOSTNAME))
            smtp.login(ROOT, ROOT_PW)
            smtp.sendmail(ROOT, [f"someone{n}@unreachable.test"],
                          make_message(f"queue-page-{n}", sender=ROOT,
                                       to=f"someone{n}@unreachable.test"))
    rows = {line.split()[0] for line in run_cli(
        "queue", "list", "--data-dir", str(server.data_dir)).splitlines()[1:-1]}
    ids = sorted(rows)
    assert len(ids) == 2, rows
    bounced = ids[0]
    deadline = time.monotonic() + 30
    while True:  # not while a delivery attempt has it: the CLI says to try again
        try:
            run_cli("queue", "bounce", bounced, "--data-dir", str(server.data_dir))
            break
        except ServerError as exc:
            if "right now" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    root = Browser(server)
    assert root.sign_in(ROOT, ROOT_PW) == 303
    status, _, page = root.request("GET", "/admin/queue")
    assert status == 200
    assert _queue_ids_of_page(page) == _queue_ids_of_cli(server) == {ids[1]}
    status, _, everything = root.request("GET", "/admin/queue?all=1")
    assert status == 200
    assert _queue_ids_of_page(everything) == _queue_ids_of_cli(server, "--all") >= set(ids)
    section = everything[everything.index(f"<code>{bounced}</code>"):]
    section = section[:section.index("</section>")]
    assert "Retry now" not in section
    assert "Retry now" in page
