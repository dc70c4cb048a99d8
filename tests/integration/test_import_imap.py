"""``mailstead import imap`` from Debian's Dovecot, started by the test on loopback and filled
by writing its Maildir (5,000 messages in 20 folders): non-ASCII folder names in Dovecot's "."
hierarchy, a folder known only by its SPECIAL-USE attribute, flags, keywords, 8-bit and
binary-encoded bodies, varied internal dates. The first import is SIGKILLed part-way (a relay
in front of Dovecot stops passing data after 1.5 MB), the second completes it; then both sides
are compared message by message over imaplib. Also: a refused login names app passwords, an
untrusted certificate is refused with its fingerprint, a renumbered folder is matched by
content. Skipped when not root or Dovecot is missing."""

from __future__ import annotations

import imaplib
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from helpers import REPO, Harness, add_user, child_env, make_message

from mailstead.core.certs import certificate_fingerprint, generate_self_signed
from mailstead.proto.imap import mutf7

USER, PASSWORD = "dave@source.test", "Dave-pass-456"
DOVECOT_CONF = """\
base_dir = {d}/dovecot-run
state_dir = {d}/dovecot-state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/mail/%u
# A folder whose name says nothing: only its SPECIAL-USE attribute (RFC 6154) makes it Junk.
namespace inbox {{
  inbox = yes
  separator = .
  mailbox "Ordner 13 ä" {{
    special_use = \\Junk
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
"""
# Source folder (Unicode, "." hierarchy) -> the Mailstead folder it must become.
FOLDERS = {
    "INBOX": "INBOX",
    "Sent Messages": "Sent",
    "Entwürfe": "Drafts",
    "Projekte": "Projekte",
    "Projekte.Ünïcødé 2024": "Projekte/Ünïcødé 2024",
    "Reisen ✈": "Reisen ✈",
    **{f"Ordner {i:02d} ä": f"Ordner {i:02d} ä" for i in range(13)},
    "Ordner 13 ä": "Junk",  # by its SPECIAL-USE attribute (the config above)
}
PER_FOLDER = 250
FLAG_SETS = [(), ("\\Seen",), ("\\Seen", "\\Flagged"), ("\\Answered", "$Forwarded"),
             ("\\Seen", "Projekt-X", "$Label1"), ("\\Draft",)]


@dataclass
class Dovecot:
    port: int
    cert: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def _message(folder: str, n: int) -> bytes:
    kind = n % 3
    head = (f"From: Someone <someone@remote.test>\r\nTo: {USER}\r\n"
            f"Subject: {folder} #{n} caf\u00e9\r\n"
            f"Message-ID: <{n}.{len(folder)}.{folder.encode().hex()[:12]}@src.test>\r\n"
            "MIME-Version: 1.0\r\n").encode()
    if kind == 0:
        return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlain text.\r\n"
    if kind == 1:
        body = ("Gr\u00fc\u00dfe aus M\u00fcnchen \u2014 8-bit body\r\n" * (n % 7 + 1)).encode()
        return (head + b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body)
    blob = bytes((i * 37 + n) % 255 + 1 for i in range(2000 + n * 50)).replace(b"\r", b"\x0e")
    blob = blob.replace(b"\n", b"\x0f")
    return (head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
            b"Content-Type: text/plain\r\n\r\nsee attachment\r\n--b1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            + blob + b"\r\n--b1--\r\n")


# Dovecot's Maildir flag letters (RFC 3501 system flags) and its keyword file's letters.
_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
_KEYWORDS = ["$Forwarded", "Projekt-X", "$Label1"]


def _fill(root: Path) -> None:
    """Writes the account's Maildir++ directly (fast): folder names in modified UTF-7 with
    "." levels, flags in the file names, keywords in dovecot-keywords, the internal date as
    the file's mtime."""
    maildir = root / USER
    for index, folder in enumerate(FOLDERS):
        box = maildir if folder == "INBOX" else maildir / ("." + mutf7.encode(folder))
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        (box / "dovecot-keywords").write_text(
            "".join(f"{i} {k}\n" for i, k in enumerate(_KEYWORDS)))
        for n in range(PER_FOLDER):
            flags = FLAG_SETS[n % len(FLAG_SETS)]
            letters = "".join(sorted(_LETTERS[f] for f in flags if f in _LETTERS))
            letters += "".join(chr(ord("a") + _KEYWORDS.index(f)) for f in flags
                               if f in _KEYWORDS)
            path = box / "cur" / f"{1700000000 + n}.M{index}P{n}.src:2,{letters}"
            path.write_bytes(_message(folder, n))
            when = 1_700_000_000 - 86400 * (n * 13 % 900) - n * 3607
            os.utime(path, (when, when))


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if os.geteuid() != 0:
        pytest.skip("Dovecot is started as root; not root here")
    if not (shutil.which("dovecot") and shutil.which("doveadm")):
        pytest.skip("dovecot is not installed")
    d = Path(tempfile.mkdtemp(prefix="mailstead-import-", dir="/tmp"))
    d.chmod(0o755)
    generate_self_signed("source.test", d / "cert.pem", d / "key.pem",
                         ip_addresses=[ipaddress.IPv4Address("127.0.0.1")])
    (d / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = _free_port()
    (d / "dovecot.conf").write_text(DOVECOT_CONF.format(d=d, imaps=port))
    (d / "mail").mkdir()
    _fill(d / "mail")
    subprocess.run(["chown", "-R", "dovecot:dovecot", str(d / "mail")], check=True)
    with (d / "start.log").open("w") as log:
        subprocess.run(["dovecot", "-c", str(d / "dovecot.conf")], check=True,
                       stdout=log, stderr=log, stdin=subprocess.DEVNULL, timeout=30)
    try:
        _wait_port(port)
        yield Dovecot(port, d / "cert.pem")
    finally:
        subprocess.run(["doveadm", "-c", str(d / "dovecot.conf"), "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        shutil.rmtree(d, ignore_errors=True)


class Relay:
    """A TCP relay to Dovecot that stops passing the server's bytes after ``limit`` octets,
    so an import can be caught half-way without any timing guess."""

    def __init__(self, port: int, limit: int) -> None:
        self.target = port
        self.limit = limit
        self.passed = 0
        self.stalled = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.socks: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target))
        self.socks += [client, upstream]
        for a, b, count in ((client, upstream, False), (upstream, client, True)):
            t = threading.Thread(target=self._pump, args=(a, b, count), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(16384):
                if count:
                    room = self.limit - self.passed
                    if room <= 0:
                        self.stalled.set()
                        return
                    data = data[:room]
                    self.passed += len(data)
                dst.sendall(data)
                if count and self.passed >= self.limit:
                    self.stalled.set()
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for sock in self.socks:
            sock.close()
        for t in self.threads:
            t.join(5)


def _import(h: Harness, address: str, port: int, cert: Path | None, password: str = PASSWORD,
            extra: tuple[str, ...] = (), user: str = USER) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailstead", "import", "imap", "--host", "127.0.0.1",
         "--port", str(port), "--ssl", "--user", user, "--password-stdin", "--into", address,
         "--data-dir", str(h.data_dir), *extra,
         *(("--ca-file", str(cert)) if cert else ())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(), cwd=REPO)


def _finish(proc: subprocess.Popen[str], password: str = PASSWORD) -> tuple[int, str, str]:
    out, err = proc.communicate(password + "\n", timeout=120)
    return proc.returncode, out, err


def _date(value: bytes) -> float:
    day, month, rest = value.decode().strip().split("-", 2)
    return parsedate_to_datetime(f"{day} {month} {rest}").timestamp()


_ITEM = re.compile(rb'FLAGS \(([^)]*)\) INTERNALDATE "([^"]+)"')


def _contents(imap: imaplib.IMAP4, wire: str) -> Counter[tuple[bytes, frozenset[str], float]]:
    """Every message of a folder as (body, flags, internal date), counted."""
    typ, _ = imap.select(wire, readonly=True)
    assert typ == "OK", wire
    typ, data = imap.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    out: Counter[tuple[bytes, frozenset[str], float]] = Counter()
    for item in data:
        if isinstance(item, tuple):
            m = _ITEM.search(item[0])
            assert m, item[0]
            flags = frozenset(f for f in m.group(1).decode().split() if f != "\\Recent")
            out[(item[1], flags, _date(m.group(2)))] += 1
    imap.close()
    return out


def _mailstead_imap(h: Harness, address: str, password: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", h.port("imaps"), ssl_context=h.tls(), timeout=30)
    imap.login(address, password)
    return imap


def test_import_killed_half_way_then_completed(
    dovecot: Dovecot, imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    address, password = imap_account
    relay = Relay(dovecot.port, limit=1_500_000)
    try:
        proc = _import(imap_server, address, relay.port, dovecot.cert)
        assert proc.stdin is not None
        proc.stdin.write(PASSWORD + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not relay.stalled.wait(0.05):
            if proc.poll() is not None:
                pytest.fail(f"the import ended early: {proc.communicate()}")
            assert time.monotonic() < deadline, "the import never got half-way"
        # Wait until some of what passed is committed, then kill without warning.
        deadline = time.monotonic() + 30
        with _mailstead_imap(imap_server, address, password) as target:
            while True:
                held = 0
                for ours in FOLDERS.values():
                    typ, data = target.status('"' + mutf7.encode(ours) + '"', "(MESSAGES)")
                    if typ == "OK":
                        held += int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))  # type: ignore[union-attr]
                if held:
                    break
                assert time.monotonic() < deadline, "nothing was committed"
                time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    finally:
        relay.close()

    started = time.monotonic()
    code, out, err = _finish(_import(imap_server, address, dovecot.port, dovecot.cert))
    elapsed = time.monotonic() - started
    assert code == 0, out + err
    assert "failed: 0" in out
    skipped = int(re.search(r"skipped \(already there\): ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert skipped > 0, out  # the first run's messages were not copied again

    ctx = ssl.create_default_context(cafile=str(dovecot.cert))
    with imaplib.IMAP4_SSL("127.0.0.1", dovecot.port, ssl_context=ctx, timeout=30) as source, \
            _mailstead_imap(imap_server, address, password) as target:
        source.login(USER, PASSWORD)
        for folder, ours in FOLDERS.items():
            theirs = _contents(source, '"' + mutf7.encode(folder) + '"')
            mine = _contents(target, '"' + mutf7.encode(ours) + '"')
            assert sum(theirs.values()) == PER_FOLDER
            assert mine == theirs, f"{folder} -> {ours}"
        # The source was only read: no \Seen set by the import.
        unseen = _contents(source, "INBOX")
        assert sum(1 for body, flags, _ in unseen if "\\Seen" not in flags) > 0

    # A third run finds everything there.
    code, out, err = _finish(_import(imap_server, address, dovecot.port, dovecot.cert))
    assert code == 0, out + err
    assert "messages: 0 " in out
    assert f"skipped (already there): {len(FOLDERS) * PER_FOLDER:,}" in out
    print(f"second run: {elapsed:.1f} s")


def test_refused_login_mentions_app_passwords(
    dovecot: Dovecot, imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    code, _, err = _finish(_import(imap_server, imap_account[0], dovecot.port, dovecot.cert),
                           password="wrong-password")
    assert code == 1
    assert "app password" in err
    assert f"127.0.0.1:{dovecot.port}" in err
    assert USER in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_untrusted_certificate_is_refused_with_its_fingerprint(
    dovecot: Dovecot, imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    code, _, err = _finish(_import(imap_server, imap_account[0], dovecot.port, None))
    assert code == 1
    assert "not trusted" in err
    assert certificate_fingerprint(dovecot.cert) in err
    assert "--ca-file" in err
    assert "Traceback" not in err


def test_import_from_another_mailstead_while_mail_arrives(
    server: Harness, imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    """The source is a second Mailstead instance; a message delivered to the target by SMTP
    while the import is under way is kept, and the import is still exactly one copy."""
    source_user = f"s{uuid.uuid4().hex[:10]}@example.test"
    source_password = f"Pw-{uuid.uuid4().hex}"
    add_user(server.data_dir, source_user, source_password)
    folders = {"INBOX": "INBOX", "Sent": "Sent", "Kunden/Müller & Söhne": "Kunden/Müller & Söhne"}
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=server.tls(),
                           timeout=30) as imap:
        imap.login(source_user, source_password)
        imap.create('"' + mutf7.encode("Kunden/Müller & Söhne") + '"')
        for folder in folders:
            for n in range(40):
                flags = "(" + " ".join(FLAG_SETS[n % len(FLAG_SETS)]) + ")"
                when = time.time() - 86400 * n - 61 * n
                imap.append('"' + mutf7.encode(folder) + '"', flags,
                            imaplib.Time2Internaldate(when), _message(folder, n))
    address, password = imap_account
    relay = Relay(server.port("imaps"), limit=60_000)
    token = uuid.uuid4().hex
    try:
        proc = _import(imap_server, address, relay.port, server.cert_path,
                       password=source_password, user=source_user)
        assert proc.stdin is not None
        proc.stdin.write(source_password + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not relay.stalled.wait(0.05):
            if proc.poll() is not None:
                pytest.fail(f"the import ended early: {proc.communicate()}")
            assert time.monotonic() < deadline, "the import never got half-way"
        with imap_server.client("smtp") as smtp:
            smtp.sendmail("sender@remote.test", [address],
                          make_message(token, to=address))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    finally:
        relay.close()
    code, out, err = _finish(_import(imap_server, address, server.port("imaps"),
                                     server.cert_path, user=source_user),
                             password=source_password)
    assert code == 0, out + err
    with imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=server.tls(),
                           timeout=30) as source, \
            _mailstead_imap(imap_server, address, password) as target:
        source.login(source_user, source_password)
        for folder, ours in folders.items():
            theirs = _contents(source, '"' + mutf7.encode(folder) + '"')
            mine = _contents(target, '"' + mutf7.encode(ours) + '"')
            if folder == "INBOX":
                delivered = [k for k in mine if token.encode() in k[0]]
                assert len(delivered) == 1
                del mine[delivered[0]]
            assert mine == theirs, f"{folder} -> {ours}"


def _renumber(dovecot: Dovecot, folder: str) -> int:
    """Gives a Maildir folder a new UIDVALIDITY the way a rebuilt Dovecot index does: the
    index files go and the uidlist (which the index is rebuilt from) names a new validity.
    Run with no session open on the folder; returns the new UIDVALIDITY."""
    root = dovecot.cert.parent / "mail" / USER
    box = root / ("." + mutf7.encode(folder))
    uidlist = box / "dovecot-uidlist"
    head, _, rest = uidlist.read_text().partition("\n")
    fields = head.split(" ")
    old = next(int(f[1:]) for f in fields if f.startswith("V"))
    fields = [f"V{old + 1000}" if f.startswith("V") else f for f in fields]
    uidlist.write_text(" ".join(fields) + "\n" + rest)
    # The folder's index and the mailbox-list index (which caches STATUS) are both rebuilt.
    for stale in [*box.glob("dovecot.index*"), *root.glob("dovecot.list.index*")]:
        stale.unlink()
    return old + 1000


def test_renumbered_folder_is_matched_by_content(
    dovecot: Dovecot, imap_server: Harness, imap_account: tuple[str, str]
) -> None:
    """A source folder given a new UIDVALIDITY after an import (as after Dovecot's index is
    rebuilt) is matched by content: the earlier messages are not copied again, new ones are."""
    address, password = imap_account
    folder = f"Umbenannt {uuid.uuid4().hex[:8]}"
    wire = '"' + mutf7.encode(folder) + '"'
    ctx = ssl.create_default_context(cafile=str(dovecot.cert))

    def source() -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.port, ssl_context=ctx, timeout=30)
        client.login(USER, PASSWORD)
        return client

    with source() as first:
        assert first.create(wire)[0] == "OK"
    try:
        with source() as first:
            for n in range(40):  # two of them byte-identical: both copies must stay two
                body = _message(folder, n if n != 39 else 38)
                flags = "(\\Seen $Label1)" if n % 3 == 0 else "()"
                assert first.append(wire, flags, None, body)[0] == "OK"
            first.select(wire, readonly=True)
            old = int(first.response("UIDVALIDITY")[1][0])  # type: ignore[arg-type]
            first.logout()
        code, out, err = _finish(_import(imap_server, address, dovecot.port, dovecot.cert,
                                         extra=("--folder", folder)))
        assert code == 0, out + err
        assert "messages: 40 " in out, out

        new = _renumber(dovecot, folder)
        with source() as second:
            second.select(wire, readonly=True)
            seen = int(second.response("UIDVALIDITY")[1][0])  # type: ignore[arg-type]
            assert seen == new != old
            second.close()
            for n in range(40, 43):
                assert second.append(wire, "(\\Flagged)", None, _message(folder, n))[0] == "OK"
            second.logout()

        code, out, err = _finish(_import(imap_server, address, dovecot.port, dovecot.cert,
                                         extra=("--folder", folder)))
        assert code == 0, out + err
        assert "messages: 3 " in out, out
        assert "failed: 0" in out, out
        assert f"{folder}: the source renumbered this folder (new UIDVALIDITY); its 40 " \
            "earlier messages were matched by content" in out, out
        with source() as third:
            theirs = _contents(third, wire)
        with _mailstead_imap(imap_server, address, password) as target:
            mine = _contents(target, wire)
        assert sum(theirs.values()) == 43
        assert mine == theirs

        # The run after that is UID-fast again: everything is known under the new UIDs.
        code, out, err = _finish(_import(imap_server, address, dovecot.port, dovecot.cert,
                                         extra=("--folder", folder)))
        assert code == 0, out + err
        assert "messages: 0 " in out, out
        assert "renumbered" not in out, out
    finally:
        with source() as last:
            last.delete(wire)  # the other tests compare whole accounts
