"""DNS lookups behind one small interface, so every service can be tested against a fake or a
DNS server on loopback (DESIGN rule 8)."""

from mailstead.dns.resolver import (
    DnsError,
    DnsNoDomain,
    DnsNotFound,
    DnsPythonResolver,
    DnsTemporary,
    Resolver,
    StaticResolver,
)

__all__ = [
    "DnsError",
    "DnsNoDomain",
    "DnsNotFound",
    "DnsPythonResolver",
    "DnsTemporary",
    "Resolver",
    "StaticResolver",
]
