r"""Row-wise vector descent when every process holds only its own rows' ratings (per-process data).

Process ``p`` of ``N`` holds the entries of its row block ``I_p`` (``mfjax launch``:
:func:`mfjax.compare.make_problem` with ``part=(p, N)``).  A sweep of
:func:`mfjax.solvers.vector_descent` solves every row problem (slides eq. 7)
from the row's ratings and the other factor, then every column problem (eq. 8).
So, as in :func:`mfjax.solvers.als_parts`:

* the row half runs on each process's own rows (the bucketed layout of
  :func:`~mfjax.solvers.rowwise.sharded.part_row_layout`, one block per
  process) against the replicated ``V``;
* for the column half the columns are cut into ``N`` blocks balanced by rating
  count and process ``q`` receives, **once** at setup, every rating of its
  column block (:func:`~mfjax.solvers.als_perprocess.exchange_column_blocks`: one
  ``lax.all_to_all``);
* after each half the solved rows are all-gathered
  (:func:`~mfjax.solvers.rowwise.sharded.sharded_half_sweep`), and the loss is a
  ``psum`` of the column blocks' data terms plus the penalty.

The row problems and solvers are those of the one-device run, so the result
equals :func:`mfjax.solvers.vector_descent` on the union of the parts (``"parallel"``
schedule) up to float rounding (``tests/test_als_parts.py``).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mfjax import objective as _objective
from mfjax.core import check_l2, check_not_all_zero
from mfjax.core.factors import Factors, init_factors
from mfjax.solvers import _args
from mfjax.solvers.base import run
from mfjax.solvers.rowwise.sharded import part_row_layout
from mfjax.solvers.rowwise.solver import VectorDescentProblem, pick_row_solver, vector_descent_solver

__all__ = ["part_vector_descent_problem", "vector_descent_parts"]


def part_vector_descent_problem(train, row_ranges: Sequence | None, l2: float, *, balance: str = "ratings",
                                mesh: Mesh | None = None) -> VectorDescentProblem:
    """The :class:`~mfjax.solvers.rowwise.solver.VectorDescentProblem` of this process's ratings (a collective).

    Every process calls it with its own ``train`` (global shape, rows in ``row_ranges[p]``) and the same
    ``row_ranges``; the column blocks' entries are exchanged once.

    Raises:
      ValueError: ``row_ranges`` not a partition of ``N`` ranges, entries outside this process's range,
        a bad ``l2`` or ``balance``.
    """
    from mfjax.solvers.als_perprocess import AXIS, _replicated, exchange_column_blocks, own_entries, process_mesh

    check_l2("l2", l2)
    m, n = (int(v) for v in train.shape)
    ranges, rows, cols, values = own_entries(train, row_ranges)
    mesh = process_mesh() if mesh is None else mesh
    _, edges, _, (got_rows, got_cols, got_values) = exchange_column_blocks(rows, cols, values, n, mesh, balance)
    row_edges = np.array([lo for lo, _ in ranges] + [m], np.int64)
    layouts = (part_row_layout(rows, cols, values, row_edges, mesh, AXIS, num_rows=m),
               part_row_layout(got_cols, got_rows, got_values, edges, mesh, AXIS, num_rows=n))
    return VectorDescentProblem(None, _replicated(mesh, np.float32(l2)), layouts, None)


def vector_descent_parts(train, rank: int, *, row_ranges: Sequence | None = None, l2: float,
                         optimizer=None, inner_steps: int | None = None, row_solver=None, num_steps: int = 10,
                         eval_set=None, key=None, init: Factors | None = None, balance: str = "ratings", callback=None,
                         callback_every: int = 1, mesh: Mesh | None = None):
    """:func:`mfjax.solvers.vector_descent` (``"parallel"`` schedule) when each process holds only its rows.

    Every process calls it with its own ``train`` (and optionally its own held-out ``eval_set``), the same
    ``row_ranges`` and the same settings; the result (factors and trace, replicated) is that of
    :func:`mfjax.solvers.vector_descent` on the union of the parts from the same ``key`` / ``init``.

    Args:
      train: this process's training ratings (global shape; rows in ``row_ranges[process]``).
      rank, l2, optimizer, inner_steps, row_solver, num_steps, key, init, callback, callback_every: as in
        :func:`mfjax.solvers.vector_descent` (``init`` replicated: the same on every process).
      row_ranges: every process's ``(lo, hi)``, in process order (a partition of the rows); default
        :func:`mfjax.solvers.als_perprocess.part_row_ranges` (from the rows each process holds).
      eval_set: this process's held-out ratings; the traced RMSE is over every process's.
      balance: how the column blocks are cut (:func:`mfjax.solvers.als_perprocess.column_blocks`).
      mesh: the 1-D process mesh (default :func:`mfjax.solvers.als_perprocess.process_mesh`).

    Raises:
      ValueError: bad ``row_ranges``, entries outside this process's rows, a bad rank or ``l2``,
        ``num_steps < 1``, neither ``key`` nor ``init``.
      FloatingPointError: the training loss became non-finite.
    """
    from mfjax.solvers.als_perprocess import part_eval_objective, replicate

    num_steps = _args.check_num_steps(num_steps, "num_steps")
    rank = _args.check_rank(rank, train.shape)
    if init is None:  # before the collectives: every process fails alike, at once
        if key is None:
            raise ValueError("pass key= (PRNG key for the initial factors) or init=")
        init = init_factors(key, train.shape, rank, dtype=np.float32)
    else:
        init = Factors(jnp.asarray(init[0], jnp.float32), jnp.asarray(init[1], jnp.float32))
        _objective.check_factor_shapes(train.shape, init, rank)
        check_not_all_zero(init, "init")
    problem = part_vector_descent_problem(train, row_ranges, l2, balance=balance, mesh=mesh)
    mesh = problem.layouts[0].mesh
    solver = vector_descent_solver(pick_row_solver(row_solver, rank, optimizer, inner_steps))
    res = run(solver, problem, solver.init(replicate(init, mesh)), num_steps,
              eval_set=part_eval_objective(eval_set, mesh), callback=callback, callback_every=callback_every)
    return _args.raise_if_nonfinite(res, "vector descent", "sweep")
