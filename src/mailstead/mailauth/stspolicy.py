"""This installation's own MTA-STS policy (RFC 8461 section 3.2), from ``[mta_sts]``: what the
web server serves at https://mta-sts.DOMAIN/.well-known/mta-sts.txt and what ``mailstead dns``
derives the ``_mta-sts`` TXT id from, so the two always agree."""

from __future__ import annotations

from cryptography import x509

from mailstead.config.model import Config
from mailstead.mailauth.records import mta_sts_policy

POLICY_PATH = "/.well-known/mta-sts.txt"
POLICY_HOST_PREFIX = "mta-sts."


def mta_sts_mode(config: Config) -> str:
    """The mode of ``[mta_sts] mode``; "auto" is "enforce" with a CA-issued certificate and
    "testing" while it is self-signed, since senders enforcing the policy would refuse to
    deliver to us (RFC 8461 section 4.2)."""
    if config.mta_sts.mode != "auto":
        return config.mta_sts.mode
    try:
        cert = x509.load_pem_x509_certificate(config.tls.cert.read_bytes())
    except (OSError, ValueError):
        return "testing"
    return "testing" if cert.issuer == cert.subject else "enforce"


def policy_mx(config: Config) -> tuple[str, ...]:
    """The mx lines: ``[mta_sts] mx``, else the hostname (the MX ``mailstead dns`` names)."""
    return config.mta_sts.mx or (config.hostname.lower().rstrip("."),)


def our_policy(config: Config) -> str:
    """The policy body, CRLF-terminated lines."""
    return mta_sts_policy(policy_mx(config), mta_sts_mode(config), config.mta_sts.max_age)
