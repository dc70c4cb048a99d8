from __future__ import annotations

import dataclasses
from pathlib import Path

from mailstead.config.docs import main, render_markdown
from mailstead.config.model import SECTIONS

DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def test_committed_docs_are_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), "run: make docs"


def test_every_key_is_documented() -> None:
    text = render_markdown()
    assert "| `hostname` |" in text
    for name, cls in SECTIONS:
        assert f"## [{name}]" in text
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in text


def test_check_mode(tmp_path: Path) -> None:
    stale = tmp_path / "config.md"
    stale.write_text("old", encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    stale.write_text(render_markdown(), encoding="utf-8")
    assert main(["--check", str(stale)]) == 0
