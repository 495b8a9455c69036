"""Shared test fixtures."""

import os
import pathlib

import pytest

# Tests compile many one-off programs: keep them out of the user's persistent compilation cache.
os.environ.setdefault("MFJAX_NO_COMPILE_CACHE", "1")


def _share_compiled_programs() -> None:
    """One persistent XLA cache for the whole test run (CI time, ~15% less CPU).

    Both xdist workers and every subprocess a test starts (CLI runs, notebooks, kill -9 children,
    ``jax.distributed`` processes) compile many identical programs; JAX's persistent compilation
    cache lets each be compiled once.  A cached program computes exactly what a fresh compile does.
    The LRU size limit turns on JAX's file locking (concurrent writers and readers), which needs the
    ``filelock`` package (``test`` extra): without it the cache stays off.  Set
    ``JAX_COMPILATION_CACHE_DIR`` yourself to move it, or ``MFJAX_TEST_NO_XLA_CACHE=1`` to turn it off.
    """
    if os.environ.get("MFJAX_TEST_NO_XLA_CACHE", "") not in ("", "0"):
        return
    try:
        import filelock  # noqa: F401
    except ImportError:
        return
    import tempfile

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mfjax-tests-xla-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))  # 2 GiB, least recently used evicted


_share_compiled_programs()

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


@pytest.fixture
def restore_mfjax_logger():
    """Remove the log handlers ``mfjax.cli`` installed in this process and reset the ``mfjax`` logger."""
    import logging

    yield
    log = logging.getLogger("mfjax")
    for h in [h for h in log.handlers if getattr(h, "_mfjax_cli", False)]:
        log.removeHandler(h)
    log.propagate = True
    log.setLevel(logging.NOTSET)


# ---------------------------------------------------------------- a worker that dies
# A test that kills its xdist worker (a native crash: SIGSEGV / SIGABRT inside XLA or a C extension;
# Python's faulthandler prints the worker's stack just before) is run once more on a fresh worker.
# It passes only if that second run passes; a second crash fails it as usual.  The first crash is
# listed at the end of the run, so a flaky native crash is never silent.  (CI's run of 2026-12-07
# lost a worker once in tests/test_vector_descent.py, a test that passes on every rerun here.)
_CRASHED: dict = {}


def pytest_handlecrashitem(crashitem, report, sched):
    if _CRASHED.get(crashitem, 0) == 0:
        _CRASHED[crashitem] = 1
        sched.mark_test_pending(crashitem)
        report.outcome = "rerun"


def pytest_terminal_summary(terminalreporter):
    if _CRASHED:
        terminalreporter.section("tests whose worker crashed (each rerun once on a fresh worker)")
        for nodeid in sorted(_CRASHED):
            terminalreporter.line(nodeid)
