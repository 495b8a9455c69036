"""Sparse per-row storage and the per-row quadratic subproblems of MF (for vector descent).

With ``V`` fixed, the row problem of the masked loss (slides eq. 7) is::

    f_i(u) = sum_{j in Omega_i} (x_ij - u . v_j)^2 + l2 ||u||^2
           = u^T A_i u - 2 b_i^T u + c_i,

    A_i = V_{Omega_i}^T V_{Omega_i} + l2 I,   b_i = V_{Omega_i}^T x_{Omega_i},
    c_i = sum_{j in Omega_i} x_ij^2,

with gradient ``2 (A_i u - b_i)`` (slides eq. 9) and Hessian ``2 A_i``.  Once
the sufficient statistics ``(A_i, b_i, c_i)`` are known, a function or
gradient evaluation of a row problem costs O(r^2) whatever the number of
ratings in the row, so per-row BFGS and any line search are cheap.  Summed
over the rows, ``sum_i f_i(U_i) + l2 ||V||^2`` is the masked loss
:func:`mfjax.losses.masked_sq_loss` (``scale="sum"``) -- the tests check it.

Two sparse layouts of the same observed entries, built once on the host:

* :class:`RowLayout` -- rows grouped in buckets by their number of ratings
  (capacities ``min_cap * growth^k``), each bucket a padded
  ``(rows_in_bucket, cap)`` block of column indices, values and a 0/1 mask.
  The statistics of *all* rows are then a handful of batched matrix products
  (``einsum('bkr,bks->brs')``), about 5x faster on CPU than a
  ``segment_sum`` of the ``nnz`` outer products (which also needs an
  ``nnz x r x r`` temporary), and no ``m x n`` array is ever formed.  The
  same padded blocks give the *direct* row loss over the observed entries
  (:func:`direct_row_losses`), which must agree with the quadratic form.
* :class:`BlockLayout` -- the entries of consecutive groups of ``k`` rows
  (CSR order), padded to the largest group, for the interleaved schedule of
  Algorithm 13: the statistics of one group are recomputed from the current
  ``V`` inside a ``lax.scan`` body with static shapes.

References:
  Beresnev, Klyushev, "Recommendation systems via approximate matrix
  factorization" (slides), 2024, eqs. 7-10 and Algorithm 13.
  Zhou, Wilkinson, Schreiber, Pan, "Large-scale parallel collaborative
  filtering for the Netflix prize", 2008 (the per-row normal equations).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "RowQuadratic",
    "quadratic_value",
    "quadratic_increment",
    "RowLayout",
    "build_row_layout",
    "bucket_capacities",
    "pad_rows",
    "row_statistics",
    "direct_row_losses",
    "BlockLayout",
    "build_block_layout",
    "block_statistics",
]


class RowQuadratic(NamedTuple):
    """Row problems ``f(u) = u^T A u - 2 b^T u + c`` (a leading batch axis allowed).

    Attributes:
      A: ``(..., r, r)`` symmetric, ``V_Omega^T V_Omega + l2 I``.
      b: ``(..., r)``, ``V_Omega^T x_Omega``.
      c: ``(...)``, ``sum x_Omega^2``.
      count: ``(...)`` int32, number of observed entries of the row.
    """

    A: Any
    b: Any
    c: Any
    count: Any


def quadratic_value(u, q: RowQuadratic):
    """``u^T A u - 2 b^T u + c`` for one row (no batch axis)."""
    Au = q.A @ u
    return jnp.vdot(u, Au) - 2.0 * jnp.vdot(q.b, u) + q.c


def quadratic_increment(u, q: RowQuadratic, u_ref):
    """``f(u) - f(u_ref) = (u - u_ref)^T (A (u + u_ref) - 2 b)`` for one row.

    The same function as :func:`quadratic_value` up to a constant (same
    gradient ``2 (A u - b)``), but without the cancellation of the large terms
    ``u^T A u``, ``2 b^T u`` and ``c`` (each about ``sum x^2``, tens of
    thousands for a heavy MovieLens user): in float32 the full value carries
    an absolute error of ``eps * c``, which hides the decrease that Armijo /
    Wolfe tests look for once ``u`` is within ``~1e-2`` of the optimum.  The
    increment's error is ``eps ||A|| ||u - u_ref|| ||u_ref - u*||``-sized.
    """
    return jnp.vdot(u - u_ref, q.A @ (u + u_ref) - 2.0 * q.b)


# ----------------------------------------------------------------- all rows
class _Bucket(NamedTuple):
    rows: Any  # (B,) int32 row ids
    cols: Any  # (B, cap) int32 column ids (0 where padded)
    vals: Any  # (B, cap) values (0 where padded)
    mask: Any  # (B, cap) 0/1 in the values' dtype


class RowLayout(NamedTuple):
    """All rows of a :class:`~mfjax.data.Ratings`, bucketed and padded (a pytree).

    Attributes:
      buckets: tuple of buckets ``(rows, cols, vals, mask)``; every row
        appears in exactly one bucket (rows without ratings in the first).
      inv_perm: ``(m,)`` position of row ``i`` in the concatenated buckets.
      sq_sum: ``(m,)`` ``c_i = sum_j x_ij^2``.
      counts: ``(m,)`` int32 number of ratings per row.
    """

    buckets: tuple
    inv_perm: Any
    sq_sum: Any
    counts: Any

    @property
    def num_rows(self) -> int:
        return int(self.counts.shape[0])

    @property
    def padded_size(self) -> int:
        return int(sum(b.cols.size for b in self.buckets))


def _host(ratings):
    rows = np.asarray(ratings.rows).astype(np.int64)
    cols = np.asarray(ratings.cols).astype(np.int64)
    vals = np.asarray(ratings.values)
    m, n = ratings.shape
    if rows.size and (rows.min() < 0 or rows.max() >= m):
        raise ValueError(f"row index out of range [0, {m}): {rows.min()}..{rows.max()}")
    if cols.size and (cols.min() < 0 or cols.max() >= n):
        raise ValueError(f"column index out of range [0, {n}): {cols.min()}..{cols.max()}")
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], vals[order], m, n


def bucket_capacities(max_count: int, growth: float = 2.0, min_cap: int = 8) -> list[int]:
    """Capacities ``min_cap, ~min_cap growth, ...`` up to the first one ``>= max_count`` (strictly increasing).

    Raises:
      ValueError: ``growth <= 1`` or ``min_cap < 1`` (naming the value).
    """
    if not growth > 1.0:
        raise ValueError(f"growth must be > 1, got {growth!r}")
    if int(min_cap) != min_cap or min_cap < 1:
        raise ValueError(f"min_cap must be an integer >= 1, got {min_cap!r}")
    caps = [int(min_cap)]
    while caps[-1] < max_count:
        caps.append(max(caps[-1] + 1, int(np.ceil(caps[-1] * growth))))
    return caps


def pad_rows(rid, counts, ptr, cols, vals, cap: int):
    """Host arrays ``(cols (B, cap), vals (B, cap), mask (B, cap))`` of rows ``rid`` of row-sorted entries.

    ``ptr[i]`` is row ``i``'s first entry; slots past ``counts[i]`` hold 0 with mask 0.
    """
    off = np.arange(cap)[None, :]
    mask = off < counts[rid][:, None]
    idx = np.where(mask, ptr[rid][:, None] + off, 0)
    take_c = cols[idx] if cols.size else np.zeros(idx.shape, np.int64)
    take_v = vals[idx] if vals.size else np.zeros(idx.shape, vals.dtype)
    return np.where(mask, take_c, 0), np.where(mask, take_v, 0).astype(vals.dtype), mask.astype(vals.dtype)


def build_row_layout(ratings, *, growth: float = 2.0, min_cap: int = 8) -> RowLayout:
    """Bucketed padded layout of the rows of ``ratings`` (host preprocessing, once).

    Row ``i`` with ``n_i`` ratings goes to the smallest capacity
    ``min_cap * growth^k >= n_i``; the padding overhead is below ``growth``x
    the number of ratings.  Use ``build_row_layout(ratings.T)`` for the
    columns.

    Raises:
      ValueError: ``growth <= 1`` or ``min_cap < 1`` (naming the value).
    """
    rows, cols, vals, m, _ = _host(ratings)
    counts = np.bincount(rows, minlength=m)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    caps = bucket_capacities(int(counts.max(initial=0)), growth, min_cap)
    bucket_of = np.searchsorted(np.asarray(caps), counts, side="left")
    buckets, perm = [], []
    dtype = vals.dtype
    for k, cap in enumerate(caps):
        rid = np.nonzero(bucket_of == k)[0]
        if rid.size == 0:
            continue
        bc, bv, bm = pad_rows(rid, counts, ptr, cols, vals, cap)
        buckets.append(_Bucket(jnp.asarray(rid, jnp.int32), jnp.asarray(bc, jnp.int32), jnp.asarray(bv),
                               jnp.asarray(bm)))
        perm.append(rid)
    perm = np.concatenate(perm)
    inv = np.empty(m, np.int64)
    inv[perm] = np.arange(m)
    sq = np.zeros(m, np.float64)
    np.add.at(sq, rows, vals.astype(np.float64) ** 2)
    return RowLayout(
        tuple(buckets),
        jnp.asarray(inv, jnp.int32),
        jnp.asarray(sq.astype(dtype)),
        jnp.asarray(counts, jnp.int32),
    )


def row_statistics(layout: RowLayout, V, l2) -> RowQuadratic:
    """``(A_i, b_i, c_i)`` of every row given the other factor ``V`` (n, r).

    Cost O(padded_nnz r^2) in a few batched matmuls; memory O(m r^2).
    """
    As, bs = [], []
    for bk in layout.buckets:
        Vg = V[bk.cols] * bk.mask[..., None].astype(V.dtype)
        As.append(jnp.einsum("bkr,bks->brs", Vg, Vg))
        bs.append(jnp.einsum("bkr,bk->br", Vg, bk.vals.astype(V.dtype)))
    A = jnp.concatenate(As)[layout.inv_perm]
    b = jnp.concatenate(bs)[layout.inv_perm]
    r = V.shape[1]
    A = A + jnp.asarray(l2, V.dtype) * jnp.eye(r, dtype=V.dtype)
    return RowQuadratic(A, b, layout.sq_sum.astype(V.dtype), layout.counts)


def direct_row_losses(layout: RowLayout, U, V, l2):
    """``f_i(U_i)`` for every row, summed over the row's observed entries directly.

    The reference form (no sufficient statistics): ``sum_k w_k (x_k - v_{j_k} . u)^2
    + l2 ||u||^2`` over each row's padded entries.  Equal to
    :func:`quadratic_value` on :func:`row_statistics` up to rounding.
    """
    outs = []
    for bk in layout.buckets:
        Vg = V[bk.cols]
        pred = jnp.einsum("bkr,br->bk", Vg, U[bk.rows])
        res = (bk.vals.astype(V.dtype) - pred) * bk.mask.astype(V.dtype)
        outs.append(jnp.sum(res * res, axis=1))
    data = jnp.concatenate(outs)[layout.inv_perm]
    return data + jnp.asarray(l2, V.dtype) * jnp.sum(U * U, axis=1)


# ------------------------------------------------------- groups of k rows
@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Entries of row groups ``[k g, k g + k)`` in CSR order, for a scan over groups.

    Attributes:
      starts: ``(G,)`` int32 offset of group ``g``'s first entry.
      sizes: ``(G,)`` int32 number of entries of group ``g``.
      local: ``(nnz + E,)`` int32 row index minus ``k g`` of each entry
        (padded at the end so that a slice of length ``E`` never runs out).
      cols, vals: ``(nnz + E,)`` the entries' columns and values (padded).
      sq_sum: ``(m,)`` ``c_i``.
      counts: ``(m,)`` int32 ratings per row.
      k: group size (static).  E: the largest group's entry count (static).
    """

    starts: Any
    sizes: Any
    local: Any
    cols: Any
    vals: Any
    sq_sum: Any
    counts: Any
    k: int
    E: int

    @property
    def num_groups(self) -> int:
        return int(self.starts.shape[0])


jax.tree_util.register_dataclass(
    BlockLayout,
    data_fields=["starts", "sizes", "local", "cols", "vals", "sq_sum", "counts"],
    meta_fields=["k", "E"],
)


def build_block_layout(ratings, k: int) -> BlockLayout:
    """CSR entries of ``ratings`` grouped by ``k`` consecutive rows (host, once).

    Raises:
      ValueError: ``k < 1``.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"group size k must be an integer >= 1, got {k!r}")
    k = int(k)
    rows, cols, vals, m, _ = _host(ratings)
    G = -(-m // k)
    counts = np.bincount(rows, minlength=m)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    bounds = ptr[np.minimum(np.arange(G + 1) * k, m)]
    sizes = np.diff(bounds)
    E = max(int(sizes.max(initial=0)), 1)
    local = rows - (rows // k) * k
    pad = lambda a, fill: np.concatenate([a, np.full(E, fill, a.dtype)])
    sq = np.zeros(m, np.float64)
    np.add.at(sq, rows, vals.astype(np.float64) ** 2)
    return BlockLayout(
        starts=jnp.asarray(bounds[:-1], jnp.int32),
        sizes=jnp.asarray(sizes, jnp.int32),
        local=jnp.asarray(pad(local, 0), jnp.int32),
        cols=jnp.asarray(pad(cols, 0), jnp.int32),
        vals=jnp.asarray(pad(vals, 0)),
        sq_sum=jnp.asarray(sq.astype(vals.dtype)),
        counts=jnp.asarray(counts, jnp.int32),
        k=k,
        E=E,
    )


def block_statistics(layout: BlockLayout, g, V, l2) -> RowQuadratic:
    """``(A_i, b_i, c_i)`` of rows ``k g .. k g + k - 1`` given the current ``V``.

    Static shapes (``E`` entries gathered, masked beyond the group's size),
    so it runs inside ``lax.scan`` with a traced group index ``g``; rows past
    the last row get ``A = l2 I``, ``b = 0``.
    """
    k, E = layout.k, layout.E
    start = layout.starts[g]
    sl = lambda a: jax.lax.dynamic_slice(a, (start,), (E,))
    valid = jnp.arange(E) < layout.sizes[g]
    seg = jnp.where(valid, sl(layout.local), k)
    Vg = V[sl(layout.cols)] * valid[:, None].astype(V.dtype)
    x = sl(layout.vals).astype(V.dtype)
    A = jax.ops.segment_sum(Vg[:, :, None] * Vg[:, None, :], seg, k + 1, indices_are_sorted=True)[:k]
    b = jax.ops.segment_sum(Vg * x[:, None], seg, k + 1, indices_are_sorted=True)[:k]
    r = V.shape[1]
    A = A + jnp.asarray(l2, V.dtype) * jnp.eye(r, dtype=V.dtype)
    m = layout.counts.shape[0]
    idx = g * k + jnp.arange(k)
    inside = idx < m
    idc = jnp.minimum(idx, m - 1)
    c = jnp.where(inside, layout.sq_sum[idc], 0).astype(V.dtype)
    count = jnp.where(inside, layout.counts[idc], 0)
    return RowQuadratic(A, b, c, count)
