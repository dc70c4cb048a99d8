"""App passwords per protocol (issue 9): "managesieve" can be chosen, a password limited to it
opens ManageSieve and nothing else, "web" is never a choice, and ``mailstead app-password
add --protocols managesieve`` creates one."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mailstead.accounts import apppasswords
from mailstead.accounts.keys import SecurityKeys
from mailstead.accounts.login import LoginFailure, LoginResult
from mailstead.accounts.security import SecurityError
from mailstead.accounts.service import AccountService
from mailstead.cli.context import Context
from mailstead.cli.main import main
from mailstead.core.secret import Secret
from storebackends import BACKENDS, open_backend

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
USER = "alice@example.test"
PASSWORD = "alice-Secret-1"


def test_parse_protocols_knows_managesieve_and_never_web() -> None:
    assert "managesieve" in apppasswords.PROTOCOLS
    assert "web" not in apppasswords.PROTOCOLS
    assert apppasswords.parse_protocols("ManageSieve") == ("managesieve",)
    assert apppasswords.parse_protocols("imap, managesieve,imap") == ("imap", "managesieve")
    assert apppasswords.parse_protocols("all") == ()
    with pytest.raises(ValueError, match="never open the web pages"):
        apppasswords.parse_protocols("imap,web")
    with pytest.raises(ValueError, match="unknown protocol 'sieve'"):
        apppasswords.parse_protocols("sieve")


class World:
    def __init__(self, tmp: Path, runner: asyncio.Runner, backend: str) -> None:
        self.runner = runner
        self.store = runner.run(open_backend(backend, tmp))
        self.svc = AccountService(self.store, FAST, keys=SecurityKeys.load_or_create(tmp))
        runner.run(self.svc.add_domain("example.test"))
        runner.run(self.svc.add_user(USER, Secret(PASSWORD)))

    def login(self, password: str, protocol: str) -> LoginResult:
        return self.runner.run(self.svc.login(USER, Secret(password), protocol=protocol,
                                              client_ip="198.51.100.7", mechanism="PLAIN"))


@pytest.fixture(params=BACKENDS)
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    with asyncio.Runner() as runner:
        w = World(tmp_path, runner, request.param)
        try:
            yield w
        finally:
            runner.run(w.svc.close())
            runner.run(w.store.close())


def test_managesieve_only_password_opens_managesieve_only(world: World) -> None:
    app, text = world.runner.run(
        world.svc.security.add_app_password(USER, "Roundcube sieve", "managesieve"))
    assert app.protocols == ("managesieve",)
    result = world.login(text, "managesieve")
    assert result.ok is True
    assert result.app_password_name == "Roundcube sieve"
    for other in ("imap", "pop3", "smtp"):
        refused = world.login(text, other)
        assert refused.ok is False, other
        assert refused.reason is LoginFailure.APP_PASSWORD_WRONG_PROTOCOL, other
        assert refused.detail == "this app password is for ManageSieve only"
    # A web sign-in reports the app password by name, which the web pages refuse (they are
    # checked in tests/unit/web); "web" cannot be granted.
    with pytest.raises(SecurityError, match="never open the web pages"):
        world.runner.run(world.svc.security.add_app_password(USER, "browser", "web"))


def test_password_for_other_protocols_does_not_open_managesieve(world: World) -> None:
    _, text = world.runner.run(world.svc.security.add_app_password(USER, "Phone", "imap,smtp"))
    assert world.login(text, "imap").ok is True
    refused = world.login(text, "managesieve")
    assert refused.reason is LoginFailure.APP_PASSWORD_WRONG_PROTOCOL
    assert refused.detail == "this app password is for IMAP, SMTP only"


def _cli(data_dir: Path, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--data-dir", str(data_dir)], Context(io.StringIO(stdin), out, err, {}))
    return code, out.getvalue(), err.getvalue()


def test_cli_add_accepts_managesieve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    code, _, err = _cli(data, "init", "--hostname", "mail.example.test", "--domain",
                        "example.test", "--dev")
    assert code == 0, err
    path = data / "mailstead.toml"
    text = path.read_text(encoding="utf-8")
    for key, value in (("argon2_time_cost", 1), ("argon2_memory_cost", 8),
                       ("argon2_parallelism", 1)):
        text = re.sub(rf"^# {key} = \d+$", f"{key} = {value}", text, flags=re.M)
    path.write_text(text, encoding="utf-8")
    assert _cli(data, "user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, out, err = _cli(data, "app-password", "add", USER, "--name", "Thunderbird filters",
                          "--protocols", "managesieve")
    assert (code, err) == (0, "")
    assert "(managesieve):" in out
    assert re.search(r"^  [a-z]{4} [a-z]{4} [a-z]{4} [a-z]{4}$", out, re.M)
    code, out, err = _cli(data, "app-password", "list", USER)
    assert code == 0
    assert re.search(r"^Thunderbird filters\s+managesieve\s", out, re.M), out
    code, _, err = _cli(data, "app-password", "add", USER, "--name", "web", "--protocols",
                        "web")
    assert code != 0
    assert "never open the web pages" in err
    code, out, _ = _cli(data, "app-password", "add", "--help")
    assert code == 0
    out += capsys.readouterr().out  # argparse prints the help itself
    assert "imap, pop3, smtp, managesieve" in " ".join(out.split())
