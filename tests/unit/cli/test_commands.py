"""The ``mailstead`` command run in-process against the real SQLite store of a temporary
data directory."""

from __future__ import annotations

import asyncio
import io
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from mailstead.cli.context import Context
from mailstead.cli.main import build_parser, main
from mailstead.config import load_config
from mailstead.core.errors import StoreError
from mailstead.storage import open_store
from mailstead.storage.interfaces import Store

T = TypeVar("T")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def is_closed(store: Store) -> bool:
    """Whether ``store`` was closed, seen through the public API: a closed store refuses work."""

    async def probe() -> None:
        await store.list_domains()

    try:
        asyncio.run(probe())
    except StoreError as exc:
        return "closed" in str(exc)
    return False


class Run:
    """Runs CLI commands in-process; each opens the real store of ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.opened = 0
        self.stores: list[Store] = []

    async def open_store(self, path: Path) -> Store:
        assert path == self.data_dir
        self.opened += 1
        store = await open_store(path)
        self.stores.append(store)
        return store

    def query(self, read: Callable[[Store], Awaitable[T]]) -> T:
        """``read`` on a store of our own (not counted in ``opened``): what a command left
        behind is what the next process will see."""

        async def go() -> T:
            store = await open_store(self.data_dir)
            try:
                return await read(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def __call__(
        self,
        *argv: str,
        stdin: io.StringIO | None = None,
        env: dict[str, str] | None = None,
        answers: list[str] | None = None,
    ) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        pending = list(answers or [])
        ctx = Context(
            stdin or io.StringIO(),
            out,
            err,
            env if env is not None else {},
            open_store=self.open_store,
            getpass=lambda prompt: pending.pop(0),
        )
        code = main(list(argv), ctx)
        # Every command closes what it opened, whether it succeeded or not.
        assert all(is_closed(store) for store in self.stores)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "data")
    code, out, err = r(
        "init",
        "--data-dir",
        str(r.data_dir),
        "--hostname",
        "Mail.Demo.TEST",
        "--domain",
        "Demo.TEST",
        "--dev",
    )
    assert (code, err) == (0, "")
    assert "Initialised" in out
    yield r

    async def close_all() -> None:  # idempotent; matters only when a test failed mid-command
        for store in r.stores:
            await store.close()

    asyncio.run(close_all())


def test_init_writes_config_cert_and_domain(run: Run) -> None:
    d = run.data_dir
    assert stat.S_IMODE((d / "mailstead.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "tls" / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    config = load_config(d)
    assert config.hostname == "mail.demo.test"
    assert str(config.listen.smtp) == "127.0.0.1:2525"
    assert str(config.listen.http) == "127.0.0.1:8080"
    assert config.listen.https is None
    assert run.query(lambda store: store.list_domains()) == ["demo.test"]
    assert len(run.stores) == 1
    assert is_closed(run.stores[0])


def test_init_refuses_non_empty_dir_and_bad_names(run: Run, tmp_path: Path) -> None:
    code, _, err = run(
        "init",
        "--data-dir",
        str(run.data_dir),
        "--hostname",
        "m.demo.test",
        "--domain",
        "demo.test",
    )
    assert code == 1
    assert "is not empty" in err
    assert err.count("\n") == 1
    fresh = tmp_path / "fresh"
    code, _, err = run(
        "init", "--data-dir", str(fresh), "--hostname", "bad_host", "--domain", "d.test"
    )
    assert code == 1
    assert err.startswith("mailstead: --hostname: ")
    code, _, err = run("init", "--data-dir", str(fresh), "--hostname", "m.d.test", "--domain", "x")
    assert code == 1
    assert err.startswith("mailstead: --domain: ")
    assert not fresh.exists()


def test_init_cleans_up_when_the_store_fails(tmp_path: Path) -> None:
    r = Run(tmp_path / "d")

    async def broken(path: Path) -> Store:
        raise OSError(28, "No space left on device")

    r.open_store = broken  # type: ignore[method-assign]
    code, _, err = r(
        "init", "--data-dir", str(r.data_dir), "--hostname", "m.d.test", "--domain", "d.test"
    )
    assert code == 1
    assert "No space left on device" in err
    assert list(r.data_dir.iterdir()) == []


def test_users_domains_aliases(run: Run) -> None:
    dd = ["--data-dir", str(run.data_dir)]
    assert run(
        "user",
        "add",
        "demo@demo.test",
        "--password-stdin",
        *dd,
        stdin=io.StringIO("long password\n"),
    )[:2] == (0, "added user demo@demo.test\n")
    code, _, err = run(
        "user", "add", "x@demo.test", "--password-stdin", *dd, stdin=io.StringIO("short\n")
    )
    assert code == 1
    assert err == "mailstead: password is too short: use at least 8 characters\n"
    code, _, err = run("user", "add", "x@demo.test", "--password-stdin", *dd, stdin=io.StringIO(""))
    assert code == 1
    assert "no password" in err
    code, _, err = run("user", "add", "x@demo.test", *dd)
    assert code == 1
    assert "--password-stdin" in err
    assert (
        run("user", "add", "y@demo.test", *dd, stdin=Tty(), answers=["pass word 1", "pass word 1"])[
            0
        ]
        == 0
    )
    code, _, err = run(
        "user", "add", "z@demo.test", *dd, stdin=Tty(), answers=["pass word 1", "pass word 2"]
    )
    assert code == 1
    assert "differ" in err
    assert run("user", "list", *dd)[1] == "demo@demo.test\ny@demo.test\n"
    assert run("user", "list", "--domain", "other.test", *dd)[1] == ""
    assert (
        run(
            "user",
            "passwd",
            "y@demo.test",
            "--password-stdin",
            *dd,
            stdin=io.StringIO("new password\r\n"),
        )[0]
        == 0
    )
    assert (
        run("alias", "add", "@demo.test", "demo@demo.test", *dd)[1]
        == "@demo.test -> demo@demo.test\n"
    )
    assert run("alias", "add", "pm@demo.test", "demo@demo.test", "b@remote.test", *dd)[0] == 0
    assert run("alias", "list", *dd)[1] == (
        "@demo.test -> demo@demo.test\npm@demo.test -> demo@demo.test, b@remote.test\n"
    )
    assert run("alias", "remove", "pm@demo.test", "b@remote.test", *dd)[0] == 0
    assert run("alias", "remove", "@demo.test", *dd)[0] == 0
    code, _, err = run("alias", "remove", "@demo.test", *dd)
    assert (code, err) == (1, "mailstead: no alias @demo.test\n")
    code, _, err = run("domain", "remove", "demo.test", *dd)
    assert code == 1
    # Refused while in use (InUse); the store says by what: demo@ and y@, and pm@'s alias.
    assert err.startswith("mailstead: domain demo.test still has 2 account(s)")
    assert err.count("\n") == 1
    assert run.query(lambda store: store.is_local_domain("demo.test"))
    assert run("domain", "add", "two.test", *dd)[1] == "added domain two.test\n"
    assert run("domain", "list", *dd)[1] == "demo.test\ntwo.test\n"
    assert run("user", "remove", "y@demo.test", *dd)[0] == 0
    code, _, err = run("user", "remove", "y@demo.test", *dd)
    assert (code, err) == (1, "mailstead: no account y@demo.test\n")


def test_data_dir_from_env_and_errors(run: Run, tmp_path: Path) -> None:
    env = {"MAILSTEAD_DATA_DIR": str(run.data_dir)}
    assert run("domain", "list", env=env)[1] == "demo.test\n"
    assert run("--data-dir", str(run.data_dir), "domain", "list")[1] == "demo.test\n"
    code, _, err = run("domain", "list")
    assert code == 1
    assert "MAILSTEAD_DATA_DIR" in err
    code, _, err = run("domain", "list", "--data-dir", str(tmp_path / "typo"))
    assert code == 1
    assert "not a Mailstead data directory" in err
    assert run.opened == 3  # init and the two lists; the typo never reached the store


def test_card(run: Run, tmp_path: Path) -> None:
    dd = ["--data-dir", str(run.data_dir)]
    run(
        "user",
        "add",
        "demo@demo.test",
        "--password-stdin",
        *dd,
        stdin=io.StringIO("long password\n"),
    )
    secret = tmp_path / "pw"
    secret.write_text("s3cret-demo\n")
    code, out, _ = run("card", "DEMO@demo.test", "--password-file", str(secret), *dd)
    assert code == 0
    assert "Username: demo@demo.test" in out
    assert "Password: s3cret-demo" in out
    assert "Server: 127.0.0.1" in out
    assert "Port: 2993" in out
    assert "SSL/TLS" in out
    assert "Port: 2143" in out
    assert "STARTTLS" in out
    assert "Port: 2587" in out
    assert "Port: 2465" in out
    assert "Port: 2995" in out
    assert "Port: 2110" in out
    assert "self-signed" in out
    assert "SHA-256" in out
    assert "127.0.0.1 as the server name" in out
    code, out, _ = run("card", "demo@demo.test", *dd)
    assert "Password: (the one you set)" in out
    code, _, err = run("card", "ghost@demo.test", *dd)
    assert code == 1
    assert "no account" in err


def test_broken_config_is_one_line(run: Run) -> None:
    path = run.data_dir / "mailstead.toml"
    path.write_text(path.read_text().replace("[listen]", "[listen]\nsmtpp = 1"))
    code, _, err = run("serve", "--data-dir", str(run.data_dir))
    assert code == 1
    assert err == (
        f"mailstead: {path}:8: key 'listen.smtpp' is unknown (expected one of: smtp, submission, "
        "submissions, imap, imaps, pop3, pop3s, managesieve, http, https)\n"
    )


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("init", "serve", "domain", "user", "alias", "card", "MAILSTEAD_DATA_DIR"):
        assert command in text
    for sub in (["user", "add"], ["alias", "add"], ["init"], ["card"]):
        assert main([*sub, "--help"]) == 0
        assert "--data-dir" in capsys.readouterr().out
    assert main(["user"]) == 2
    assert "required" in capsys.readouterr().err
    assert build_parser().prog == "mailstead"


def test_unexpected_error_is_one_line(run: Run) -> None:
    async def broken(path: Path) -> Store:
        raise RuntimeError("boom\nsecond line")

    run.open_store = broken  # type: ignore[method-assign]
    code, _, err = run("domain", "list", "--data-dir", str(run.data_dir))
    assert code == 1
    assert err == (
        "mailstead: unexpected error: RuntimeError: boom second line "
        "(set MAILSTEAD_DEBUG=1 for details)\n"
    )
