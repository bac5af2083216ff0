"""Small simulated traffic (shipped sample data, no ../shared needed) shared by the detection tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillguard.simulate import shipped_sample_dir, simulate


@pytest.fixture(scope="session")
def small_traffic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, n_accounts=120, days=2, seed=7, data_path=shipped_sample_dir())
    return out
