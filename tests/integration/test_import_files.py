"""Import and export of files against a real server and real writers: a Maildir++ tree that
Debian's mbsync pulled from one account imports into another with the same bodies, flags and
folders; an mbox written by Python's ``mailbox`` module imports with its flags and dates;
export maildir / export mbox then import reproduce every message byte for byte with its flags,
internal date and folder; a second import copies nothing."""

from __future__ import annotations

import imaplib
import mailbox
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import Harness, Server, Users, init_data_dir, run_cli

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
SOURCE, MAILDIR_COPY, MBOX_COPY, FROM_MBOX = (
    "src@example.test", "md@example.test", "mb@example.test", "py@example.test"
)
FOLDERS = ("INBOX", "Projekte/Grüße", "Sent", "Reisen 2024")
KEYWORDS = ("$Label1", "$Forwarded")

MBSYNC = """\
IMAPAccount src
Host 127.0.0.1
Port {port}
User {user}
Pass "{password}"
SSLType IMAPS
CertificateFile {cert}
AuthMechs LOGIN PLAIN

IMAPStore remote
Account src

MaildirStore local
Inbox {root}
SubFolders Maildir++

Channel pull
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
"""

State = dict[str, list[tuple[bytes, tuple[str, ...], str]]]


def message(n: int, folder: str) -> bytes:
    body = (f"Nachricht {n} in {folder}.\r\nFrom the start of a line\r\n>From quoted\r\n"
            "Ünïcödé 8-bit line\r\n")
    if n % 5 == 0:
        body += "=" * 70 + "\r\n" + "x" * 900 + "\r\n"
    return (f"From: Sender {n} <s{n}@remote.test>\r\nTo: src@example.test\r\n"
            f"Subject: m{n}\r\nMessage-ID: <{n}.{abs(hash(folder)) % 10**6}@remote.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()


def imap(h: Harness, user: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=30)
    client.login(user, PASSWORD)
    typ, _ = client.enable("UTF8=ACCEPT")
    assert typ == "OK"
    return client


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fill(h: Harness) -> None:
    client = imap(h, SOURCE)
    try:
        for folder in FOLDERS[1:]:
            if folder != "Sent":
                typ, _ = client.create(quoted(folder))
                assert typ == "OK"
        n = 0
        for folder in FOLDERS:
            for _ in range(6):
                flags = ["\\Seen"] if n % 2 else []
                if n % 3 == 0:
                    flags.append("\\Flagged")
                if n % 4 == 1:
                    flags.append(KEYWORDS[n % 2])
                when = imaplib.Time2Internaldate(1_600_000_000 + n * 86_400)
                typ, _ = client.append(quoted(folder), "(" + " ".join(flags) + ")", when,
                                       message(n, folder))
                assert typ == "OK"
                n += 1
    finally:
        client.logout()


def state(h: Harness, user: str) -> State:
    """Every folder but the empty default ones: (body, flags, INTERNALDATE) per message."""
    client = imap(h, user)
    out: State = {}
    try:
        typ, listing = client.list()
        assert typ == "OK"
        for line in listing:
            assert isinstance(line, bytes)
            name = line.decode().rsplit(' "/" ', 1)[1].strip('"').replace('\\"', '"')
            typ, count = client.select(quoted(name), readonly=True)
            assert typ == "OK", name
            if count[0] == b"0":
                continue
            typ, data = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            rows = []
            for item in data:
                if not isinstance(item, tuple):
                    continue
                meta = item[0].decode()
                flags = re.search(r"FLAGS \(([^)]*)\)", meta)
                date = re.search(r'INTERNALDATE "([^"]+)"', meta)
                assert flags, meta
                assert date, meta
                kept = tuple(sorted(f for f in flags.group(1).split() if f != "\\Recent"))
                rows.append((item[1], kept, date.group(1)))
            if rows:
                out[name] = sorted(rows)
    finally:
        client.logout()
    return out


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def no_dates(s: State) -> dict[str, list[tuple[bytes, tuple[str, ...]]]]:
    """Bodies with LF line ends and without mbsync's X-TUID tracking field, with flags."""
    return {k: sorted((re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", lf(b)), f) for b, f, _ in v)
            for k, v in s.items()}


@pytest.fixture
def harness(tmp_path: Path, store_backend: str) -> Harness:
    data = tmp_path / "data"
    init_data_dir(data, Users({u: PASSWORD for u in (SOURCE, MAILDIR_COPY, MBOX_COPY,
                                                       FROM_MBOX)}))
    server = Server(data).start()
    h = Harness(server)
    yield h  # type: ignore[misc]
    server.stop()


def test_export_import_round_trips_and_mbsync_maildir(harness: Harness, tmp_path: Path) -> None:
    h = harness
    data = str(h.data_dir)
    fill(h)
    source = state(h, SOURCE)
    assert set(source) == set(FOLDERS)
    assert sum(len(v) for v in source.values()) == 24

    # export maildir -> import maildir: identical bytes, flags, dates and folders.
    run_cli("export", "maildir", SOURCE, str(tmp_path / "md"), "--data-dir", data)
    out = run_cli("import", "maildir", str(tmp_path / "md"), "--into", MAILDIR_COPY,
                  "--data-dir", data)
    assert "messages: 24 " in out
    assert state(h, MAILDIR_COPY) == source
    again = run_cli("import", "maildir", str(tmp_path / "md"), "--into", MAILDIR_COPY,
                    "--data-dir", data)
    assert "messages: 0 " in again
    assert "skipped (already there): 24" in again
    assert state(h, MAILDIR_COPY) == source

    # export mbox -> import mbox, one folder per file.
    run_cli("export", "mbox", SOURCE, str(tmp_path / "mb"), "--data-dir", data)
    for folder in FOLDERS:
        path = tmp_path / "mb" / (folder + ".mbox")
        assert path.is_file(), sorted(p.name for p in (tmp_path / "mb").rglob("*"))
        run_cli("import", "mbox", str(path), "--into", MBOX_COPY, "--folder", folder,
                "--data-dir", data)
    assert state(h, MBOX_COPY) == source

    # A Maildir++ tree written by mbsync imports with the same bodies, flags and folders.
    if shutil.which("mbsync") is None:
        pytest.skip("mbsync (isync) is not installed")
    root = tmp_path / "mbsync"
    root.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(MBSYNC.format(port=h.port("imaps"), user=SOURCE, password=PASSWORD,
                                    cert=h.cert_path, root=root))
    proc = subprocess.run(["mbsync", "-c", str(config), "pull"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = [p for p in root.rglob("*") if p.is_file() and p.parent.name in ("cur", "new")]
    assert len(files) == 24
    run_cli("import", "maildir", str(root), "--into", FROM_MBOX, "--data-dir", data)
    pulled = state(h, FROM_MBOX)
    # Byte for byte what mbsync wrote (IMAP shows the stored LF line ends as CRLF).
    assert sorted(lf(b) for rows in pulled.values() for b, _, _ in rows) == sorted(
        lf(p.read_bytes()) for p in files)
    # mbsync stores LF line ends and its own file times: bodies and flags are compared.
    expected = no_dates(source)
    got = no_dates(pulled)
    assert set(got) == set(expected)
    for folder, rows in expected.items():
        assert got[folder] == rows, folder


def test_python_mailbox_mbox_imports_identically(harness: Harness, tmp_path: Path) -> None:
    h = harness
    path = tmp_path / "python.mbox"
    box = mailbox.mbox(str(path))
    written = []
    for n in range(20):
        m = mailbox.mboxMessage()
        m["From"] = f"p{n}@remote.test"
        m["Subject"] = f"python {n}"
        m["Message-ID"] = f"<py{n}@remote.test>"
        m.set_payload(f"first line\nFrom here on a body line {n}\nlast\n")
        flags = "RF" if n % 2 else ("A" if n % 3 == 0 else "")
        m.set_flags(flags)
        m.set_from(f"p{n}@remote.test", time.gmtime(1_650_000_000 + n * 60))
        box.add(m)
        written.append(flags)
    box.flush()
    box.close()
    run_cli("import", "mbox", str(path), "--into", FROM_MBOX, "--folder", "Alt/Python",
            "--data-dir", str(h.data_dir))
    got = state(h, FROM_MBOX)["Alt/Python"]
    assert len(got) == 20
    again_box = mailbox.mbox(str(path))
    reread = list(again_box)
    again_box.close()
    want = []
    for m, flags in zip(reread, written, strict=True):
        expected = {"\\Seen"} if "R" in flags else set()
        if "F" in flags:
            expected.add("\\Flagged")
        if "A" in flags:
            expected.add("\\Answered")
        want.append((tuple(sorted(expected)), m.get_from().split(" ", 1)[1]))
    by_subject = {re.search(rb"Subject: ([^\r\n]*)", b).group(1): f for b, f, _ in got}  # type: ignore[union-attr]
    for n, (flags, _) in enumerate(want):
        assert by_subject[f"python {n}".encode()] == flags
    # The From-quoted body line comes back as the body had it, and the stored bytes carry
    # the Status header Python wrote (the message is kept as the file holds it).
    assert all(b"\nFrom here on a body line" in b.replace(b"\r\n", b"\n") for b, _, _ in got)
    dates = sorted(d for _, _, d in got)
    assert dates[0].startswith("15-Apr-2022")
    again = run_cli("import", "mbox", str(path), "--into", FROM_MBOX, "--folder",
                    "Alt/Python", "--data-dir", str(h.data_dir))
    assert "messages: 0 " in again
