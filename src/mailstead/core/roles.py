"""The role addresses every mail domain has from the start, whoever the administrator created.

RFC 5321 section 4.5.1: a receiving server MUST accept mail for "postmaster" (any case) in each
domain it serves, and "<Postmaster>" without a domain. RFC 2142 section 2 and 4 add "abuse" for
complaints. The reporting addresses ``mailstead dns`` publishes (DMARC aggregate reports,
RFC 7489 section 7.1; SMTP TLS reports, RFC 8460 section 3) must exist too, so they are roles.
"""

from __future__ import annotations

POSTMASTER = "postmaster"
ABUSE = "abuse"
# Where ``_smtp._tls`` TXT rua= points (RFC 8460 section 3): reports are read here and stored.
TLSRPT = "tls-reports"
# Where ``_dmarc`` TXT rua= points (RFC 7489 section 6.3).
DMARC = POSTMASTER

ROLE_LOCALS = frozenset({POSTMASTER, ABUSE, TLSRPT})


def is_role_local(local: str) -> bool:
    """Whether ``local`` (a local part, with or without a ``+tag``) names a role address;
    RFC 5321 section 4.5.1 makes "postmaster" case-insensitive, and so are the others here."""
    base = local.partition("+")[0]
    return base.lower() in ROLE_LOCALS
