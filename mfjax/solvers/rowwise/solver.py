"""Vector descent on the solver driver: one step is one sweep (rows of ``U``, then of ``V``).

:func:`vector_descent_solver` is the :class:`~mfjax.solvers.base.Solver`
(``init``, ``step``) and :func:`vector_descent_problem` its problem (the
row layouts built once); :func:`vector_descent` is the alias that builds
both and runs them with :func:`mfjax.solvers.run` (statuses, divergence
test and held-out metric from the driver, one compilation per setting).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core import check_l2, check_not_all_zero
from mfjax.core.factors import Factors, init_factors
from mfjax.losses import masked_sq_loss
from mfjax.objective.problem import check_factor_shapes
from mfjax.objective.rows import BlockLayout, block_statistics, build_block_layout, build_row_layout
from mfjax.solvers import _args
from mfjax.solvers._args import UNSET
from mfjax.solvers.base import Solver, check_ratings, run
from mfjax.solvers.rowwise.bfgs import quadratic_bfgs
from mfjax.solvers.rowwise.fixed import fixed_count
from mfjax.solvers.rowwise.info import RowInfo
from mfjax.solvers.rowwise.schedules import default_block_sizes, interleaved_blocks
from mfjax.solvers.rowwise.sharded import ShardedRowLayout, shard_row_layout, sharded_half_sweep
from mfjax.solvers.rowwise.sweep import row_half_sweep, solve_rows

__all__ = ["VectorDescentInfo", "VectorDescentProblem", "VectorDescentState", "SweepInfo",
           "vector_descent", "vector_descent_problem", "vector_descent_solver"]


class VectorDescentInfo(NamedTuple):
    """Diagnostics of :func:`vector_descent` (``return_info=True``).

    Attributes:
      rows: :class:`RowInfo` of the rows of ``U`` in the last sweep, shape (m,).
      cols: :class:`RowInfo` of the rows of ``V`` in the last sweep, shape (n,).
      failed: (S,) number of rows + columns whose search failed, per sweep.
      fun_evals: (S,) total function evaluations per sweep.
      iters: (S,) total accepted row iterations per sweep.
    """

    rows: RowInfo
    cols: RowInfo
    failed: jax.Array
    fun_evals: jax.Array
    iters: jax.Array


def _sweep_counts(*infos):
    failed = sum(jnp.sum(~i.success).astype(jnp.int32) for i in infos)
    nf = sum(jnp.sum(i.num_fun_evals) for i in infos)
    it = sum(jnp.sum(i.num_iters) for i in infos)
    return failed, nf, it


def _empty_info(size, dtype):
    z = jnp.zeros((size,), jnp.int32)
    t = jnp.ones((size,), bool)
    return RowInfo(z, z, z, t, t, jnp.zeros((size,), dtype))


def _scatter_info(info_all, idx, valid, info_blk, size):
    w = jnp.where(valid, idx, size)
    return jax.tree_util.tree_map(lambda a, b: a.at[w].set(b, mode="drop"), info_all, info_blk)


def _interleaved_sweep(params, row_blocks: BlockLayout, col_blocks: BlockLayout, sched, l2,
                       row_solver):
    U, V = params
    m, n = U.shape[0], V.shape[0]
    row_idx, row_valid, col_idx, col_valid = sched
    Gu, Gv = row_blocks.num_groups, col_blocks.num_groups

    def body(carry, xs):
        U, V, iu, iv = carry
        b, ridx, rval, cidx, cval = xs
        q = block_statistics(row_blocks, jnp.minimum(b, Gu - 1), V, l2)
        u_new, info_u = solve_rows(row_solver, U[jnp.minimum(ridx, m - 1)], q)
        U = U.at[jnp.where(rval, ridx, m)].set(u_new, mode="drop")
        iu = _scatter_info(iu, ridx, rval, info_u, m)
        q = block_statistics(col_blocks, jnp.minimum(b, Gv - 1), U, l2)
        v_new, info_v = solve_rows(row_solver, V[jnp.minimum(cidx, n - 1)], q)
        V = V.at[jnp.where(cval, cidx, n)].set(v_new, mode="drop")
        iv = _scatter_info(iv, cidx, cval, info_v, n)
        return (U, V, iu, iv), None

    B = row_idx.shape[0]
    carry0 = (U, V, _empty_info(m, U.dtype), _empty_info(n, U.dtype))
    (U, V, iu, iv), _ = jax.lax.scan(
        body, carry0, (jnp.arange(B), row_idx, row_valid, col_idx, col_valid))
    return Factors(U, V), iu, iv


def _parallel_sweep(params, row_layout, col_layout, l2, row_solver):
    U, V = params
    if isinstance(row_layout, ShardedRowLayout):  # each device its own rows, then its own columns
        U, iu = sharded_half_sweep(U, V, row_layout, l2, row_solver)
        V, iv, data = sharded_half_sweep(V, U, col_layout, l2, row_solver, with_data_term=True)
        return Factors(U, V), iu, iv, data
    U, iu = row_half_sweep(U, V, row_layout, l2, row_solver)
    V, iv = row_half_sweep(V, U, col_layout, l2, row_solver)
    return Factors(U, V), iu, iv, None


class VectorDescentProblem(NamedTuple):
    """The problem of :func:`vector_descent_solver` (a pytree; build it with :func:`vector_descent_problem`).

    Attributes:
      train: the training :class:`~mfjax.data.Ratings` (on the device); ``None`` on a
        mesh (the loss is then summed over the devices' own entries).
      l2: ``lambda`` (scalar array: traced, no recompilation across values).
      layouts: the row layouts of ``train`` and ``train.T`` (sparse buckets
        for ``"parallel"``, blocks for ``"interleaved"``, and
        :class:`~mfjax.solvers.rowwise.sharded.ShardedRowLayout` on a mesh).
      schedule: ``None`` (parallel) or the interleaved block indices.
    """

    train: object
    l2: jax.Array
    layouts: tuple
    schedule: object


class VectorDescentState(NamedTuple):
    """State of :func:`vector_descent_solver`: the factors and the last sweep's per-row diagnostics."""

    params: Factors
    rows: RowInfo
    cols: RowInfo


class SweepInfo(NamedTuple):
    """Per-sweep info (the ``trace.info`` of :func:`mfjax.solvers.run`).

    Attributes:
      loss: training loss after the sweep (slides eq. 4, ``scale="sum"``).
      failed: rows + columns whose search failed.
      fun_evals: function evaluations of all row problems.
      iters: accepted row iterations.
    """

    loss: jax.Array
    failed: jax.Array
    fun_evals: jax.Array
    iters: jax.Array


def vector_descent_problem(train, l2: float, *, schedule: str = "parallel", k_u: int | None = None,
                           k_v: int | None = None, complete: bool = True, mesh=None,
                           axis: str | None = None) -> VectorDescentProblem:
    """Build the :class:`VectorDescentProblem` of ``train`` (host side: the layouts are built here).

    ``schedule``, ``k_u``, ``k_v``, ``complete``, ``mesh`` and ``axis`` as in :func:`vector_descent`.

    Raises:
      ValueError: a bad ``l2`` or ``schedule``; ``schedule="interleaved"`` with a mesh
        (Algorithm 13's order is sequential over blocks); ``axis`` not an axis of ``mesh``.
    """
    check_l2("l2", l2)
    m, n = train.shape
    if schedule not in ("parallel", "interleaved"):
        raise ValueError(f"schedule must be 'parallel' or 'interleaved', got {schedule!r}")
    if mesh is not None:
        if schedule != "parallel":
            raise ValueError("vector_descent on a mesh runs the 'parallel' schedule only (Algorithm 13's "
                             f"interleaved order is sequential over blocks), got schedule={schedule!r}")
        layouts = (shard_row_layout(train, mesh, axis), shard_row_layout(train.T, mesh, axis))
        dtype = _args.float_dtype(train)
        l2 = jax.device_put(jnp.asarray(l2, dtype), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        return VectorDescentProblem(None, l2, layouts, None)
    if schedule == "parallel":
        layouts, sched = (build_row_layout(train), build_row_layout(train.T)), None
    else:
        du, dv = default_block_sizes(m, n)
        k_u = du if k_u is None else k_u
        k_v = dv if k_v is None else k_v
        b = interleaved_blocks(m, n, k_u, k_v, complete=complete)
        sched = tuple(jnp.asarray(a) for a in b[:4])
        layouts = (build_block_layout(train, k_u), build_block_layout(train.T, k_v))
    dtype = _args.float_dtype(train)
    return VectorDescentProblem(train.device_put(), jnp.asarray(l2, dtype), layouts, sched)


@functools.lru_cache(maxsize=None)
def _sweep_step(row_solver):
    """The cached ``step`` of :func:`vector_descent_solver` (one compiled sweep per row solver)."""

    def step(state: VectorDescentState, problem: VectorDescentProblem):
        data = None
        if problem.schedule is None:
            params, iu, iv, data = _parallel_sweep(state.params, *problem.layouts, problem.l2, row_solver)
        else:
            params, iu, iv = _interleaved_sweep(state.params, *problem.layouts, problem.schedule,
                                                problem.l2, row_solver)
        if data is None:
            loss = masked_sq_loss(params, problem.train, problem.l2)
        else:  # on a mesh: the devices' data terms (psum-ed) + the penalty
            l2 = problem.l2.astype(params.U.dtype)
            loss = data + l2 * (jnp.sum(params.U * params.U) + jnp.sum(params.V * params.V))
        return VectorDescentState(params, iu, iv), SweepInfo(loss, *_sweep_counts(iu, iv))

    return step


def vector_descent_solver(row_solver=None, *, rank: int | None = None) -> Solver:
    """Vector descent as a :class:`~mfjax.solvers.base.Solver`: one step is one sweep.

    Args:
      row_solver: a :func:`quadratic_bfgs`, :func:`fixed_count` or
        :func:`folded` row solver (hashable: equal solvers share one
        compiled sweep); default ``quadratic_bfgs(rank)``.
      rank: ``r``, for the default row solver's iteration count.

    Returns:
      ``Solver(init, step)``: ``init(params, problem=None, key=None)`` ->
      :class:`VectorDescentState`; ``step(state, problem)`` ->
      ``(VectorDescentState, SweepInfo)``.

    Example::

        problem = vector_descent_problem(train, l2=10.0)
        solver = vector_descent_solver(rank=10)
        res = mfjax.solvers.run(solver, problem, solver.init(params), 10, eval_set=test)
    """
    if row_solver is None:
        if rank is None:
            raise ValueError("pass row_solver= or rank= (the default row solver runs rank iterations)")
        row_solver = quadratic_bfgs(int(rank))

    def init(params, problem=None, key=None) -> VectorDescentState:
        del problem, key
        params = Factors(jnp.asarray(params[0]), jnp.asarray(params[1]))
        m, n = params.U.shape[0], params.V.shape[0]
        return VectorDescentState(params, _empty_info(m, params.U.dtype), _empty_info(n, params.U.dtype))

    return Solver(init, _sweep_step(row_solver))


def pick_row_solver(row_solver, rank: int, optimizer=None, inner_steps: int | None = None):
    """``row_solver`` itself, else :func:`fixed_count` of ``optimizer`` or (no optimizer)
    :func:`quadratic_bfgs`, with ``inner_steps`` iterations (default ``rank``): the choice of
    :func:`vector_descent`'s arguments."""
    if row_solver is not None:
        return row_solver
    steps = rank if inner_steps is None else inner_steps
    return quadratic_bfgs(steps) if optimizer is None else fixed_count(optimizer, steps)


def vector_descent(train, rank: int, *, l2: float, optimizer=None, inner_steps: int | None = None,
                   row_solver=None, num_steps: int = UNSET, schedule: str = "parallel",
                   k_u: int | None = None, k_v: int | None = None, complete: bool = True,
                   eval_set=None, key=None, init: Factors | None = None, return_info: bool = False,
                   num_sweeps: int = UNSET, eval=UNSET, callback=None, callback_every: int = 1,
                   mesh=None, axis: str | None = None):
    """Row-wise vector descent (Algorithm 13) for the masked loss (slides eq. 4, ``scale="sum"``).

    Each sweep updates every row of ``U`` (problem eq. 7, gradient eq. 9)
    and every row of ``V`` (eq. 8 / 10) by a few iterations of a row solver,
    in the ``"parallel"`` schedule (all rows, then all columns) or Algorithm
    13's ``"interleaved"`` order (blocks of ``k_u`` rows then ``k_v`` columns,
    fresh values used at once).  The sweeps run on the solver driver
    (:func:`mfjax.solvers.run`: one compiled ``lax.scan``, statuses,
    divergence test).

    Args:
      train: :class:`~mfjax.data.Ratings` (COO); no dense ``m x n`` array is built.
      rank: ``r``.
      l2: ``lambda`` of ``sum (x - u.v)^2 + l2 (||U||^2 + ||V||^2)`` (>= 0).
      optimizer: optax optimizer for every row, run by :func:`fixed_count`
        (default: :func:`quadratic_bfgs`, BFGS + exact steps on ``(A_i, b_i)``).
      inner_steps: iterations per row (default ``rank``).
      row_solver: a :func:`quadratic_bfgs`, :func:`fixed_count` or :func:`folded` row solver
        (overrides ``optimizer``/``inner_steps``).
      num_steps: sweeps (each updates U then V; default 10; ``num_sweeps``
        is its deprecated alias).
      schedule: ``"parallel"`` or ``"interleaved"``.
      k_u, k_v: block sizes of the interleaved schedule (default
        :func:`default_block_sizes`).
      complete: extend Algorithm 13's ``t``-range so that every row and column
        is visited (see :func:`algorithm13_schedule`); ``False`` is literal.
      eval_set: optional held-out :class:`~mfjax.data.Ratings`; its RMSE is
        traced (``eval`` is its deprecated alias).
      key: PRNG key for :func:`mfjax.losses.init_factors` (or pass ``init``).
      init: starting factors.
      return_info: also return a :class:`VectorDescentInfo`.
      mesh: a :class:`jax.sharding.Mesh`: the rows of ``U`` and of ``V`` are split
        over its ``axis`` (default its first) in blocks balanced by ratings; each
        device solves its own rows and only the updated factor rows cross devices
        (:mod:`mfjax.solvers.rowwise.sharded`; ``"parallel"`` schedule only).
        The same numbers as one device.

    Returns:
      :class:`~mfjax.solvers.base.SolverResult` (status, trace with
      ``eval_metric`` and per-sweep :class:`SweepInfo`; and the info if asked).

    Raises:
      ValueError: empty or non-finite training / evaluation ratings (naming
        the entry), shapes that disagree, ``num_steps < 1``, a mesh with
        ``schedule="interleaved"`` or an ``axis`` that is not the mesh's.
      FloatingPointError: the training loss became non-finite (drive
        :func:`vector_descent_solver` with :func:`mfjax.solvers.run` for the
        ``nonfinite`` status and the last finite factors instead).

    Example::

        res = mfjax.solvers.vector_descent(train, 10, l2=10.0, num_steps=10,
                                           eval_set=test, key=jax.random.key(0))
        print(res.trace.eval_metric[-1], res.status_name)
    """
    m, n = train.shape
    num_steps = _args.renamed("vector_descent", "num_steps", num_steps, "num_sweeps", num_sweeps, 10)
    eval_set = _args.eval_alias("vector_descent", eval_set, eval)
    if int(num_steps) != num_steps:
        raise ValueError(f"num_steps (num_sweeps) must be an integer >= 1, got {num_steps!r}")
    num_steps = _args.check_num_steps(num_steps, "num_sweeps")
    check_ratings(train, "training")
    _args.check_eval_set(eval_set, train)
    problem = vector_descent_problem(train, l2, schedule=schedule, k_u=k_u, k_v=k_v, complete=complete,
                                     mesh=mesh, axis=axis)
    if init is None:
        if key is None:
            raise ValueError("pass key= (PRNG key for the initial factors) or init=")
        init = init_factors(key, train.shape, rank, dtype=np.asarray(train.values).dtype)
    else:
        init = Factors(jnp.asarray(init[0]), jnp.asarray(init[1]))
        check_factor_shapes((m, n), init, rank)
        check_not_all_zero(init, "init")
    solver = vector_descent_solver(pick_row_solver(row_solver, rank, optimizer, inner_steps))
    eval_set = None if eval_set is None else eval_set.device_put()
    res = run(solver, problem, solver.init(init), int(num_steps), eval_set=eval_set,
              callback=callback, callback_every=callback_every)
    res = _args.raise_if_nonfinite(res, "vector descent", "sweep")
    if not return_info:
        return res
    si = res.trace.info
    return res, VectorDescentInfo(res.state.rows, res.state.cols, si.failed, si.fun_evals, si.iters)
