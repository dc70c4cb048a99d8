"""A real POP3 client: Debian's fetchmail downloads 200 messages over port 995 (certificate
checked against DATA/tls/cert.pem and the name mail.example.test), first with --keep (a second
run finds nothing new thanks to UIDL), then without (the mailbox is empty afterwards). Every
downloaded message is byte-identical to what the server stored, once fetchmail's own
Received: header is taken off."""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    HOSTNAME,
    Harness,
    Server,
    ServerError,
    Users,
    init_data_dir,
    make_message,
    rewrite_tables,
    split_received,
)

ADDRESS = "fetch@example.test"
PASSWORD = "fetch-Secret-pw-1"
COUNT = 200


@pytest.fixture(scope="module")
def fetchmail() -> str:
    path = shutil.which("fetchmail")
    if path is None:
        pytest.skip("fetchmail is not installed (apt-get install fetchmail)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("fetchmail") / "data"
    try:
        init_data_dir(data_dir, Users(passwords={ADDRESS: PASSWORD}), DEFAULT_SMTP)
        rewrite_tables(data_dir / "mailstead.toml", {"pop3": {"idle_timeout": 60}})
        server = Server(data_dir).start(timeout=20)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        log = server.log_text()
        assert code == 0, log[-20000:]
        assert "Traceback" not in log, log[-20000:]


async def _stored(data_dir: Path) -> dict[str, bytes]:
    from mailstead.storage import open_store

    store = await open_store(data_dir)
    try:
        account = await store.get_account(ADDRESS)
        assert account is not None
        mailbox = await store.get_mailbox(account.id, "INBOX")
        assert mailbox is not None
        out: dict[str, bytes] = {}
        for info in await store.list_messages_in(mailbox.id):
            data = await store.read_blob(info.blob)
            out[_token(data)] = data
        return out
    finally:
        await store.close()


def stored(h: Harness) -> dict[str, bytes]:
    """The INBOX by X-Token, read through the MailStore API."""
    return asyncio.run(_stored(h.data_dir))


def _token(data: bytes) -> str:
    start = data.index(b"X-Token: ") + 9
    return data[start : data.index(b"\r\n", start)].decode()


def run_fetchmail(binary: str, h: Harness, work: Path, *, keep: bool) -> list[bytes]:
    """One fetchmail run; returns the messages it delivered, each minus fetchmail's own
    Received: header. An MDA writes each message to its own file, CR kept (no stripcr)."""
    out = work / "out"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f'poll "{HOSTNAME}" via 127.0.0.1 with proto POP3 port {h.port("pop3s")}\n'
        "  uidl no dns\n"
        f'  user "{ADDRESS}" there with password "{PASSWORD}" is "root" here\n'
        f'  ssl sslcertck sslcertfile "{h.cert_path}" sslcommonname "{HOSTNAME}"\n'
        f'  mda "cat > $(mktemp {out}/msg.XXXXXXXX)"\n'
        f"  no rewrite no stripcr {'keep' if keep else 'no keep fetchall'}\n",
        encoding="utf-8",
    )
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(work), FETCHMAILHOME=str(work))
    proc = subprocess.run(
        [binary, "-f", str(rc), "--idfile", str(work / "fetchids"), "--nodetach",
         "--pidfile", str(work / "fetchmail.pid")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    # Exit 0: messages retrieved; 1: no new mail (fetchmail(1), EXIT CODES).
    assert proc.returncode in (0, 1), f"fetchmail exit {proc.returncode}\n{proc.stderr}"
    messages = []
    for path in sorted(out.iterdir()):
        data = path.read_bytes()
        received, _ = split_received(data)
        assert len(received) >= 2, f"expected fetchmail's Received: and ours: {data[:300]!r}"
        assert b"fetchmail" in received[0], received[0]
        messages.append(data[len(received[0]) :])  # only fetchmail's field comes off
    return messages


def test_fetchmail_keep_then_delete(fetchmail: str, server: Harness, tmp_path: Path) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as client:
        for i in range(COUNT):
            body = b"".join(b".line %d\r\n" % n if n % 7 == 0 else b"line %d\r\n" % n
                            for n in range(i % 40))
            client.sendmail("sender@remote.test", [ADDRESS],
                            make_message(f"fm-{i:03d}", to=ADDRESS, body=body))
    before = stored(server)
    assert len(before) == COUNT

    def check(messages: list[bytes]) -> None:
        assert len(messages) == COUNT
        by_token = {_token(m): m for m in messages}
        assert len(by_token) == COUNT
        # Byte for byte: the server's Received: line and everything after it.
        assert by_token == before

    # 1. --keep: everything downloaded, everything stays on the server.
    check(run_fetchmail(fetchmail, server, tmp_path, keep=True))
    assert stored(server) == before
    # 2. --keep again: UIDL says nothing is new.
    assert run_fetchmail(fetchmail, server, tmp_path, keep=True) == []
    assert stored(server) == before
    # 3. Without --keep (fetchall, as the seen messages are otherwise skipped): downloaded
    #    again, then deleted at QUIT.
    check(run_fetchmail(fetchmail, server, tmp_path, keep=False))
    assert stored(server) == {}
