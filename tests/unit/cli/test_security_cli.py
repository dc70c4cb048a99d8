"""``user 2fa``, ``user logins``, ``app-password`` and ``security`` run in-process against the
real store of a temporary data directory."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pyotp
import pytest

from mailstead.accounts.keys import SecurityKeys
from mailstead.accounts.service import AccountService
from mailstead.cli.context import Context
from mailstead.cli.main import main
from mailstead.config import load_config
from mailstead.core.secret import Secret
from mailstead.storage import open_store
from mailstead.storage.interfaces import IpBlock, Store

T = TypeVar("T")
USER = "alice@demo.test"


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        ctx = Context(io.StringIO(stdin), out, err, {})
        code = main([*argv, "--data-dir", str(self.data_dir)], ctx)
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str, stdin: str = "") -> str:
        code, out, err = self(*argv, stdin=stdin)
        assert (code, err) == (0, ""), (code, out, err)
        return out

    def query(self, read: Callable[[Store], Awaitable[T]]) -> T:
        async def go() -> T:
            store = await open_store(self.data_dir)
            try:
                return await read(store)
            finally:
                await store.close()

        return asyncio.run(go())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path / "data")
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(io.StringIO(), out, err, {})
    assert main(["init", "--data-dir", str(c.data_dir), "--hostname", "mail.demo.test",
                 "--domain", "demo.test", "--dev"], ctx) == 0, err.getvalue()
    path = c.data_dir / "mailstead.toml"
    text = path.read_text(encoding="utf-8")
    for key, value in (("argon2_time_cost", 1), ("argon2_memory_cost", 8),
                       ("argon2_parallelism", 1)):
        text, n = re.subn(rf"^# {key} = \d+$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    path.write_text(text, encoding="utf-8")
    c.ok("user", "add", USER, "--password-stdin", stdin="alice-Secret-1\n")
    return c


def _enable(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """Run ``user 2fa enable``; the secret is fixed first so the test can answer the prompt."""
    secret = pyotp.random_base32(32)
    monkeypatch.setattr(pyotp, "random_base32", lambda length=32, chars=None: secret)
    out = cli.ok("user", "2fa", "enable", USER, stdin=pyotp.TOTP(secret).now() + "\n")
    assert f"secret: {secret}" in out
    return out, re.findall(r"^  ([a-z2-9]{5}-[a-z2-9]{5})$", out, re.M)


def test_2fa_enable_prints_secret_uri_qr_and_recovery_codes(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, codes = _enable(cli, monkeypatch)
    assert "otpauth://totp/" in out
    assert "issuer=mail.demo.test" in out
    assert "\u2584" in out or "\u2580" in out  # the QR code, drawn with half blocks
    assert len(codes) == 10
    assert cli.ok("user", "2fa", "status", USER).strip() == "on, 10 recovery code(s) left"
    assert cli.ok("user", "2fa", "verify", USER, codes[3]).strip() == "valid"
    code, _, err = cli("user", "2fa", "verify", USER, stdin=codes[3] + "\n")
    assert code == 1
    assert "not valid" in err
    assert "off for" in cli.ok("user", "2fa", "disable", USER)
    assert cli.ok("user", "2fa", "status", USER).strip() == "off"
    assert "was not on" in cli.ok("user", "2fa", "disable", USER)


def test_2fa_enable_with_a_wrong_code_changes_nothing(cli: Cli) -> None:
    code, out, err = cli("user", "2fa", "enable", USER, stdin="000000\n")
    if code == 0:  # one in a million: 000000 was the right code
        pytest.skip("the random secret's current code was 000000")
    assert code == 1
    assert "does not match" in err
    assert "secret:" in out
    assert cli.ok("user", "2fa", "status", USER).strip() == "off"
    code, _, err = cli("user", "2fa", "enable", USER, stdin="")
    assert code == 1
    assert "no code" in err


def test_app_password_add_list_revoke(cli: Cli) -> None:
    out = cli.ok("app-password", "add", USER, "--name", "iPhone", "--protocols", "imap,smtp")
    match = re.search(r"^  ([a-z]{4} [a-z]{4} [a-z]{4} [a-z]{4})$", out, re.M)
    assert match, out
    listed = cli.ok("app-password", "list", USER)
    assert "iPhone" in listed
    assert "imap,smtp" in listed
    assert "never" in listed
    assert match.group(1) not in listed
    code, _, err = cli("app-password", "add", USER, "--name", "IPHONE")
    assert code == 1
    assert "exists already" in err
    code, _, err = cli("app-password", "add", USER, "--name", "x", "--protocols", "ftp")
    assert code == 1
    assert "unknown protocol" in err
    assert "revoked" in cli.ok("app-password", "revoke", USER, "iPhone")
    assert "no app passwords" in cli.ok("app-password", "list", USER)
    code, _, err = cli("app-password", "revoke", USER, "iPhone")
    assert code == 1
    assert "no app password" in err
    code, _, err = cli("app-password", "list", "nobody@demo.test")
    assert code == 1
    assert "no account" in err


def test_security_blocked_and_unblock(cli: Cli) -> None:
    assert "no blocked addresses" in cli.ok("security", "blocked")
    until = time.time() + 600
    cli.query(lambda s: s.add_block(IpBlock("2001:db8:1:2::/64", until, 10, time.time(), "test")))
    assert "2001:db8:1:2::/64" in cli.ok("security", "blocked")
    assert "unblocked 2001:db8:1:2::/64" in cli.ok("security", "unblock", "2001:db8:1:2::99")
    code, _, err = cli("security", "unblock", "2001:db8:1:2::99")
    assert code == 1
    assert "is not blocked" in err
    code, _, err = cli("security", "unblock", "garbage")
    assert code == 1
    assert "not an IP address" in err


def test_user_logins_shows_the_audit(cli: Cli) -> None:
    config = load_config(cli.data_dir)

    async def attempts(store: Store) -> None:
        svc = await AccountService.open(store, config)
        try:
            await svc.login(USER, Secret("alice-Secret-1"), protocol="imap",
                            client_ip="192.0.2.4", mechanism="PLAIN")
            await svc.login(USER, Secret("bad\x1b[2Jguess"), protocol="pop3",
                            client_ip="192.0.2.5", mechanism="USER\x1b[31m")
        finally:
            await svc.close()

    cli.query(attempts)
    out = cli.ok("user", "logins", USER)
    lines = out.splitlines()
    assert "FAILED" in lines[0]
    assert "192.0.2.5" in lines[0]
    assert "bad_credentials" in lines[0]
    assert "ok" in lines[1]
    assert "192.0.2.4" in lines[1]
    assert "\x1b" not in out
    assert "guess" not in out
    assert len(cli.ok("user", "logins", USER, "--limit", "1").splitlines()) == 1
    assert (cli.data_dir / "security.key").exists()
    SecurityKeys.load_or_create(cli.data_dir)  # readable by the next process


def test_passwd_checks_the_common_list_and_the_address(cli: Cli) -> None:
    code, _, err = cli("user", "passwd", USER, "--password-stdin", stdin="password1\n")
    assert code == 1
    assert "most common" in err
    code, _, err = cli("user", "passwd", USER, "--password-stdin", stdin="Alice1234\n")
    assert code == 1
    assert "built on the address" in err
    assert "changed" in cli.ok("user", "passwd", USER, "--password-stdin",
                               stdin="four unrelated words\n")
