r"""Row-wise vector descent on a device mesh: each device solves its own rows of ``U`` and of ``V``.

The row problems of a half sweep are independent (slides eq. 7)::

    f_i(u) = sum_{j in Omega_i} (x_ij - u . v_j)^2 + l2 ||u||^2,

so the rows of ``U`` are cut into ``D`` contiguous blocks, one per device of
the mesh axis, balanced by number of ratings (not of rows), and likewise the
rows of ``V`` (the columns of the ratings).  Device ``d`` holds only the
entries of its row block in the bucketed layout of
:func:`mfjax.objective.rows.build_row_layout` (same capacities on every
device, bucket sizes padded to the largest device's so the shapes are
static), builds its rows' statistics ``(A_i, b_i)`` from the replicated
other factor, runs the row solver and contributes its solved rows to one
``all_gather`` of the updated factor: only factor rows cross devices, never
ratings.  The column half is the same with the roles swapped; the training
loss after a sweep is each device's data term over its column block's
entries plus the penalty, summed with one ``psum``.

Same numbers as one device (the per-row computations are identical; only
the order of the loss's sum changes): ``tests/test_sharded.py``.  Uneven
blocks, devices with no ratings, rows with no ratings (solved to 0) and more
devices than rows all work (a device may hold only padding rows).

References:
  Beresnev, Klyushev, "Recommendation systems via approximate matrix
  factorization" (slides), 2024, eqs. 7-10 and Algorithm 13.
  The JAX authors, ``jax.shard_map`` documentation, 2024.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mfjax.objective.rows import RowQuadratic, bucket_capacities, pad_rows
from mfjax.solvers.rowwise.sweep import solve_rows

__all__ = ["ShardedRowLayout", "shard_row_layout", "part_row_layout", "row_blocks", "sharded_half_sweep"]


@dataclasses.dataclass(frozen=True)
class ShardedRowLayout:
    """The rows of one factor split over a mesh axis, each device's entries bucketed (a pytree).

    Leading axis ``D`` (the devices of ``axis``) on every array but ``position``:

    Attributes:
      buckets: tuple of ``(local_row (D, B), cols (D, B, cap), vals (D, B, cap), mask (D, B, cap))``;
        ``local_row`` indexes the device's rows (``L`` for a padding row: dropped).
      rows: ``(D, L)`` int32 global row id of each local row (``m`` for padding).
      counts: ``(D, L)`` int32 ratings per local row (0 for padding and empty rows).
      position: ``(m,)`` int32, replicated: row ``i``'s index in the gathered ``(D L,)`` order.
      mesh, axis: the mesh and its axis (static).
      num_rows: ``m`` (static).
    """

    buckets: tuple
    rows: Any
    counts: Any
    position: Any
    mesh: Any = None
    axis: Any = None
    num_rows: int = 0


jax.tree_util.register_dataclass(ShardedRowLayout, data_fields=["buckets", "rows", "counts", "position"],
                                 meta_fields=["mesh", "axis", "num_rows"])


def row_blocks(counts: np.ndarray, num_blocks: int) -> np.ndarray:
    """Edges ``0 = e_0 <= ... <= e_D = m`` of ``D`` contiguous row blocks holding about ``nnz / D`` ratings each.

    Block ``d`` is rows ``[e_d, e_{d+1})``; it ends where the cumulative
    rating count first reaches ``(d + 1) nnz / D``.  Blocks may be empty
    (more blocks than rows, or one heavy row).
    """
    counts = np.asarray(counts, np.int64)
    m = counts.shape[0]
    cum = np.cumsum(counts)
    total = int(cum[-1]) if m else 0
    if total == 0:  # no ratings: split the rows evenly
        return np.linspace(0, m, num_blocks + 1).round().astype(np.int64)
    cuts = np.searchsorted(cum, np.arange(1, num_blocks) * total / num_blocks, side="left") + 1
    return np.concatenate([[0], np.minimum(cuts, m), [m]]).astype(np.int64)


def shard_row_layout(ratings, mesh: Mesh, axis: str | None = None, *, growth: float = 2.0,
                     min_cap: int = 8) -> ShardedRowLayout:
    """Split the rows of ``ratings`` over ``mesh``'s ``axis`` (host preprocessing, once).

    Use ``shard_row_layout(ratings.T, mesh)`` for the rows of ``V``.

    Raises:
      ValueError: ``axis`` is not an axis of ``mesh``; ``growth <= 1`` or ``min_cap < 1``.
    """
    axis = mesh.axis_names[0] if axis is None else axis
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    caps_of = functools.partial(bucket_capacities, growth=growth, min_cap=min_cap)
    caps_of(0)  # argument checks before any work
    D = int(mesh.shape[axis])
    m = int(ratings.shape[0])
    counts, ptr, cols, vals = _row_sorted(ratings.rows, ratings.cols, ratings.values, m)
    edges = row_blocks(counts, D)
    caps = caps_of(int(counts.max(initial=0)))
    bucket_of = np.searchsorted(np.asarray(caps), counts, side="left")
    widths = [max(_members(bucket_of, edges, d, k).size for d in range(D)) for k in range(len(caps))]
    arrays = _block_arrays(counts, ptr, cols, vals, edges, range(D), caps, widths)
    return _place(arrays, edges, mesh, axis, m, lambda a, sharding: jax.make_array_from_callback(
        a.shape, sharding, lambda idx: a[idx]))


def _row_sorted(rows, cols, vals, m: int):
    """``(counts (m,), ptr (m + 1,), cols, vals)`` of the entries sorted by row (then column)."""
    rows, cols, vals = np.asarray(rows).astype(np.int64), np.asarray(cols).astype(np.int64), np.asarray(vals)
    order = np.lexsort((cols, rows))
    counts = np.bincount(rows, minlength=m)
    return counts, np.concatenate([[0], np.cumsum(counts)]), cols[order], vals[order]


def _members(bucket_of, edges, d: int, k: int) -> np.ndarray:
    """Block ``d``'s local row ids in bucket ``k``."""
    return np.flatnonzero(bucket_of[edges[d]:edges[d + 1]] == k)


def _block_arrays(counts, ptr, cols, vals, edges, blocks, caps, widths):
    """Host arrays of the row blocks ``blocks``: ``(local_rows, local_counts, buckets)``, leading axis
    ``len(blocks)``; bucket ``k`` has ``widths[k]`` row slots (buckets of width 0 are left out)."""
    m = counts.shape[0]
    L = max(1, int(np.diff(edges).max(initial=0)))
    bucket_of = np.searchsorted(np.asarray(caps), counts, side="left")
    nb = len(blocks)
    local_rows = np.full((nb, L), m, np.int64)
    local_counts = np.zeros((nb, L), np.int64)
    for t, d in enumerate(blocks):
        lo, hi = int(edges[d]), int(edges[d + 1])
        local_rows[t, :hi - lo] = np.arange(lo, hi)
        local_counts[t, :hi - lo] = counts[lo:hi]
    buckets = []
    for k, (cap, B) in enumerate(zip(caps, widths)):
        if B == 0:
            continue
        lr = np.full((nb, B), L, np.int64)
        bc = np.zeros((nb, B, cap), np.int64)
        bv = np.zeros((nb, B, cap), vals.dtype)
        bm = np.zeros((nb, B, cap), vals.dtype)
        for t, d in enumerate(blocks):
            loc = _members(bucket_of, edges, d, k)
            if not len(loc):
                continue
            lr[t, :len(loc)] = loc
            bc[t, :len(loc)], bv[t, :len(loc)], bm[t, :len(loc)] = pad_rows(loc + edges[d], counts, ptr, cols,
                                                                            vals, cap)
        buckets.append((lr, bc, bv, bm))
    return local_rows, local_counts, buckets


def _place(arrays, edges, mesh, axis, m: int, split_array) -> ShardedRowLayout:
    """The :class:`ShardedRowLayout` of the host ``arrays`` (:func:`_block_arrays`): ``split_array(a, sharding)``
    makes the arrays split over ``axis``; the row positions (from ``edges``) are replicated."""
    local_rows, local_counts, buckets = arrays
    L = local_rows.shape[1]
    position = np.zeros(m, np.int64)
    for d in range(len(edges) - 1):
        lo, hi = int(edges[d]), int(edges[d + 1])
        position[lo:hi] = d * L + np.arange(hi - lo)
    split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
    i32 = np.int32
    put = lambda a, dtype=None: split_array(np.asarray(a if dtype is None else a.astype(dtype)), split)  # noqa: E731
    placed = tuple((put(lr, i32), put(bc, i32), put(bv), put(bm)) for lr, bc, bv, bm in buckets)
    pos = position.astype(i32)
    return ShardedRowLayout(placed, put(local_rows, i32), put(local_counts, i32),
                            jax.make_array_from_callback(pos.shape, whole, lambda idx: pos[idx]),
                            mesh=mesh, axis=axis, num_rows=m)


def part_row_layout(rows, cols, values, edges, mesh: Mesh, axis: str | None = None, *, num_rows: int,
                    growth: float = 2.0, min_cap: int = 8) -> ShardedRowLayout:
    """:func:`shard_row_layout` built by every process from only its own rows' entries (a collective).

    Process ``p`` passes the entries of rows ``[edges[p], edges[p + 1])`` (global ids) and the same
    ``edges`` (one block per process, the mesh ``axis`` having one device per process); the
    capacities and bucket widths are agreed by two small host all-gathers (the largest row count, the
    per-bucket row counts), so every process's block has the same shapes.

    Raises:
      ValueError: entries outside this process's block; bad ``growth`` / ``min_cap``.
    """
    from mfjax.core.distributed import allgather_host

    axis = mesh.axis_names[0] if axis is None else axis
    p, m = jax.process_index(), int(num_rows)
    lo, hi = int(edges[p]), int(edges[p + 1])
    r = np.asarray(rows, np.int64)
    if r.size and (r.min() < lo or r.max() >= hi):
        raise ValueError(f"process {p} holds rows {int(r.min())}..{int(r.max())} outside its block {lo}..{hi - 1}")
    counts, ptr, cols, vals = _row_sorted(r, cols, values, m)
    top = int(allgather_host(np.array([counts.max(initial=0)], np.int64)).max())
    caps = bucket_capacities(top, growth=growth, min_cap=min_cap)
    bucket_of = np.searchsorted(np.asarray(caps), counts, side="left")
    mine = np.array([_members(bucket_of, edges, p, k).size for k in range(len(caps))], np.int64)
    widths = allgather_host(mine).max(axis=0).tolist()
    arrays = _block_arrays(counts, ptr, cols, vals, edges, [p], caps, widths)

    def split_array(a, sharding):
        shape = (a.shape[0] * int(mesh.shape[axis]),) + a.shape[1:]
        return jax.make_array_from_process_local_data(sharding, a, shape)

    return _place(arrays, edges, mesh, axis, m, split_array)


def _local_statistics(buckets, counts, V, l2) -> RowQuadratic:
    """``(A_i, b_i)`` of one device's ``L`` rows from its buckets (``c_i`` unused by the solvers: 0)."""
    L = counts.shape[0]
    r = V.shape[1]
    A = jnp.zeros((L + 1, r, r), V.dtype)
    b = jnp.zeros((L + 1, r), V.dtype)
    for lr, bc, bv, bm in buckets:
        Vg = V[bc] * bm[..., None].astype(V.dtype)
        A = A.at[lr].add(jnp.einsum("bkr,bks->brs", Vg, Vg))
        b = b.at[lr].add(jnp.einsum("bkr,bk->br", Vg, bv.astype(V.dtype)))
    A = A[:L] + jnp.asarray(l2, V.dtype) * jnp.eye(r, dtype=V.dtype)
    return RowQuadratic(A, b[:L], jnp.zeros((L,), V.dtype), counts)


def _local_data_term(buckets, rows, U_loc, V):
    """``sum w (x - u_i . v_j)^2`` over one device's entries (``U_loc``: its ``L`` rows)."""
    total = jnp.zeros((), V.dtype)
    Up = jnp.concatenate([U_loc, jnp.zeros((1, U_loc.shape[1]), U_loc.dtype)])
    for lr, bc, bv, bm in buckets:
        pred = jnp.einsum("bkr,br->bk", V[bc], Up[lr])
        res = (bv.astype(V.dtype) - pred) * bm.astype(V.dtype)
        total = total + jnp.sum(res * res)
    return total


def _specs(layout: ShardedRowLayout):
    ax = layout.axis
    return (tuple((P(ax),) * 4 for _ in layout.buckets), P(ax), P(ax), P())


def sharded_half_sweep(U, V, layout: ShardedRowLayout, l2, row_solver, *, with_data_term: bool = False):
    """:func:`~mfjax.solvers.rowwise.row_half_sweep` with ``U``'s rows split over the mesh.

    ``U`` (m, r) and ``V`` (n, r) replicated; each device solves its block of
    rows and the updated rows are assembled with one ``all_gather``.

    Returns:
      ``(U_new, RowInfo)`` (replicated), and with ``with_data_term`` also the
      data term ``sum_Omega (x - u_i . v_j)^2`` at ``(U_new, V)`` (one ``psum``).
    """
    ax, m = layout.axis, layout.num_rows

    def local(buckets, rows, counts, position, U, V, l2):
        buckets = jax.tree.map(lambda a: a[0], buckets)
        rows, counts = rows[0], counts[0]
        q = _local_statistics(buckets, counts, V, l2)
        U_loc, info = solve_rows(row_solver, U[jnp.minimum(rows, m - 1)], q)
        gathered = jax.tree.map(lambda a: jax.lax.all_gather(a, ax, tiled=True)[position], (U_loc, info))
        if not with_data_term:
            return gathered
        return gathered, jax.lax.psum(_local_data_term(buckets, rows, U_loc, V), ax)

    out = (P(), P()) if with_data_term else P()
    # check_vma=False: the all-gathered / psum-ed outputs are replicated by construction
    res = jax.shard_map(local, mesh=layout.mesh, in_specs=_specs(layout) + (P(), P(), P()), out_specs=out,
                        check_vma=False)(layout.buckets, layout.rows, layout.counts, layout.position, U, V,
                                         jnp.asarray(l2, V.dtype))
    if with_data_term:
        (U_new, info), data = res
        return U_new, info, data
    U_new, info = res
    return U_new, info

