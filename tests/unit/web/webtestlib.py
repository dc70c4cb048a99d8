"""Shared builders for the web unit tests: configs and a CA-signed certificate chain."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstead.config.model import Config, HostPort, ListenConfig, TLSConfig
from mailstead.core.certs import generate_self_signed

HOSTNAME = "mail.example.test"

STANDARD = ListenConfig(
    smtp=HostPort("0.0.0.0", 25),
    submission=HostPort("0.0.0.0", 587),
    submissions=HostPort("0.0.0.0", 465),
    imap=HostPort("0.0.0.0", 143),
    imaps=HostPort("0.0.0.0", 993),
    pop3=HostPort("0.0.0.0", 110),
    pop3s=HostPort("0.0.0.0", 995),
    http=HostPort("0.0.0.0", 80),
    https=HostPort("0.0.0.0", 443),
)


def make_config(tmp: Path, listen: ListenConfig = STANDARD, *, ca_signed: bool = False) -> Config:
    """A config for ``HOSTNAME`` with a self-signed (or CA-signed) certificate in ``tmp``."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    if not cert.exists():
        if ca_signed:
            write_ca_signed(tmp, HOSTNAME)
        else:
            generate_self_signed(HOSTNAME, cert, key)
    return Config(
        hostname=HOSTNAME,
        data_dir=tmp,
        config_path=tmp / "mailstead.toml",
        listen=listen,
        tls=TLSConfig(cert=cert, key=key),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_ca_signed(directory: Path, hostname: str, *, ca_name: str = "Test CA") -> Path:
    """Writes ca.pem, and cert.pem (leaf then CA, as a fullchain) with key.pem for
    ``hostname``; returns the CA file's path."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name)).issuer_name(_name(ca_name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hostname)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (directory / "key.pem").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.pem"
