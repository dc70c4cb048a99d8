"""Two nodes on one store behind a round-robin load balancer without sticky routing (issue 10):
web sessions live in the store, so a browser stays signed in whichever node answers, a
sign-out on one node ends the session on the other, a 2FA enrolment started on one is
confirmed on the other, and the database holds neither cookie values nor enrolment secrets."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pagestestlib import ALICE, RoundRobin, Site, csrf_of, site

from mailstead.storage.interfaces import Store
from mailstead.storage.postgres.store import PostgresStore
from mailstead.storage.sqlite.store import DB_NAME
from mailstead.web.sessions import COOKIE_HTTPS
from storebackends import BACKENDS


@pytest.fixture(params=BACKENDS)
def two(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    with site(tmp_path, request.param, nodes=2) as built:
        yield built


def _balancer(s: Site) -> RoundRobin:
    assert s.balancer is not None
    return s.balancer


def _secret(html: str) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html)
    assert match, "no secret on the page"
    return match.group(1).replace(" ", "")


def _rows(s: Site, data_dir: Path) -> list[tuple[object, ...]]:
    """Every column of every web_sessions row, read directly from the database."""
    if isinstance(s.store, PostgresStore):
        store: PostgresStore = s.store

        async def fetch() -> list[tuple[object, ...]]:
            async with store.pool.acquire() as conn:
                return [tuple(r) for r in await conn.fetch("SELECT * FROM web_sessions")]

        return s.run(fetch)
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return conn.execute("SELECT * FROM web_sessions").fetchall()
    finally:
        conn.close()


def test_sign_in_form_from_one_node_posted_to_the_other_and_pages_alternate(
    two: Site,
) -> None:
    form = two.client.get("/login")  # node 0 makes the session and its CSRF token
    answer = two.client.post("/login", data={  # node 1 checks it
        "csrf": csrf_of(form.text), "username": ALICE, "password": "correct horse battery",
    }, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/account")
    for _ in range(4):
        page = two.client.get("/account", follow_redirects=False)
        assert page.status_code == 200
        assert ALICE in page.text
    assert _balancer(two).served == [0, 1, 0, 1, 0, 1]
    # A form shown by one node is accepted by the other, and its flash is shown by the next.
    token = two.csrf("/account/password")
    new = "a new long secret"
    done = two.client.post("/account/password", data={
        "csrf": token, "current": "correct horse battery", "new": new, "again": new,
    }, follow_redirects=False)
    assert done.status_code == 303
    shown = two.client.get("/account")
    assert "password is changed" in shown.text
    assert "password is changed" not in two.client.get("/account").text  # shown once


def test_sign_out_on_one_node_ends_the_session_on_the_other(two: Site) -> None:
    assert two.sign_in().status_code == 303
    cookie = two.client.cookies.get(COOKIE_HTTPS)
    assert cookie
    token = two.csrf()
    out = two.client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert out.headers["location"] == "/login"
    logged_out_by = _balancer(two).served[-1]
    # The old cookie (a copy kept by an attacker, or another tab), on the other node.
    two.client.cookies.clear()
    again = two.client.get("/account", headers={"cookie": f"{COOKIE_HTTPS}={cookie}"},
                           follow_redirects=False)
    assert _balancer(two).served[-1] != logged_out_by
    assert (again.status_code, again.headers["location"]) == (303, "/login")
    assert two.run(lambda: two.sessions.get(cookie)) is None


def test_two_factor_enrolment_started_on_one_node_and_confirmed_on_the_other(
    two: Site, tmp_path: Path,
) -> None:
    two.sign_in()
    cookie = two.client.cookies.get(COOKIE_HTTPS)
    assert cookie
    page = two.client.get("/account/2fa")
    secret = _secret(page.text)
    shown_by = _balancer(two).served[-1]
    # While the enrolment waits, the database holds it only encrypted, and no cookie value.
    rows = _rows(two, tmp_path / "data")
    assert len(rows) == 1
    dumped = repr(rows)
    assert cookie not in dumped
    assert secret not in dumped
    assert secret.lower() not in dumped.lower()
    assert '"setup": null' not in dumped  # it is there, encrypted
    done = two.client.post("/account/2fa/confirm", data={
        "csrf": csrf_of(page.text), "code": two.totp(secret)})
    assert _balancer(two).served[-1] != shown_by
    assert done.status_code == 200, done.text
    assert len(re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)) == 10
    assert two.run(lambda: two.accounts.security.two_factor_status(ALICE)) == (True, 10)
    assert cookie not in repr(_rows(two, tmp_path / "data"))


def test_an_enrolment_copied_to_another_row_does_not_decrypt(two: Site, tmp_path: Path) -> None:
    """The encrypted enrolment is bound to its session's key: copied into another session's
    row it is dropped rather than used."""
    two.sign_in()
    _secret(two.client.get("/account/2fa").text)  # stored encrypted in the row
    other = two.run(lambda: two.sessions.new(account_id=1, address=ALICE))
    store: Store = two.store
    (row,) = [r for r in _rows(two, tmp_path / "data") if r[0] != _key_of(other.id)]
    assert '"setup": null' not in str(row[2])  # the enrolment is in it, encrypted

    async def copy() -> None:
        await store.update_web_session(_key_of(other.id), str(row[2]), other.last_seen)

    two.run(copy)
    copied = two.run(lambda: two.sessions.get(other.id))
    assert copied is not None
    assert copied.setup is None  # the page of that session would start a new enrolment


def _key_of(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def test_rows_are_keyed_by_the_cookie_hash(two: Site, tmp_path: Path) -> None:
    two.client.get("/login")
    assert _rows(two, tmp_path / "data") == []  # a sign-in form is stored nowhere
    assert two.sign_in().status_code == 303
    cookie = two.client.cookies.get(COOKIE_HTTPS)
    assert cookie
    (row,) = _rows(two, tmp_path / "data")
    assert row[0] == _key_of(cookie)
    assert cookie not in repr(row)
