"""Shared test fixtures."""

import os
import pathlib

import pytest

ML1M_DIR = pathlib.Path(
    os.environ.get("MFJAX_TEST_ML1M", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m")
)


@pytest.fixture(scope="session")
def ml1m_dir():
    """Directory with MovieLens 1M (``ratings.dat.gz``); skips when absent."""
    if not (ML1M_DIR / "ratings.dat.gz").exists() and not (ML1M_DIR / "ratings.dat").exists():
        pytest.skip(f"MovieLens 1M not found at {ML1M_DIR}")
    return ML1M_DIR
