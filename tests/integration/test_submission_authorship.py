"""Submission: the author a reader sees is an address the user owns (RFC 6409 section 6.1).

A bare LF inside BDAT once split the header differently for our From: check (CRLF lines) and
for every reader after us (LF lines), so a message "from" the victim went out DKIM-signed by
us. These tests send the attack bytes to a real server as alice and look at what a reader
would see: the mailbox over IMAP, and the outbound queue's copy read by Python's email parser
(which, like mail clients, ends header lines at LF).
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    RawSMTP,
    Server,
    ServerError,
    Users,
    _open_store,
    _run,
    dot_stuff,
    init_data_dir,
    read_queue,
    tls_context,
)

ALICE, ALICE_PW = "alice@a.test", "Wonder-4-land-pw"
CAROL, CAROL_PW = "carol@b.test", "Sing-2-christmas-pw"
OUTSIDE = "dave@remote.test"
USERS = Users(passwords={ALICE: ALICE_PW, CAROL: CAROL_PW}, domains=("a.test", "b.test"))

# The attack as reported: the first header lines end in bare LF, so CRLF-only readers see one
# header line "X-A: 1\nFrom: CEO ...\nSubject: x\n" and then alice's From:, while every
# LF-reading client sees carol's From: and an empty line before alice's.
ATTACK = (b"X-A: 1\nFrom: CEO <carol@b.test>\nSubject: x\n\r\nFrom: alice@a.test\r\n\r\n"
          b"body\r\n")
# The server process may use this much memory at most while serving these tests (VmHWM).
MAX_HWM_KIB = 256 * 1024


@pytest.fixture(scope="module")
def authors_server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("authors") / "data"
    try:
        init_data_dir(data_dir, USERS, {"max_message_size": 1024 * 1024})
        server = Server(data_dir).start(timeout=20)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        code = server.stop()
        log = server.log_text()
        assert code == 0, log[-5000:]
        assert "Traceback" not in log, log[-20000:]


def tls(server: Server) -> ssl.SSLContext:
    return tls_context(server.cert_path)


async def _blob(data_dir: Path, blob: str) -> bytes:
    store = await _open_store(data_dir)
    try:
        data: bytes = await store.read_blob(blob)
        return data
    finally:
        await store.close()


def submit(server: Server) -> RawSMTP:
    """A submission session, after STARTTLS and AUTH PLAIN as alice."""
    smtp = RawSMTP(server.ports["submission"])
    try:
        assert smtp.read_reply().code == 220
        smtp.ehlo("laptop.a.test")
        smtp.starttls(tls(server))
        smtp.ehlo("laptop.a.test")
        plain = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
        reply = smtp.command(f"AUTH PLAIN {plain}")
        assert reply.code == 235, reply
        assert smtp.command(f"MAIL FROM:<{ALICE}>").code == 250
        assert smtp.command(f"RCPT TO:<{CAROL}>").code == 250
        assert smtp.command(f"RCPT TO:<{OUTSIDE}>").code == 250
    except BaseException:
        smtp.close()
        raise
    return smtp


def carol_inbox_from(server: Server) -> list[list[str]]:
    """The From: fields of every message in carol's INBOX, as an IMAP client reads them."""
    with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=tls(server),
                           timeout=15) as client:
        client.login(CAROL, CAROL_PW)
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK", data
        if data[0] == b"0":
            return []
        typ, fetched = client.fetch("1:*", "(BODY.PEEK[HEADER])")
        assert typ == "OK", fetched
        headers = [part[1] for part in fetched if isinstance(part, tuple)]
    return [parsed_from(h) for h in headers]


def parsed_from(data: bytes) -> list[str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return [str(v) for v in message.get_all("From", [])]


def queued_from(server: Server) -> list[list[str]]:
    """The From: fields of each message the outbound queue holds for the outside recipient."""
    return [parsed_from(_run(_blob(server.data_dir, entry.blob)))
            for entry in read_queue(server.data_dir) if entry.rcpt_to == OUTSIDE]


def answers_within(server: Server, seconds: float) -> float:
    """Another client gets the greeting and a NOOP answered; how long it took."""
    start = time.monotonic()
    with RawSMTP(server.ports["smtp"], timeout=seconds) as other:
        assert other.read_reply().code == 220
        assert other.command("NOOP").code == 250
    took = time.monotonic() - start
    assert took < seconds, took
    return took


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_bdat_bare_lf_cannot_put_another_from_in_front(authors_server: Server) -> None:
    server = authors_server
    inbox_before, queue_before = carol_inbox_from(server), queued_from(server)
    with submit(server) as smtp:
        # The first chunk ends just before the first bare LF, so the rule must hold across
        # chunks; another client is served while this transaction waits for its last octets.
        smtp.send(b"BDAT 6\r\n" + ATTACK[:6])
        assert smtp.read_reply().code == 250
        smtp.send(b"BDAT %d LAST\r\n" % (len(ATTACK) - 6) + ATTACK[6:-1])
        answers_within(server, 1.0)
        smtp.send(ATTACK[-1:])
        reply = smtp.read_reply()
        # RFC 5321 section 2.3.8: refused like bare LF in DATA.
        assert (reply.code, reply.enhanced) == (554, "5.6.0"), reply
        assert smtp.command("QUIT").code == 221
    # Nothing stored, nothing queued: no reader ever sees carol as the author.
    assert carol_inbox_from(server) == inbox_before
    assert queued_from(server) == queue_before
    # With CRLF line ends, the header our check reads is the one every reader sees: carol's
    # From: (alice's is in the body), refused as not hers.
    clean = ATTACK.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with submit(server) as smtp:
        smtp.send(b"BDAT %d LAST\r\n" % len(clean) + clean)
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (553, "5.7.1"), reply
        assert "not owned" in reply.text, reply
        # An honest message reaches the mailbox and the queue, so the empty reads above
        # would have shown a stored copy.
        honest = b"From: Alice <alice@a.test>\r\nSubject: x\r\n\r\nbody\r\n"
        assert smtp.command(f"MAIL FROM:<{ALICE}>").code == 250
        assert smtp.command(f"RCPT TO:<{CAROL}>").code == 250
        assert smtp.command(f"RCPT TO:<{OUTSIDE}>").code == 250
        smtp.send(b"BDAT %d LAST\r\n" % len(honest) + honest)
        assert smtp.read_reply().code == 250
    assert carol_inbox_from(server) == [*inbox_before, ["Alice <alice@a.test>"]]
    assert queued_from(server) == [*queue_before, ["Alice <alice@a.test>"]]
    assert vm_hwm_kib(server.pid) < MAX_HWM_KIB


@pytest.mark.parametrize(("header", "code", "enhanced"), [
    (b"From: alice@a.test\r\nSender: carol@b.test\r\n", 553, "5.7.1"),
    (b"From: alice@a.test\r\nResent-From: carol@b.test\r\n", 553, "5.7.1"),
    (b"From: alice@a.test\r\nFrom: carol@b.test\r\n", 550, "5.6.0"),
    (b" From: carol@b.test\r\nFrom: alice@a.test\r\n", 550, "5.6.0"),
    (b"From: CEO\r\n <carol@b.test>\r\n", 553, "5.7.1"),
    (b"From: =?utf-8?b?Y2Fyb2xAYi50ZXN0?= <alice@a.test>\r\n", 550, "5.7.1"),
    (b'From: "carol@b.test" <alice@a.test>\r\n', 550, "5.7.1"),
])
def test_author_tricks_are_refused(
    authors_server: Server, header: bytes, code: int, enhanced: str
) -> None:
    server = authors_server
    inbox_before, queue_before = carol_inbox_from(server), queued_from(server)
    message = header + b"Subject: trick\r\n\r\nbody\r\n"
    with submit(server) as smtp:
        assert smtp.command("DATA").code == 354
        smtp.send(dot_stuff(message))
        reply = smtp.read_reply()
        assert (reply.code, reply.enhanced) == (code, enhanced), reply
        assert smtp.command("NOOP").code == 250
    assert carol_inbox_from(server) == inbox_before
    assert queued_from(server) == queue_before
