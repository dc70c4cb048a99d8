"""Mailstead: a complete, self-hosted email server in one program."""

# PEP 440: a ".devN" pre-release sorts before the release it leads to (0.2.0.dev0 < 0.2.0), so a
# store stamped by this development build is opened by 0.2.0 without a "newer store" refusal.
# pyproject.toml reads the version from here (the one source of truth).
__version__ = "0.2.0.dev0"
