"""Troubleshooting built in (issue 8): ``doctor`` checks this server, ``check-client`` sets up
an account like a mail client would; both explain each problem and its fix in plain words."""

from mailstead.diagnostics.classify import Cause
from mailstead.diagnostics.model import Check, Status

__all__ = ["Cause", "Check", "Status"]
