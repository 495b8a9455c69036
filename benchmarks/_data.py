"""Where the benchmark scripts look for MovieLens 1M (one rule for all of them).

Order: ``$MFJAX_ML1M`` (a folder or archive of ML-1M itself); else
``$MFJAX_DATA_DIR`` (the library's data folder, searched by
:func:`mfjax.data.load_movielens` for ``ml-1m/ratings.dat[.gz]`` or
``ml-1m.zip``); else ``../shared/data`` beside the checkout.  ML-1M's
license forbids redistribution: it is read in place, never copied.
"""

from __future__ import annotations

import os
import pathlib

#: the checkout's parent's ``shared/data`` (the workplace's data folder)
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def ml1m_dir() -> str:
    """The ``data_dir`` to pass to ``load_movielens("ml-1m", ...)`` (see the module docstring)."""
    for env in ("MFJAX_ML1M", "MFJAX_DATA_DIR"):
        if os.environ.get(env):
            return os.environ[env]
    return str(SHARED_DATA)
