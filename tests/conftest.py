"""Shared test fixtures."""

import os
import pathlib

import pytest

# Tests compile many one-off programs: keep them out of the user's persistent compilation cache.
os.environ.setdefault("MFJAX_NO_COMPILE_CACHE", "1")

def _ml1m_dir() -> pathlib.Path:
    """``$MFJAX_TEST_ML1M``, else ``$MFJAX_DATA_DIR/ml-1m``, else ``../shared/data/ml-1m`` beside the checkout."""
    if os.environ.get("MFJAX_TEST_ML1M"):
        return pathlib.Path(os.environ["MFJAX_TEST_ML1M"])
    if os.environ.get("MFJAX_DATA_DIR"):
        return pathlib.Path(os.environ["MFJAX_DATA_DIR"]) / "ml-1m"
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"


ML1M_DIR = _ml1m_dir()


@pytest.fixture(scope="session")
def ml1m_dir():
    """Directory with MovieLens 1M (``ratings.dat.gz``); skips when absent."""
    if not (ML1M_DIR / "ratings.dat.gz").exists() and not (ML1M_DIR / "ratings.dat").exists():
        pytest.skip(f"MovieLens 1M not found at {ML1M_DIR} (set $MFJAX_TEST_ML1M or $MFJAX_DATA_DIR)")
    return ML1M_DIR
