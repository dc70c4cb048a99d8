"""LIST with thousands of mailboxes, and the per-account mailbox limit, on a real server.

An account with thousands of mailboxes (made by a hostile or careless client with CREATE)
must not stall LIST for its own client nor every other client of the process: LIST answers
in one pass, and another session's NOOP is answered within a second while LIST loops. Past
``[limits] max_mailboxes_per_account`` CREATE gets NO [LIMIT] (RFC 9051 section 7.1) and a
Sieve ``fileinto :create`` keeps the message in INBOX instead (nothing is lost).
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from helpers import (
    DEFAULT_IMAP,
    DEFAULT_SMTP,
    Harness,
    RawIMAP,
    Server,
    Users,
    _open_store,
    configure_imap,
    create_mailboxes,
    init_data_dir,
    read_mailbox,
    rewrite_tables,
    rss_kib,
)

Account = tuple[str, str]

MANY = 3000  # 4,500 names with their parents; the quadratic LIST took 1.4 s here
LIMIT = 25
USER, PASSWORD = "capped@example.test", "capped-Secret-1"


def session(h: Harness, account: Account) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    client.login(*account)
    return client


def test_list_of_thousands_of_mailboxes_is_fast_and_stalls_nobody(
    imap_server: Harness, imap_account: Account
) -> None:
    # p<k>/box<i>: 1,500 parents with two children each, as a hierarchy of folders makes.
    names = [f"p{i % (MANY // 2)}/box{i}" for i in range(MANY)]
    create_mailboxes(imap_server.data_dir, imap_account[0], names)
    rss_before = rss_kib(imap_server.server.pid)
    with session(imap_server, imap_account) as lister, \
            session(imap_server, imap_account) as other:
        started = time.monotonic()
        response = lister.command('LIST "" "*"')
        elapsed = time.monotonic() - started
        assert response.status == b"OK", response
        lines = set(response.untagged)
        # Every mailbox, its implied parent (\Noselect, RFC 9051 section 7.3.1) and INBOX.
        assert len(lines) >= MANY + MANY // 2 + 1
        assert b'* LIST (\\Noselect \\HasChildren) "/" p7' in lines
        assert b'* LIST (\\HasNoChildren) "/" p7/box7' in lines
        assert elapsed < 0.5, f"LIST of {len(lines)} names took {elapsed:.2f} s"
        # RFC 5819: STATUS of every mailbox, from one aggregate read rather than one each.
        started = time.monotonic()
        response = lister.command('LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN SIZE))')
        elapsed = time.monotonic() - started
        assert response.status == b"OK", response
        statuses = [line for line in response.untagged if line.startswith(b"* STATUS ")]
        assert len(statuses) == len(lines) - MANY // 2  # all but the implied parents
        assert b"* STATUS p7/box7 (MESSAGES 0 UNSEEN 0 SIZE 0)" in statuses
        assert elapsed < 1.0, f"LIST RETURN (STATUS) took {elapsed:.2f} s"

        stop = threading.Event()
        errors: list[BaseException] = []
        lists: list[float] = []

        def keep_listing() -> None:
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    assert lister.command('LIST "" "*"').status == b"OK"
                    lists.append(time.monotonic() - t0)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=keep_listing, daemon=True)
        thread.start()
        noops: list[float] = []
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline or len(lists) < 3:
                assert time.monotonic() < deadline + 30, "LIST loop made no progress"
                t0 = time.monotonic()
                assert other.command("NOOP").status == b"OK"
                noops.append(time.monotonic() - t0)
                stop.wait(0.02)  # pacing of the probe, not synchronisation
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not errors, errors
        assert max(noops) < 1.0, f"NOOP waited {max(noops):.2f} s while LIST looped"
        grown = rss_kib(imap_server.server.pid) - rss_before
        assert grown < 64 * 1024, f"server grew {grown} KiB listing {MANY} mailboxes"


def test_hostile_list_pattern_does_not_stall_the_server(
    imap_server: Harness, imap_account: Account
) -> None:
    # A backtracking match of "*a*a*a*a*b" against 250 a's takes tens of seconds.
    with session(imap_server, imap_account) as client, \
            session(imap_server, imap_account) as other:
        assert client.command(b"CREATE " + b"a" * 250).status == b"OK"
        started = time.monotonic()
        response = client.command(b'LIST "" "*a*a*a*a*a*b"')
        assert response.status == b"OK", response
        assert not [line for line in response.untagged if line.startswith(b"* LIST")]
        assert time.monotonic() - started < 1.0
        response = client.command(b'LIST "" "%a*a%a*a"')
        assert response.untagged == (b'* LIST (\\HasNoChildren) "/" ' + b"a" * 250,)
        started = time.monotonic()
        assert other.command("NOOP").status == b"OK"
        assert time.monotonic() - started < 1.0


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Harness]:
    """A server whose accounts may have at most LIMIT mailboxes."""
    data_dir = tmp_path_factory.mktemp("capped") / "data"
    init_data_dir(data_dir, Users(passwords={USER: PASSWORD}), DEFAULT_SMTP)
    configure_imap(data_dir, DEFAULT_IMAP)
    rewrite_tables(data_dir / "mailstead.toml", {"limits": {"max_mailboxes_per_account": LIMIT}})
    server = Server(data_dir).start(timeout=20)
    try:
        yield Harness(server)
    finally:
        code = server.stop()
        log = server.log_text()
        assert code == 0, log[-5000:]
        assert "Traceback" not in log, log[-20000:]


def test_create_past_the_limit_gets_no_limit(capped: Harness) -> None:
    with session(capped, (USER, PASSWORD)) as client, \
            session(capped, (USER, PASSWORD)) as other:
        have = sum(1 for line in client.command('LIST "" "*"').untagged
                   if line.startswith(b"* LIST"))
        # Pipelined CREATEs, as a hostile client sends them: the first LIMIT - have succeed.
        count = 2 * LIMIT
        client.send(b"".join(b"c%d CREATE flood%d\r\n" % (i, i) for i in range(count)))
        answers = [client.read_until(b"c%d" % i) for i in range(count)]
        ok = [a for a in answers if a.status == b"OK"]
        refused = [a for a in answers if a.status == b"NO"]
        assert len(ok) == LIMIT - have
        assert len(refused) == count - len(ok)
        assert all(a.tagged.split(b" ", 3)[2] == b"[LIMIT]" for a in refused), refused[0]
        assert client.command("RENAME INBOX Old").tagged.split(b" ", 3)[1:3] == [
            b"NO", b"[LIMIT]"]
        # Another session is unaffected, and the count on the server is exactly the limit.
        assert other.command("NOOP").status == b"OK"
        listed = [line for line in other.command('LIST "" "*"').untagged
                  if line.startswith(b"* LIST")]
        assert len(listed) == LIMIT
        # SUBSCRIBE needs no mailbox: a flood of them is bounded the same way.
        client.send(b"".join(b"s%d SUBSCRIBE ghost%d\r\n" % (i, i) for i in range(count)))
        answers = [client.read_until(b"s%d" % i) for i in range(count)]
        assert sum(a.status == b"OK" for a in answers) <= LIMIT
        assert answers[-1].tagged.split(b" ", 3)[1:3] == [b"NO", b"[LIMIT]"]
        lsub = other.command('LSUB "" "*"')
        assert lsub.status == b"OK"
        assert len(lsub.untagged) == LIMIT
        # Room made by DELETE can be used again.
        assert client.command("DELETE flood0").status == b"OK"
        assert client.command("CREATE again").status == b"OK"
        assert client.command("CREATE again2").tagged.split(b" ", 3)[2] == b"[LIMIT]"


def test_sieve_fileinto_create_past_the_limit_keeps_the_message(capped: Harness) -> None:
    script = 'require ["fileinto", "mailbox"];\nfileinto :create "Overflow";\n'

    async def fill_and_install() -> None:
        store = await _open_store(capped.data_dir)
        try:
            account = await store.get_account(USER)
            assert account is not None
            have = len(await store.list_mailboxes(account.id))
            for i in range(LIMIT - have):
                await store.create_mailbox(account.id, f"filler{i}")
            await store.put_sieve_script(account.id, "cap", script)
            await store.set_active_sieve_script(account.id, "cap")
        finally:
            await store.close()

    async def overflow_exists() -> bool:
        store = await _open_store(capped.data_dir)
        try:
            account = await store.get_account(USER)
            assert account is not None
            return await store.get_mailbox(account.id, "Overflow") is not None
        finally:
            await store.close()

    asyncio.run(fill_and_install())
    token = f"tok-{uuid.uuid4().hex[:16]}"
    message = (f"From: sender@remote.test\r\nTo: {USER}\r\nSubject: {token}\r\n"
               f"Message-ID: <{token}@remote.test>\r\n\r\nbody {token}\r\n")
    with smtplib.SMTP("127.0.0.1", capped.smtp_port, timeout=15) as smtp:
        smtp.sendmail("sender@remote.test", [USER], message.encode())
    # Accepted (250) means stored: the account is full, so it is in INBOX, not lost.
    assert any(token.encode() in m for m in read_mailbox(capped.data_dir, USER))
    assert not asyncio.run(overflow_exists())
