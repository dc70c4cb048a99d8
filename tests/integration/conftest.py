"""Fixtures that run a real ``mailstead serve`` on loopback for the integration tests.

Every test runs once per store backend (DESIGN rule 5, issue 10): ``store_backend`` is a
session-scoped parameter, "sqlite" or "postgresql", shown in the test id (``test_x[sqlite]``);
``helpers.init_data_dir`` and ``outbound_helpers.make_instance`` make their data dirs with it
(for PostgreSQL, a fresh database of the private server of tests/pgserver.py). A test that is
about one backend only says so with ``@pytest.mark.backends("sqlite", reason=...)``. Every
fixture wider than a test that makes a data dir must take ``store_backend``, so it is built
again for the other backend. ``make test`` runs the suite on pytest-xdist workers with
``--dist loadscope``: a module's tests stay together on one worker, in order, so the tests
that build on an earlier one's state still do (``--dist loadgroup`` would split modules by
backend, but it cannot group at all with pytest 9.2: pytest-xdist issue #1386).

``server`` (session-wide, one per backend) has generous limits and is shared by the policy
and smuggling tests, ``imap_server`` likewise by the IMAP tests; ``limited_server`` (per
module) has tiny limits for the tests that hit them on purpose. All are stopped with SIGTERM
at the end, which must exit 0 with no traceback in the log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEFAULT_IMAP,
    DEFAULT_SMTP,
    LIMITED_SMTP,
    STORE_BACKEND_ENV,
    STORE_BACKENDS,
    USERS,
    Harness,
    Server,
    ServerError,
    add_user,
    configure_imap,
    init_data_dir,
)

from pgserver import PgUnavailable, shared_server


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs every test of this folder once per backend (or per backend its marker names)."""
    if "store_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = list(marker.args) if marker is not None else list(STORE_BACKENDS)
    if marker is not None and (
        not names or set(names) - set(STORE_BACKENDS) or not marker.kwargs.get("reason")
    ):
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: backends{tuple(names)}: expected some of "
            f"{STORE_BACKENDS} and a reason= saying why the others do not apply"
        )
    # Session scope: a serial run orders the tests by backend, so the module-wide servers
    # are built once per backend (under xdist, loadscope keeps a module's tests together).
    metafunc.parametrize("store_backend", names, indirect=True, scope="session")


@pytest.fixture(scope="session", autouse=True)
def store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend of the data dirs made while it is active ("sqlite" or "postgresql")."""
    name: str = request.param
    if name == "postgresql":
        try:
            shared_server()
        except PgUnavailable as exc:
            pytest.fail(f"PostgreSQL for the tests: {exc}", pytrace=False)
    before = os.environ.get(STORE_BACKEND_ENV)
    os.environ[STORE_BACKEND_ENV] = name
    try:
        yield name
    finally:
        if before is None:
            os.environ.pop(STORE_BACKEND_ENV, None)
        else:
            os.environ[STORE_BACKEND_ENV] = before


def _start(data_dir: Path, smtp: dict[str, Any]) -> Server:
    error = ""
    try:
        init_data_dir(data_dir, USERS, smtp)
        return Server(data_dir).start(timeout=20)
    except ServerError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)


def _stop(server: Server) -> None:
    code = server.stop()
    log = server.log_text()
    assert code == 0, f"SIGTERM: exit code {code}, expected 0\nstderr:\n{log[-20000:]}"
    assert "Traceback" not in log, f"the server logged an unhandled exception:\n{log[-20000:]}"


class SessionServers:
    """The servers shared by the whole session, one of each kind per backend, started on first
    use and stopped (cleanly, or the session fails) at its end. They outlive a switch of
    ``store_backend``: under ``make test`` (xdist, ``--dist loadscope``) a worker runs each
    module's tests of both backends in turn, and starting a server again at every switch
    would cost more than keeping both."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[tuple[str, str], Harness] = {}
        self.failed: dict[tuple[str, str], str] = {}

    def get(self, kind: str, backend: str, make: Callable[[Path], Server]) -> Harness:
        """The ``kind`` server of ``backend`` (made in a fresh data dir by ``make``)."""
        key = (kind, backend)
        if key not in self.running and key not in self.failed:
            try:
                self.running[key] = Harness(make(self.root / f"{kind}-{backend}" / "data"))
            except ServerError as exc:
                self.failed[key] = str(exc)  # reported to every test that wants it, once made
        if key in self.failed:
            pytest.fail(self.failed[key], pytrace=False)
        return self.running[key]

    def stop_all(self) -> None:
        errors: list[str] = []
        for harness in self.running.values():
            try:
                _stop(harness.server)
            except AssertionError as exc:
                errors.append(str(exc))
        self.running.clear()
        assert not errors, "\n\n".join(errors)


@pytest.fixture(scope="session")
def session_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionServers]:
    servers = SessionServers(tmp_path_factory.mktemp("session"))
    try:
        yield servers
    finally:
        servers.stop_all()


def _start_default(data_dir: Path) -> Server:
    init_data_dir(data_dir, USERS, DEFAULT_SMTP)
    return Server(data_dir).start(timeout=20)


def _start_imap(data_dir: Path) -> Server:
    init_data_dir(data_dir, USERS, DEFAULT_SMTP)
    configure_imap(data_dir, DEFAULT_IMAP)
    return Server(data_dir).start(timeout=20)


@pytest.fixture
def server(session_servers: SessionServers, store_backend: str) -> Harness:
    """The session-wide server of this backend, with generous limits (DEFAULT_SMTP)."""
    return session_servers.get("server", store_backend, _start_default)


@pytest.fixture
def imap_server(session_servers: SessionServers, store_backend: str) -> Harness:
    """The session-wide server of this backend for the IMAP tests, with DEFAULT_IMAP limits
    (5 bad commands in a row)."""
    return session_servers.get("imap", store_backend, _start_imap)


@pytest.fixture(scope="module")
def limited_server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str
) -> Iterator[Harness]:
    server = _start(tmp_path_factory.mktemp("limited") / "data", LIMITED_SMTP)
    try:
        yield Harness(server)
    finally:
        _stop(server)


@pytest.fixture
def token() -> str:
    """A string unique to this test (and parameter), to find its messages in shared mailboxes."""
    return f"tok-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def swaks() -> str:
    path = shutil.which("swaks")
    if path is None:
        pytest.skip("swaks is not installed (apt-get install swaks libio-socket-ssl-perl)")
    support = subprocess.run([path, "--support"], capture_output=True, text=True, check=False)
    if "TLS supported" not in support.stdout + support.stderr:
        pytest.fail("swaks has no TLS support: apt-get install libio-socket-ssl-perl "
                    "libnet-ssleay-perl libauthen-sasl-perl", pytrace=False)
    return path


@pytest.fixture
def imap_account(imap_server: Harness) -> tuple[str, str]:
    """A fresh account (address, password) on ``imap_server``, so tests do not share mailboxes."""
    name = f"u{uuid.uuid4().hex[:12]}"
    address, password = f"{name}@example.test", f"Pw-{uuid.uuid4().hex}"
    try:
        add_user(imap_server.data_dir, address, password)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    return address, password

