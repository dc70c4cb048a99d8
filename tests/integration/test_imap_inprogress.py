"""INPROGRESS (RFC 9585) against a real ``mailstead serve`` whose notices come every 0.2 s:
a FETCH of a big mailbox sends ``* OK [INPROGRESS ("tag" n total)]`` before its tagged OK,
counts rising to the total; a COPY of all of it (one transaction) can only say 0 of the
total; fast commands send none."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from helpers import (
    DEFAULT_SMTP,
    USERS,
    Harness,
    RawIMAP,
    Server,
    add_user,
    configure_imap,
    init_data_dir,
    run_cli,
)

ADDRESS, PASSWORD = "progress@example.test", "Pw-7c1e9a0b5d"
MESSAGES = 1500
INTERVAL = 0.2
NOTICE = re.compile(rb'\* OK \[INPROGRESS \("([^"]+)" (\d+|NIL) (\d+|NIL)\)\]')


@pytest.fixture(scope="module")
def progress_server(tmp_path_factory: pytest.TempPathFactory,
                    store_backend: str) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("progress")
    data_dir = root / "data"
    init_data_dir(data_dir, USERS, DEFAULT_SMTP)
    configure_imap(data_dir, {"progress_interval": INTERVAL})
    server = Server(data_dir).start(timeout=20)
    try:
        add_user(data_dir, ADDRESS, PASSWORD)
        mbox = root / "big.mbox"
        body = ("x" * 76 + "\n") * 300  # about 23 KB each
        with mbox.open("w", encoding="ascii") as out:
            for n in range(MESSAGES):
                out.write(f"From sender@remote.test Mon Jan  1 10:00:00 2024\n"
                          f"From: <sender@remote.test>\nTo: <{ADDRESS}>\nSubject: big {n}\n"
                          f"Message-ID: <big{n}@remote.test>\n\n{body}\n")
        run_cli("import", "mbox", str(mbox), "--into", ADDRESS, "--folder", "INBOX",
                "--data-dir", str(data_dir), timeout=300)
        yield Harness(server)
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.log_text()


def notices(lines: tuple[bytes, ...], tag: bytes) -> list[tuple[int | None, int | None]]:
    out = []
    for line in lines:
        match = NOTICE.match(line)
        if match:
            assert match.group(1) == tag, line
            out.append(tuple(None if g == b"NIL" else int(g) for g in match.group(2, 3)))
    return out  # type: ignore[return-value]


def test_long_commands_report_progress(progress_server: Harness) -> None:
    client = RawIMAP(progress_server.port("imaps"), tls=progress_server.tls())
    with client:
        client.login(ADDRESS, PASSWORD)
        assert b" INPROGRESS" in client.command("CAPABILITY").untagged[0]
        selected = client.command("SELECT INBOX")
        assert f"* {MESSAGES} EXISTS".encode() in selected.untagged, selected
        for command in ("NOOP", "UID FETCH 1:5 (FLAGS)", "UID SEARCH UID 1:10"):
            response = client.command(command)
            assert response.status == b"OK", response
            assert not notices(response.untagged, response.tag), (command, response)
        response = client.command("UID FETCH 1:* (BODY.PEEK[] BODY.PEEK[TEXT])")
        assert response.status == b"OK", response.tagged
        seen = notices(response.untagged, response.tag)
        # RFC 9585 section 3: the count never passes the total, which is the messages asked.
        assert seen, "no INPROGRESS during a FETCH of the whole mailbox"
        assert all(total == MESSAGES and done is not None and done <= total
                   for done, total in seen), seen
        assert [done for done, _ in seen] == sorted(done for done, _ in seen), seen
        # THREAD=REFERENCES reads the header of every message: its notices count them.
        response = client.command("UID THREAD REFERENCES UTF-8 ALL")
        assert response.status == b"OK", response.tagged
        seen = notices(response.untagged, response.tag)
        assert all(total in (None, MESSAGES) and (done is None) == (total is None)
                   for done, total in seen), seen
        assert client.command("CREATE Copy").status == b"OK"
        response = client.command("UID COPY 1:* Copy")
        assert response.status == b"OK", response.tagged
        for done, total in notices(response.untagged, response.tag):
            assert (done, total) == (0, MESSAGES)
