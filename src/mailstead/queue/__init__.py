"""Outbound delivery: routing (MX, smarthosts, MTA-STS), the SMTP client, and the queue
workers that drive them over the store's queue rows (DESIGN rule 7)."""

from mailstead.queue.client import AttemptResult, OutboundClient, RcptResult, default_tls_context
from mailstead.queue.mtasts import (
    HttpsPolicyFetcher,
    MtaStsCache,
    MtaStsPolicy,
    PolicyError,
    TlsRptCounters,
)
from mailstead.queue.routing import Route, Router, RouteTemporary, Smarthost, Target

__all__ = [
    "AttemptResult",
    "HttpsPolicyFetcher",
    "MtaStsCache",
    "MtaStsPolicy",
    "OutboundClient",
    "PolicyError",
    "RcptResult",
    "Route",
    "RouteTemporary",
    "Router",
    "Smarthost",
    "Target",
    "TlsRptCounters",
    "default_tls_context",
]
