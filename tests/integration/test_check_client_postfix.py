"""``check-client`` against Debian's Postfix (submission) and Dovecot (IMAP, POP3), configured
by the test in a temporary directory on unprivileged loopback ports and run as root: it finds
the working settings and gives the same diagnoses as against Mailstead for a wrong password
and an SSL/STARTTLS mismatch. Skipped when not root or the packages are missing
(make test-deps installs them)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, child_env

from mailstead.core.certs import generate_self_signed

# Postfix and Dovecot are checked, not Mailstead: no store is involved.
pytestmark = pytest.mark.backends("sqlite", reason="checks Postfix and Dovecot; no Mailstead store")

HOST = "mail.example.test"
USER, PASSWORD = "carol@example.test", "Carol-pass-789"


def _free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [int(s.getsockname()[1]) for s in socks]
    for sock in socks:
        sock.close()
    return ports


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout} s")


@dataclass
class Others:
    ports: dict[int, int]
    cert: Path


DOVECOT_CONF = """\
base_dir = {d}/dovecot-run
state_dir = {d}/dovecot-state
log_path = {d}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = yes
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
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {auth}
  }}
}}
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/postfix-queue
data_directory = {d}/postfix-data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = {host}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
"""

MASTER_CF = """\
{submission} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
{submissions} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
anvil     unix  -       -       n       -       1       anvil
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
proxymap  unix  -       -       n       -       -       proxymap
rewrite   unix  -       -       n       -       -       trivial-rewrite
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@pytest.fixture(scope="module")
def others(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Others]:
    if os.geteuid() != 0:
        pytest.skip("Postfix and Dovecot are started as root; not root here")
    if not (shutil.which("postfix") and shutil.which("dovecot") and shutil.which("doveadm")):
        pytest.skip("postfix or dovecot is not installed (make test-deps installs them)")
    del tmp_path_factory
    # Dovecot and Postfix switch to their own users, so every directory on the path must be
    # searchable by them; pytest keeps its base directory at mode 0700 (and other test runs
    # reset it at any time), so this test makes its own directory under /tmp.
    d = Path(tempfile.mkdtemp(prefix="mailstead-others-", dir="/tmp"))
    d.chmod(0o755)
    generate_self_signed(HOST, d / "cert.pem", d / "key.pem")
    (d / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    imap, imaps, pop3, pop3s, submission, submissions, auth = _free_ports(7)
    (d / "dovecot.conf").write_text(DOVECOT_CONF.format(
        d=d, imap=imap, imaps=imaps, pop3=pop3, pop3s=pop3s, auth=auth))
    (d / "mail").mkdir()
    shutil.chown(d / "mail", "dovecot", "dovecot")
    pf = d / "postfix"
    pf.mkdir()
    (d / "postfix-queue").mkdir()  # postfix start makes its subdirectories
    (d / "postfix-data").mkdir()
    shutil.chown(d / "postfix-data", "postfix")
    (pf / "main.cf").write_text(MAIN_CF.format(d=d, host=HOST, auth=auth))
    (pf / "master.cf").write_text(MASTER_CF.format(submission=submission,
                                                   submissions=submissions))
    # Both daemonise: their output goes to files, or the pipes would stay open for good.
    with (d / "start.log").open("w") as log:
        subprocess.run(["dovecot", "-c", str(d / "dovecot.conf")], check=True,
                       stdout=log, stderr=log, stdin=subprocess.DEVNULL, timeout=30)
    started_postfix = False
    try:
        with (d / "start.log").open("a") as log:
            code = subprocess.run(["postfix", "-c", str(pf), "start"], stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL, timeout=60, check=False).returncode
        started_postfix = code == 0
        assert started_postfix, (d / "start.log").read_text()
        for port in (imap, imaps, pop3, pop3s, submission, submissions):
            _wait_port(port)
        yield Others({993: imaps, 143: imap, 995: pop3s, 110: pop3, 465: submissions,
                      587: submission, 25: _free_ports(1)[0]}, d / "cert.pem")
    finally:
        if started_postfix:
            subprocess.run(["postfix", "-c", str(pf), "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60, check=False)
        subprocess.run(["doveadm", "-c", str(d / "dovecot.conf"), "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        shutil.rmtree(d, ignore_errors=True)


def check(others: Others, password: str, ports: dict[int, int] | None = None) -> dict[str, Any]:
    mapping = {**others.ports, **(ports or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "mailstead", "check-client", "--email", USER, "--server", HOST,
         "--connect", "127.0.0.1", "--ca-file", str(others.cert), "--timeout", "3", "--json",
         "--password-stdin", *(f"--port={a}={b}" for a, b in mapping.items())],
        input=password + "\n", capture_output=True, text=True, env=child_env(), cwd=REPO,
        timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def cause(report: dict[str, Any], protocol: str, port: int, security: str) -> str:
    for item in report["results"]:
        if (item["protocol"], item["port"], item["security"]) == (protocol, port, security):
            return str(item["cause"])
    raise AssertionError(f"no row {protocol} {port} {security}")


def test_finds_the_working_settings(others: Others) -> None:
    report = check(others, PASSWORD)
    assert report["ok"] is True, report
    for protocol, port, security in (("imap", 993, "ssl"), ("imap", 143, "starttls"),
                                     ("pop3", 995, "ssl"), ("pop3", 110, "starttls"),
                                     ("smtp", 465, "ssl"), ("smtp", 587, "starttls")):
        assert cause(report, protocol, port, security) == "ok", (protocol, port, report)
    # Dovecot counts loopback connections as secure (disable_plaintext_auth exempts them),
    # so it would take a password in the clear here: diagnosed, and the password not sent.
    assert cause(report, "imap", 143, "none") == "plaintext_login"
    assert cause(report, "smtp", 25, "starttls") == "refused"
    assert report["use"]["imap"] == {"host": HOST, "port": 993, "security": "ssl",
                                     "username": USER}
    assert report["use"]["smtp"]["port"] == 465


def test_wrong_password(others: Others) -> None:
    report = check(others, "wrong-password")
    for protocol, port, security in (("imap", 993, "ssl"), ("pop3", 995, "ssl"),
                                     ("smtp", 587, "starttls")):
        assert cause(report, protocol, port, security) == "wrong_password"


def test_ssl_starttls_mismatch(others: Others) -> None:
    report = check(others, PASSWORD, {993: others.ports[143], 143: others.ports[993],
                                      465: others.ports[587], 587: others.ports[465]})
    assert cause(report, "imap", 993, "ssl") == "expects_starttls"
    assert cause(report, "imap", 143, "starttls") == "expects_ssl"
    assert cause(report, "smtp", 465, "ssl") == "expects_starttls"
    assert cause(report, "smtp", 587, "starttls") == "expects_ssl"
