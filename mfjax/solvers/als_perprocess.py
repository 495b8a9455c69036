r"""ALS when every process holds only its own rows' ratings (``mfjax launch``, per-process data).

Process ``p`` of ``N`` holds the entries of its row block ``I_p = [lo_p, hi_p)``
(e.g. :func:`mfjax.compare.make_problem` with ``part=(p, N)``).  A sweep of
:func:`mfjax.solvers.als` needs, for the row half, every rating of a row and
the whole ``V``; for the column half every rating of a column and the whole
``U``.  So:

* Row half sweep.  Process ``p`` solves ``(V_{Omega_i}^T V_{Omega_i} + l2 w_i I)
  u_i = V_{Omega_i}^T x_{Omega_i}`` for its rows ``i in I_p`` from its own
  entries and the replicated ``V``; the new ``U`` is the all-gather of the
  ``N`` row blocks (``m r`` floats).
* Column half sweep.  The columns are cut into ``N`` blocks ``J_q``
  (:func:`column_blocks`: balanced by rating count, so each block holds about
  ``nnz / N`` ratings); process ``q`` solves the columns of ``J_q``, which
  needs every rating of those columns.  They are exchanged **once**, at setup:
  process ``p`` sends the entries of ``(I_p, J_q)`` to process ``q``
  (:func:`pack_by_destination`: per-destination buffers padded to the
  largest ``|(I_p, J_q)|``; one ``lax.all_to_all`` over a 1-D mesh with one
  device per process, :func:`exchange_entries`).  Afterwards process ``q``
  holds the entries of its rows and of its columns and nothing else; the new
  ``V`` is the all-gather of the column blocks.

Only counts travel as host metadata (:func:`mfjax.core.distributed.allgather_host`:
the ``n`` column counts, the ``m`` row counts for ALS-WR and the ``N x N``
exchange counts); no process ever gathers the ratings.  The systems are the
ones of :func:`~mfjax.solvers.als.als_update_rows` (scatter-add normal
equations, exact Cholesky or ``cg_steps`` CG steps; biases and the ALS-WR ridge
``w_i = n_i``) on each process's local objective, so the sweep is
:func:`~mfjax.solvers.als.als_sweep` on the union of the parts up to float
rounding.  The whole run is one compiled ``lax.scan``
(:func:`mfjax.solvers.run`); each sweep is one ``shard_map`` whose only
collectives are the all-gathers of the solved blocks (factor rows, and biases)
and one ``psum`` (the loss): no host synchronisation.

Memory: the exchange pads every per-destination buffer to the largest
``|(I_p, J_q)|`` (``N`` of them per process, freed after setup), and the two
sides are padded to the largest per-process count.  The normal equations
are built as on one device (:func:`mfjax.solvers.als`, ``gram=True``): dense
batched Gram products over each block's layout tiers
(:func:`part_gram_tiers`: :func:`~mfjax.objective.gram.build_gram_tiers` of
the block, padded to the largest process's shapes; at most
``2 (nnz_p + R L)`` slots per side and process), solved chunk by chunk; with
``gram=False`` the scatter-add path of
:func:`~mfjax.solvers.als.als_update_rows`.

The traced loss is ``f = sum_Omega (x_ij - xhat_ij)^2 + penalty`` ("sum" scale,
:func:`mfjax.objective.value_from_sse`), its data term a ``psum`` of each
process's row-side residuals.

References:
  Zhou, Y., Wilkinson, D., Schreiber, R., Pan, R. "Large-scale parallel
  collaborative filtering for the Netflix prize", AAIM 2008 (ALS with rows and
  columns split over processes, factors all-gathered between half sweeps).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mfjax import objective as _objective
from mfjax.core.factors import BiasedFactors, Factors, init_biased_factors, init_factors, swap_factors
from mfjax.objective.formulas import l2_penalty

__all__ = ["PartALSProblem", "part_als_problem", "als_parts", "process_mesh", "column_blocks",
           "pack_by_destination", "exchange_entries", "check_own_rows", "block_of", "unpack", "Packed",
           "BALANCES", "global_mean", "exchange_column_blocks", "part_gram_tiers", "own_entries", "part_row_ranges",
           "replicate", "part_eval_objective"]

#: How :func:`column_blocks` cuts the columns: by rating count, or into equal column counts.
BALANCES = ("ratings", "columns")

AXIS = "processes"


# ------------------------------------------------------------ pure host logic
def column_blocks(col_counts, num_blocks: int, balance: str = "ratings") -> np.ndarray:
    """Edges ``0 = e_0 <= e_1 <= ... <= e_N = n`` of ``N`` contiguous column blocks ``[e_q, e_{q+1})``.

    ``balance="ratings"``: ``e_q`` is where the cumulative count ``sum_{j < e} n_j``
    first reaches ``q nnz / N`` (each block holds about ``nnz / N`` ratings; a
    block may be empty when one column holds more than ``nnz / N``);
    ``"columns"``: ``e_q = floor(q n / N)``.

    Args:
      col_counts: ``(n,)`` global ratings per column.
      num_blocks: ``N >= 1``.

    Raises:
      ValueError: an unknown ``balance`` or ``N < 1``.
    """
    counts = np.asarray(col_counts, np.int64)
    n, N = counts.shape[0], int(num_blocks)
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    if N < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if balance == "columns" or counts.sum() == 0:
        return (np.arange(N + 1) * n) // N
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(1, N) * cum[-1] / N, side="left") + 1
    return np.concatenate([[0], np.minimum(cuts, n), [n]]).astype(np.int64)


def block_of(index, edges) -> np.ndarray:
    """The block ``q`` with ``edges[q] <= index < edges[q + 1]`` of each index (an empty block is never chosen)."""
    return np.searchsorted(np.asarray(edges), np.asarray(index), side="right") - 1


def check_own_rows(rows, row_range, process: int) -> None:
    """Raise ``ValueError`` unless every row id lies in ``row_range = (lo, hi)`` (this process's rows)."""
    rows, (lo, hi) = np.asarray(rows), row_range
    if rows.size and (rows.min() < lo or rows.max() >= hi):
        raise ValueError(f"process {process} holds rows {int(rows.min())}..{int(rows.max())} but its range is "
                         f"{lo}..{hi - 1}: each process must hold only the rows of its range")


def part_row_ranges(train) -> list[tuple[int, int]]:
    """Every process's row range, from the rows each holds (a collective: one host all-gather).

    Process ``p``'s range runs from where process ``p - 1``'s ends to one past its largest row (the
    first from 0, the last to ``m``; a process without entries gets an empty range), so rows no
    process holds fall to the next process.  The processes must hold contiguous row blocks in process
    order (e.g. :func:`mfjax.data.load_movielens_part` / :func:`~mfjax.data.load_triplets_part` with
    ``part = process index``, or ``synthetic(..., row_range=...)``).

    Raises:
      ValueError: the processes' rows overlap or are out of process order.
    """
    rows = np.asarray(train.rows, np.int64)
    span = np.array([rows.min(), rows.max() + 1] if rows.size else [-1, -1], np.int64)
    every = _allgather(span)
    m, ranges, end = int(train.shape[0]), [], 0
    for p, (lo, hi) in enumerate(every.tolist()):
        if lo >= 0 and lo < end:
            raise ValueError(f"process {p} holds rows {lo}..{hi - 1}, which overlap or precede the rows of the "
                             f"processes before it (up to {end - 1}): each process must hold a contiguous block "
                             "of rows, in process order")
        end = end if lo < 0 else hi
        ranges.append((ranges[-1][1] if ranges else 0, end))
    ranges[-1] = (ranges[-1][0], m)
    return ranges


def own_entries(train, row_ranges):
    """``(ranges, rows, cols, values)``: the checked row ranges of the processes and this process's entries
    (int64 ids, float32 values), all of them inside its range.  ``row_ranges=None``: :func:`part_row_ranges`.

    Raises:
      ValueError: not one range per process, ranges that do not partition the rows, or entries outside
        this process's range (:func:`check_own_rows`).
    """
    from mfjax import data as mfdata

    if row_ranges is None:
        row_ranges = part_row_ranges(train)
    N, p = jax.process_count(), jax.process_index()
    if len(row_ranges) != N:
        raise ValueError(f"{len(row_ranges)} row ranges for {N} processes")
    ranges = mfdata.check_row_ranges(row_ranges, int(train.shape[0]))
    rows, cols = np.asarray(train.rows, np.int64), np.asarray(train.cols, np.int64)
    check_own_rows(rows, ranges[p], p)
    return ranges, rows, cols, np.asarray(train.values, np.float32)


class Packed(NamedTuple):
    """Entries grouped by destination: ``(N, width)`` arrays; ``weights`` is 1 on entries, 0 on padding."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    weights: np.ndarray


def pack_by_destination(rows, cols, values, dest, num_dest: int, width: int) -> Packed:
    """Row ``q`` of each array holds (in their order) the entries with ``dest == q``, then weight-0 padding.

    Raises:
      ValueError: more than ``width`` entries for one destination.
    """
    dest = np.asarray(dest, np.int64)
    counts = np.bincount(dest, minlength=num_dest)
    if counts.size and counts.max() > width:
        raise ValueError(f"{int(counts.max())} entries for one destination do not fit a width of {width}")
    order = np.argsort(dest, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(dest.size) - start[dest[order]]
    out = []
    for a, dt in ((rows, np.int32), (cols, np.int32), (values, np.asarray(values).dtype),
                  (np.ones(dest.size), np.asarray(values).dtype)):
        buf = np.zeros((num_dest, width), dt)
        buf[dest[order], slot] = np.asarray(a)[order]
        out.append(buf)
    return Packed(*out)


def unpack(packed: Packed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, values)`` of the real entries (weight 1) of packed buffers, in buffer order."""
    keep = np.asarray(packed.weights).reshape(-1) > 0
    return tuple(np.asarray(a).reshape(-1)[keep] for a in packed[:3])


# ------------------------------------------------------------- collectives
def process_mesh() -> Mesh:
    """A 1-D mesh (axis ``"processes"``) of one device per process: each process's first local device."""
    devs = [min((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
            for p in range(jax.process_count())]
    return Mesh(np.array(devs), (AXIS,))


def _per_process(mesh: Mesh, axis: str, local: np.ndarray) -> jax.Array:
    """The global array whose block ``p`` (along axis 0) is process ``p``'s ``local`` (same shape everywhere)."""
    local = np.asarray(local)
    shape = (local.shape[0] * int(mesh.shape[axis]),) + local.shape[1:]
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P(axis)), local, shape)


def _replicated(mesh: Mesh, host) -> jax.Array:
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, NamedSharding(mesh, P()), lambda idx: host[idx])


def replicate(tree, mesh: Mesh):
    """A pytree of host / single-device arrays (the same on every process) replicated over ``mesh``."""
    return jax.tree.map(lambda a: _replicated(mesh, np.asarray(a)), tree)


def part_eval_objective(eval_set, mesh: Mesh):
    """The held-out objective of every process's ``eval_set`` over ``mesh`` (``None`` stays ``None``)."""
    if eval_set is None:
        return None
    return _objective.shard_local_objective(_objective.mf_objective(eval_set), mesh)


def _local_block(a: jax.Array) -> np.ndarray:
    """This process's block of a per-process array (its one addressable shard)."""
    return np.asarray(a.addressable_shards[0].data)


def exchange_entries(packed: Packed, mesh: Mesh, axis: str = AXIS) -> Packed:
    """All-to-all of per-destination buffers: process ``q`` gets row ``q`` of every process's ``packed``.

    ``out[p] = in_p[q]`` on process ``q`` (rows in process order), one
    ``lax.all_to_all`` over ``axis`` (one device per process); every process
    must call it with buffers of the same shape.
    """
    swap = jax.jit(jax.shard_map(lambda *a: tuple(jax.lax.all_to_all(x, axis, 0, 0, tiled=True) for x in a),
                                 mesh=mesh, in_specs=P(axis), out_specs=P(axis)))
    got = swap(*(_per_process(mesh, axis, a) for a in packed))
    return Packed(*(_local_block(a) for a in got))


def _allgather(x) -> np.ndarray:
    from mfjax.core.distributed import allgather_host

    return allgather_host(np.asarray(x))


def exchange_column_blocks(rows, cols, values, n: int, mesh: Mesh, balance: str = "ratings"):
    """Send every process the entries of its column block (a collective; module docstring).

    Every process passes its own entries.  Returns ``(col_counts, edges, every, (rows, cols, values))``:
    the ``(n,)`` global column counts, the column block edges (:func:`column_blocks`), the ``(N, N)``
    exchange counts ``every[p, q] = |(I_p, J_q)|`` and the entries of this process's column block
    ``J_q`` from every process (in process order).
    """
    N = int(mesh.shape[AXIS])
    cols = np.asarray(cols, np.int64)
    col_counts = _allgather(np.bincount(cols, minlength=n).astype(np.int64)).sum(axis=0)
    edges = column_blocks(col_counts, N, balance)
    dest = block_of(cols, edges)
    every = _allgather(np.bincount(dest, minlength=N).astype(np.int64))  # (N, N): every[p, q] = |(I_p, J_q)|
    packed = pack_by_destination(rows, cols, values, dest, N, max(1, int(every.max())))
    return col_counts, edges, every, unpack(exchange_entries(packed, mesh))


# ------------------------------------------------------------------ problem
@dataclasses.dataclass(frozen=True)
class PartALSProblem:
    """What each process holds for :func:`als_parts` (a pytree; the arrays are per-process blocks of global arrays).

    Attributes:
      row_side: ``(rows - lo_p, cols, values, weights)``, each ``(N E_r,)``: the entries of process
        ``p``'s rows (block ``p``), local row ids, padded with weight 0 to the largest count ``E_r``.
      col_side: ``(cols - e_q, rows, values, weights)``, each ``(N E_c,)``: the entries of column block
        ``q`` (received by the exchange), transposed, padded likewise.
      row_slots, col_slots: ``(N R,)`` / ``(N C,)`` the global row (column) of each block slot.
      row_pos, col_pos: ``(m,)`` / ``(n,)`` replicated: where row ``i`` (column ``j``) sits in the
        all-gathered blocks.
      l2, l2_bias: ridge weights (replicated scalars, "sum" scale).
      row_counts, col_counts: global ``n_i`` / ``n_j`` (replicated) with ALS-WR, else ``None``.
      shape: ``(m, n)``; blocks: ``(R, C)``, rows / columns per block slot (static).
      mesh, axis: the 1-D process mesh (static).
      held: ``(own, received)`` entry counts of this process (static host metadata).
      edges: the column block edges (static tuple).
      row_tiers, col_tiers: the Gram layout tiers of each side's block (:func:`part_gram_tiers`), or
        ``None`` (the scatter-add solves).
    """

    row_side: tuple
    col_side: tuple
    row_slots: Any
    col_slots: Any
    row_pos: Any
    col_pos: Any
    l2: Any
    l2_bias: Any
    row_counts: Any
    col_counts: Any
    row_tiers: Any = None
    col_tiers: Any = None
    shape: tuple = ()
    blocks: tuple = ()
    mesh: Optional[Any] = None
    axis: str = AXIS
    held: tuple = ()
    edges: tuple = ()


jax.tree_util.register_dataclass(
    PartALSProblem,
    data_fields=["row_side", "col_side", "row_slots", "col_slots", "row_pos", "col_pos", "l2", "l2_bias",
                 "row_counts", "col_counts", "row_tiers", "col_tiers"],
    meta_fields=["shape", "blocks", "mesh", "axis", "held", "edges"])


def _pad(a, size: int):
    a = np.asarray(a)
    return np.pad(a, (0, size - a.shape[0]))


def _slots_and_positions(ranges, size: int, total: int, pad: int | None = None):
    """Block slot ``p size + k`` holds index ``lo_p + k`` (``slots``, ``pad`` on padding, default
    ``total - 1``: an index with no entries there) and ``pos[i]`` is the slot of index ``i``."""
    slots = np.full((len(ranges), size), total - 1 if pad is None else pad, np.int32)
    pos = np.zeros((total,), np.int32)
    for p, (lo, hi) in enumerate(ranges):
        slots[p, :hi - lo] = np.arange(lo, hi)
        pos[lo:hi] = p * size + np.arange(hi - lo)
    return slots, pos


def _empty_layout(num_rows: int, segment: int):
    """A :class:`~mfjax.objective.gram.GramLayout` of one chunk with no entries (its row ``num_rows``: dropped)."""
    from mfjax.objective.gram import GramLayout

    z = np.zeros((1, 1, segment), np.int32)
    return GramLayout(np.full((1, 1), num_rows, np.int32), np.zeros((1, 1), np.int32), z, z,
                      np.zeros((1, 1, segment), np.float32))


def _pad_layout(layout, C: int, R: int, Pn: int, num_rows: int):
    """``layout`` padded to ``C`` chunks of ``Pn`` segments and ``R`` rows (padding: row ``num_rows``,
    dropped; mask 0)."""
    from mfjax.objective.gram import GramLayout

    rows, seg_row, entry, cols, mask = (np.asarray(a) for a in layout)
    c, r, p = C - rows.shape[0], R - rows.shape[1], Pn - seg_row.shape[1]
    return GramLayout(np.pad(rows, ((0, c), (0, r)), constant_values=num_rows),
                      np.pad(seg_row, ((0, c), (0, p))),
                      *(np.pad(a, ((0, c), (0, p), (0, 0))) for a in (entry, cols, mask)))


def part_gram_tiers(rows, cols, num_rows: int, mesh: Mesh, *, segment: int | None = None,
                    chunk_entries: int | None = None):
    """The Gram layout tiers (:func:`~mfjax.objective.gram.build_gram_tiers`) of this process's block,
    padded to the same shapes on every process (a collective: one host all-gather of the tier shapes).

    ``rows`` are block-local (``0..num_rows-1``, ``num_rows`` the largest block); every process gets
    as many tiers as the process with the most (an empty tier where it has none), each padded to the
    largest chunk count, rows per chunk and segments per chunk of any process.  Each row is solved in
    exactly one tier of its process, so the tiers' solutions sum to the block's.
    """
    from mfjax.objective.gram import CHUNK_ENTRIES, SEGMENT, GramLayout, build_gram_tiers

    segment = SEGMENT if segment is None else int(segment)
    chunk_entries = CHUNK_ENTRIES if chunk_entries is None else int(chunk_entries)
    tiers = build_gram_tiers(rows, cols, num_rows, segment=segment, chunk_entries=chunk_entries)
    shapes = np.zeros((2, 3), np.int64)  # build_gram_tiers makes one or two tiers
    for t, lay in enumerate(tiers):
        shapes[t] = (lay.rows.shape[0], lay.rows.shape[1], lay.seg_row.shape[1])
    every = _allgather(np.concatenate([[len(tiers)], shapes.reshape(-1)])).max(axis=0)
    out = []
    for t in range(int(every[0])):
        lay = tiers[t] if t < len(tiers) else _empty_layout(num_rows, segment)
        C, R, Pn = (max(1, int(v)) for v in every[1 + 3 * t:4 + 3 * t])
        out.append(GramLayout(*(_per_process(mesh, AXIS, a) for a in _pad_layout(lay, C, R, Pn, num_rows))))
    return tuple(out)


def part_als_problem(train, row_ranges: Sequence | None = None, *, l2=0.0, l2_bias=None,
                     weighted_l2: bool = False, balance: str = "ratings", mesh: Mesh | None = None,
                     gram: bool = True, method: str = "cholesky") -> PartALSProblem:
    """Set up :func:`als_parts` from this process's ratings: the one exchange of column-block entries.

    Every process calls it (collectives) with its own ``train`` -- ratings of the
    global shape ``(m, n)`` whose rows all lie in ``row_ranges[p]`` -- and the same
    ``row_ranges`` (a partition of the rows, in process order).  Exchanged
    host metadata: ``n`` column counts (and ``m`` row counts with
    ``weighted_l2``) and the ``N x N`` counts of the exchange; the entries move
    once, by :func:`exchange_entries`.

    Raises:
      ValueError: ``row_ranges`` not a partition of ``N`` ranges, or entries outside this process's range.
    """
    p = jax.process_index()
    m, n = (int(v) for v in train.shape)
    ranges, rows, cols, values = own_entries(train, row_ranges)
    lo, hi = ranges[p]
    mesh = process_mesh() if mesh is None else mesh
    col_counts, edges, every, (got_rows, got_cols, got_values) = exchange_column_blocks(
        rows, cols, values, n, mesh, balance)
    e_r, e_c = max(1, int(every.sum(axis=1).max())), max(1, int(every.sum(axis=0).max()))
    R = max(1, max(h - l for l, h in ranges))
    cranges = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    C = max(1, max(h - l for l, h in cranges))
    clo = cranges[p][0]
    side = lambda own, other, v, size: tuple(  # noqa: E731
        _per_process(mesh, AXIS, _pad(a, size)) for a in (own.astype(np.int32), other.astype(np.int32), v,
                                                           np.ones(v.shape[0], np.float32)))
    row_slots, row_pos = _slots_and_positions(ranges, R, m)
    col_slots, col_pos = _slots_and_positions(cranges, C, n)
    counts = (None, None)
    if weighted_l2:
        row_counts = _allgather(np.bincount(rows, minlength=m).astype(np.int64)).sum(axis=0)
        counts = (_replicated(mesh, row_counts.astype(np.float32)), _replicated(mesh, col_counts.astype(np.float32)))
    lb = l2 if l2_bias is None else l2_bias
    tiers = (None, None)
    if gram:
        from mfjax.objective.gram import CG_CHUNK_ENTRIES

        ce = CG_CHUNK_ENTRIES if method == "cg" else None  # CG: cache-sized chunks
        tiers = (part_gram_tiers(rows - lo, cols, R, mesh, chunk_entries=ce),
                 part_gram_tiers(got_cols - clo, got_rows, C, mesh, chunk_entries=ce))
    return PartALSProblem(
        side(rows - lo, cols, values, e_r), side(got_cols - clo, got_rows, got_values, e_c),
        _per_process(mesh, AXIS, row_slots[p]), _per_process(mesh, AXIS, col_slots[p]),
        _replicated(mesh, row_pos), _replicated(mesh, col_pos),
        _replicated(mesh, np.float32(l2)), _replicated(mesh, np.float32(lb)), *counts, *tiers,
        shape=(m, n), blocks=(R, C), mesh=mesh, axis=AXIS, held=(int(rows.size), int(got_rows.size)),
        edges=tuple(int(e) for e in edges))


# -------------------------------------------------------------------- sweep
class _Entries(NamedTuple):
    rows: Any
    cols: Any
    values: Any
    shape: tuple


def _local_objective(side, shape):
    """The local :class:`~mfjax.objective.MFObjective` of one side's block ("sum" scale, no ridge: the
    ridge is passed to the solve)."""
    r, c, v, w = side
    return _objective.mf_objective(_Entries(r, c, v, shape), entry_weights=w)


def _rows_view(params, slots):
    """The parameters restricted to the rows ``slots`` (a block of ``U`` and of the row biases)."""
    if isinstance(params, BiasedFactors):
        return BiasedFactors(params.U[slots], params.V, params.row_bias[slots], params.col_bias, params.mean)
    return Factors(params.U[slots], params.V)


def _gather_rows(params, block, pos, axis):
    """``params`` with ``U`` (and the row biases) replaced by the all-gathered blocks, row ``i`` at ``pos[i]``."""
    U = jax.lax.all_gather(block.U, axis, tiled=True)[pos]
    if isinstance(params, BiasedFactors):
        b = jax.lax.all_gather(block.row_bias, axis, tiled=True)[pos]
        return BiasedFactors(U, params.V, b, params.col_bias, params.mean)
    return Factors(U, params.V)


def _sweep(params, problem: PartALSProblem, *, method: str, cg_steps: int, chunk_size: int):
    """One sweep (rows, then columns) and the objective after it (module docstring)."""
    from mfjax.solvers.als import als_update_rows

    ax = problem.axis
    (m, n), (R, C) = problem.shape, problem.blocks
    weighted = problem.row_counts is not None
    kw = dict(weighted_l2=weighted, chunk_size=chunk_size, method=method, cg_steps=cg_steps)

    steps = None if method == "cholesky" else int(cg_steps)

    def solve(view, obj, tiers, l2, lb):
        if tiers is None:  # the scatter-add normal equations
            return als_update_rows(view, obj, l2, l2_bias=lb, **kw)
        from mfjax.solvers.als_gram import ALSProblem, _update_rows

        counts = jax.ops.segment_sum(obj.weights, obj.rows, num_segments=obj.shape[0]) if weighted else None
        obj = obj.replace(l2=jnp.asarray(l2, obj.values.dtype), l2_bias=jnp.asarray(lb, obj.values.dtype),
                          row_weights=counts)
        return _update_rows(view, obj, tiers, ALSProblem(obj, tiers, tiers), steps)[0]

    def local(row_side, col_side, row_slots, col_slots, row_pos, col_pos, l2, lb, row_tiers, col_tiers, params):
        rows = _local_objective(row_side, (R, n))
        new = solve(_rows_view(params, row_slots), rows, row_tiers, l2, lb)
        params = _gather_rows(params, new, row_pos, ax)
        flipped = swap_factors(params)
        new = solve(_rows_view(flipped, col_slots), _local_objective(col_side, (C, m)), col_tiers, l2, lb)
        params = swap_factors(_gather_rows(flipped, new, col_pos, ax))
        sse = jax.lax.psum(_objective.sum_sq_residuals(rows, _rows_view(params, row_slots)), ax)
        return params, sse

    split = P(ax)
    tiers = lambda t: None if t is None else tuple(jax.tree.map(lambda _: split, x) for x in t)  # noqa: E731
    # check_vma=False: the all-gathered factors are replicated, the solves' scans per-device
    params, sse = jax.shard_map(local, mesh=problem.mesh, in_specs=((split,) * 4, (split,) * 4, split, split,
                                                                     P(), P(), P(), P(), tiers(problem.row_tiers),
                                                                     tiers(problem.col_tiers), P()),
                                out_specs=(P(), P()), check_vma=False)(
        problem.row_side, problem.col_side, problem.row_slots, problem.col_slots, problem.row_pos,
        problem.col_pos, problem.l2, problem.l2_bias, problem.row_tiers, problem.col_tiers, params)
    weights = None if not weighted else (problem.row_counts, problem.col_counts)
    return params, sse + l2_penalty(params, problem.l2, l2_bias=problem.l2_bias, l2_weights=weights)


@functools.lru_cache(maxsize=None)
def _step(method: str, cg_steps: int, chunk_size: int):
    """The cached solver step (equal settings: the same function, so no recompilation)."""
    from mfjax.solvers.als import ALSInfo, ALSState

    def step(state, problem):
        p, loss = _sweep(state.params, problem, method=method, cg_steps=cg_steps, chunk_size=chunk_size)
        return ALSState(p), ALSInfo(loss)

    return step


def als_parts(train, rank: int, *, row_ranges: Sequence | None = None, l2=0.0, num_steps: int = 20,
              weighted_l2: bool = False,
              biases: bool = False, l2_bias=None, key=None, init=None, eval_set=None, eval_every: int = 1,
              clip=None, method: str = "cholesky", cg_steps: int | None = None, balance: str = "ratings",
              chunk_size: int | None = None, callback=None, callback_every: int = 1, mesh: Mesh | None = None,
              gram: bool = True):
    """:func:`mfjax.solvers.als` when each process holds only the ratings of its rows (module docstring).

    Every process calls it with its own ``train`` (and optionally its own
    held-out ``eval_set``), the same ``row_ranges`` and the same settings;
    the result (factors and trace, replicated) is that of
    :func:`mfjax.solvers.als` on the union of the parts from the same
    ``init`` / ``key``, up to float rounding.

    Args:
      train: this process's training ratings (global shape; rows in ``row_ranges[process]``).
      rank, l2, num_steps, weighted_l2, biases, l2_bias, key, init, eval_every, clip, method,
        cg_steps, chunk_size, callback, callback_every: as in :func:`mfjax.solvers.als`
        (``init`` replicated: the same on every process).
      row_ranges: every process's ``(lo, hi)``, in process order (a partition of the rows); default
        :func:`part_row_ranges` (from the rows each process holds).
      eval_set: this process's held-out ratings; the traced RMSE is over every process's.
      balance: the column blocks (:func:`column_blocks`): ``"ratings"`` or ``"columns"``.
      mesh: the 1-D process mesh (default :func:`process_mesh`).
      gram: the normal equations from dense batched Gram products (default, as :func:`mfjax.solvers.als`),
        else by scatter-add (:func:`part_als_problem`).

    Returns:
      :class:`~mfjax.solvers.base.SolverResult` as :func:`mfjax.solvers.als`.
    """
    from mfjax.solvers import _args
    from mfjax.solvers.als import CG_STEPS, CHUNK_SIZE, _als_init, _check_l2, check_method
    from mfjax.solvers.base import RMSE, Solver, run

    _check_l2(l2)
    if l2_bias is not None:
        _check_l2(l2_bias, "l2_bias")
    cg_steps = CG_STEPS if cg_steps is None else cg_steps
    chunk_size = CHUNK_SIZE if chunk_size is None else int(chunk_size)
    check_method(method, cg_steps)
    num_steps = _args.check_num_steps(num_steps, "num_steps")
    rank = _args.check_rank(rank, train.shape)
    problem = part_als_problem(train, row_ranges, l2=l2, l2_bias=l2_bias, weighted_l2=weighted_l2,
                               balance=balance, mesh=mesh, gram=gram, method=method)
    mesh = problem.mesh
    params = _initial(train, rank, biases, init, key)
    params = replicate(params, mesh)
    ev = part_eval_objective(eval_set, mesh)
    solver = Solver(_als_init, _step(method, int(cg_steps), chunk_size))
    res = run(solver, problem, solver.init(params, problem), num_steps, eval_set=ev, eval_every=eval_every,
              metric=RMSE(None if clip is None else (float(clip[0]), float(clip[1]))),
              callback=callback, callback_every=callback_every)
    return _args.raise_if_nonfinite(res, "ALS", "sweep")


def _initial(train, rank, biases, init, key):
    """The initial factors of :func:`mfjax.solvers.als` (biased: the global training mean, from every
    process's sums)."""
    if init is not None:
        if biases != isinstance(init, BiasedFactors):
            raise ValueError(f"init is {type(init).__name__} but biases={biases}")
        _objective.check_factor_shapes(train.shape, init, rank)
        return init
    key = jax.random.key(0) if key is None else key
    if not biases:
        return init_factors(key, train.shape, rank)
    return init_biased_factors(key, train.shape, rank, mean=np.float32(global_mean(train)))


def global_mean(train) -> float:
    """The mean rating over every process's ``train`` (float64 sums all-gathered; a collective)."""
    v = np.asarray(train.values, np.float64)
    total = _allgather(np.array([v.sum(), v.size], np.float64)).sum(axis=0)
    return float(total[0] / max(total[1], 1.0))
