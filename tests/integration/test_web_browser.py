"""End to end in headless Debian Chromium against a real ``mailstead serve``: a user signs in
(over http, redirected to https), turns on two-factor authentication by reading the secret off
the page and typing a TOTP code, creates an app password, and then IMAP accepts that app
password while the account password no longer opens the mailbox.

Chromium and chromium-driver come from Debian (``make test-deps`` installs them): when they
are missing this test FAILS rather than skips, so CI cannot pass without having run it.
"""

from __future__ import annotations

import imaplib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from helpers import HOSTNAME, Server, Users, init_data_dir, tls_context
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

ALICE, ALICE_PW = "alice@example.test", "correct horse battery"
USERS = Users(passwords={ALICE: ALICE_PW})
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # The server's certificate is self-signed for mail.example.test; we connect to 127.0.0.1.
    "--ignore-certificate-errors",
)


def chromium(profile_dir: Path, width: int = 1280, height: int = 800) -> WebDriver:
    """Debian's headless Chromium through chromium-driver, with a fresh profile; fails the
    test with the install command when either is missing."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver: run `make test-deps` "
            "or `apt-get install -y chromium chromium-driver`", pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.set_page_load_timeout(30)
    return browser


def wait_for(browser: WebDriver, css: str, timeout: float = 15) -> WebElement:
    """The element once the page that has it is loaded (a click returns before that)."""
    try:
        element: WebElement = WebDriverWait(browser, timeout).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )
    except TimeoutException:
        pytest.fail(f"no {css} on {browser.current_url}:\n{browser.page_source[:3000]}")
    return element


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("browser") / "data"
    init_data_dir(data, USERS)
    srv = Server(data).start(timeout=30)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_text()[-5000:]
        assert "Traceback" not in srv.log_text(), srv.log_text()[-5000:]


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with tempfile.TemporaryDirectory(prefix="mailstead-chromium-") as profile:
        driver = chromium(Path(profile))
        try:
            yield driver
        finally:
            driver.quit()


def _imap_login(server: Server, password: str) -> bool:
    with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"],
                           ssl_context=tls_context(server.cert_path, HOSTNAME),
                           timeout=15) as imap:
        try:
            imap.login(ALICE, password)
        except imaplib.IMAP4.error:
            return False
        status, _ = imap.select("INBOX")
        return status == "OK"


def test_sign_in_enable_2fa_and_use_an_app_password(server: Server, browser: WebDriver) -> None:
    assert _imap_login(server, ALICE_PW)  # before 2FA the account password works
    https = f"https://127.0.0.1:{server.ports['https']}"

    # Plain http sends the browser to https.
    browser.get(f"http://127.0.0.1:{server.ports['http']}/login")
    assert browser.current_url.startswith(f"{https}/login"), browser.current_url
    browser.find_element(By.ID, "username").send_keys(ALICE)
    browser.find_element(By.ID, "password").send_keys(ALICE_PW)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(browser, "main h1 .address")
    assert browser.current_url == f"{https}/account", browser.page_source[:2000]
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["__Host-mailstead"]
    assert session["httpOnly"]
    assert session["secure"]
    assert session["sameSite"] == "Strict"

    # Turn on two-factor authentication with the secret shown on the page.
    browser.get(f"{https}/account/2fa")
    assert browser.find_element(By.CSS_SELECTOR, ".qr svg")
    secret = browser.find_element(By.ID, "totp-secret").text.replace(" ", "")
    browser.find_element(By.ID, "code").send_keys(pyotp.TOTP(secret).now())
    browser.find_element(By.ID, "enable-2fa").click()
    wait_for(browser, "#recovery-codes")
    codes = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#recovery-codes code")]
    assert len(codes) == 10, browser.page_source[:3000]

    # An app password for the mail program, shown once.
    browser.get(f"{https}/account/app-passwords")
    browser.find_element(By.ID, "app-name").send_keys("Thunderbird")
    browser.find_element(By.ID, "create-app-password").click()
    app_password = wait_for(browser, "#new-app-password").text
    assert len(app_password.replace(" ", "")) == 16, app_password
    assert "Thunderbird" in browser.find_element(By.CSS_SELECTOR, "table.apps").text

    assert _imap_login(server, app_password)
    assert not _imap_login(server, ALICE_PW)  # 2FA on: the account password opens nothing

    # The sign-ins are on the overview; no secret ever went into a URL or the log.
    browser.get(f"{https}/account")
    assert "imap" in browser.find_element(By.TAG_NAME, "table").text
    log = server.log_text()
    for secret_text in (secret, app_password, app_password.replace(" ", ""), ALICE_PW,
                        session["value"], *codes):
        assert secret_text not in log
