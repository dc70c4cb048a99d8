"""The sign-in, self-service and admin pages through Starlette's TestClient, against a real
store of each backend: sessions and cookies, CSRF, 2FA sign-in, app passwords, and the admin
checks on every admin route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pagestestlib import ALICE, ALICE_PW, ROOT, ROOT_PW, Site, csrf_of, site
from starlette.routing import Route

from mailstead.accounts.throttle import network_key
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import IpBlock, address_key
from mailstead.web.sessions import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT
from storebackends import BACKENDS


@pytest.fixture(params=BACKENDS)
def s(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    with site(tmp_path, request.param) as built:
        yield built


def _secret(html: str) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html)
    assert match, "no secret on the page"
    return match.group(1).replace(" ", "")


def _enable_2fa(s: Site) -> list[str]:
    page = s.client.get("/account/2fa")
    secret = _secret(page.text)
    done = s.client.post("/account/2fa/confirm", data={
        "csrf": csrf_of(page.text), "code": s.totp(secret)})
    assert done.status_code == 200, done.text
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)
    assert len(codes) == 10
    s.enrolled_secret = secret  # type: ignore[attr-defined]
    return codes


def test_sign_in_sets_a_strict_session_cookie_and_rotates_it(s: Site) -> None:
    page = s.client.get("/login")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    before = s.client.cookies.get("__Host-mailstead")
    cookie = page.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "max-age" not in cookie.lower()
    assert "domain=" not in cookie.lower()
    response = s.sign_in()
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    after = s.client.cookies.get("__Host-mailstead")
    assert after
    assert after != before
    overview = s.client.get("/account")
    assert overview.status_code == 200
    assert ALICE in overview.text
    assert "Admin" not in overview.text  # no admin link for a user
    # The cookie value and the CSRF token appear in no URL the page links to.
    assert after not in overview.text
    assert "signed in" in overview.text  # the sign-in itself is in the recent list


def test_wrong_password_and_unknown_user_get_the_same_answer(s: Site) -> None:
    wrong = s.sign_in(ALICE, "not the password")
    nobody = s.sign_in("nobody@example.test", "not the password")
    assert wrong.status_code == nobody.status_code == 403
    assert "Wrong address or password." in wrong.text
    assert "Wrong address or password." in nobody.text
    assert s.client.get("/account", follow_redirects=False).headers["location"] == "/login"


def test_login_shares_the_brute_force_block(s: Site) -> None:
    for _ in range(5):
        assert s.sign_in(ALICE, "wrong password!").status_code == 403
    blocked = s.sign_in()  # even the right password: the network is blocked
    assert blocked.status_code == 429
    assert "try again later" in blocked.text
    assert s.run(lambda: s.accounts.security.blocked())


def test_app_password_does_not_open_the_web(s: Site) -> None:
    _, text = s.run(lambda: s.accounts.security.add_app_password(ALICE, "phone"))
    response = s.sign_in(ALICE, text)
    assert response.status_code == 403
    assert "App passwords work only in mail programs" in response.text
    assert s.client.get("/account", follow_redirects=False).status_code == 303


def test_forms_without_csrf_are_refused(s: Site) -> None:
    page = s.client.get("/login")
    token = csrf_of(page.text)
    bare = s.client.post("/login", data={"username": ALICE, "password": ALICE_PW})
    assert bare.status_code == 403
    wrong = s.client.post("/login", data={"csrf": token[:-2] + "xx", "username": ALICE,
                                          "password": ALICE_PW})
    assert wrong.status_code == 403
    assert s.sign_in().status_code == 303
    before = s.run(lambda: s.accounts.security.list_app_passwords(ALICE))
    refused = s.client.post("/account/app-passwords", data={"name": "laptop"})
    assert refused.status_code == 403
    assert "security token" in refused.text
    assert s.run(lambda: s.accounts.security.list_app_passwords(ALICE)) == before
    # A token from another session does not work either.
    assert s.client.post("/logout", data={"csrf": token}).status_code == 403


def test_hostile_form_bodies_are_refused(s: Site) -> None:
    s.sign_in()
    token = s.csrf()
    cases = [
        ({"content-type": "application/json"}, b'{"csrf": "x"}', 415),
        ({"content-type": "multipart/form-data; boundary=x"}, b"--x--", 415),
        ({"content-type": "application/x-www-form-urlencoded"}, b"\xff\xfe=1", 400),
        ({"content-type": "application/x-www-form-urlencoded"},
         f"csrf={token}&csrf={token}&name=a".encode(), 400),
        ({"content-type": "application/x-www-form-urlencoded"},
         f"csrf={token}&name=%00".encode(), 400),
        ({"content-type": "application/x-www-form-urlencoded"},
         f"csrf={token}&name={'a' * 5000}".encode(), 400),
        ({"content-type": "application/x-www-form-urlencoded"},
         "&".join(f"f{i}=1" for i in range(100)).encode(), 400),
    ]
    for headers, body, status in cases:
        response = s.client.post("/account/app-passwords", content=body, headers=headers)
        assert response.status_code == status, (body[:40], response.text)
    assert s.run(lambda: s.accounts.security.list_app_passwords(ALICE)) == []


def test_two_factor_enrolment_and_sign_in_with_code(s: Site) -> None:
    s.sign_in()
    page = s.client.get("/account/2fa")
    assert "<svg" in page.text
    assert "otpauth" not in page.text.split("<svg")[0][-200:]
    secret = _secret(page.text)
    bad = s.client.post("/account/2fa/confirm", data={"csrf": csrf_of(page.text),
                                                      "code": "000000"})
    assert bad.status_code == 400
    assert s.run(lambda: s.accounts.security.two_factor_status(ALICE)) == (False, 0)
    assert _secret(bad.text) == secret  # the same secret until it is confirmed
    codes = _enable_2fa(s)
    assert s.run(lambda: s.accounts.security.two_factor_status(ALICE)) == (True, 10)
    assert s.client.get("/account/2fa").text.count("Turn two-factor authentication off") == 1
    # Sign out, sign in again: the password alone is not enough.
    s.client.post("/logout", data={"csrf": s.csrf()})
    step = s.sign_in()
    assert step.headers["location"] == "/login/code"
    assert s.client.get("/account", follow_redirects=False).headers["location"] == "/login"
    form = s.client.get("/login/code")
    wrong = s.client.post("/login/code", data={"csrf": csrf_of(form.text), "code": "123456"})
    assert wrong.status_code == 403
    s.clock.now += 30  # the enrolment code is spent; use the next one
    ok = s.client.post("/login/code", data={"csrf": csrf_of(form.text),
                                            "code": s.totp(secret)}, follow_redirects=False)
    assert ok.headers["location"] == "/account"
    assert s.client.get("/account").status_code == 200
    # A recovery code works once.
    s.client.post("/logout", data={"csrf": s.csrf()})
    s.sign_in()
    form = s.client.get("/login/code")
    ok = s.client.post("/login/code", data={"csrf": csrf_of(form.text), "code": codes[0]},
                       follow_redirects=False)
    assert ok.headers["location"] == "/account"
    assert s.run(lambda: s.accounts.security.two_factor_status(ALICE)) == (True, 9)


def test_wrong_codes_send_back_to_the_password_and_count_as_failures(s: Site) -> None:
    s.sign_in()
    _enable_2fa(s)
    s.client.post("/logout", data={"csrf": s.csrf()})
    s.sign_in()
    token = csrf_of(s.client.get("/login/code").text)
    for _ in range(4):
        assert s.client.post("/login/code", data={"csrf": token, "code": "999999"}
                             ).status_code == 403
    last = s.client.post("/login/code", data={"csrf": token, "code": "999999"},
                         follow_redirects=False)
    assert last.headers["location"] == "/login"
    assert s.client.get("/login/code", follow_redirects=False).headers["location"] == "/login"
    # Five wrong codes reached max_failures: the network is now blocked for passwords too.
    assert s.sign_in().status_code == 429


def test_codes_under_way_count_from_their_start(s: Site) -> None:
    s.sign_in()
    codes = _enable_2fa(s)
    s.client.post("/logout", data={"csrf": s.csrf()})
    s.sign_in()
    token = csrf_of(s.client.get("/login/code").text)
    guard = s.accounts.guard
    network, user = network_key("testclient"), address_key(ALICE)
    limit = guard.settings.max_failures
    for _ in range(limit):  # as many code checks of this network under way as the limit
        guard.throttle.begin(network, user)
    try:
        refused = s.client.post("/login/code", data={"csrf": token, "code": codes[0]})
        assert refused.status_code == 429
    finally:
        for _ in range(limit):
            guard.throttle.end(network, user)
    # The refused attempt checked nothing: the recovery code is still unused.
    assert s.run(lambda: s.accounts.security.two_factor_status(ALICE)) == (True, 10)


def test_pending_sign_in_expires(s: Site) -> None:
    s.sign_in()
    _enable_2fa(s)
    s.client.post("/logout", data={"csrf": s.csrf()})
    s.sign_in()
    token = csrf_of(s.client.get("/login/code").text)
    s.clock.now += 301
    late = s.client.post("/login/code", data={"csrf": token, "code": "123456"},
                         follow_redirects=False)
    assert late.headers["location"] == "/login"


def test_disable_two_factor_needs_the_password(s: Site) -> None:
    s.sign_in()
    _enable_2fa(s)
    token = s.csrf("/account/2fa")
    refused = s.client.post("/account/2fa/disable", data={"csrf": token, "password": "nope"})
    assert refused.status_code == 403
    assert s.run(lambda: s.accounts.security.two_factor_status(ALICE))[0] is True
    done = s.client.post("/account/2fa/disable", data={"csrf": token, "password": ALICE_PW})
    assert done.status_code == 200
    assert s.run(lambda: s.accounts.security.two_factor_status(ALICE))[0] is False


def test_app_passwords_created_once_listed_and_revoked(s: Site) -> None:
    s.sign_in()
    token = s.csrf("/account/app-passwords")
    created = s.client.post("/account/app-passwords", data={
        "csrf": token, "name": "Thunderbird <b>", "protocols": ["imap", "smtp"]})
    assert created.status_code == 200
    text = re.search(r'id="new-app-password">([a-z ]+)<', created.text)
    assert text is not None
    assert "Thunderbird &lt;b&gt;" in created.text
    apps = s.run(lambda: s.accounts.security.list_app_passwords(ALICE))
    assert [(a.name, a.protocols) for a in apps] == [("Thunderbird <b>", ("imap", "smtp"))]
    listing = s.client.get("/account/app-passwords").text
    assert text.group(1) not in listing  # shown once only
    result = s.run(lambda: s.accounts.login(ALICE, Secret(text.group(1)), protocol="imap",
                                            client_ip="192.0.2.1", mechanism="PLAIN"))
    assert result.ok
    bad = s.client.post("/account/app-passwords", data={"csrf": token, "name": "x",
                                                        "protocols": "gopher"})
    assert bad.status_code == 400
    revoked = s.client.post("/account/app-passwords/revoke",
                            data={"csrf": token, "name": "Thunderbird <b>"})
    assert revoked.status_code == 200
    assert s.run(lambda: s.accounts.security.list_app_passwords(ALICE)) == []
    missing = s.client.post("/account/app-passwords/revoke", data={"csrf": token, "name": "x"})
    assert missing.status_code == 404


def test_password_change_signs_out_other_sessions(s: Site) -> None:
    s.sign_in()
    other = s.run(lambda: s.sessions.new(account_id=1, address=ALICE))
    token = s.csrf("/account/password")
    new = "new long secret"
    wrong = s.client.post("/account/password", data={
        "csrf": token, "current": "wrong one!", "new": new, "again": new})
    assert wrong.status_code == 403
    differ = s.client.post("/account/password", data={
        "csrf": token, "current": ALICE_PW, "new": "new long secret", "again": "other"})
    assert differ.status_code == 400
    weak = s.client.post("/account/password", data={
        "csrf": token, "current": ALICE_PW, "new": "password", "again": "password"})
    assert weak.status_code == 400
    assert "common" in weak.text
    done = s.client.post("/account/password", data={
        "csrf": token, "current": ALICE_PW, "new": "new long secret", "again": "new long secret"})
    assert done.status_code == 200
    assert "password is changed" in done.text
    assert s.run(lambda: s.sessions.get(other.id)) is None
    assert s.run(lambda: s.accounts.authenticate(ALICE, Secret("new long secret"))) is not None
    assert s.client.get("/account").status_code == 200  # this session goes on


def test_a_password_changed_elsewhere_ends_the_session(s: Site) -> None:
    """A password set outside this process (the CLI, another node on the same database)
    ends the web sessions signed in with the old one at their next request."""
    assert s.sign_in().status_code == 303
    assert s.client.get("/account").status_code == 200
    s.run(lambda: s.accounts.set_password(ALICE, Secret("changed by the CLI")))
    gone = s.client.get("/account", follow_redirects=False)
    assert (gone.status_code, gone.headers["location"]) == (303, "/login")
    assert s.run(s.sessions.count) == 0
    assert s.sign_in(ALICE, "changed by the CLI").status_code == 303
    assert s.client.get("/account").status_code == 200
    # The same password set again is a new hash (a new salt): it ends the session too.
    s.run(lambda: s.accounts.set_password(ALICE, Secret("changed by the CLI")))
    assert s.client.get("/account", follow_redirects=False).status_code == 303


def test_settings_card_page(s: Site) -> None:
    s.sign_in()
    page = s.client.get("/account/setup")
    assert page.status_code == 200
    assert "993" in page.text
    assert "/apple/profile.mobileconfig?email=alice%40" in page.text
    assert "Sign out" in page.text


def test_session_idle_and_absolute_expiry(s: Site) -> None:
    s.sign_in()
    s.clock.now += IDLE_TIMEOUT - 1
    assert s.client.get("/account").status_code == 200
    s.clock.now += IDLE_TIMEOUT + 1
    assert s.client.get("/account", follow_redirects=False).status_code == 303
    s.sign_in()
    for _ in range(int(ABSOLUTE_TIMEOUT // (IDLE_TIMEOUT - 60)) + 1):
        s.clock.now += IDLE_TIMEOUT - 60
        s.client.get("/account", follow_redirects=False)
    assert s.client.get("/account", follow_redirects=False).status_code == 303


def _admin_routes(s: Site) -> list[tuple[str, str]]:
    routes = s.app.app.routes  # type: ignore[attr-defined]
    found = [(m, r.path) for r in routes if isinstance(r, Route) and r.path.startswith("/admin")
             for m in sorted(r.methods or ()) if m != "HEAD"]
    assert len(found) >= 15
    return found


def test_non_admin_gets_403_on_every_admin_route(s: Site) -> None:
    routes = _admin_routes(s)
    # Not signed in: GETs go to the sign-in page, POSTs are refused.
    for method, path in routes:
        response = s.client.request(method, path, follow_redirects=False)
        assert response.status_code in (303, 403), (method, path)
        if method == "GET":
            assert response.headers["location"] == "/login"
    s.sign_in()
    token = s.csrf()
    for method, path in routes:
        data = {"csrf": token, "name": "example.test", "address": ROOT, "source": "x",
                "queue_id": "x", "network": "192.0.2.1", "password": "x" * 12}
        response = s.client.request(method, path, data=data if method == "POST" else None,
                                    follow_redirects=False)
        assert response.status_code == 403, (method, path, response.status_code)
        assert "for administrators" in response.text
    assert s.run(lambda: s.store.list_domains()) == ["example.test"]
    assert s.run(lambda: s.accounts.get_user(ROOT)) is not None


def test_admin_pages_work_for_an_admin(s: Site) -> None:
    assert s.sign_in(ROOT, ROOT_PW).status_code == 303
    assert "/admin" in s.client.get("/account").text
    for method, path in _admin_routes(s):
        if method == "GET":
            assert s.client.get(path).status_code == 200, path
    token = s.csrf("/admin/domains")
    added = s.client.post("/admin/domains", data={"csrf": token, "name": "other.test"})
    assert added.status_code == 200
    assert "other.test" in added.text
    assert "_domainkey" in added.text
    assert "v=spf1" in added.text
    user = s.client.post("/admin/users", data={"csrf": token, "address": "bob@other.test",
                                               "password": "bob's long secret"})
    assert "Added bob@other.test" in user.text
    weak = s.client.post("/admin/users", data={"csrf": token, "address": "eve@other.test",
                                               "password": "short"})
    assert weak.status_code == 400
    reset = s.client.post("/admin/users/password", data={
        "csrf": token, "address": "bob@other.test", "password": "another long one"})
    assert reset.status_code == 200
    assert s.run(lambda: s.accounts.authenticate("bob@other.test", Secret("another long one")))
    promoted = s.client.post("/admin/users/admin", data={
        "csrf": token, "address": "bob@other.test", "admin": "on"})
    assert "is now an administrator" in promoted.text
    selfish = s.client.post("/admin/users/admin", data={"csrf": token, "address": ROOT})
    assert selfish.status_code == 400
    alias = s.client.post("/admin/aliases", data={"csrf": token, "source": "info@other.test",
                                                  "targets": "bob@other.test, x@remote.test"})
    assert "info@other.test forwards to bob@other.test, x@remote.test" in alias.text
    assert s.client.post("/admin/aliases/remove", data={
        "csrf": token, "source": "info@other.test"}).status_code == 200
    in_use = s.client.post("/admin/domains/remove", data={"csrf": token, "name": "other.test"})
    assert in_use.status_code == 400
    assert s.client.post("/admin/users/remove", data={
        "csrf": token, "address": "bob@other.test"}).status_code == 200
    assert s.run(lambda: s.accounts.get_user("bob@other.test")) is None
    assert s.client.post("/admin/users/remove", data={"csrf": token, "address": ROOT}
                         ).status_code == 400


def test_admin_security_unblock_and_failures(s: Site) -> None:
    s.run(lambda: s.store.add_block(IpBlock("198.51.100.7", s.clock.now + 900, 10,
                                            s.clock.now, "10 failed logins")))
    s.sign_in(ALICE, "a wrong password")
    assert s.sign_in(ROOT, ROOT_PW).status_code == 303
    page = s.client.get("/admin/security")
    assert "198.51.100.7" in page.text
    assert ALICE in page.text
    assert "bad credentials" in page.text
    token = csrf_of(page.text)
    done = s.client.post("/admin/security/unblock", data={"csrf": token,
                                                           "network": "198.51.100.7"})
    assert "Unblocked 198.51.100.7" in done.text
    bad = s.client.post("/admin/security/unblock", data={"csrf": token, "network": "junk"})
    assert bad.status_code == 400


def test_admin_flag_is_checked_on_every_request(s: Site) -> None:
    s.run(lambda: s.store.set_admin(ALICE, True))
    s.sign_in()
    assert s.client.get("/admin").status_code == 200
    s.run(lambda: s.store.set_admin(ALICE, False))
    assert s.client.get("/admin").status_code == 403


def test_removed_account_loses_its_session(s: Site) -> None:
    s.sign_in()
    s.run(lambda: s.accounts.remove_user(ALICE))
    gone = s.client.get("/account", follow_redirects=False)
    assert gone.headers["location"] == "/login"


def test_sign_in_pages_store_nothing(s: Site) -> None:
    """Anyone can ask for the sign-in page: showing it (and refusing a post without a
    session) writes no session row, so a flood costs no writes and pushes out nobody."""
    for _ in range(30):
        s.client.cookies.clear()
        assert s.client.get("/login").status_code == 200
    assert s.run(s.sessions.count) == 0
    s.client.cookies.clear()
    bare = s.client.post("/login", data={"username": ALICE, "password": ALICE_PW})
    assert bare.status_code == 400
    assert "session had expired" in bare.text
    assert s.run(s.sessions.count) == 0
    assert s.sign_in().status_code == 303
    assert s.run(s.sessions.count) == 1
