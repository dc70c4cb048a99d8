"""Every message acknowledged with 250 survives a SIGKILL of the server (DESIGN rule 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import durability_check


@pytest.mark.slow
def test_acknowledged_messages_survive_sigkill(tmp_path: Path) -> None:
    result = durability_check(tmp_path / "data", clients=20, kill_after=1.5, restart=True)
    check = result.verification
    print(check.summary())
    assert check.acknowledged > 50, (check.summary(), result.stats.error_samples)
    assert check.missing == [], check.summary()
    assert check.corrupt == [], check.summary()
    # The kill really happened mid-load: some transactions were cut off.
    assert result.stats.sent > len(result.stats.accepted)
