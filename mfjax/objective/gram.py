r"""Per-row ridge solves from dense batched Gram products: the fast path of ALS.

Row ``i``'s normal equations (:mod:`mfjax.objective.curvature`) need the Gram
matrix ``A_i = sum_{k in Omega_i} w_k f_{j_k} f_{j_k}^T``.  Scatter-adding the
``nnz`` outer products (:func:`~mfjax.objective.curvature.normal_equations`)
writes ``nnz r^2`` numbers through memory; at ``r = 64`` on MovieLens 1M that
is 4 G floats and ~4 s a sweep.  Here the entries of each row are cut into
*segments* of ``L`` entries (the last one padded with weight-0 slots), so a
segment's Gram matrix is one small dense product ``G^T G`` of its gathered
``(L, r)`` feature block, computed for many segments at once by a batched
matmul; the segments of a row are then summed (``segment_sum`` over ``S ~
nnz / L + m`` matrices instead of ``nnz``).  The padding is below ``L`` slots a
row, so ``sum_i ceil(n_i / L) L <= nnz + m L``.

Memory is bounded: the segments are grouped into *chunks* of whole rows (at
most ``chunk_entries`` slots each, a row longer than that gets a chunk of
its own), and a ``lax.scan`` over the chunks builds one chunk's Gram matrices,
solves its rows' ridge systems (:func:`~mfjax.objective.curvature.solve_ridge_rows`)
and writes the solutions: the ``(m, r, r)`` array of all Gram matrices is
never formed, so ALS at high rank fits in memory at Netflix scale.

The layout is host preprocessing of the row and column indices, built once
per data set (:func:`build_gram_layout`); every number (values, weights,
targets, ``l2``) stays a traced argument.  Same solutions as the scatter-add
path to float32 rounding (``tests/test_gram.py``).

References:
  Zhou, Wilkinson, Schreiber, Pan, "Large-scale parallel collaborative
  filtering for the Netflix prize", AAIM 2008 (ALS and its normal equations).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.objective.curvature import cg_ridge_rows, solve_ridge_rows

__all__ = ["GramLayout", "build_gram_layout", "build_gram_tiers", "solve_rows", "solve_rows_cg"]

#: Entries per segment (the inner dimension of the batched Gram products).
SEGMENT = 64
#: Entry slots per chunk of the scan (bounds the gathered ``(slots, r)`` block).
CHUNK_ENTRIES = 1 << 19
#: Entry slots per chunk for the CG solves (:func:`solve_rows_cg`): the gathered block of
#: a chunk is re-read ``2 steps + 2`` times, so it should fit in cache (4 MB at ``r = 64``).
CG_CHUNK_ENTRIES = 1 << 14


class GramLayout(NamedTuple):
    """The entries of every row, cut into segments and grouped into chunks (a pytree).

    ``C`` chunks of ``P`` segments of ``L`` slots, at most ``R`` rows a chunk.

    Attributes:
      rows: ``(C, R)`` int32 row of each chunk slot (``m`` where unused: dropped).
      seg_row: ``(C, P)`` int32 chunk-local row of each segment (0 on padding).
      entry: ``(C, P, L)`` int32 index of each slot's entry in the objective's
        entry arrays (0 on padding).
      cols: ``(C, P, L)`` int32 column id of each slot's entry (0 on padding).
      mask: ``(C, P, L)`` float 1 on real slots, 0 on padding.
    """

    rows: Any
    seg_row: Any
    entry: Any
    cols: Any
    mask: Any


def _chunks(nseg: np.ndarray, budget: int):
    """Greedy chunks of consecutive rows with at most ``budget`` segments (a long row alone)."""
    bounds, start, used = [], 0, 0
    for i, s in enumerate(nseg.tolist()):
        if used and used + s > budget:
            bounds.append((start, i))
            start, used = i, 0
        used += s
    bounds.append((start, len(nseg)))
    return bounds


def _stable_argsort_u32(x: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integers below ``2**32``: LSD radix sort, two 16-bit passes.

    (numpy's stable sort is a radix sort only for 16-bit keys; ~4x faster than its int32/int64 sort.)
    """
    x = np.asarray(x)
    order = np.argsort((x & 0xFFFF).astype(np.uint16), kind="stable")
    if x.size and int(x.max()) >> 16:
        order = order[np.argsort((x[order] >> 16).astype(np.uint16), kind="stable")]
    return order


def _row_major_order(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The permutation that sorts entries by (row, col), stable (= ``np.lexsort((c, r))``).

    Fast paths: already sorted (the row side of row-sorted ratings: no sort), or sorted by column
    (the column side of row-sorted ratings: one stable radix sort by row).
    """
    if r.size < 2:
        return np.arange(r.size)
    dr = np.diff(r)
    if np.all((dr > 0) | ((dr == 0) & (np.diff(c) >= 0))):
        return np.arange(r.size)
    del dr
    if np.all(np.diff(c) >= 0) and r.max() < 2 ** 32:
        return _stable_argsort_u32(r)
    return np.lexsort((c, r))


def _assemble(order, rs, c, counts, L: int, budget: int, m: int) -> GramLayout:
    """The layout of the entries ``order`` (sorted by row ``rs``) with at most ``budget`` segments a chunk."""
    nseg = -(-counts // L)
    bounds = [(a, b) for a, b in _chunks(nseg, max(1, int(budget))) if nseg[a:b].sum()]
    if not bounds:  # no entries at all: one empty chunk
        bounds = [(0, 0)]
    P = max(1, max(int(nseg[a:b].sum()) for a, b in bounds))
    R = max(1, max(int(np.count_nonzero(nseg[a:b])) for a, b in bounds))
    C = len(bounds)
    out_rows = np.full((C, R), m, np.int32)
    seg_row = np.zeros((C, P), np.int32)
    entry = np.zeros((C, P, L), np.int32)
    ecols = np.zeros((C, P, L), np.int32)
    mask = np.zeros((C, P, L), np.float32)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    for ci, (a, b) in enumerate(bounds):
        live = np.arange(a, b)[nseg[a:b] > 0]
        out_rows[ci, :live.size] = live
        ns = nseg[live]
        seg_row[ci, :ns.sum()] = np.repeat(np.arange(live.size), ns)
        # entries of these rows, in order, and their (segment, slot) positions
        lo, hi = ptr[live[0]] if live.size else 0, ptr[live[-1] + 1] if live.size else 0
        ent = order[lo:hi]
        row_of = rs[lo:hi]
        local = np.searchsorted(live, row_of)
        within = np.arange(hi - lo) - (ptr[row_of] - lo)
        seg_start = np.concatenate([[0], np.cumsum(ns)[:-1]])
        seg = seg_start[local] + within // L
        slot = within % L
        entry[ci, seg, slot] = ent
        ecols[ci, seg, slot] = c[ent]
        mask[ci, seg, slot] = 1.0
    return GramLayout(jnp.asarray(out_rows), jnp.asarray(seg_row), jnp.asarray(entry),
                      jnp.asarray(ecols), jnp.asarray(mask))


def _sorted_entries(rows, cols, num_rows: int, segment: int, chunk_entries: int, weights):
    L, m = int(segment), int(num_rows)
    if L < 1 or int(chunk_entries) < 1:
        raise ValueError(f"segment and chunk_entries must be >= 1, got {segment}, {chunk_entries}")
    r = np.asarray(rows).astype(np.int64)
    c = np.asarray(cols).astype(np.int64)
    if r.size and (r.min() < 0 or r.max() >= m):
        raise ValueError(f"row index out of range [0, {m}): {r.min()}..{r.max()}")
    if weights is None or np.all(np.asarray(weights) != 0):
        order = _row_major_order(r, c)
    else:
        idx = np.nonzero(np.asarray(weights) != 0)[0]
        order = idx[_row_major_order(r[idx], c[idx])]
    rs = r[order]
    return L, m, c, order, rs, np.bincount(rs, minlength=m)


def build_gram_layout(rows, cols, num_rows: int, *, segment: int = SEGMENT,
                      chunk_entries: int = CHUNK_ENTRIES, weights=None) -> GramLayout:
    """The :class:`GramLayout` of the entries ``(rows, cols)`` (host, once per data set).

    Rows without entries (or with only weight-0 ones, e.g. padding) get no
    segment: :func:`solve_rows` returns 0 for them, like the ridge solve of
    an empty row.  For the column side pass ``(cols, rows, n)``.

    Every chunk is padded to the largest one, so a row longer than
    ``chunk_entries`` inflates every chunk; :func:`build_gram_tiers` bounds that.

    Args:
      rows, cols: ``(N,)`` entry indices (an objective's ``rows`` / ``cols``).
      num_rows: ``m``.
      segment: entries per segment ``L``.
      chunk_entries: slots per chunk (memory bound of one scan step).
      weights: optional ``(N,)`` entry weights; weight-0 entries are left out.

    Raises:
      ValueError: ``segment`` or ``chunk_entries`` below 1, an index outside ``[0, num_rows)``.
    """
    L, m, c, order, rs, counts = _sorted_entries(rows, cols, num_rows, segment, chunk_entries, weights)
    return _assemble(order, rs, c, counts, L, int(chunk_entries) // L, m)


def build_gram_tiers(rows, cols, num_rows: int, *, segment: int = SEGMENT,
                     chunk_entries: int = CHUNK_ENTRIES, weights=None) -> tuple[GramLayout, ...]:
    r"""The entries as one or two :class:`GramLayout` tiers with bounded padding (host, once).

    :func:`build_gram_layout` pads every chunk to its largest one, so one row
    longer than ``chunk_entries`` (a popular movie on the column side: ~390k
    ratings at Netflix size, against ``16384``-slot CG chunks) multiplies
    the slots of *every* chunk.  Here the rows with at most ``chunk_entries``
    slots form tier 0 (chunks of at most ``chunk_entries`` slots), the longer
    rows tier 1 (chunks of at most ``S`` slots, the longest row rounded up to
    ``L``).  Greedy packing fills each chunk of a tier more than half, so the
    two tiers hold at most ``2 (N + m L)`` slots and one scan step gathers
    at most ``max(chunk_entries, S)`` of them.  :func:`solve_rows` /
    :func:`solve_rows_cg` over the tiers, summed, give the solution of every
    row (each row is in exactly one tier; the others return 0 for it).

    Args and raises: as :func:`build_gram_layout`.

    Returns:
      ``(tier0,)`` when no row is longer than ``chunk_entries``, else ``(tier0, tier1)``.
    """
    L, m, c, order, rs, counts = _sorted_entries(rows, cols, num_rows, segment, chunk_entries, weights)
    budget = max(1, int(chunk_entries) // L)
    nseg = -(-counts // L)
    long_rows = nseg > budget
    if not long_rows.any():
        return (_assemble(order, rs, c, counts, L, budget, m),)
    tiers = []
    for sel, b in ((~long_rows, budget), (long_rows, int(nseg.max()))):
        keep = sel[rs]
        tiers.append(_assemble(order[keep], rs[keep], c, np.where(sel, counts, 0), L, b, m))
    return tuple(tiers)


def _gather(chunk, F, w):
    """A chunk's gathered features ``G (P, L, k)`` and slot weights ``(P, L)`` (0 on padding)."""
    _, _, entry, cols, mask = chunk
    return F[cols], w[entry] * mask.astype(F.dtype)


def _prepare(F, y, w, ridge, num_rows: int):
    m, k = int(num_rows), F.shape[1]
    dt = F.dtype
    return (jnp.broadcast_to(jnp.asarray(ridge, dt), (m, k)), jnp.asarray(y).astype(dt),
            jnp.asarray(w).astype(dt))


def solve_rows(layout: GramLayout, F, y, w, ridge, num_rows: int, *, lapack: bool = True):
    r"""``x_i = (A_i + diag(ridge_i))^{-1} b_i`` for every row, chunk by chunk.

    ``A_i = sum_k w_k f_{j_k} f_{j_k}^T`` and ``b_i = sum_k w_k y_k f_{j_k}`` over
    row ``i``'s entries, with ``f_j = F[j]``; the same systems as
    :func:`~mfjax.objective.curvature.normal_equations` +
    :func:`~mfjax.objective.curvature.solve_ridge_rows`.

    Args:
      layout: :func:`build_gram_layout` of the entries (rows index the systems).
      F: ``(n, k)`` feature rows, indexed by the entries' column ids ``cols``.
      y, w: ``(N,)`` targets and weights of the entries (entry order).
      ridge: ``(m, k)`` (or broadcastable) ridge of every row.
      num_rows: ``m`` (static).
      lapack: passed to :func:`~mfjax.objective.curvature.solve_ridge_rows` (static).

    Returns:
      ``X (m, k)``; rows without entries are 0.
    """
    m, k = int(num_rows), F.shape[1]
    dt = F.dtype
    ridge, y, w = _prepare(F, y, w, ridge, m)

    def body(X, chunk):
        out_rows, seg_row, entry, cols, mask = chunk
        R = out_rows.shape[0]
        G, wk = _gather(chunk, F, w)
        Gw = G * wk[..., None]
        A = jnp.einsum("plk,plj->pkj", Gw, G)                # a Gram matrix per segment
        b = jnp.einsum("plk,pl->pk", Gw, y[entry])
        n = jnp.sum(wk, axis=1)
        A = jax.ops.segment_sum(A, seg_row, num_segments=R, indices_are_sorted=True)
        b = jax.ops.segment_sum(b, seg_row, num_segments=R, indices_are_sorted=True)
        n = jax.ops.segment_sum(n, seg_row, num_segments=R, indices_are_sorted=True)
        rid = jnp.take(ridge, out_rows, axis=0, mode="clip")
        x = solve_ridge_rows(A, b, rid, n, lapack=lapack)
        return X.at[out_rows].set(x, mode="drop"), None

    X, _ = jax.lax.scan(body, jnp.zeros((m, k), dt), tuple(layout))
    return X


def solve_rows_cg(layout: GramLayout, F, y, w, ridge, X0, num_rows: int, steps: int, *,
                  return_sse: bool = False):
    r"""``steps`` conjugate-gradient steps on every row's system of :func:`solve_rows`, from ``X0``.

    The Gram matrices are never formed (Takacs, Pilaszy & Tikk 2011): with a
    chunk's features gathered once into segments ``G (P, L, k)``, a
    matrix-vector product ``(A_i + diag(ridge_i)) p_i`` is two batched
    products over the row's segments, ``q = w o (G p)`` (per slot) and
    ``G^T q`` summed over the row's segments, plus ``ridge_i o p_i``:
    ``4 nnz k`` flops a step instead of the ``2 nnz k^2`` of the Gram
    products.  The starting residual ``b_i - A_i x0_i = sum_k w_k (y_k -
    f_{j_k} . x0_i) f_{j_k} - ridge_i o x0_i`` is one more such product
    (``b`` is never formed).  The CG iteration itself is
    :func:`~mfjax.objective.curvature.cg_ridge_rows`; ``steps = k`` solves
    the systems exactly in exact arithmetic.  All CG steps of a chunk run on
    its gathered block, so with small chunks (``chunk_entries = 16384``:
    4 MB at ``k = 64``) the ``2 steps + 2`` passes over it stay in cache.

    Args:
      layout, F, y, w, ridge, num_rows: as in :func:`solve_rows`.
      X0: ``(m, k)`` warm start (the current factor rows).
      steps: number of CG steps (static).
      return_sse: also return ``sum_k w_k (y_k - f_{j_k} . x_i)^2`` at the
        solution (one more product per chunk; the data term of the objective
        after the half sweep, without another pass over the entries).

    Returns:
      ``X (m, k)`` (rows without entries are 0), or ``(X, sse)``.
    """
    m, k = int(num_rows), F.shape[1]
    dt = F.dtype
    ridge, y, w = _prepare(F, y, w, ridge, m)
    X0 = jnp.asarray(X0, dt)

    def body(carry, chunk):
        X, sse = carry
        out_rows, seg_row, entry = chunk[:3]
        R = out_rows.shape[0]
        G, wk = _gather(chunk, F, w)
        rid = jnp.take(ridge, out_rows, axis=0, mode="clip")
        x0 = jnp.take(X0, out_rows, axis=0, mode="fill", fill_value=0)
        yk = y[entry]
        resid = lambda P, yk: yk - jnp.einsum("plk,pk->pl", G, P[seg_row])  # noqa: E731

        def data(P, yk):  # sum over the row's slots of w (y - g . p) g
            return jax.ops.segment_sum(jnp.einsum("plk,pl->pk", G, wk * resid(P, yk)), seg_row,
                                       num_segments=R, indices_are_sorted=True)

        r0 = data(x0, yk) - rid * x0
        zero = jnp.zeros_like(wk)
        x = cg_ridge_rows(lambda P: rid * P - data(P, zero), x0, r0, steps)
        if return_sse:
            e = resid(x, yk)
            sse = sse + jnp.sum(wk * e * e)
        return (X.at[out_rows].set(x, mode="drop"), sse), None

    (X, sse), _ = jax.lax.scan(body, (jnp.zeros((m, k), dt), jnp.zeros((), dt)), tuple(layout))
    return (X, sse) if return_sse else X
