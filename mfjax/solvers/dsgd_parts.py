r"""DSGD when every process holds only its own rows' ratings (``mfjax launch``, per-process data).

Process ``p`` of ``N`` holds the entries of its row block ``I_p = [lo_p, hi_p)``
(e.g. :func:`mfjax.compare.make_problem` with ``part=(p, N)``).  DSGD
(:mod:`mfjax.solvers.dsgd`; Gemulla et al., KDD 2011) needs nothing more: its
row blocks are the processes' row ranges, so block ``(p, c)`` -- the entries
of ``I_p x J_c`` -- already lies on process ``p``.  The column blocks
``J_1..J_N`` are :func:`~mfjax.solvers.dsgd.balanced_blocks` of the global
column counts (one host all-gather of ``n`` counts), and each process pads its
``N`` blocks to the largest block of any process (one all-gather of the
``N x N`` block sizes).  No rating ever leaves its process.

An epoch is :func:`~mfjax.solvers.dsgd.local_strata` under one ``shard_map``
over the 1-D process mesh (:func:`~mfjax.solvers.als_perprocess.process_mesh`):
process ``p`` updates ``U[I_p]`` and, at stratum ``s``, the ``V`` block of
``J_{(p + s) mod N}``, which then moves to its left neighbour
(``lax.ppermute``); after ``N`` strata the blocks are home and are all-gathered
into the replicated factors (``(m + n) r`` floats per epoch).  The shuffles
(``jax.random.split(fold_in(key, epoch), N^2)``, one key per block), the
minibatches, the update and the regulariser shares ``l2 w_i / n_i`` are those of
:func:`mfjax.solvers.dsgd`, so the run equals :func:`~mfjax.solvers.dsgd.dsgd` on
the union of the parts (entries of each block in the processes' order) with
``blocks=N`` and ``row_bounds`` the row ranges, up to float rounding
(``tests/test_als_parts.py``).

The traced loss is the objective of :func:`mfjax.solvers.dsgd` ("sum" scale)
from each process's own entries (:func:`mfjax.objective.shard_local_objective`:
a ``psum`` of the per-process residuals).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from mfjax import objective as _objective
from mfjax.core.factors import BiasedFactors
from mfjax.solvers import _args
from mfjax.solvers.als_perprocess import (AXIS, _allgather, _per_process, _replicated, _slots_and_positions,
                                         global_mean, own_entries, part_eval_objective, process_mesh, replicate)
from mfjax.solvers.dsgd import balanced_blocks, block_size, check_dsgd_args, local_strata
from mfjax.solvers.sgd import SGDInfo, SGDState, _random_params
from mfjax.solvers.sgd_kernel import _stack, _unstack

__all__ = ["PartDSGDProblem", "part_dsgd_problem", "dsgd_parts"]


@dataclasses.dataclass(frozen=True)
class PartDSGDProblem:
    """What each process holds for :func:`dsgd_parts` (a pytree; per-process blocks of global arrays).

    Attributes:
      blocks: ``(rows, cols, values, weights, share_row, share_col)``, each ``(N^2, B)``, process
        ``p``'s ``N`` rows being its blocks ``(p, c)``, ``c = 0..N-1``: block-local row and column of each
        slot, the rating, 1 on entries and 0 on padding, and the ridge shares ``w_i / n_i``, ``w_j / n_j``.
      u_index, v_index: ``(N mb,)`` / ``(N nb,)``: the global row (column) of each slot of row block
        ``p`` (column block ``p``); ``m`` (``n``) on padding.
      u_pos, v_pos: ``(m,)`` / ``(n,)`` replicated: where row ``i`` (column ``j``) sits in the all-gathered blocks.
      objective: the sharded objective of :func:`mfjax.solvers.dsgd` (the traced loss).
      shape: ``(m, n)``; batch_size: entries per minibatch (static).
      mesh, axis: the 1-D process mesh (static).
      row_edges, col_edges: the blocks' edges (static tuples); held: this process's entry count (static).
    """

    blocks: tuple
    u_index: Any
    v_index: Any
    u_pos: Any
    v_pos: Any
    objective: Any
    shape: tuple = ()
    batch_size: int = 1
    mesh: Optional[Any] = None
    axis: str = AXIS
    row_edges: tuple = ()
    col_edges: tuple = ()
    held: int = 0

    @property
    def num_blocks(self) -> int:
        """``N``: row blocks = column blocks = processes (static)."""
        return len(self.row_edges) - 1


jax.tree_util.register_dataclass(
    PartDSGDProblem, data_fields=["blocks", "u_index", "v_index", "u_pos", "v_pos", "objective"],
    meta_fields=["shape", "batch_size", "mesh", "axis", "row_edges", "col_edges", "held"])


def _shares(counts: np.ndarray, weighted: bool) -> np.ndarray:
    """``w / max(n, 1)`` in float32, as :func:`mfjax.solvers.sgd_kernel.sgd_problem` computes it."""
    n = counts.astype(np.float32)
    w = n if weighted else np.ones_like(n)
    return w / np.maximum(n, np.float32(1.0))


def part_dsgd_problem(train, row_ranges: Sequence | None = None, *, l2=0.0, l2_bias=None,
                      weighted_l2: bool = False, batch_size: int = 1, mesh: Mesh | None = None) -> PartDSGDProblem:
    """Set up :func:`dsgd_parts` from this process's ratings (module docstring); every process calls it.

    Exchanged host metadata: the ``n`` column counts and the ``N x N`` block sizes.

    Raises:
      ValueError: ``row_ranges`` not a partition of ``N`` ranges, entries outside this process's range,
        more processes than columns, or ``batch_size < 1``.
    """
    N, p = jax.process_count(), jax.process_index()
    m, n = (int(v) for v in train.shape)
    if N > n:
        raise ValueError(f"{N} processes but only {n} columns: DSGD needs a column block per process")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ranges, rows, cols, values = own_entries(train, row_ranges)
    lo, hi = ranges[p]
    mesh = process_mesh() if mesh is None else mesh
    col_counts = _allgather(np.bincount(cols, minlength=n).astype(np.int64)).sum(axis=0)
    row_counts = np.bincount(rows - lo, minlength=hi - lo)  # a row's ratings all lie here
    cb = balanced_blocks(col_counts, N)
    cblock = np.searchsorted(cb, cols, side="right") - 1
    sizes = _allgather(np.bincount(cblock, minlength=N).astype(np.int64))  # (N, N): block (p, c)
    bs, B = block_size(sizes, batch_size)
    order = np.argsort(cblock, kind="stable")
    start = np.concatenate([[0], np.cumsum(sizes[p])[:-1]])
    slot = np.arange(rows.size) - start[cblock[order]]
    share_row = _shares(row_counts, weighted_l2)[rows - lo]
    share_col = _shares(col_counts, weighted_l2)[cols]
    fields = []
    for a, dt in ((rows - lo, np.int32), (cols - cb[cblock], np.int32), (values, np.float32),
                  (np.ones(rows.size), np.float32), (share_row, np.float32), (share_col, np.float32)):
        buf = np.zeros((N, B), dt)
        buf[cblock[order], slot] = np.asarray(a)[order]
        fields.append(_per_process(mesh, AXIS, buf))
    mb = max(1, max(h - l for l, h in ranges))
    cranges = list(zip(cb[:-1].tolist(), cb[1:].tolist()))
    nb = max(1, max(h - l for l, h in cranges))
    # padding slots read the zero row appended to U / V (as in dsgd)
    u_slots, u_pos = _slots_and_positions(ranges, mb, m, pad=m)
    v_slots, v_pos = _slots_and_positions(cranges, nb, n, pad=n)
    local = _objective.mf_objective(train, l2, l2_bias=l2_bias)
    if weighted_l2:  # the penalty's weights: the global counts
        all_rows = _allgather(np.bincount(rows, minlength=m).astype(np.int64)).sum(axis=0)
        local = local.replace(row_weights=jnp.asarray(all_rows, jnp.float32),
                              col_weights=jnp.asarray(col_counts, jnp.float32))
    obj = _objective.shard_local_objective(local, mesh)
    return PartDSGDProblem(tuple(fields), _per_process(mesh, AXIS, u_slots[p]), _per_process(mesh, AXIS, v_slots[p]),
                           _replicated(mesh, u_pos), _replicated(mesh, v_pos), obj, shape=(m, n), batch_size=bs,
                           mesh=mesh, row_edges=tuple(int(e) for e in np.asarray(ranges)[:, 0].tolist() + [m]),
                           col_edges=tuple(int(e) for e in cb), held=int(rows.size))


# ------------------------------------------------------------------ one epoch
def _epoch(state: SGDState, problem: PartDSGDProblem):
    """One epoch: ``N`` strata under ``shard_map``, then the all-gather of the blocks (module docstring)."""
    params, m, N = state.params, problem.shape[0], problem.num_blocks
    obj, ax, bs = problem.objective, problem.axis, problem.batch_size
    Z = _stack(params)
    dtype = Z.dtype
    biased = isinstance(params, BiasedFactors)
    mean = params.mean if biased else jnp.asarray(0.0, dtype)
    lr = (state.lr * state.decay ** state.epoch.astype(dtype)).astype(dtype)
    s = obj.data_weight.astype(dtype)
    ridge = jnp.stack([obj.l2.astype(dtype) / s, obj.l2_bias.astype(dtype) / s])
    keys = jax.random.split(jax.random.fold_in(state.key, state.epoch), N * N)
    pad = jnp.zeros((1, Z.shape[1]), dtype)

    def local(blocks, u_index, v_index, Z, keys, lr, mean, ridge):
        a = jax.lax.axis_index(ax)
        B = blocks[0].shape[1]
        mine = jax.lax.dynamic_slice_in_dim(keys, a * N, N)
        perm = jax.vmap(lambda k: jax.random.permutation(k, B))(mine)
        rows, cols, x, w, sr, sc = (jnp.take_along_axis(f, perm, axis=1) for f in blocks)
        w = w.astype(dtype)
        both = lambda sh: (sh[..., None] * ridge) * w[..., None]  # noqa: E731
        data = (rows, cols, x.astype(dtype), w, both(sr), both(sc))
        Zu = jnp.concatenate([Z[:m], pad])[u_index]
        Zv = jnp.concatenate([Z[m:], pad])[v_index]
        Zu, Zv = local_strata(Zu, Zv, data, lr, mean, biased, bs, N, ax)
        return jax.lax.all_gather(Zu, ax, tiled=True), jax.lax.all_gather(Zv, ax, tiled=True)

    split = P(ax)
    # check_vma=False: the all-gathered blocks are replicated, the strata's scans per-device
    Zu, Zv = jax.shard_map(local, mesh=problem.mesh, in_specs=((split,) * 6, split, split, P(), P(), P(), P(), P()),
                           out_specs=(P(), P()), check_vma=False)(
        problem.blocks, problem.u_index, problem.v_index, Z, keys, lr, mean, ridge)
    p = _unstack(jnp.concatenate([Zu[problem.u_pos], Zv[problem.v_pos]]), params, m)
    nbat = N * N * (problem.blocks[0].shape[1] // bs)
    new = SGDState(p, state.key, state.step + nbat, state.epoch + 1, state.lr, state.decay)
    return new, SGDInfo(_objective.value(obj, p), lr)


def dsgd_parts(train, rank: int, *, row_ranges: Sequence | None = None, l2=0.0, l2_bias=None,
               num_steps: int = 20, lr: float = 0.01, decay: float = 1.0, batch_size: int = 1, biases: bool = False,
               weighted_l2: bool = False, key=None, init=None, init_scale: float = 0.1, eval_set=None,
               eval_every: int = 1, clip=None, callback=None, callback_every: int = 1, mesh: Mesh | None = None):
    """:func:`mfjax.solvers.dsgd` when each process holds only the ratings of its rows (module docstring).

    Every process calls it with its own ``train`` (and optionally its own
    held-out ``eval_set``), the same ``row_ranges`` and the same settings; the
    result (factors and trace, replicated) is that of
    ``dsgd(union, rank, blocks=N, row_bounds=edges of row_ranges, ...)`` from the same ``key`` / ``init``.

    Args:
      train: this process's training ratings (global shape; rows in ``row_ranges[process]``).
      rank, l2, l2_bias, num_steps, lr, decay, batch_size, biases, weighted_l2, key, init, init_scale,
        eval_every, clip, callback, callback_every: as in :func:`mfjax.solvers.dsgd` (``init`` replicated).
      row_ranges: every process's ``(lo, hi)``, in process order (a partition of the rows); default
        :func:`mfjax.solvers.als_perprocess.part_row_ranges` (from the rows each process holds).
      eval_set: this process's held-out ratings; the traced RMSE is over every process's.
      mesh: the 1-D process mesh (default :func:`~mfjax.solvers.als_perprocess.process_mesh`).

    Raises:
      ValueError: bad rank, ``lr <= 0``, ``l2 < 0``, bad ``row_ranges``, entries outside this process's rows.
      FloatingPointError: the run diverged; lower ``lr``.
    """
    from mfjax.solvers.base import RMSE, Solver, run
    from mfjax.solvers.dsgd import dsgd_solver

    rank, num_steps = check_dsgd_args(train, rank, lr, decay, l2, l2_bias, num_steps)
    key = jax.random.key(0) if key is None else key
    k_init, k_run = jax.random.split(key)
    problem = part_dsgd_problem(train, row_ranges, l2=l2, l2_bias=l2_bias, weighted_l2=weighted_l2,
                                batch_size=batch_size, mesh=mesh)
    if init is None:
        mean = np.float32(global_mean(train) if biases else 0.0)
        params = _random_params(k_init, mean, shape=problem.shape, rank=rank, biases=biases, scale=init_scale,
                                dtype=np.dtype(np.float32))
    else:
        params = _args_init(init, train, rank, biases)
    params = replicate(params, problem.mesh)
    ev = part_eval_objective(eval_set, problem.mesh)
    solver = Solver(dsgd_solver(lr=lr, decay=decay).init, _epoch)
    res = run(solver, problem, solver.init(params, problem, k_run), num_steps, eval_set=ev, eval_every=eval_every,
              metric=RMSE(None if clip is None else (float(clip[0]), float(clip[1]))),
              callback=callback, callback_every=callback_every)
    return _args.raise_if_nonfinite(res, "DSGD diverged", "epoch", f" (lr={lr}); lower the step size")


def _args_init(init, train, rank, biases):
    """A user's ``init`` (replicated: the same on every process), checked as :func:`mfjax.solvers.dsgd` does."""
    from mfjax.solvers.sgd import _initial_params

    params = _initial_params(train, rank, biases, init, None, 0.1, np.float32)
    if biases and not isinstance(init, BiasedFactors):  # the start's mean: every process's ratings
        params = params._replace(mean=jnp.asarray(global_mean(train), jnp.float32))
    return params
