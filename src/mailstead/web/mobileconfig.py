"""Apple configuration profiles (iPhone, iPad, macOS Mail): a ``com.apple.mail.managed``
payload for one account, signed as CMS/PKCS#7 with the server certificate when a device can
verify it.

The payload UUIDs and identifiers are derived from the account and the hostname (uuid5), so
installing the profile again replaces the earlier one instead of adding a second account.
Reference: Apple's "Configuration Profile Reference", Mail payload (com.apple.mail.managed).
"""

from __future__ import annotations

import logging
import os
import plistlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from mailstead.observability.log import log_event
from mailstead.web.client_settings import ClientSettings, is_self_signed

log = logging.getLogger("mailstead.web.mobileconfig")

CONTENT_TYPE = "application/x-apple-aspen-config"
# A fixed namespace for Mailstead's profile UUIDs (itself uuid5 of the project's name), so
# the same account on the same host always gets the same UUIDs.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "profiles.mailstead.invalid")


class ProfileError(ValueError):
    """No profile can be made: IMAP or submission is not enabled on this server."""


def profile_uuids(address: str, hostname: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(profile UUID, mail payload UUID) for ``address`` on ``hostname``: stable across
    requests and restarts, different for every account and server."""
    key = f"{hostname.lower()}\0{address}"
    return uuid.uuid5(_NAMESPACE, f"profile\0{key}"), uuid.uuid5(_NAMESPACE, f"mail\0{key}")


def _reverse_dns(hostname: str) -> str:
    labels = [label for label in hostname.lower().split(".") if label]
    return ".".join(reversed(labels)) or "invalid"


def build_profile(settings: ClientSettings) -> bytes:
    """The profile as an XML property list. Offers IMAP and SMTP only (Apple's Mail payload
    has one incoming and one outgoing server), implicit TLS preferred. Raises ProfileError."""
    imap = settings.preferred("imap")
    smtp = settings.preferred("smtp")
    if imap is None or smtp is None:
        missing = "IMAP" if imap is None else "mail submission"
        raise ProfileError(f"{missing} is not enabled on this server, so no profile can be made")
    profile_id, mail_id = profile_uuids(settings.address, settings.hostname)
    base = f"{_reverse_dns(settings.hostname)}.mailstead"
    # UseSSL covers both modes: on 993/465 Mail uses implicit TLS, on 143/587 it upgrades
    # with STARTTLS and refuses to continue in plain text (RFC 8314 section 3 prefers the first).
    mail: dict[str, Any] = {
        "EmailAccountDescription": settings.address,
        "EmailAccountName": settings.address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": settings.address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": imap.host,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": settings.username,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": smtp.host,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": settings.username,
        "OutgoingPasswordSameAsIncomingPassword": True,
        "PayloadDescription": f"Mail account {settings.address}",
        "PayloadDisplayName": settings.address,
        "PayloadIdentifier": f"{base}.mail.{mail_id}",
        "PayloadType": "com.apple.mail.managed",
        "PayloadUUID": str(mail_id).upper(),
        "PayloadVersion": 1,
        "PreventAppSheet": False,
        "PreventMove": False,
        "SMIMEEnabled": False,
    }
    profile: dict[str, Any] = {
        "PayloadContent": [mail],
        "PayloadDescription": f"Sets up the mail account {settings.address} on "
        f"{settings.hostname}. You are asked for the password.",
        "PayloadDisplayName": f"Mail: {settings.address}",
        "PayloadIdentifier": f"{base}.profile.{profile_id}",
        "PayloadOrganization": settings.hostname,
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": str(profile_id).upper(),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


@dataclass(frozen=True, slots=True)
class SignedProfile:
    """The bytes to send and whether they are a CMS signature (else the plain plist)."""

    data: bytes
    signed: bool


@dataclass(frozen=True, slots=True)
class _Signer:
    stamp: tuple[int, int, int, int]
    chain: tuple[x509.Certificate, ...]
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None  # None: do not sign
    why_not: str


class ProfileSigner:
    """Signs profiles with the [tls] certificate and key, re-read whenever either file
    changes (so a renewed or SIGHUP-reloaded certificate signs the next profile)."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self._cert_path = cert_path
        self._key_path = key_path
        self._cached: _Signer | None = None

    def _stamp(self) -> tuple[int, int, int, int]:
        cert, key = os.stat(self._cert_path), os.stat(self._key_path)
        return (cert.st_mtime_ns, cert.st_size, key.st_mtime_ns, key.st_size)

    def _load(self) -> _Signer:
        stamp = self._stamp()
        if self._cached is not None and self._cached.stamp == stamp:
            return self._cached
        chain = tuple(x509.load_pem_x509_certificates(self._cert_path.read_bytes()))
        key = serialization.load_pem_private_key(self._key_path.read_bytes(), password=None)
        signer: _Signer
        if is_self_signed(chain[0]):
            # A device cannot verify a self-signed signature: it would show the profile as
            # "Not Verified" either way, so we send it unsigned and the card page says so.
            signer = _Signer(stamp, chain, None, "the certificate is self-signed")
        elif not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            signer = _Signer(stamp, chain, None, "CMS signing needs an RSA or EC key")
        elif key.public_key() != chain[0].public_key():
            signer = _Signer(stamp, chain, None, "the key does not match the certificate")
        else:
            signer = _Signer(stamp, chain, key, "")
        self._cached = signer
        return signer

    def will_sign(self) -> bool:
        """Whether ``sign`` would sign right now (for the card page's note)."""
        try:
            return self._load().key is not None
        except (OSError, ValueError, TypeError):
            return False

    def sign(self, profile: bytes) -> SignedProfile:
        """``profile`` as DER CMS SignedData with the content attached and the whole chain
        included; unsigned when the certificate is self-signed or cannot be used."""
        try:
            signer = self._load()
        except (OSError, ValueError, TypeError) as exc:
            log_event(log, "mobileconfig.unsigned", reason="cannot read [tls] cert/key",
                      error=str(exc))
            return SignedProfile(profile, signed=False)
        if signer.key is None:
            return SignedProfile(profile, signed=False)
        builder = pkcs7.PKCS7SignatureBuilder().set_data(profile)
        builder = builder.add_signer(signer.chain[0], signer.key, hashes.SHA256())
        for intermediate in signer.chain[1:]:
            builder = builder.add_certificate(intermediate)
        # Binary: sign the bytes as they are; the default S/MIME canonicalisation would turn
        # every LF of the plist into CRLF (RFC 5751 section 3.1.1 applies to MIME text only).
        der = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        return SignedProfile(der, signed=True)
