"""The ``mailstead`` command line: parses arguments, calls services, prints (no business logic)."""
