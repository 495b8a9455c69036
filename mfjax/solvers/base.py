"""The result shape shared by every classical solver (ALS, SGD, NMF, ...)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

__all__ = ["SolverTrace", "SolverResult"]


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
