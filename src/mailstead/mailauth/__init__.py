"""Mail authentication: DKIM signing and key management (RFC 6376, RFC 8463) and the DNS
records (SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV) a domain must publish."""
