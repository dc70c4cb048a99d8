"""ClamAV: a REAL clamd (Debian's clamav-daemon) started by the test on a unix socket with a
signature database made here (no freshclam download), plus clamd down and hostile replies
from a scripted peer (labelled as such)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstead.delivery.service import SessionInfo
from mailstead.filters.clamav import ClamavStage, ClamdAddress, ClamdClient, ScanError
from mailstead.filters.pipeline import FilterContext, Pipeline

MARK = b"MAILSTEAD-TEST-MALWARE-SIGNATURE-7f3a"
INFECTED = (b"X-Virus-Status: clean\r\nFrom: a@remote.test\r\nTo: alice@example.test\r\n"
            b"Subject: x\r\n\r\nhello " + MARK + b" bye\r\n")
CLEAN = b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: x\r\n\r\nhello\r\n"


def ctx(data: bytes) -> FilterContext:
    header = data[: data.index(b"\r\n\r\n") + 2]
    return FilterContext(session=SessionInfo(client_ip="192.0.2.7", submission=False),
                         mail_from="a@remote.test", recipients=("alice@example.test",),
                         accounts=(1,), data=data, header=header)


def test_address_parse() -> None:
    assert ClamdAddress.parse("/run/clamav/clamd.ctl").path == "/run/clamav/clamd.ctl"
    assert ClamdAddress.parse("127.0.0.1:3310") == ClamdAddress(host="127.0.0.1", port=3310)
    for bad in ("nonsense", "host:", ":3310", "host:99999"):
        with pytest.raises(ValueError, match="expected a socket path"):
            ClamdAddress.parse(bad)


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("clamd") is None:
        pytest.skip("clamd is not installed (Debian package clamav-daemon; make test-deps)")
    d = tmp_path_factory.mktemp("clamd")
    (d / "db").mkdir()
    # An extended body signature (.ndb: name:target:offset:hex), target 0 = any file.
    (d / "db/mailstead.ndb").write_text(f"Mailstead.Test.Malware:0:*:{MARK.hex()}\n")
    sock = d / "clamd.sock"
    (d / "clamd.conf").write_text(
        f"LocalSocket {sock}\nDatabaseDirectory {d / 'db'}\nForeground yes\nUser root\n"
        f"LogFile {d / 'clamd.log'}\nStreamMaxLength 1M\n")
    proc = subprocess.Popen(["clamd", "-c", str(d / "clamd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("clamd did not start; see " + str(d / "clamd.log"))
            time.sleep(0.2)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_real_clamd_finds_the_local_signature(clamd: str) -> None:
    client = ClamdClient(ClamdAddress(path=clamd))
    assert asyncio.run(client.scan(CLEAN)).signature is None
    assert asyncio.run(client.scan(INFECTED)).signature == "Mailstead.Test.Malware.UNOFFICIAL"
    # Many chunks: the INSTREAM framing of a larger message.
    big = CLEAN + b"x" * 300_000 + MARK + b"\r\n"
    assert asyncio.run(client.scan(big)).signature is not None


def test_real_clamd_stage_refuses_with_554(clamd: str) -> None:
    stage = ClamavStage(ClamdClient(ClamdAddress(path=clamd)))
    refused = asyncio.run(Pipeline([stage]).run(ctx(INFECTED)))
    assert refused.reply is not None
    assert (refused.reply.code, refused.reply.enhanced) == (554, "5.7.1")
    assert "Mailstead.Test.Malware" in refused.reply.text
    ok = asyncio.run(Pipeline([stage]).run(ctx(INFECTED.replace(MARK, b"harmless"))))
    assert ok.reply is None
    # The forged incoming X-Virus-Status is gone, ours is there once.
    assert ok.data.count(b"X-Virus-Status") == 1
    assert ok.data.startswith(b"X-Virus-Status: clean\r\nFrom:")


def test_real_clamd_stream_limit_is_an_error(clamd: str) -> None:
    client = ClamdClient(ClamdAddress(path=clamd), max_size=10 * 1024 * 1024)
    with pytest.raises(ScanError):
        asyncio.run(client.scan(CLEAN + b"y" * (2 * 1024 * 1024)))  # over StreamMaxLength 1M


def test_clamd_down_accepts_tagged_or_tempfails(tmp_path: Path) -> None:
    gone = ClamdClient(ClamdAddress(path=str(tmp_path / "nothing.sock")))
    accepted = asyncio.run(Pipeline([ClamavStage(gone)]).run(ctx(CLEAN)))
    assert accepted.reply is None
    assert accepted.data.startswith(b"X-Virus-Status: unchecked\r\n")
    failed = asyncio.run(Pipeline([ClamavStage(gone, tempfail_when_down=True)]).run(ctx(CLEAN)))
    assert failed.reply is not None
    assert failed.reply.code == 451


def test_too_large_is_never_tempfailed(tmp_path: Path) -> None:
    small = ClamdClient(ClamdAddress(path=str(tmp_path / "x.sock")), max_size=10)
    result = asyncio.run(Pipeline([ClamavStage(small, tempfail_when_down=True)]).run(ctx(CLEAN)))
    assert result.reply is None
    assert b"X-Virus-Status: unchecked" in result.data


def test_scripted_clamd_hostile_replies(tmp_path: Path) -> None:
    """A SCRIPTED clamd (not the real one) for replies the real one will not give on demand."""

    async def main() -> None:
        for reply, expect in ((b"stream: Evil\r\nX: y FOUND\0", ScanError),
                              (b"stream: Evil<b> \xff FOUND\0", "Evil_b___"),
                              (b"stream: OK\0", None), (b"garbage", ScanError),
                              (b"", ScanError), (b"x" * 100_000, ScanError)):
            path = str(tmp_path / "s.sock")

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                             reply: bytes = reply) -> None:
                await r.readuntil(b"\0\0\0\0")
                w.write(reply)
                await w.drain()
                w.close()

            server = await asyncio.start_unix_server(handle, path)
            try:
                client = ClamdClient(ClamdAddress(path=path), timeout=5)
                if expect is ScanError:
                    with pytest.raises(ScanError):
                        await client.scan(CLEAN)
                else:
                    assert (await client.scan(CLEAN)).signature == expect
            finally:
                server.close()
                await server.wait_closed()

    asyncio.run(main())
