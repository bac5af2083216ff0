"""Fixtures for every test, the doctests under ``src/`` included."""

from __future__ import annotations

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_under_pytest_s_base_temp(tmp_path_factory: pytest.TempPathFactory):
    """Folders made with ``tempfile`` (doctests, child processes) go under pytest's base temp.

    Pytest keeps its last few base temps and removes older ones, so test runs do not pile up folders in
    ``/tmp``.
    """
    base = tmp_path_factory.mktemp("tempfile")
    old_env, old_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(base)
    tempfile.tempdir = str(base)
    yield base
    tempfile.tempdir = old_dir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env
