"""SIGTERM with many IMAP sessions open: idle and IDLE sessions are told
``* BYE [UNAVAILABLE] Server shutting down`` at once, a command in the middle of its literal
is finished first, and the process exits well within 5 seconds (RFC 9051 section 7.1.5:
BYE before the server closes the connection)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_IMAP,
    AsyncIMAP,
    Server,
    ServerError,
    Users,
    configure_imap,
    init_data_dir,
    tls_context,
)

SESSIONS = 300  # a few hundred; bench/imap_idle.py measures thousands by hand
EXIT_WITHIN = 5.0
BYE = b"* BYE [UNAVAILABLE] Server shutting down"
USERS = {f"stop{i}@example.test": f"stop{i}-Secret-pw" for i in range(4)}


@pytest.fixture
def busy_server(tmp_path: Path) -> Server:
    data_dir = tmp_path / "data"
    try:
        init_data_dir(data_dir, Users(passwords=USERS))
        configure_imap(data_dir, {**DEFAULT_IMAP, "max_connections_per_ip": SESSIONS + 50,
                                  "max_connections_per_account": SESSIONS})
        return Server(data_dir).start(timeout=20)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)


async def _open(server: Server, i: int, mode: str) -> AsyncIMAP:
    imap = await AsyncIMAP.connect(server.ports["imaps"], tls=tls_context(server.cert_path))
    if mode == "greeted":
        return imap  # not even logged in
    user, password = list(USERS.items())[i % len(USERS)]
    assert (await imap.command(f'LOGIN "{user}" "{password}"')).status == b"OK"
    assert (await imap.command("SELECT INBOX")).status == b"OK"
    if mode == "idle":
        imap.writer.write(b"idle IDLE\r\n")
        assert (await imap.read_line()).startswith(b"+")
    return imap


async def _goodbye(imap: AsyncIMAP) -> list[bytes]:
    """Every line up to the end of the connection."""
    lines: list[bytes] = []
    while True:
        try:
            lines.append(await imap.read_line())
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return lines


async def _scenario(server: Server) -> float:
    """Opens the sessions, sends SIGTERM, checks every goodbye; when SIGTERM was sent."""
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> tuple[str, AsyncIMAP]:
        mode = "greeted" if i % 10 == 9 else ("selected" if i % 3 == 1 else "idle")
        async with sem:
            return mode, await _open(server, i, mode)

    sessions = await asyncio.gather(*(one(i) for i in range(SESSIONS)))
    # One client in the middle of APPEND: the go-ahead, then half the literal.
    busy = await _open(server, 0, "selected")
    message = b"Subject: mid-literal\r\n\r\n" + b"x" * 200 + b"\r\n"
    busy.writer.write(b"ap APPEND INBOX {%d}\r\n" % len(message))
    assert (await busy.read_line()).startswith(b"+")
    busy.writer.write(message[:100])
    await busy.writer.drain()

    goodbyes = [asyncio.create_task(_goodbye(imap)) for _, imap in sessions]
    busy_lines = asyncio.create_task(_goodbye(busy))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    done = await asyncio.wait_for(asyncio.gather(*goodbyes), EXIT_WITHIN)
    bye_after = time.monotonic() - started
    for (mode, _), lines in zip(sessions, done, strict=True):
        assert lines[-1:] == [BYE], (mode, lines)
    assert bye_after < 2.0, f"BYE to {SESSIONS} sessions took {bye_after:.2f} s"
    # The command in flight is finished, then the session is closed the same way.
    await asyncio.sleep(0.3)
    busy.writer.write(message[100:] + b"\r\n")
    lines = await asyncio.wait_for(busy_lines, EXIT_WITHIN)
    assert any(line.startswith(b"ap OK [APPENDUID") for line in lines), lines
    assert lines[-1] == BYE, lines
    for _, imap in sessions:
        await imap.close()
    await busy.close()
    return started


def test_sigterm_with_hundreds_of_imap_sessions(busy_server: Server) -> None:
    try:
        started = asyncio.run(_scenario(busy_server))
        assert busy_server.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            busy_server.proc.wait(timeout=EXIT_WITHIN)  # no second SIGTERM: it is stopping
        took = time.monotonic() - started
        code = busy_server.stop(timeout=1)
        assert code == 0, f"exit code {code}:\n{busy_server.log_text()[-5000:]}"
        assert took < EXIT_WITHIN, f"exited {took:.2f} s after SIGTERM"
        assert "Traceback" not in busy_server.log_text(), busy_server.log_text()[-5000:]
    finally:
        if busy_server.alive():
            busy_server.kill()
