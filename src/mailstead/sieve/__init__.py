"""Sieve (RFC 5228) mail filtering per account: a parser with hard limits, an interpreter that
turns a script and one message into actions, and the delivery step that carries them out."""
