"""The node name is made once per data directory and kept across restarts."""

from __future__ import annotations

from pathlib import Path

from mailstead.core.nodeid import FILE_NAME, node_name


def test_made_once_and_kept(tmp_path: Path) -> None:
    first = node_name(tmp_path)
    assert first
    assert (tmp_path / FILE_NAME).read_text().strip() == first
    assert node_name(tmp_path) == first


def test_each_data_directory_gets_its_own(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert node_name(tmp_path / "a") != node_name(tmp_path / "b")


def test_an_admin_chosen_name_is_used(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("mx2\n")
    assert node_name(tmp_path) == "mx2"
