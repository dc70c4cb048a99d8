"""The PostgreSQL store (issue 10): the same interface as the SQLite store, for several nodes
sharing one database."""
