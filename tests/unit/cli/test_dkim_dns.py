"""``mailstead dkim`` and ``mailstead dns`` run in-process against a real data directory."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from mailstead.cli.context import Context
from mailstead.cli.main import main
from mailstead.storage import open_store
from mailstead.storage.interfaces import DkimKey


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Context(io.StringIO(), out, err, {}))
    return code, out.getvalue(), err.getvalue()


def stored_keys(data_dir: Path, domain: str) -> list[DkimKey]:
    async def go() -> list[DkimKey]:
        store = await open_store(data_dir)
        try:
            return await store.dkim_keys(domain)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    code, _, err = cli(
        "init", "--data-dir", str(path), "--hostname", "mail.a.test", "--domain", "a.test", "--dev"
    )
    assert (code, err) == (0, "")
    return path


def test_init_creates_signing_keys(data_dir: Path) -> None:
    keys = stored_keys(data_dir, "a.test")
    assert sorted(k.algorithm for k in keys) == ["ed25519-sha256", "rsa-sha256"]
    assert all(k.active for k in keys)
    code, out, _ = cli("dkim", "list", "a.test", "--data-dir", str(data_dir))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    for key in keys:
        assert f"{key.selector}\t{key.algorithm}\tcreated " in out
    assert all(line.endswith("\tsigning") for line in lines)


def test_domain_add_creates_keys_too(data_dir: Path) -> None:
    assert cli("domain", "add", "b.test", "--data-dir", str(data_dir))[0] == 0
    assert len(stored_keys(data_dir, "b.test")) == 2


def test_rotate_then_activate(data_dir: Path) -> None:
    old = {k.selector for k in stored_keys(data_dir, "a.test")}
    code, out, err = cli("dkim", "rotate", "A.TEST", "--data-dir", str(data_dir))
    assert (code, err) == (0, "")
    keys = stored_keys(data_dir, "a.test")
    new = [k for k in keys if k.selector not in old]
    assert len(new) == 2
    assert not any(k.active for k in new)
    for key in new:
        assert f"{key.selector}._domainkey.a.test.\t3600\tIN\tTXT\t" in out
    assert "mailstead dkim activate a.test" in out

    code, out, _ = cli("dkim", "activate", "a.test", "--data-dir", str(data_dir))
    assert code == 0
    assert {k.selector for k in stored_keys(data_dir, "a.test") if k.active} == {
        k.selector for k in new
    }
    code, out, _ = cli("dkim", "list", "a.test", "--data-dir", str(data_dir))
    assert out.count("\tsigning") == 2
    assert out.count("published, not signing") == 2

    code, _, err = cli("dkim", "activate", "a.test", "nope", "--data-dir", str(data_dir))
    assert code == 1
    assert "no DKIM selector nope" in err

    code, out, _ = cli("dkim", "rotate", "a.test", "--activate", "--data-dir", str(data_dir))
    assert code == 0
    assert "the new keys sign from now on" in out
    assert len([k for k in stored_keys(data_dir, "a.test") if k.active]) == 2


def test_dns_prints_every_record(data_dir: Path) -> None:
    code, out, err = cli("dns", "a.test", "--data-dir", str(data_dir), "--address", "192.0.2.1")
    assert (code, err) == (0, "")
    records = [line for line in out.splitlines() if line and not line.startswith(";")]
    by_type: dict[str, list[str]] = {}
    for line in records:
        name, ttl, klass, rtype, rest = line.split("\t")[:5]
        assert (ttl, klass) == ("3600", "IN")
        assert name.endswith(".")
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), rest)
        by_type.setdefault(rtype, []).append(f"{name} {rest}")
    assert by_type["MX"] == ["a.test. 10 mail.a.test."]
    assert by_type["A"] == ["mail.a.test. 192.0.2.1"]
    text = "\n".join(records)
    for key in stored_keys(data_dir, "a.test"):
        assert f"{key.selector}._domainkey.a.test." in text
    assert '"v=spf1 mx -all"' in text
    assert (
        '_dmarc.a.test.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine; rua=mailto:postmaster@a.test"'
        in text
    )
    assert '_mta-sts.a.test.\t3600\tIN\tTXT\t"v=STSv1; id=' in text
    assert '"v=TLSRPTv1; rua=mailto:tls-reports@a.test"' in text
    # --dev listens on unprivileged ports; the SRV records say so.
    assert "_submission._tcp.a.test.\t3600\tIN\tSRV\t10 1 2587 mail.a.test." in text
    assert "_imaps._tcp.a.test.\t3600\tIN\tSRV\t0 1 2993 mail.a.test." in text
    assert "autoconfig.a.test.\t3600\tIN\tCNAME\tmail.a.test." in text
    # The self-signed certificate of init: MTA-STS in testing mode, with the reason.
    assert ";     mode: testing" in out
    assert "; 1.2.0.192.in-addr.arpa.\tIN\tPTR\tmail.a.test." in out


def test_dns_and_dkim_errors(data_dir: Path) -> None:
    code, _, err = cli("dns", "other.test", "--data-dir", str(data_dir))
    assert code == 1
    assert "other.test is not a local domain" in err
    code, _, err = cli("dns", "a.test", "--address", "mail", "--data-dir", str(data_dir))
    assert code == 1
    assert "'mail' is not an IP address" in err
    code, _, err = cli("dkim", "list", "bad_name.test", "--data-dir", str(data_dir))
    assert code == 1
    assert "not a valid domain name" in err
    code, _, err = cli("dkim", "rotate", "other.test", "--data-dir", str(data_dir))
    assert code == 1
    assert "mailstead domain add other.test" in err
