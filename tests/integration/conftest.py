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
from helpers import DEFAULT_SMTP, LIMITED_SMTP, USERS, Harness, Server, ServerError, init_data_dir


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

