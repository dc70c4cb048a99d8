"""Domain-name validation and IDNA normalisation shared by the accounts service and the config.

The store keeps domains as lower-case Unicode (U-labels, see storage/interfaces.py); the wire
and certificates need the ASCII form (A-labels). Both come from one check here so that
``Bücher.test`` and ``xn--bcher-kva.test`` are always the same domain.
"""

from __future__ import annotations

import re

# RFC 1035 section 2.3.4: 63 octets per label, 255 octets per name on the wire, which is
# 253 characters in dotted text form (no trailing dot, no length octets).
MAX_LABEL = 63
MAX_NAME = 253
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


class DomainNameError(ValueError):
    """The text is not a usable fully qualified domain name; the message says why."""


def domain_forms(text: str) -> tuple[str, str]:
    """Validate ``text`` as a fully qualified domain name; return (ascii_form, unicode_form).

    Both forms are lower-case. Accepts Unicode (IDNA 2003 via Python's ``idna`` codec, which
    applies nameprep) or A-labels; one trailing dot is ignored. Raises DomainNameError.
    """
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise DomainNameError("domain name is empty")
    if len(name) > 4 * MAX_NAME:
        raise DomainNameError("domain name is too long")
    # RFC 5321 section 2.3.5: a domain in mail is a fully qualified name: at least two labels.
    if "." not in name:
        raise DomainNameError(f"{name!r} is not a fully qualified domain name (no dot)")
    try:
        ascii_form = name.lower().encode("idna").decode("ascii").lower()
        unicode_form = ascii_form.encode("ascii").decode("idna").lower()
    except UnicodeError as exc:
        raise DomainNameError(f"{name!r} is not a valid domain name ({exc})") from None
    if len(ascii_form) > MAX_NAME:
        raise DomainNameError(f"domain name is longer than {MAX_NAME} characters")
    labels = ascii_form.split(".")
    for label in labels:
        # RFC 1123 section 2.1 / RFC 5890: letters, digits and inner hyphens only.
        if len(label) > MAX_LABEL or not _LDH_LABEL.fullmatch(label):
            raise DomainNameError(
                f"{name!r} is not a valid domain name (bad label {label!r}: use letters, "
                "digits and inner hyphens, at most 63 characters)"
            )
    # RFC 3696 section 2: a top-level domain is never all-numeric (that is an IP address).
    if labels[-1].isdigit():
        raise DomainNameError(f"{name!r} is not a domain name (numeric top-level label)")
    return ascii_form, unicode_form


def normalise_domain(text: str) -> str:
    """The store form of a domain: lower-case Unicode. Raises DomainNameError."""
    return domain_forms(text)[1]


def ascii_domain(text: str) -> str:
    """The wire form of a domain: lower-case A-labels. Raises DomainNameError."""
    return domain_forms(text)[0]
