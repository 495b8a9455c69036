"""The ALS problem with its Gram layouts: exact sweeps from dense batched products.

:func:`als_problem` bundles the :class:`~mfjax.objective.MFObjective` that
ALS minimises with the :class:`~mfjax.objective.gram.GramLayout` of its rows
and of its columns (host preprocessing, once per data set).  A sweep on it
(:func:`gram_sweep`) solves the same normal equations as
:func:`mfjax.solvers.als.als_sweep` -- same ridge, weights, biases and
ALS-WR scaling -- but builds each row's Gram matrix from dense batched
products over segments of its entries and solves chunk by chunk
(:mod:`mfjax.objective.gram`): ~4-5x faster at rank 64 on MovieLens 1M
(``benchmarks/als_ml1m.py``), and the ``(m, r, r)`` array of all Gram
matrices is never held.  The results equal the scatter-add path to float32
rounding (``tests/test_gram.py``).
"""

from __future__ import annotations

from typing import NamedTuple, Union

import jax.numpy as jnp
import numpy as np

from mfjax.core.factors import BiasedFactors, Factors, swap_factors
from mfjax.objective import MFObjective
from mfjax.objective.gram import CHUNK_ENTRIES, SEGMENT, GramLayout, build_gram_layout, solve_rows

__all__ = ["ALSProblem", "als_problem", "gram_sweep"]

Params = Union[Factors, BiasedFactors]


class ALSProblem(NamedTuple):
    """An ALS problem with the Gram layouts of both sides (a pytree; pass it traced).

    Attributes:
      objective: the :class:`~mfjax.objective.MFObjective` (its ``l2``,
        ``l2_bias``, data weight, entry weights and row weights are used).
      rows: :class:`~mfjax.objective.gram.GramLayout` of the objective's rows.
      cols: the same for its columns (``objective.T``).
    """

    objective: MFObjective
    rows: GramLayout
    cols: GramLayout


def _round_up(x: int, to: int) -> int:
    return -(-int(x) // to) * to


def _padded(layout: GramLayout, num_rows: int) -> GramLayout:
    """Pad a layout's segment and row counts to multiples of 256 (folds share one program)."""
    C, P, L = layout.entry.shape
    R = layout.rows.shape[1]
    p, r = _round_up(P, 256) - P, _round_up(R, 256) - R
    if not (p or r):
        return layout
    pad = lambda a, w, v=0: jnp.pad(a, w, constant_values=v)  # noqa: E731
    return GramLayout(pad(layout.rows, ((0, 0), (0, r)), num_rows), pad(layout.seg_row, ((0, 0), (0, p))),
                      pad(layout.entry, ((0, 0), (0, p), (0, 0))), pad(layout.cols, ((0, 0), (0, p), (0, 0))),
                      pad(layout.mask, ((0, 0), (0, p), (0, 0))))


def als_problem(objective: MFObjective, *, segment: int = SEGMENT,
                chunk_entries: int = CHUNK_ENTRIES) -> ALSProblem:
    """The :class:`ALSProblem` of an objective (e.g. :func:`~mfjax.solvers.als.als_objective`).

    The objective must be concrete (its indices are laid out on the host).

    Args:
      objective: the problem ALS minimises.
      segment: entries per segment of the batched Gram products.
      chunk_entries: entry slots per step of the scan (memory bound).
    """
    rows, cols = np.asarray(objective.rows), np.asarray(objective.cols)
    w = np.asarray(objective.weights)
    m, n = objective.shape
    kw = dict(segment=segment, chunk_entries=chunk_entries, weights=w)
    return ALSProblem(objective,
                      _padded(build_gram_layout(rows, cols, m, **kw), m),
                      _padded(build_gram_layout(cols, rows, n, **kw), n))


def _ridge_scale(weights, m):
    return 1.0 if weights is None else weights[:, None]


def _update_rows(params: Params, obj: MFObjective, layout: GramLayout) -> Params:
    """Exact minimisation over ``U`` (and the row biases): the systems of ``als_update_rows``."""
    s = obj.data_weight
    lam = (obj.l2 / s).astype(params.U.dtype)
    scale = _ridge_scale(obj.row_weights, obj.shape[0])
    m = obj.shape[0]
    V = params.V
    if not isinstance(params, BiasedFactors):
        U = solve_rows(layout, V, obj.values, obj.weights, lam * scale, m)
        return Factors(U.astype(params.U.dtype), V)
    lb = (obj.l2_bias / s).astype(V.dtype)
    F = jnp.concatenate([V, jnp.ones((V.shape[0], 1), V.dtype)], axis=1)
    y = obj.values.astype(V.dtype) - params.mean - params.col_bias[obj.cols]
    diag = jnp.concatenate([jnp.full((V.shape[1],), lam, V.dtype), jnp.reshape(lb, (1,))])
    sol = solve_rows(layout, F, y, obj.weights, diag[None, :] * scale, m)
    return BiasedFactors(sol[:, :-1], V, sol[:, -1], params.col_bias, params.mean)


def gram_sweep(params: Params, problem: ALSProblem) -> Params:
    """One exact ALS sweep (rows, then columns) on an :class:`ALSProblem`."""
    obj = problem.objective
    params = _update_rows(params, obj, problem.rows)
    return swap_factors(_update_rows(swap_factors(params), obj.T, problem.cols))
