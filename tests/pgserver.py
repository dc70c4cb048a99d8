"""A private PostgreSQL server on loopback for the tests and benchmarks (issue 10).

Debian's PostgreSQL binaries (package ``postgresql``, installed by ``make test``) run a
throw-away cluster in a temporary directory on an ephemeral port: nothing is shared with a
system cluster and nothing is left behind. As root, the cluster runs as the ``postgres``
user (PostgreSQL refuses to run as root). Each test gets a database of its own
(``new_database``), so LISTEN/NOTIFY channels and schemas never cross between tests.

``durable=False`` (the tests) turns fsync off: a test proves behaviour, not power-loss
safety; the benchmarks start it with ``durable=True``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

ENV_DSN = "MAILSTEAD_TEST_PG"  # an existing server to use instead (a superuser's URI)
SUPERUSER = "mailstead"


class PgUnavailable(RuntimeError):
    """No PostgreSQL binaries here (``apt-get install postgresql``) or the server failed."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not found:
        raise PgUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(found[0]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One running cluster; ``dsn(db)`` is a superuser URI for database ``db``."""

    def __init__(self, *, durable: bool = False, max_connections: int = 400) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self._as: list[str] = []
        self._external = os.environ.get(ENV_DSN, "")

    def start(self) -> PgServer:
        if self._external:
            return self
        bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="mailstead-pg-"))
        data = self.root / "data"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self._run([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER,
                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            f"-c max_connections={self.max_connections}",
            "-c shared_buffers=256MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
                   "-w", "-t", "60", "-o", " ".join(options), "start"])
        return self

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = ""
            if self.root is not None and (self.root / "log").exists():
                log = (self.root / "log").read_text(errors="replace")[-2000:]
            raise PgUnavailable(f"{argv[0]} failed: {proc.stderr.strip()} {log}")

    def dsn(self, database: str = "postgres") -> str:
        if self._external:
            base = self._external.rsplit("/", 1)[0]
            return f"{base}/{database}"
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """Creates an empty database; returns its URI."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs ``sql`` with psql as the superuser; returns its output (unaligned, no header)."""
        psql = shutil.which("psql") or str(_bindir() / "psql")
        proc = subprocess.run(
            [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database),
             "-c", sql],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise PgUnavailable(f"psql: {proc.stderr.strip()}")
        return proc.stdout

    def stop(self) -> None:
        if self._external or self.root is None:
            return
        with contextlib.suppress(PgUnavailable):
            self._run([str(_bindir() / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                       "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


_shared: PgServer | None = None


def shared_server() -> PgServer:
    """The one server of this test process, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        import atexit

        server = PgServer().start()
        atexit.register(server.stop)
        _shared = server
    return _shared


def wait_ready(dsn: str, timeout: float = 10) -> None:
    """Waits until ``dsn`` accepts connections (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(["pg_isready", "-d", dsn], capture_output=True, check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            return
        time.sleep(0.1)
