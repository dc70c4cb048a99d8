"""rspamd: the answer parser against hostile JSON, and a REAL rspamd (Debian's package)
started by the test on loopback: GTUBE is refused or filed into Junk per the thresholds, a
learn request reaches the controller, and rspamd down means "unchecked"."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstead.delivery.service import SessionInfo
from mailstead.filters.pipeline import FilterContext, Pipeline
from mailstead.filters.rspamd import Endpoint, RspamdFilter, parse_check
from mailstead.filters.spam import FilterUnavailable, SpamAction, SpamPolicy, SpamStage

GTUBE = (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: test\r\n\r\n"
         b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


def ctx(data: bytes) -> FilterContext:
    header = data[: data.index(b"\r\n\r\n") + 2]
    session = SessionInfo(client_ip="192.0.2.7", submission=False, helo="c.remote.test\r\nX: y")
    return FilterContext(session=session, mail_from="a@remote.test",
                         recipients=("alice@example.test",), accounts=(1,), data=data,
                         header=header)


def test_parse_check() -> None:
    r = parse_check(b'{"action":"add header","score":7.5,"symbols":{"A B":{"score":2},'
                    b'"C":{"score":"x"},"D":[]}}')
    assert r.action is SpamAction.JUNK
    assert r.score == 7.5
    assert [(s.name, s.score) for s in r.symbols] == [("A_B", 2.0), ("C", 0.0), ("D", 0.0)]
    assert parse_check(b'{"action":"greylist","score":4}').action is SpamAction.NO_ACTION
    assert parse_check(b'{"action":"greylist","score":4,"symbols":{"GREYLIST":{}}}'
                       ).action is SpamAction.GREYLIST
    for bad in (b"", b"[]", b"{", b'{"action":"explode","score":1}', b'{"action":"reject"}',
                b'{"action":"reject","score":NaN}', b'{"action":"reject","score":true}',
                b"\xff"):
        with pytest.raises(FilterUnavailable):
            parse_check(bad)


def test_endpoint_parse() -> None:
    assert Endpoint.parse("http://127.0.0.1:11333", 1) == Endpoint("127.0.0.1", 11333)
    assert Endpoint.parse("http://localhost", 11334) == Endpoint("localhost", 11334)
    for bad in ("https://x", "http://x/path", "ftp://x"):
        with pytest.raises(ValueError, match="expected http"):
            Endpoint.parse(bad, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                if b"pong" in s.recv(4096):
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A real rspamd with a minimal local config in a temp dir: normal and controller
    workers on free loopback ports, Bayes in SQLite (no redis), no outside DNS."""
    if shutil.which("rspamd") is None:
        pytest.skip("rspamd is not installed (Debian package rspamd; make test-deps)")
    d = tmp_path_factory.mktemp("rspamd")
    for sub in ("local.d", "db", "run", "log"):
        (d / sub).mkdir()
    normal, controller, proxy = _free_port(), _free_port(), _free_port()
    (d / "local.d/worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{normal}";\n'
                                                 "count = 1;\n")
    (d / "local.d/worker-controller.inc").write_text(
        f'bind_socket = "127.0.0.1:{controller}";\nsecure_ip = "127.0.0.1";\n')
    (d / "local.d/worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{proxy}";\n')
    (d / "local.d/classifier-bayes.conf").write_text(
        'backend = "sqlite3";\nmin_learns = 1;\n'
        f'statfile {{ symbol = "BAYES_HAM"; path = "{d}/db/ham.sqlite"; spam = false; }}\n'
        f'statfile {{ symbol = "BAYES_SPAM"; path = "{d}/db/spam.sqlite"; spam = true; }}\n')
    (d / "local.d/options.inc").write_text(
        'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.5s; retransmits = 1; }\n')
    (d / "local.d/logging.inc").write_text('type = "file";\nfilename = "'
                                           f'{d}/log/rspamd.log";\nlevel = "info";\n')
    proc = subprocess.Popen(
        ["rspamd", "-f", "-i", "-u", "root", "-g", "root", "-c", "/etc/rspamd/rspamd.conf",
         "--var", f"LOCAL_CONFDIR={d}", "--var", f"DBDIR={d}/db", "--var", f"RUNDIR={d}/run",
         "--var", f"LOGDIR={d}/log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not _wait_http(normal, time.monotonic() + 90):
            pytest.fail("rspamd did not start; see " + str(d / "log"))
        yield normal, controller
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_real_rspamd_gtube_refused_or_junked(rspamd: tuple[int, int]) -> None:
    normal, controller = rspamd
    spam = RspamdFilter(f"http://127.0.0.1:{normal}",
                        controller=f"http://127.0.0.1:{controller}")
    result = asyncio.run(spam.classify(ctx(GTUBE)))
    assert result.action is SpamAction.REJECT
    assert "GTUBE" in [s.name for s in result.symbols]
    refused = asyncio.run(Pipeline([SpamStage(spam)]).run(ctx(GTUBE)))
    assert refused.reply is not None
    assert (refused.reply.code, refused.reply.enhanced) == (
        550, "5.7.1")
    junked = asyncio.run(Pipeline([SpamStage(spam, SpamPolicy(reject_to_junk=True))]).run(
        ctx(GTUBE)))
    assert junked.reply is None
    assert junked.mailbox == "Junk"
    assert b"X-Spam-Status: Yes" in junked.data
    assert b"GTUBE" in junked.data


def test_real_rspamd_learn(rspamd: tuple[int, int], tmp_path: Path) -> None:
    normal, controller = rspamd
    spam = RspamdFilter(f"http://127.0.0.1:{normal}",
                        controller=f"http://127.0.0.1:{controller}")
    message = (b"From: b@remote.test\r\nTo: alice@example.test\r\nSubject: offer\r\n\r\n"
               b"cheap pills casino lottery winner prize click here now unique-7731\r\n")
    asyncio.run(spam.learn(1, message, True))
    asyncio.run(spam.learn(1, message, True))  # already learned (HTTP 208) is fine
    asyncio.run(spam.learn(1, message, False))  # relearned as ham
    wrong = RspamdFilter(f"http://127.0.0.1:{normal}", controller=f"http://127.0.0.1:{normal}")
    with pytest.raises(FilterUnavailable):
        asyncio.run(wrong.learn(1, message, True))


def test_rspamd_down_is_unchecked() -> None:
    down = RspamdFilter(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(FilterUnavailable):
        asyncio.run(down.classify(ctx(GTUBE)))
    result = asyncio.run(Pipeline([SpamStage(down)]).run(ctx(GTUBE)))
    assert result.reply is None
    assert result.data.startswith(b"X-Spam-Status: unchecked\r\n")
