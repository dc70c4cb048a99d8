"""Sizes as admins write them: parse_size reads what format_size and exact_size print, and
refuses anything else with a ValueError (never another exception)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.core.sizes import MAX_SIZE, exact_size, format_size, parse_size


@pytest.mark.parametrize(("text", "octets"), [
    ("2G", 2 * 1024**3), ("500M", 500 * 1024**2), ("800k", 800 * 1024), ("1.5GiB", 1536 * 1024**2),
    (" 2 gb ", 2 * 1024**3), ("12345", 12345), ("1T", 1024**4), ("none", None),
    ("Unlimited", None),
])
def test_parse(text: str, octets: int | None) -> None:
    assert parse_size(text) == octets


@pytest.mark.parametrize("text", ["", "0", "-1G", "2X", "G", "1e9", "2 G B", "2048T", "1.G"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_format() -> None:
    assert format_size(2 * 1024**3) == "2 GiB"
    assert format_size(1536 * 1024) == "1.5 MiB"
    assert format_size(800) == "800 B"


@given(st.integers(min_value=1, max_value=MAX_SIZE))
def test_exact_size_reads_back(octets: int) -> None:
    assert parse_size(exact_size(octets)) == octets


@given(st.text(max_size=60))
def test_hostile_text_gives_value_error_or_a_size(text: str) -> None:
    try:
        octets = parse_size(text)
    except ValueError:
        return
    assert octets is None or 0 < octets <= MAX_SIZE
