"""Blocking of the observed entries: the one chunk-and-pad rule.

Entries are processed in chunks of :data:`CHUNK_SIZE` inside a ``lax.scan``:
the gathers and scatter-adds of one chunk stay in cache, which on CPU makes
the COO loss and gradient several times faster than one flat gather /
scatter over all ``nnz`` entries (``benchmarks/loss_sparse_vs_dense.py``),
and it bounds the temporary memory.  Padding entries carry weight 0.

>>> import jax.numpy as jnp
>>> rows, w = chunk_entries(jnp.arange(5), chunk_size=2, weights=None)
>>> rows.tolist(), w.tolist()
([[0, 1], [2, 3], [4, 0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["CHUNK_SIZE", "chunk_layout", "chunk_entries"]

#: Entries per chunk of the scans over the observed entries.
CHUNK_SIZE = 65536


def chunk_layout(nnz: int, chunk_size: int = CHUNK_SIZE) -> tuple[int, int]:
    """``(T, C)``: the number of chunks and the chunk length for ``nnz`` entries.

    ``C = min(chunk_size, nnz)`` (at least 1) and ``T = ceil(nnz / C)``.
    """
    c = max(1, min(int(chunk_size), int(nnz)))
    return -(-int(nnz) // c), c


def chunk_entries(*arrays, chunk_size: int = CHUNK_SIZE, weights=None, dtype=None):
    """Each 1-D array zero-padded and reshaped to ``(T, C)``, plus the entry weights.

    Args:
      *arrays: 1-D arrays of equal length ``nnz``.
      chunk_size: the chunk length bound (:func:`chunk_layout`).
      weights: optional (nnz,) entry weights (default 1); the padding gets 0.
      dtype: dtype of the returned weights (default ``weights``' or float32).

    Returns:
      ``(*chunked_arrays, chunked_weights)``.
    """
    nnz = int(arrays[0].shape[0])
    t, c = chunk_layout(nnz, chunk_size)
    pad = t * c - nnz

    def prep(a):
        a = jnp.asarray(a)
        return (jnp.pad(a, (0, pad)) if pad else a).reshape(t, c)

    if weights is None:
        dt = jnp.float32 if dtype is None else dtype
        w = (jnp.arange(t * c) < nnz).astype(dt).reshape(t, c)
    else:
        w = prep(jnp.asarray(weights, dtype))
    return (*(prep(a) for a in arrays), w)
