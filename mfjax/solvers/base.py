"""The result shape shared by every classical solver (ALS, SGD, NMF, ...)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from mfjax.data import Ratings

__all__ = ["SolverTrace", "SolverResult", "check_ratings"]


class SolverTrace(NamedTuple):
    """Per-iteration trace (one entry per sweep / epoch / iteration).

    Attributes:
      loss: training objective after the iteration, shape (T,).
      eval_rmse: held-out RMSE after the iteration, shape (T,); NaN when no
        evaluation set was given.
    """

    loss: jax.Array
    eval_rmse: jax.Array


class SolverResult(NamedTuple):
    """Final parameters plus the per-iteration :class:`SolverTrace`."""

    params: Any
    trace: SolverTrace


def check_ratings(r: Ratings, what: str) -> np.ndarray:
    """Validate a solver's input ratings; return their values as numpy.

    Raises ``TypeError`` when ``r`` is not :class:`~mfjax.data.Ratings` and
    ``ValueError`` naming the entry (index, row, column) for empty or
    non-finite data.  ``what`` names the input in the message ("training",
    "evaluation").
    """
    if not isinstance(r, Ratings):
        raise TypeError(f"{what} must be a mfjax.data.Ratings, got {type(r).__name__}")
    vals = np.asarray(r.values)
    if vals.size == 0:
        raise ValueError(f"{what} ratings are empty")
    bad = ~np.isfinite(vals)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} ratings contain a non-finite value {vals[k]} at entry {k} "
                         f"(row {int(np.asarray(r.rows)[k])}, col {int(np.asarray(r.cols)[k])})")
    return vals
