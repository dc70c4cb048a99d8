"""Accounts: domains, users, aliases, password hashing and authentication."""
