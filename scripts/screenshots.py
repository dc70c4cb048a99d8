"""Screenshots of the web pages for the README: the settings card and the app-password page
at phone (390x844) and desktop (1280x800) widths, written to docs/img/.

Runs a real ``mailstead serve`` with the integration-test harness and drives Debian's headless
Chromium with selenium, exactly as tests/integration/test_web_browser.py does:

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

from helpers import Server, Users, init_data_dir  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from test_web_browser import chromium, wait_for  # noqa: E402

OUT = REPO / "docs" / "img"
ADDRESS, PASSWORD = "alice@example.test", "correct horse battery"
SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
MAX_HEIGHT = 2400


def shoot(browser: WebDriver, name: str, width: int, height: int) -> Path:
    """A screenshot of the whole page (up to MAX_HEIGHT pixels) at ``width`` CSS pixels,
    through the DevTools protocol so the page is laid out exactly at that width."""
    def metrics(h: int) -> None:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # type: ignore[attr-defined]
            "width": width, "height": h, "deviceScaleFactor": 1, "mobile": width < 600})

    metrics(height)
    full = int(browser.execute_script("return document.documentElement.scrollHeight"))
    metrics(min(max(full, height), MAX_HEIGHT))
    path = OUT / f"{name}.png"
    browser.save_screenshot(str(path))
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]
    return path


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mailstead-shots-") as tmp:
        data = Path(tmp) / "data"
        init_data_dir(data, Users(passwords={ADDRESS: PASSWORD}))
        server = Server(data).start(timeout=30)
        browser = chromium(Path(tmp) / "profile")
        try:
            base = f"https://127.0.0.1:{server.ports['https']}"
            browser.get(f"{base}/login")
            browser.find_element(By.ID, "username").send_keys(ADDRESS)
            browser.find_element(By.ID, "password").send_keys(PASSWORD)
            browser.find_element(By.ID, "sign-in").click()
            wait_for(browser, "main h1 .address")
            for name in ("iPhone", "Thunderbird at home", "Work laptop"):
                browser.get(f"{base}/account/app-passwords")
                browser.find_element(By.ID, "app-name").send_keys(name)
                browser.find_element(By.ID, "create-app-password").click()
                wait_for(browser, "#new-app-password")
            for size, (width, height) in SIZES.items():
                browser.get(f"{base}/account/setup")
                wait_for(browser, ".qr svg")
                print(shoot(browser, f"settings-card-{size}", width, height))
            # The page as it looks right after creating a password (shown once).
            for size, (width, height) in SIZES.items():
                browser.get(f"{base}/account/app-passwords")
                browser.find_element(By.ID, "app-name").send_keys(f"Tablet ({size})")
                browser.find_element(By.ID, "create-app-password").click()
                wait_for(browser, "#new-app-password")
                print(shoot(browser, f"app-passwords-{size}", width, height))
        finally:
            browser.quit()
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
