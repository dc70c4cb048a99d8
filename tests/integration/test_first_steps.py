"""What a new administrator reads first: ``init --help``, the settings card ``make run``
prints and the server's ready line tell the same story as the config and the listeners."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

from helpers import DOMAIN, HOSTNAME, Harness, run_cli


def test_init_help_lists_every_port_a_dev_install_gets(tmp_path: Path) -> None:
    run_cli("init", "--data-dir", str(tmp_path / "d"), "--hostname", HOSTNAME, "--domain",
            DOMAIN, "--dev")
    listen = tomllib.loads((tmp_path / "d" / "mailstead.toml").read_text())["listen"]
    assert "managesieve" in listen
    text = " ".join(run_cli("init", "--help").split())
    for name, endpoint in listen.items():
        assert f"{name} {endpoint.rpartition(':')[2]}" in text, (name, text)


def test_the_card_names_the_web_page_for_two_factor_and_app_passwords(tmp_path: Path) -> None:
    data = tmp_path / "d"
    run_cli("init", "--data-dir", str(data), "--hostname", HOSTNAME, "--domain", DOMAIN,
            "--dev")
    run_cli("user", "add", f"demo@{DOMAIN}", "--password-stdin", "--data-dir", str(data),
            stdin="Demo-pass-12345\n")
    card = run_cli("card", f"demo@{DOMAIN}", "--data-dir", str(data))
    port = tomllib.loads((data / "mailstead.toml").read_text())["listen"]["http"]
    assert f"http://{port}/account" in card, card
    assert "two-factor" in card, card
    assert "app passwords" in card, card


def test_the_ready_line_counts_every_listener_printed(server: Harness) -> None:
    printed = [line for line in server.server.stdout_lines if " listening on " in line]
    deadline = time.monotonic() + 10  # the log line follows the printed "ready"
    while not (counted := re.findall(r"server\.ready .*listeners=(\d+)", server.log())):
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
    assert int(counted[0]) == len(printed), (counted, printed)
