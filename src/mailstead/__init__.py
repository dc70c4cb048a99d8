"""Mailstead: a complete, self-hosted email server in one program."""

__version__ = "0.1.0"
