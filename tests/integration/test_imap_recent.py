"""\\Recent as RFC 3501 defines it (section 2.3.2), seen through imaplib against a real server:
a message delivered by SMTP is recent to the first session that selects the mailbox and to
no other; EXAMINE (section 6.3.2) and STATUS (section 6.3.10) count it without taking it;
SEARCH NEW, OLD and RECENT (section 6.4.4) follow; a restart makes no old mail recent again;
and a session that enabled IMAP4rev2 (which has no \\Recent, RFC 9051 appendix E) neither
sees it nor takes it from IMAP4rev1 sessions."""

from __future__ import annotations

import imaplib
import smtplib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_IMAP,
    DEFAULT_SMTP,
    USERS,
    Harness,
    Server,
    add_user,
    configure_imap,
    init_data_dir,
    make_message,
)


def stop(server: Server) -> None:
    code = server.stop()
    log = server.log_text()
    assert code == 0, log[-5000:]
    assert "Traceback" not in log, log[-20000:]


class Restartable:
    """A server of its own, which the test may stop and start again on the same data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.harness = Harness(Server(data_dir).start(timeout=20))

    def restart(self) -> None:
        stop(self.harness.server)
        self.harness = Harness(Server(self.data_dir).start(timeout=20))


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[Restartable]:
    data_dir = tmp_path_factory.mktemp("recent") / "data"
    init_data_dir(data_dir, USERS, DEFAULT_SMTP)
    configure_imap(data_dir, DEFAULT_IMAP)
    server = Restartable(data_dir)
    try:
        yield server
    finally:
        stop(server.harness.server)


@pytest.fixture
def account(own: Restartable) -> tuple[str, str]:
    address, password = f"r{uuid.uuid4().hex[:12]}@example.test", f"Pw-{uuid.uuid4().hex}"
    add_user(own.data_dir, address, password)
    return address, password


def login(h: Harness, account: tuple[str, str]) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=15)
    client.login(*account)
    return client


def deliver(h: Harness, address: str, token: str) -> None:
    with smtplib.SMTP("127.0.0.1", h.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@remote.test", [address], make_message(token))


def status_recent(client: imaplib.IMAP4_SSL) -> int:
    typ, data = client.status("INBOX", "(RECENT)")
    assert typ == "OK", data
    text = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
    return int(text.rsplit("RECENT ", 1)[1].rstrip(")"))


def opened_recent(client: imaplib.IMAP4_SSL, *, readonly: bool) -> int:
    """SELECT or EXAMINE INBOX; the RECENT count it gave."""
    typ, data = client.select("INBOX", readonly=readonly)
    assert typ == "OK", data
    recent = client.untagged_responses.get("RECENT")
    assert recent is not None, "no RECENT response (IMAP4rev1, RFC 3501 section 7.3.2)"
    return int(recent[-1])


def search(client: imaplib.IMAP4_SSL, key: str) -> list[int]:
    typ, data = client.search(None, key)
    assert typ == "OK", data
    return [int(n) for n in data[0].split()]


def fetch_flags(client: imaplib.IMAP4_SSL, seq: str) -> set[bytes]:
    typ, data = client.fetch(seq, "(FLAGS)")
    assert typ == "OK", data
    return set(imaplib.ParseFlags(data[0]))  # type: ignore[arg-type]


def test_recent_goes_to_one_session_and_survives_a_restart(
        own: Restartable, account: tuple[str, str]) -> None:
    h = own.harness
    address = account[0]
    deliver(h, address, "recent-1")
    with login(h, account) as s, login(h, account) as e:
        assert status_recent(s) == 1
        # EXAMINE sees it recent and counts it, but does not take it.
        assert opened_recent(e, readonly=True) == 1
        assert search(e, "NEW") == [1]
        assert search(e, "OLD") == []
        assert b"\\Recent" in fetch_flags(e, "1")
        assert opened_recent(e, readonly=True) == 1
        assert status_recent(s) == 1
        with login(h, account) as a, login(h, account) as b:
            # The first read-write SELECT takes it; a concurrent one gets none.
            assert opened_recent(a, readonly=False) == 1
            assert b"\\Recent" in fetch_flags(a, "1")
            assert opened_recent(b, readonly=False) == 0
            assert b"\\Recent" not in fetch_flags(b, "1")
            assert search(a, "RECENT") == [1]
            assert search(b, "NEW") == []
            assert search(b, "OLD") == [1]
            assert status_recent(s) == 0
            assert opened_recent(e, readonly=True) == 0
            # A message arriving while both are selected goes to the first that hears of it.
            deliver(h, address, "recent-2")
            typ, _ = a.noop()
            assert typ == "OK"
            assert a.untagged_responses.get("RECENT", [b"?"])[-1] == b"2"
            b.noop()
            assert search(a, "NEW") == [1, 2]
            assert search(b, "NEW") == []
            assert search(b, "OLD") == [1, 2]
            assert status_recent(s) == 0
            a.logout()
            b.logout()
        e.logout()
        s.logout()
    own.restart()
    h = own.harness
    with login(h, account) as c:
        assert status_recent(c) == 0
        assert opened_recent(c, readonly=False) == 0
        assert search(c, "RECENT") == []
        assert search(c, "OLD") == [1, 2]
        c.logout()


def test_imap4rev2_session_neither_sees_nor_takes_recent(
        own: Restartable, account: tuple[str, str]) -> None:
    h = own.harness
    deliver(h, account[0], "rev2-1")
    with login(h, account) as rev2, login(h, account) as rev1:
        typ, data = rev2.enable("IMAP4rev2")
        assert typ == "OK", data
        typ, data = rev2.select("INBOX")
        assert typ == "OK", data
        assert "RECENT" not in rev2.untagged_responses  # RFC 9051 has no RECENT response
        assert b"\\Recent" not in fetch_flags(rev2, "1")
        # Still recent for the IMAP4rev1 session, which takes it.
        assert status_recent(rev1) == 1
        assert opened_recent(rev1, readonly=False) == 1
        assert b"\\Recent" in fetch_flags(rev1, "1")
        deliver(h, account[0], "rev2-2")
        rev2.noop()
        assert b"\\Recent" not in fetch_flags(rev2, "2")
        rev1.noop()
        assert b"\\Recent" in fetch_flags(rev1, "2")
        rev2.logout()
        rev1.logout()
