"""Mailstead."""
