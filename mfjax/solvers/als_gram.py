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

On a device mesh (:func:`shard_als_problem`) each device holds a contiguous
block of every layout tier's chunks -- whole rows, balanced by number of ratings
because every chunk holds about the same number of entry slots -- and solves
only its own rows; the factor matrix being solved for is summed over the
devices with one ``psum`` (each row is non-zero on exactly one device), and
the fixed factor matrix is replicated (``V`` for the row half sweep, ``U``
for the column half).  Same sweep, same numbers as on one device
(``tests/test_sharded.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mfjax import objective as _objective
from mfjax.core.factors import BiasedFactors, Factors, swap_factors
from mfjax.objective import MFObjective
from mfjax.objective.gram import (CHUNK_ENTRIES, SEGMENT, GramLayout, build_gram_layout, build_gram_tiers, solve_rows,
                                  solve_rows_cg)

__all__ = ["ALSProblem", "als_problem", "gram_sweep", "gram_step", "shard_als_problem"]

Params = Union[Factors, BiasedFactors]


@dataclasses.dataclass(frozen=True)
class ALSProblem:
    """An ALS problem with the Gram layouts of both sides (a pytree; pass it traced).

    Attributes:
      objective: the :class:`~mfjax.objective.MFObjective` (its ``l2``,
        ``l2_bias``, data weight, entry weights and row weights are used).
      rows: the :class:`~mfjax.objective.gram.GramLayout` of the objective's rows, or a tuple
        of layout tiers (:func:`~mfjax.objective.gram.build_gram_tiers`: bounded padding when
        some rows are longer than a chunk; the default of :func:`als_problem`).
      cols: the same for its columns (``objective.T``).
      mesh: ``None``, or the :class:`jax.sharding.Mesh` whose ``axis`` the
        layouts' chunks are split over (:func:`shard_als_problem`; static).
      axis: that mesh axis (static).
    """

    objective: MFObjective
    rows: Union[GramLayout, tuple]
    cols: Union[GramLayout, tuple]
    mesh: Optional[Any] = None
    axis: Optional[str] = None

    def replace(self, **changes) -> "ALSProblem":
        """A copy with some fields replaced (like :meth:`MFObjective.replace`)."""
        return dataclasses.replace(self, **changes)

    _replace = replace  # the NamedTuple spelling it had before


jax.tree_util.register_dataclass(ALSProblem, data_fields=["objective", "rows", "cols"],
                                 meta_fields=["mesh", "axis"])


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
                chunk_entries: int = CHUNK_ENTRIES, tiers: bool = True) -> ALSProblem:
    """The :class:`ALSProblem` of an objective (e.g. :func:`~mfjax.solvers.als.als_objective`).

    The objective must be concrete (its indices are laid out on the host).

    Memory: with ``tiers`` (default) each side is laid out by
    :func:`~mfjax.objective.gram.build_gram_tiers`: at most ``2 (nnz + m L)``
    int32/float32 slots (12 bytes each) per side, and one scan step gathers at
    most ``max(chunk_entries, longest row)`` slots, i.e. a ``(slots, r)``
    feature block and, for the exact solve, ``slots / L`` Gram matrices of
    ``r x r``; nothing of size ``m r^2`` or ``nnz r`` is formed.

    Args:
      objective: the problem ALS minimises.
      segment: entries per segment of the batched Gram products.
      chunk_entries: entry slots per step of the scan (memory bound).
      tiers: lay long rows out in a tier of their own (bounded padding); ``False``: one
        :class:`~mfjax.objective.gram.GramLayout` per side, every chunk padded to the largest.
    """
    rows, cols = np.asarray(objective.rows), np.asarray(objective.cols)
    w = np.asarray(objective.weights)
    m, n = objective.shape
    kw = dict(segment=segment, chunk_entries=chunk_entries, weights=w)
    if not tiers:
        return ALSProblem(objective,
                          _padded(build_gram_layout(rows, cols, m, **kw), m),
                          _padded(build_gram_layout(cols, rows, n, **kw), n))
    return ALSProblem(objective,
                      tuple(_padded(t, m) for t in build_gram_tiers(rows, cols, m, **kw)),
                      tuple(_padded(t, n) for t in build_gram_tiers(cols, rows, n, **kw)))


def _pad_chunks(layout: GramLayout, multiple: int, num_rows: int) -> GramLayout:
    """Append empty chunks (rows ``num_rows``: dropped; mask 0) up to a multiple of ``multiple``."""
    extra = _round_up(layout.entry.shape[0], multiple) - layout.entry.shape[0]
    if not extra:
        return layout
    pad = lambda a, v=0: jnp.pad(a, ((0, extra),) + ((0, 0),) * (a.ndim - 1), constant_values=v)  # noqa: E731
    return GramLayout(pad(layout.rows, num_rows), *(pad(a) for a in layout[1:]))


def shard_als_problem(problem: ALSProblem | MFObjective, mesh: Mesh, axis: str | None = None, *,
                      segment: int = SEGMENT, chunk_entries: int = CHUNK_ENTRIES) -> ALSProblem:
    """Lay an ALS problem out over ``mesh``'s ``axis``: each device solves its own block of rows.

    Each side is laid out in tiers as on one device
    (:func:`~mfjax.objective.gram.build_gram_tiers`: rows longer than a
    chunk in a tier of their own, so one long row -- a popular movie --
    does not pad every chunk), with chunks of at most
    ``min(chunk_entries, slots / (2 D))`` entry slots (so every one of the
    ``D`` devices gets chunks).  Every tier is padded with empty chunks to a
    multiple of ``D`` and split into ``D`` contiguous blocks: balanced by
    number of ratings, not of rows.  Per device the memory is then bounded
    as in :func:`als_problem` (at most ``2 (nnz + m L) / D`` slots per side
    plus ``D - 1`` empty chunks per tier; one scan step gathers at most
    ``max(chunk, longest row)`` slots).  The objective (values, weights) is
    replicated.  :func:`gram_sweep` (and so :func:`mfjax.solvers.als` with
    ``mesh=``) then runs each half sweep under :func:`jax.shard_map`.

    Args:
      problem: an :class:`ALSProblem` or the objective ALS minimises (concrete).
      mesh: the device mesh.
      axis: the mesh axis the rows are split over (default: its first axis).
      segment, chunk_entries: as in :func:`als_problem`.

    Raises:
      ValueError: ``axis`` is not an axis of ``mesh``, or the objective is itself sharded.
    """
    obj = problem.objective if isinstance(problem, ALSProblem) else problem
    if obj.mesh is not None:
        raise ValueError("shard_als_problem takes an unsharded objective (its entries stay replicated)")
    axis = mesh.axis_names[0] if axis is None else axis
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    d = int(mesh.shape[axis])
    m, n = obj.shape
    slots = int(np.count_nonzero(np.asarray(obj.weights))) + max(m, n) * segment // 2
    per = max(segment, min(int(chunk_entries), -(-slots // (2 * d))))
    base = als_problem(obj, segment=segment, chunk_entries=per, tiers=True)
    split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
    place = lambda tiers, k: tuple(jax.device_put(_pad_chunks(t, d, k), split) for t in tiers)  # noqa: E731
    return ALSProblem(jax.device_put(obj, whole), place(base.rows, m), place(base.cols, n), mesh=mesh, axis=axis)


def _shares_cpu_pool(mesh: Mesh) -> bool:
    """Whether several of ``mesh``'s devices are CPU devices of this process (virtual devices,
    ``--xla_force_host_platform_device_count``): their programs share one intra-op thread pool,
    on which jaxlib's batched LAPACK kernels can deadlock (:func:`~mfjax.objective.curvature.cholesky_solve_columns`)."""
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    return len(mine) > 1 and all(d.platform == "cpu" for d in mine)


def _solve(problem: ALSProblem, layout: GramLayout, F, y, w, ridge, m: int, x0, cg_steps: int | None,
           sse: bool = False):
    """The rows' solves (:func:`~mfjax.objective.gram.solve_rows`, or ``cg_steps`` CG steps from ``x0``
    by :func:`~mfjax.objective.gram.solve_rows_cg`, with the data term when ``sse``), per device and
    summed when the problem is sharded."""
    lapack = problem.mesh is None or not _shares_cpu_pool(problem.mesh)

    def solve(layout, F, y, w, ridge, x0):
        if cg_steps is None:
            return solve_rows(layout, F, y, w, ridge, m, lapack=lapack)
        return solve_rows_cg(layout, F, y, w, ridge, x0, m, cg_steps, return_sse=sse)

    if problem.mesh is None:
        if isinstance(layout, GramLayout):
            return solve(layout, F, y, w, ridge, x0)
        # tiers: every row is solved in exactly one tier, the others return 0 for it
        outs = [solve(t, F, y, w, ridge, x0) for t in layout]
        return jax.tree.map(lambda *a: functools.reduce(jnp.add, a), *outs)
    ax = problem.axis
    tiers = (layout,) if isinstance(layout, GramLayout) else tuple(layout)

    def local(tiers, *args):  # this device's chunks of every tier; each row is solved in one of them
        outs = [solve(t, *args) for t in tiers]
        return jax.lax.psum(jax.tree.map(lambda *a: functools.reduce(jnp.add, a), *outs), ax)

    spec = tuple(GramLayout(*(P(ax),) * len(GramLayout._fields)) for _ in tiers)
    out = (P(), P()) if sse and cg_steps is not None else P()
    # check_vma=False: the scan's zero-initialised solution is a per-device partial result
    return jax.shard_map(local, mesh=problem.mesh, in_specs=(spec, P(), P(), P(), P(), P()), out_specs=out,
                         check_vma=False)(tiers, F, y, w, ridge, x0)


def _ridge_scale(weights, m):
    return 1.0 if weights is None else weights[:, None]


def _update_rows(params: Params, obj: MFObjective, layout: GramLayout, problem: ALSProblem,
                 cg_steps: int | None, sse: bool = False):
    """Minimisation over ``U`` (and the row biases): the systems of ``als_update_rows``
    (exact, or ``cg_steps`` CG steps from the current rows).  Returns ``(params, sse)``:
    ``sse`` is the data term after the update with CG when asked for, else ``None``."""
    s = obj.data_weight
    lam = (obj.l2 / s).astype(params.U.dtype)
    scale = _ridge_scale(obj.row_weights, obj.shape[0])
    m = obj.shape[0]
    V = params.V
    want = sse and cg_steps is not None
    split = (lambda out: out) if want else (lambda out: (out, None))  # noqa: E731
    if not isinstance(params, BiasedFactors):
        U, e = split(_solve(problem, layout, V, obj.values, obj.weights, lam * scale, m, params.U, cg_steps, sse))
        return Factors(U.astype(params.U.dtype), V), e
    lb = (obj.l2_bias / s).astype(V.dtype)
    F = jnp.concatenate([V, jnp.ones((V.shape[0], 1), V.dtype)], axis=1)
    y = obj.values.astype(V.dtype) - params.mean - params.col_bias[obj.cols]
    diag = jnp.concatenate([jnp.full((V.shape[1],), lam, V.dtype), jnp.reshape(lb, (1,))])
    x0 = jnp.concatenate([params.U, params.row_bias[:, None].astype(params.U.dtype)], axis=1)
    sol, e = split(_solve(problem, layout, F, y, obj.weights, diag[None, :] * scale, m, x0, cg_steps, sse))
    return BiasedFactors(sol[:, :-1], V, sol[:, -1], params.col_bias, params.mean), e


def gram_step(params: Params, problem: ALSProblem, *, cg_steps: int | None = None):
    """One ALS sweep (rows, then columns) on an :class:`ALSProblem` and the objective after it.

    ``cg_steps=None``: exact (batched Cholesky); an integer: that many
    conjugate-gradient steps per row, warm-started at the current factors
    (:func:`~mfjax.objective.gram.solve_rows_cg`).  With CG the objective's
    data term comes out of the column half's last residuals (no extra pass
    over the entries); with Cholesky it is :func:`mfjax.objective.value`.

    Returns:
      ``(params, loss)``.
    """
    obj = problem.objective
    params, _ = _update_rows(params, obj, problem.rows, problem, cg_steps)
    flipped, sse = _update_rows(swap_factors(params), obj.T, problem.cols, problem, cg_steps, sse=True)
    params = swap_factors(flipped)
    if sse is None:
        return params, _objective.value(obj, params)
    return params, _objective.value_from_sse(obj, params, sse)


def gram_sweep(params: Params, problem: ALSProblem, *, cg_steps: int | None = None) -> Params:
    """One ALS sweep (rows, then columns) on an :class:`ALSProblem` (:func:`gram_step` without the loss)."""
    obj = problem.objective
    params, _ = _update_rows(params, obj, problem.rows, problem, cg_steps)
    return swap_factors(_update_rows(swap_factors(params), obj.T, problem.cols, problem, cg_steps)[0])
