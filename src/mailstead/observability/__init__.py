"""Observability: structured logging with redaction (log.py)."""
