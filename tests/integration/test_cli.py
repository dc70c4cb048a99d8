"""The real ``python -m mailstead`` command against the real store, as an administrator uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import new_database, store_args

from mailstead.config import load_config
from pgserver import shared_server

SRC = str(Path(__file__).resolve().parents[2] / "src")


def cli(
    *args: str, stdin: str = "", data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAILSTEAD_DATA_DIR", "MAILSTEAD_DEBUG")
    }
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if data_dir is not None:
        env["MAILSTEAD_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "mailstead", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def test_admin_session(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(
        cli(
            "init",
            "--data-dir",
            str(data),
            "--hostname",
            "mail.demo.test",
            "--domain",
            "demo.test",
            "--dev",
            *store_args(),
        )
    )
    fails(
        cli(
            "init", "--data-dir", str(data), "--hostname", "mail.demo.test", "--domain", "demo.test"
        ),
        "is not empty",
    )
    assert ok(cli("domain", "list", data_dir=data)) == "demo.test\n"
    ok(
        cli(
            "user",
            "add",
            "demo@demo.test",
            "--password-stdin",
            stdin="demo password\n",
            data_dir=data,
        )
    )
    fails(
        cli(
            "user",
            "add",
            "demo@demo.test",
            "--password-stdin",
            stdin="demo password\n",
            data_dir=data,
        ),
        "exists already",
    )
    fails(
        cli("user", "add", "x@demo.test", "--password-stdin", stdin="short\n", data_dir=data),
        "at least 8 characters",
    )
    fails(
        cli(
            "user",
            "add",
            "x@nowhere.test",
            "--password-stdin",
            stdin="long enough\n",
            data_dir=data,
        ),
        "not a local domain",
    )
    ok(
        cli(
            "alias",
            "add",
            "postmaster@demo.test",
            "demo@demo.test",
            "ext@remote.test",
            data_dir=data,
        )
    )
    ok(cli("alias", "add", "@demo.test", "demo@demo.test", data_dir=data))
    assert ok(cli("alias", "list", data_dir=data)) == (
        "@demo.test -> demo@demo.test\npostmaster@demo.test -> demo@demo.test, ext@remote.test\n"
    )
    ok(
        cli(
            "user",
            "passwd",
            "demo@demo.test",
            "--password-stdin",
            stdin="other password\n",
            data_dir=data,
        )
    )
    assert ok(cli("user", "list", "--domain", "demo.test", data_dir=data)) == "demo@demo.test\n"
    card = ok(cli("card", "demo@demo.test", data_dir=data))
    assert "Port: 2993" in card
    assert "Port: 2587" in card
    assert "self-signed" in card
    fails(cli("domain", "remove", "demo.test", data_dir=data), "demo.test")
    ok(cli("alias", "remove", "@demo.test", data_dir=data))
    ok(cli("alias", "remove", "postmaster@demo.test", data_dir=data))
    ok(cli("user", "remove", "demo@demo.test", data_dir=data))
    ok(cli("domain", "remove", "demo.test", data_dir=data))
    assert ok(cli("domain", "list", data_dir=data)) == ""


def test_errors_and_help(tmp_path: Path) -> None:
    fails(cli("user", "list"), "MAILSTEAD_DATA_DIR")
    fails(cli("serve", "--data-dir", str(tmp_path)), "not a Mailstead data directory")
    (tmp_path / "mailstead.toml").write_text('hostname = "mail.demo.test"\n[listen]\nsmtp = "x"\n')
    fails(
        cli("serve", "--data-dir", str(tmp_path)),
        'mailstead.toml:3: listen.smtp: expected "host:port"',
    )
    text = ok(cli("--help"))
    assert "init" in text
    assert "serve" in text
    assert "card" in text
    assert "--password-stdin" in ok(cli("user", "passwd", "--help"))


@pytest.mark.backends("postgresql", reason="about init --store with a PostgreSQL URI")
def test_init_with_postgresql_store(tmp_path: Path) -> None:
    dsn = new_database()
    first, second = tmp_path / "a", tmp_path / "b"
    init = ("--hostname", "mail.demo.test", "--domain", "demo.test", "--dev", "--store", dsn)
    assert "with local domain demo.test" in ok(cli("init", "--data-dir", str(first), *init))
    store = load_config(first).store
    assert (store.backend, store.dsn) == ("postgresql", dsn)
    assert not (first / "mailstead.db").exists()  # nothing of the store in the data dir
    ok(cli("user", "add", "demo@demo.test", "--password-stdin", stdin="demo password\n",
           data_dir=first))
    # A second node on the same database joins the installation: same domain, same users.
    assert "joining the installation" in ok(cli("init", "--data-dir", str(second), *init))
    assert ok(cli("user", "list", data_dir=second)) == "demo@demo.test\n"


@pytest.mark.backends("postgresql", reason="about init --store with a PostgreSQL URI")
def test_init_with_unusable_store_leaves_nothing(tmp_path: Path) -> None:
    base = ("--hostname", "mail.demo.test", "--domain", "demo.test", "--dev")
    data = tmp_path / "data"
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    unreachable = "postgresql://mailstead:s3cret@127.0.0.1:1/mailstead"
    result = cli("init", "--data-dir", str(data), *base, "--store", unreachable)
    fails(result, "cannot connect to PostgreSQL at postgresql://mailstead@127.0.0.1:1/mailstead")
    assert "s3cret" not in result.stderr
    assert list(data.iterdir()) == []  # a retry starts clean
    missing = shared_server().dsn("no_such_database")
    fails(cli("init", "--data-dir", str(data), *base, "--store", missing),
          'database "no_such_database" does not exist')
    assert list(data.iterdir()) == []
    other = tmp_path / "other"
    fails(cli("init", "--data-dir", str(other), *base, "--store", "mysql://db.test/x"),
          "--store: expected a URI like postgresql://")
    assert not other.exists()
