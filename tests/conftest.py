"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_RAW = REPO.parent / "shared" / "data" / "raw"


@pytest.fixture(scope="session")
def shared_raw() -> Path:
    """The development data folder ``../shared/data/raw``; skips when it is absent."""
    if not SHARED_RAW.is_dir():
        pytest.skip(f"development data not found at {SHARED_RAW} (only present in the dev/CI checkout)")
    return SHARED_RAW
