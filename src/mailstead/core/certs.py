"""Self-signed certificates for a fresh installation, so every TLS listener works from day one.

A real deployment points [tls] at a CA-issued certificate (Let's Encrypt); this one only lets
clients connect after accepting it, which is what a development install needs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TEN_YEARS = dt.timedelta(days=3650)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no window where a key is world-readable)
    and refuse to overwrite an existing file; fsync so a crash leaves no empty key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # the umask may have removed bits from ``mode``
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_self_signed(
    hostname: str,
    cert_path: Path,
    key_path: Path,
    *,
    ip_addresses: Sequence[IPAddress] = (),
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = TEN_YEARS,
) -> x509.Certificate:
    """Write an EC P-256 key (mode 0600) and a self-signed certificate for ``hostname``.

    The subjectAltName holds ``hostname`` (RFC 6125 section 6.4.4: clients match SAN, not CN)
    plus ``ip_addresses``. Refuses to overwrite existing files (FileExistsError).
    """
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)  # clock skew
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    san: list[x509.GeneralName] = [x509.DNSName(hostname)]
    san += [x509.IPAddress(ip) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_new(key_path, key_pem, 0o600)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert


def certificate_fingerprint(cert_path: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex,
    the form mail clients show when they ask whether to trust a certificate."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def der_fingerprint(der: bytes) -> str:
    """The same SHA-256 fingerprint for a certificate a peer presented (DER bytes)."""
    return hashlib.sha256(der).digest().hex(":").upper()


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client TLS context: the system's authorities, or only ``ca_file`` (a
    private authority or a self-signed certificate) when given."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()
