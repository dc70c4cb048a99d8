"""Fixtures that run a real ``mailstead serve`` on loopback for the integration tests.

``server`` (session-wide) has generous limits and is shared by the policy and smuggling tests;
``limited_server`` (per module) has tiny limits for the tests that hit them on purpose. Both
are stopped with SIGTERM at the end, which must exit 0 with no traceback in the log.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEFAULT_IMAP,
    DEFAULT_SMTP,
    LIMITED_SMTP,
    USERS,
    Harness,
    Server,
    ServerError,
    add_user,
    configure_imap,
    init_data_dir,
)


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


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    server = _start(tmp_path_factory.mktemp("mailstead") / "data", DEFAULT_SMTP)
    try:
        yield Harness(server)
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
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



@pytest.fixture(scope="session")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A server for the IMAP tests, with DEFAULT_IMAP limits (5 bad commands in a row)."""
    data_dir = tmp_path_factory.mktemp("imap") / "data"
    error = ""
    try:
        init_data_dir(data_dir, USERS, DEFAULT_SMTP)
        configure_imap(data_dir, DEFAULT_IMAP)
        server = Server(data_dir).start(timeout=20)
    except ServerError as exc:
        error = str(exc)
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield Harness(server)
    finally:
        _stop(server)


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
