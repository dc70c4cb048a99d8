"""Moving mail in and out: importers from files and other servers, exporters to files."""
