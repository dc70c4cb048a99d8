"""Tests of observability/log.py and core/certs.py (kept here: those folders' tests are
another person's files)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mailstead.core.certs import certificate_fingerprint, generate_self_signed
from mailstead.core.secret import Secret
from mailstead.observability.log import format_event, log_event, setup_logging


def test_logfmt_quoting_and_secrets() -> None:
    line = format_event(
        "auth.failed",
        user="alice@example.test",
        password=Secret("hunter22"),
        reason="bad password",
        count=3,
        ok=False,
        none=None,
        raw=b"\xff",
    )
    assert line == (
        'auth.failed user=alice@example.test password=*** reason="bad password" count=3 '
        'ok=false none="" raw="\\\\xff"'
    )
    assert "hunter22" not in line


@pytest.mark.parametrize(
    "hostile",
    ["x\r\n2024 INFO forged", "a\u2028b", 'q"uote\\', "\x00\x1b[31m", "\u0085next"],
)
def test_values_cannot_forge_lines(hostile: str) -> None:
    line = format_event("ev bad\nname", **{"k\ney": hostile})
    assert line.isprintable()
    assert line.startswith('ev_bad_name k_ey="')


def test_log_event_and_setup(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    setup_logging("DEBUG")  # replaces, does not duplicate, the handler
    try:
        logger = logging.getLogger("mailstead.test")
        log_event(logger, "smtp.connect", peer="192.0.2.1", helo="evil\nINFO forged")
        logger.warning("plain %s", "multi\nline")
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 2
        assert lines[0].endswith(
            'INFO mailstead.test smtp.connect peer=192.0.2.1 helo="evil\\nINFO forged"'
        )
        assert lines[1].endswith("WARNING mailstead.test plain multi\\nline")
        with pytest.raises(ValueError, match="unknown log level"):
            setup_logging("loud")
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler.get_name() == "mailstead-stderr":
                root.removeHandler(handler)
        root.setLevel(logging.WARNING)


def test_self_signed_certificate(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    generate_self_signed(
        "mail.example.test",
        cert_path,
        key_path,
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
        now=now,
    )
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)
    assert cert.not_valid_before_utc <= now
    key = load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    fingerprint = certificate_fingerprint(cert_path)
    assert len(fingerprint.split(":")) == 32
    with pytest.raises(FileExistsError):
        generate_self_signed("mail.example.test", cert_path, key_path)
