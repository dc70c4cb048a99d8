"""The installation's security key on nodes that join one PostgreSQL database: the first
node's ``init`` makes the key and records its check value in the store; ``security
share-key`` seals it there by a passphrase; ``init --store DSN --key-passphrase-stdin`` (or
``--key-file``) gives a joining node the same key, and an app password made on the first node
logs in on both over IMAP and SMTP AUTH. A joined node without the key, or with another one,
refuses to start with one line that says what to do, and never makes a key of its own.
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    DOMAIN,
    HOSTNAME,
    REPO,
    Server,
    add_user,
    child_env,
    configure,
    run_cli,
    tls_context,
)

from pgserver import shared_server

pytestmark = pytest.mark.backends("postgresql", reason="nodes share one PostgreSQL database")

PASSPHRASE = "correct horse battery staple"
OTHER_KEY = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n"  # 32 bytes, not the installation's


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``mailstead ARGS`` as a child process, whatever its exit code."""
    return subprocess.run([sys.executable, "-m", "mailstead", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=child_env(),
                          cwd=REPO, check=False)


def init(data_dir: Path, dsn: str, *extra: str, stdin: str | None = None) -> str:
    out = run_cli("init", "--data-dir", str(data_dir), "--hostname", HOSTNAME, "--domain",
                  DOMAIN, "--dev", "--store", dsn, *extra, stdin=stdin)
    configure(data_dir)
    return out


def refused_serve(data_dir: Path) -> str:
    """Runs ``serve``, which must exit 1 at once with one line on stderr; returns it."""
    proc = cli("serve", "--data-dir", str(data_dir))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert not (data_dir / "security.key").exists() or "not this installation" in lines[0]
    return lines[0]


def imap_login(server: Server, address: str, password: str) -> None:
    with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"],
                           ssl_context=tls_context(server.cert_path)) as client:
        assert client.login(address, password)[0] == "OK"
        client.logout()


def smtp_login(server: Server, address: str, password: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as client:
        client.starttls(context=tls_context(server.cert_path))
        assert client.login(address, password)[0] == 235


def test_app_password_works_on_a_joined_node_and_a_keyless_node_refuses(
    tmp_path: Path, store_backend: str
) -> None:
    dsn = shared_server().new_database("keys")
    a_dir, b_dir, c_dir, d_dir = (tmp_path / n for n in ("a", "b", "c", "d"))
    init(a_dir, dsn)
    key = (a_dir / "security.key").read_bytes()
    assert os.stat(a_dir / "security.key").st_mode & 0o777 == 0o600
    address = f"keys@{DOMAIN}"
    add_user(a_dir, address, "Long-enough-pw-1")
    made = run_cli("app-password", "add", address, "--name", "phone", "--data-dir", str(a_dir))
    app = made.splitlines()[1].strip()

    # A node joining without the key is told at init, and serve refuses: no new key.
    out = init(c_dir, dsn)
    assert "does not have the installation's security key" in out
    line = refused_serve(c_dir)
    assert "security.key is missing" in line, line
    assert "fetch-key" in line, line
    assert not (c_dir / "security.key").exists()
    # Its admin commands work, but what needs the key says why it cannot.
    assert run_cli("user", "list", "--data-dir", str(c_dir)) == f"{address}\n"
    proc = cli("app-password", "add", address, "--name", "x", "--data-dir", str(c_dir))
    assert proc.returncode == 1
    assert "security.key is missing" in proc.stderr
    assert not (c_dir / "security.key").exists()
    # ... and a node with another key refuses too.
    (c_dir / "security.key").write_bytes(OTHER_KEY)
    line = refused_serve(c_dir)
    assert "is not this installation's security key" in line, line

    # The key handed over through the store, sealed by a passphrase.
    proc = cli("init", "--data-dir", str(d_dir), "--hostname", HOSTNAME, "--domain", DOMAIN,
               "--dev", "--store", dsn, "--key-passphrase-stdin", stdin=PASSPHRASE + "\n")
    assert proc.returncode == 1
    assert "no security key is shared in the store" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not d_dir.exists() or not any(d_dir.iterdir())  # init cleaned up
    shared = cli("security", "share-key", "--passphrase-stdin", "--data-dir", str(a_dir),
                 stdin=PASSPHRASE + "\n")
    assert shared.returncode == 0, shared.stderr
    wrong = cli("security", "fetch-key", "--passphrase-stdin", "--data-dir", str(c_dir),
                stdin="not the passphrase at all\n")
    assert wrong.returncode == 1
    assert "passphrase does not open" in wrong.stderr, wrong.stderr
    init(b_dir, dsn, "--key-passphrase-stdin", stdin=PASSPHRASE + "\n")
    assert (b_dir / "security.key").read_bytes() == key
    assert os.stat(b_dir / "security.key").st_mode & 0o777 == 0o600
    # A copied key file is the other way in (and a wrong file is refused by init).
    (c_dir / "security.key").unlink()
    fetched = cli("security", "fetch-key", "--passphrase-stdin", "--data-dir", str(c_dir),
                  stdin=PASSPHRASE + "\n")
    assert fetched.returncode == 0, fetched.stderr
    assert (c_dir / "security.key").read_bytes() == key

    a = Server(a_dir).start(timeout=30)
    try:
        b = Server(b_dir).start(timeout=30)
        try:
            for node in (a, b):
                imap_login(node, address, app)
                smtp_login(node, address, app)
        finally:
            assert b.stop() == 0
    finally:
        assert a.stop() == 0


def test_init_refuses_a_key_file_that_is_not_the_installations(
    tmp_path: Path, store_backend: str
) -> None:
    dsn = shared_server().new_database("keys")
    init(tmp_path / "a", dsn)
    other = tmp_path / "other.key"
    other.write_bytes(OTHER_KEY)
    proc = cli("init", "--data-dir", str(tmp_path / "b"), "--hostname", HOSTNAME, "--domain",
               DOMAIN, "--dev", "--store", dsn, "--key-file", str(other))
    assert proc.returncode == 1, proc.stderr
    assert "not this installation's security key" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    good = run_cli("init", "--data-dir", str(tmp_path / "c"), "--hostname", HOSTNAME,
                   "--domain", DOMAIN, "--dev", "--store", dsn, "--key-file",
                   str(tmp_path / "a" / "security.key"))
    assert "joining" in good
    assert (tmp_path / "c" / "security.key").read_bytes() == (
        tmp_path / "a" / "security.key").read_bytes()

