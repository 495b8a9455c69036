"""Sparse input vectors of the DMF branches: COO batches, host CSR, the sparse first layer.

A branch's input vector ``X_i`` (row ``i`` of the observed matrix, 0 where
missing) is stored by its entries.  :class:`CSRInputs` holds all of them on
the host (``indptr``, ``indices``, ``values``); :func:`gather_block` cuts the
vectors of a block of rows into a padded :class:`SparseBatch` inside ``jit``;
:func:`sparse_matmul` computes the first layer ``X W_1`` as
``out[s] = sum_{k: seg_k = s} vals_k W_1[idx_k]`` in O(entries x width).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings

__all__ = ["SparseBatch", "CSRInputs", "sparse_matmul", "csr_inputs", "full_batch", "gather_block"]


@dataclasses.dataclass(frozen=True)
class SparseBatch:
    """Input vectors in COO form: entry ``k`` adds ``vals[k] * e_{idx[k]}`` to input ``seg[k]``.

    ``num_segments`` (the batch size) and ``chunk`` are static.  Padding
    entries carry ``vals = 0``.  With ``chunk`` set, :func:`sparse_matmul`
    streams the entries in chunks of that size (bounded memory for a
    whole-matrix pass).
    """

    seg: jax.Array
    idx: jax.Array
    vals: jax.Array
    num_segments: int
    chunk: int | None = None


jax.tree_util.register_dataclass(
    SparseBatch, data_fields=["seg", "idx", "vals"], meta_fields=["num_segments", "chunk"]
)


def sparse_matmul(x: SparseBatch, kernel) -> jax.Array:
    """``X @ kernel`` for the sparse batch ``X`` (num_segments x in_dim) in O(nnz x width).

    ``out[s] = sum_{k: seg_k = s} vals_k kernel[idx_k]`` via a gather and
    ``jax.ops.segment_sum``.

    >>> x = SparseBatch(jnp.array([0, 0, 1]), jnp.array([0, 2, 1]), jnp.array([1.0, 2.0, 3.0]), 2)
    >>> sparse_matmul(x, jnp.arange(6.0).reshape(3, 2)).tolist()   # rows [1, 0, 2] and [0, 3, 0]
    [[8.0, 11.0], [6.0, 9.0]]
    """
    width = kernel.shape[1]
    vals = jnp.asarray(x.vals, kernel.dtype)

    def part(seg, idx, v):
        return jax.ops.segment_sum(kernel[idx] * v[:, None], seg, num_segments=x.num_segments)

    nnz = vals.shape[0]
    if x.chunk is None or nnz <= x.chunk:
        return part(x.seg, x.idx, vals)
    c = int(x.chunk)
    nchunk = -(-nnz // c)
    pad = nchunk * c - nnz

    def padded(a, fill=0):
        return jnp.pad(jnp.asarray(a), (0, pad), constant_values=fill).reshape(nchunk, c)

    def body(acc, xs):
        return acc + part(*xs), None

    acc0 = jnp.zeros((x.num_segments, width), kernel.dtype)
    out, _ = jax.lax.scan(body, acc0, (padded(x.seg), padded(x.idx), padded(vals)))
    return out


class CSRInputs:
    """Host CSR form of the input vectors of one branch (rows of a ratings matrix).

    ``indptr`` (m+1,), ``indices`` (nnz,), ``values`` (nnz,), ``dim`` = input
    length (n).  Build with :func:`csr_inputs`.
    """

    __slots__ = ("indptr", "indices", "values", "num_rows", "dim")

    def __init__(self, indptr, indices, values, num_rows, dim):
        self.indptr, self.indices, self.values = indptr, indices, values
        self.num_rows, self.dim = int(num_rows), int(dim)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.values.shape[0])

    def lengths(self) -> np.ndarray:
        """Entries per input vector, ``indptr[i+1] - indptr[i]`` (host numpy)."""
        return np.diff(np.asarray(self.indptr))

    def row_ids(self) -> np.ndarray:
        """Row index of every stored entry (host numpy)."""
        return np.repeat(np.arange(self.num_rows, dtype=np.int32), self.lengths())

    def device_put(self) -> "CSRInputs":
        """The same inputs with the arrays on the default JAX device."""
        return CSRInputs(jnp.asarray(self.indptr), jnp.asarray(self.indices),
                         jnp.asarray(self.values), self.num_rows, self.dim)


def csr_inputs(ratings: Ratings, axis: str = "rows") -> CSRInputs:
    """Row (``axis="rows"``) or column (``"cols"``) input vectors of ``ratings`` as CSR.

    Row ``i``'s vector holds ``ratings`` row ``i`` (0 where missing); a column
    vector is a row of the transpose.

    >>> from mfjax.data import Ratings
    >>> c = csr_inputs(Ratings.create([0, 0, 2], [1, 2, 0], [4.0, 5.0, 3.0], (3, 3)))
    >>> c.indptr.tolist(), c.indices.tolist(), c.values.tolist(), c.lengths().tolist()
    ([0, 2, 2, 3], [1, 2, 0], [4.0, 5.0, 3.0], [2, 0, 1])
    """
    if axis not in ("rows", "cols"):
        raise ValueError(f"axis must be 'rows' or 'cols', got {axis!r}")
    r = ratings if axis == "rows" else ratings.T
    rows = np.asarray(r.rows, np.int64)
    cols = np.asarray(r.cols, np.int32)
    vals = np.asarray(r.values, np.float32)
    order = np.lexsort((cols, rows))
    m, n = r.shape
    indptr = np.zeros(m + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    return CSRInputs(indptr, cols[order], vals[order], m, n)


def full_batch(csr: CSRInputs, chunk: int | None = 32768) -> SparseBatch:
    """All input vectors of ``csr`` as one :class:`SparseBatch` (streamed in ``chunk``-sized parts)."""
    return SparseBatch(jnp.asarray(csr.row_ids()), jnp.asarray(csr.indices),
                       jnp.asarray(csr.values), csr.num_rows, chunk)


def gather_block(indptr, indices, values, block, cap: int):
    """The input vectors of the rows ``block`` (B,) as a padded :class:`SparseBatch` of ``cap`` entries.

    Jittable with static ``cap`` (must be >= the block's total entry count;
    the trainer chooses it on the host).  Position ``p < total`` belongs to
    slot ``s = #{ends <= p}`` where ``ends = cumsum(lengths)``.

    Returns:
      ``(batch, entry, valid)``: the batch, the CSR position of every padded
      slot and its validity mask.
    """
    B = block.shape[0]
    lens = indptr[block + 1] - indptr[block]
    ends = jnp.cumsum(lens)
    starts = ends - lens
    p = jnp.arange(cap, dtype=ends.dtype)
    # seg[p] = #{s < B-1 : ends[s] <= p}: a scatter of B ones and a cumsum (cheaper than a search)
    marks = jnp.zeros(cap, jnp.int32).at[ends[:-1]].add(1, mode="drop")
    seg = jnp.cumsum(marks)
    valid = p < ends[-1]
    seg = jnp.minimum(seg, B - 1)
    entry = jnp.where(valid, indptr[block[seg]] + p - starts[seg], 0)
    vals = jnp.where(valid, values[entry], 0.0)
    idx = jnp.where(valid, indices[entry], 0)
    return SparseBatch(seg, idx, vals, B), entry, valid
