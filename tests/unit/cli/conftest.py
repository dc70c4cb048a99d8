"""Loads the in-memory FakeStore of the accounts tests for the CLI tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "accounts" / "fake_store.py"
_SPEC = importlib.util.spec_from_file_location("cli_fake_store", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
fake_store = importlib.util.module_from_spec(_SPEC)
sys.modules["cli_fake_store"] = fake_store
_SPEC.loader.exec_module(fake_store)
