"""Debian's mbsync (isync) as a real sync client: 500 varied messages go up from a Maildir to
Mailstead over IMAPS, come down into an empty Maildir byte for byte with the same flags; a
second sync transfers nothing, and flag changes on either side propagate."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import Harness
from imap_corpus import make_corpus, read_maildir, write_maildir

pytestmark = pytest.mark.slow

CONFIG = """\
IMAPAccount mailstead
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}
AuthMechs LOGIN PLAIN
PipelineDepth 50

IMAPStore remote
Account mailstead

MaildirStore up
Path {root}/up/
Inbox {root}/up/INBOX

MaildirStore down
Path {root}/down/
Inbox {root}/down/INBOX

Channel up
Far :remote:INBOX
Near :up:INBOX
Create Both
Expunge None
Sync All
SyncState *

Channel down
Far :remote:INBOX
Near :down:INBOX
Create Both
Expunge None
Sync All
SyncState *
"""


def mbsync(config: Path, channel: str) -> str:
    proc = subprocess.run(["mbsync", "-c", str(config), "-V", channel], capture_output=True,
                          text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mbsync {channel} exited {proc.returncode}:\n{out[-6000:]}"
    return out


def snapshot(root: Path) -> dict[str, int]:
    """Every file of a Maildir tree with its mtime in ns: unchanged means nothing synced."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in root.rglob("*") if p.is_file() and ".mbsync" not in p.name}


def server_state(h: Harness, user: str, password: str) -> bytes:
    """STATUS of INBOX: MESSAGES, UIDNEXT and HIGHESTMODSEQ change with any transfer."""
    with imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls()) as client:
        client.login(user, password)
        typ, data = client.status("INBOX", "(MESSAGES UIDNEXT HIGHESTMODSEQ)")
        assert typ == "OK"
        return bytes(data[0])


def test_mbsync_round_trip(imap_server: Harness, imap_account: tuple[str, str],
                           tmp_path: Path) -> None:
    if shutil.which("mbsync") is None:
        pytest.skip("mbsync is not installed (make test-deps: isync)")
    user, password = imap_account
    corpus = make_corpus(500)
    write_maildir(tmp_path / "up" / "INBOX", corpus)
    config = tmp_path / "mbsyncrc"
    config.write_text(CONFIG.format(port=imap_server.port("imaps"), user=user,
                                    password=password, cert=imap_server.cert_path,
                                    root=tmp_path))
    os.chmod(config, 0o600)

    (tmp_path / "down").mkdir()
    mbsync(config, "up")
    assert b"MESSAGES 500" in server_state(imap_server, user, password)
    mbsync(config, "down")

    source = read_maildir(tmp_path / "up" / "INBOX")
    copy = read_maildir(tmp_path / "down" / "INBOX")
    assert set(source) == set(copy)
    assert len(copy) == 500
    for key, (data, flags) in source.items():
        assert copy[key][0] == data, f"{key!r}: bytes differ"
        assert copy[key][1] == flags, f"{key!r}: flags {copy[key][1]!r} != {flags!r}"

    # A second sync of both channels transfers nothing: no file and no server state changes.
    before = (snapshot(tmp_path / "up"), snapshot(tmp_path / "down"),
              server_state(imap_server, user, password))
    for channel in ("up", "down"):
        mbsync(config, channel)
    after = (snapshot(tmp_path / "up"), snapshot(tmp_path / "down"),
             server_state(imap_server, user, password))
    assert before == after

    # Mark a message seen locally (Maildir "S") -> the server has \Seen.
    cur = tmp_path / "up" / "INBOX" / "cur"
    target = next(p for p in sorted(cur.iterdir()) if p.name.endswith(":2,"))
    token = read_token(target.read_bytes())
    target.rename(target.with_name(target.name + "S"))
    mbsync(config, "up")
    with imaplib.IMAP4_SSL("127.0.0.1", imap_server.port("imaps"),
                           ssl_context=imap_server.tls()) as client:
        client.login(user, password)
        client.select("INBOX")
        typ, data = client.search(None, "HEADER", "Message-ID", token)
        assert typ == "OK"
        number = data[0].split()[0]
        typ, flags = client.fetch(number, "(FLAGS)")
        assert typ == "OK"
        assert b"\\Seen" in flags[0], flags
        # Flag a message on the server -> the Maildir file gets "F".
        typ, data = client.search(None, "UNFLAGGED")
        assert typ == "OK"
        flagged = data[0].split()[0]
        _typ, fetched = client.fetch(flagged, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        server_token = read_token(fetched[0][1])
        client.store(flagged, "+FLAGS", "(\\Flagged)")
    mbsync(config, "down")
    copy = read_maildir(tmp_path / "down" / "INBOX")
    assert "F" in copy[server_token.encode()][1]
    assert "S" in copy[token.encode()][1]


def read_token(data: bytes) -> str:
    match = re.search(rb"Message-ID: <([^>]+)>", data, re.I)
    assert match, data[:500]
    return match.group(1).decode()
