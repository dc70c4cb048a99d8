"""Damaged stored data against a real ``mailstead serve``: a message body whose bytes no longer
match its SHA-256 name is never served (IMAP ``NO [SERVERBUG]``, POP3 ``-ERR [SYS/PERM]``) while
the other messages and other clients are answered as usual."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_SMTP,
    REPO,
    Harness,
    Server,
    ServerError,
    Users,
    child_env,
    init_data_dir,
    make_message,
)

ALICE, ALICE_PW = "alice@example.test", "alice-Secret-1"
BOB, BOB_PW = "bob@example.test", "bob-Secret-2"
USERS = Users(passwords={ALICE: ALICE_PW, BOB: BOB_PW})


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp("integrity") / "data"
    try:
        init_data_dir(data_dir, USERS, DEFAULT_SMTP)
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


def deliver(h: Harness, address: str, tokens: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=15) as client:
        for token in tokens:
            client.sendmail("sender@remote.test", [address], make_message(token, to=address))


async def _damage(data_dir: Path, address: str, token: str) -> str:
    """Overwrites, in place, the stored body of the message holding ``token``: same length,
    one byte changed, as a failing disk would (SQLite: the file; PostgreSQL: the bytea)."""
    from mailstead.storage import open_store

    store = await open_store(data_dir)
    try:
        account = await store.get_account(address)
        assert account is not None
        for info in await store.list_messages(account.id, "INBOX"):
            data = (await store.read_blobs([info.blob])).get(info.blob, b"")  # damaged: b""
            if token.encode() not in data:
                continue
            damaged = data.replace(token.encode(), token.upper().encode(), 1)
            pool = getattr(store, "pool", None)
            if pool is not None:
                await pool.execute("UPDATE blobs SET data = $1 WHERE hash = $2",
                                   damaged, info.blob)
            else:
                store.blobs.path(info.blob).write_bytes(damaged)  # type: ignore[attr-defined]
            return info.blob
    finally:
        await store.close()
    raise AssertionError(f"no message with {token}")


def damage(h: Harness, address: str, token: str) -> str:
    return asyncio.run(_damage(h.data_dir, address, token))


def wait_for_log(h: Harness, pattern: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = h.log()
        if re.search(pattern, log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the log:\n{log[-5000:]}")
        time.sleep(0.02)


def imap_login(h: Harness, address: str, password: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=15)
    client.login(address, password)
    return client


def test_imap_fetch_answers_the_intact_messages_and_refuses_the_damaged_one(
    harness: Harness, token: str
) -> None:
    tokens = [f"{token}-a", f"{token}-b", f"{token}-c"]
    deliver(harness, BOB, tokens)
    damage(harness, BOB, tokens[1])
    client = imap_login(harness, BOB, BOB_PW)
    try:
        client.select("INBOX")
        _, ids = client.search(None, "ALL")
        numbers = ids[0].split()
        assert len(numbers) == 3
        for items in ("(BODY.PEEK[])", "(BODY.PEEK[]<0.100>)", "(BODY.PEEK[TEXT])"):
            typ, data = client.fetch(b"1:3", items)
            # imaplib turns a tagged NO into typ "NO" with the text as data.
            assert typ == "NO", (items, typ, data)
            assert b"[SERVERBUG]" in data[-1], data
            other = client.fetch(b"1,3", items)
            assert other[0] == "OK"
            sent = b"".join(p[1] for p in other[1] if isinstance(p, tuple))
            assert tokens[0].encode()[:20] in sent or items.endswith("<0.100>)")
        # The damaged bytes never go out, even for a partial FETCH of the damaged message.
        typ, data = client.fetch(b"2", "(BODY.PEEK[])")
        assert typ == "NO"
        assert b"[SERVERBUG]" in data[-1]
        # A FETCH that needs no body still works for the damaged message.
        typ, data = client.fetch(b"2", "(FLAGS RFC822.SIZE)")
        assert typ == "OK", data
        # The session goes on, and another client is answered at once.
        assert client.noop()[0] == "OK"
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", harness.smtp_port, timeout=5) as other:
            assert other.ehlo()[0] == 250
        assert time.monotonic() - started < 1.0
    finally:
        client.logout()
    log = wait_for_log(harness, r"store\.blob_corrupt")
    assert "mailstead verify" in log


def test_pop3_retr_refuses_the_damaged_message_and_the_session_goes_on(
    harness: Harness, token: str
) -> None:
    tokens = [f"{token}-x", f"{token}-y", f"{token}-z"]
    deliver(harness, ALICE, tokens)
    damage(harness, ALICE, tokens[1])
    client = poplib.POP3_SSL("127.0.0.1", harness.port("pop3s"), context=harness.tls(),
                             timeout=15)
    try:
        client.user(ALICE)
        client.pass_(ALICE_PW)
        count, _ = client.stat()
        found = {}
        for n in range(1, count + 1):
            try:
                _, lines, _ = client.retr(n)
            except poplib.error_proto as exc:
                found[n] = exc.args[0]
                continue
            found[n] = b"\r\n".join(lines)
        damaged = [n for n, v in found.items() if v.startswith(b"-ERR")]
        assert len(damaged) == 1, found
        assert b"[SYS/PERM]" in found[damaged[0]]
        assert tokens[1].encode() not in found[damaged[0]]
        good = b"".join(v for v in found.values() if not v.startswith(b"-ERR"))
        assert tokens[0].encode() in good
        assert tokens[2].encode() in good
        with pytest.raises(poplib.error_proto, match=r"SYS/PERM"):
            client.top(damaged[0], 0)
        assert client.noop().startswith(b"+OK")
    finally:
        client.quit()
    wait_for_log(harness, r"pop3\.message_damaged")


def test_verify_names_the_damaged_body(harness: Harness, token: str) -> None:
    deliver(harness, ALICE, [f"{token}-v"])
    blob = damage(harness, ALICE, f"{token}-v")
    done = subprocess.run(
        [sys.executable, "-m", "mailstead", "verify", "--data-dir", str(harness.data_dir)],
        capture_output=True, text=True, timeout=60, env=child_env(), cwd=REPO, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"damaged {blob}" in done.stdout
    assert "the store is damaged" in done.stdout
