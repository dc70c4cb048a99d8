"""Import benchmarks. IMAP part: ``mailstead import imap`` against Debian's ``mbsync``, both
copying the same account from the same local Dovecot (TLS on loopback), alternating runs.

Fills a private Dovecot (started as root, on a loopback port) with ``--messages`` messages of
mixed sizes (80 % short text, 15 % ~20 KiB, 5 % ~200 KiB attachments) in ``--folders``
folders by writing its Maildir directly, lets Dovecot index them once, then ``--runs`` times:
``mbsync`` into a fresh local Maildir, and ``mailstead import imap`` into a fresh embedded
store. Prints messages/s and MB/s of each run, the medians and the ratio.

Backup part (bench/backup.py, also runnable alone): ``mailstead backup`` full and incremental,
``backup --verify`` and ``restore`` of a ``--backup-messages`` store, messages/s and MB/s.

    python bench/import.py [--messages 20000] [--folders 20] [--runs 3]
                           [--backup-messages 100000] [--only imap|backup]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from helpers import REPO, Users, child_env, init_data_dir

from mailstead.core.certs import generate_self_signed

USER, PASSWORD = "bench@source.test", "Bench-pass-123"
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
MBSYNC_CONF = """\
IMAPAccount src
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}

IMAPStore src-remote
Account src

MaildirStore local
Path {dest}/
Inbox {dest}/INBOX
SubFolders Verbatim

Channel bench
Far :src-remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
"""


@dataclass
class Source:
    root: Path
    port: int
    cert: Path
    messages: int
    nbytes: int


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
    raise SystemExit(f"Dovecot does not listen on {port}")


def _message(rng: random.Random, n: int) -> bytes:
    head = (f"From: <someone{n % 50}@remote.test>\r\nTo: <{USER}>\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}@bench.test>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n")
    roll = rng.random()
    if roll < 0.80:
        return (head + "\r\n" + "Some words of a short text message.\r\n" * rng.randint(2, 40)
                ).encode()
    size = 20_000 if roll < 0.95 else 200_000
    blob = rng.randbytes(size * 3 // 4)
    import base64

    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    return (head.encode() + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"'
            b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64"
            b"\r\n\r\n" + b64 + b"--b--\r\n")


def fill_dovecot(root: Path, messages: int, folders: int) -> Source:
    """A private Dovecot whose account's Maildir is written directly (fast), then indexed."""
    root.chmod(0o755)
    generate_self_signed("source.test", root / "cert.pem", root / "key.pem",
                         ip_addresses=[ipaddress.IPv4Address("127.0.0.1")])
    (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = _free_port()
    (root / "dovecot.conf").write_text(DOVECOT_CONF.format(d=root, imaps=port))
    maildir = root / "mail" / USER
    names = ["INBOX"] + [f"Folder{i:02d}" for i in range(1, folders)]
    rng = random.Random(1)
    total = 0
    for i in range(messages):
        folder = names[i % folders]
        box = maildir if folder == "INBOX" else maildir / f".{folder}"
        (box / "cur").mkdir(parents=True, exist_ok=True)
        data = _message(rng, i)
        total += len(data)
        flags = "S" if i % 3 else ""
        (box / "cur" / f"{1700000000 + i}.M{i}P1.bench:2,{flags}").write_bytes(data)
    for sub in ("new", "tmp"):
        for box in [maildir, *(maildir / f".{n}" for n in names[1:])]:
            (box / sub).mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", "dovecot:dovecot", str(root / "mail")], check=True)
    subprocess.run(["dovecot", "-c", str(root / "dovecot.conf")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    _wait_port(port)
    # Dovecot indexes a Maildir on first access; do it once so no timed run pays for it.
    subprocess.run(["doveadm", "-c", str(root / "dovecot.conf"), "mailbox", "status", "-u",
                    USER, "messages", "*"], check=True, stdout=subprocess.DEVNULL, timeout=600)
    return Source(root, port, root / "cert.pem", messages, total)


def stop_dovecot(source: Source) -> None:
    subprocess.run(["doveadm", "-c", str(source.root / "dovecot.conf"), "stop"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)


def run_mbsync(source: Source, work: Path) -> float:
    """Seconds for mbsync to pull the whole account into an empty local Maildir."""
    dest = work / "maildir"
    dest.mkdir()
    conf = work / "mbsyncrc"
    conf.write_text(MBSYNC_CONF.format(port=source.port, user=USER, password=PASSWORD,
                                       cert=source.cert, dest=dest))
    started = time.monotonic()
    proc = subprocess.run(["mbsync", "-q", "-c", str(conf), "bench"], capture_output=True,
                          text=True, timeout=3600, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"mbsync failed: {proc.stderr}")
    copied = sum(1 for _ in dest.rglob("cur/*")) + sum(1 for _ in dest.rglob("new/*"))
    if copied != source.messages:
        raise SystemExit(f"mbsync copied {copied} of {source.messages} messages")
    return elapsed


def run_mailstead(source: Source, work: Path) -> float:
    """Seconds for ``mailstead import imap`` into a fresh embedded store."""
    data = work / "data"
    address = "bench@example.test"
    init_data_dir(data, Users({address: "Bench-target-pass-1"}))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mailstead", "import", "imap", "--host", "127.0.0.1", "--port",
         str(source.port), "--ssl", "--user", USER, "--password-stdin", "--into", address,
         "--ca-file", str(source.cert), "--data-dir", str(data)],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=3600, env=child_env(),
        cwd=REPO, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0 or f"messages: {source.messages:,} " not in proc.stdout:
        raise SystemExit(f"mailstead import failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def _figures(name: str, source: Source, seconds: list[float]) -> float:
    median = statistics.median(seconds)
    runs = ", ".join(f"{s:.1f} s" for s in seconds)
    print(f"{name}: {source.messages / median:,.0f} messages/s, "
          f"{source.nbytes / median / 1e6:,.1f} MB/s (median of {runs})")
    return median


def measure_imap(args: argparse.Namespace) -> None:
    """The IMAP import section: mbsync and mailstead alternately from one Dovecot."""
    if os.geteuid() != 0 or not shutil.which("dovecot") or not shutil.which("mbsync"):
        print("imap import: skipped (needs root, dovecot and mbsync)")
        return
    root = Path(tempfile.mkdtemp(prefix="mailstead-bench-import-", dir="/tmp"))
    try:
        started = time.monotonic()
        source = fill_dovecot(root, args.messages, args.folders)
        print(f"source: {source.messages:,} messages, {source.nbytes / 1e6:,.1f} MB in "
              f"{args.folders} folders (filled and indexed in {time.monotonic() - started:.1f} s)")
        mbsync: list[float] = []
        ours: list[float] = []
        try:
            for run in range(args.runs):
                for name, runner, out in (("mbsync", run_mbsync, mbsync),
                                          ("mailstead", run_mailstead, ours)):
                    work = Path(tempfile.mkdtemp(prefix=f"{name}-{run}-", dir=root))
                    out.append(runner(source, work))
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            stop_dovecot(source)
        theirs = _figures("mbsync (Maildir)", source, mbsync)
        mine = _figures("mailstead import imap (embedded store)", source, ours)
        print(f"ratio: mailstead is {theirs / mine:.2f}x the speed of mbsync")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--folders", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backup-messages", type=int, default=100_000)
    parser.add_argument("--only", choices=("imap", "backup"))
    args = parser.parse_args()
    if args.only != "backup":
        measure_imap(args)
    if args.only != "imap":
        measure_backup(args)


def measure_backup(args: argparse.Namespace) -> None:
    """The backup section: bench/backup.py's runs on a store of ``--backup-messages``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from backup import run_bench

    base = Path(os.environ.get("BENCH_DIR", REPO / ".bench"))  # not tmpfs: fsync must cost
    base.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="backup-", dir=base))
    try:
        print(f"backup: {args.backup_messages:,} messages of ~4,096 bytes")
        run_bench(root, args.backup_messages, 1_000, 4096, args.runs, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
