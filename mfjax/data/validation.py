"""Input validation for rating data: every error names the problem and the value."""

from __future__ import annotations

import numpy as np

from mfjax.data.ratings import RatingsError

__all__ = ["check_coo", "handle_duplicates"]


def check_coo(rows, cols, values, shape=None, *, rating_scale=None):
    """Check COO arrays; return them as numpy plus the resolved shape.

    Raises:
      RatingsError: empty data, lengths that disagree, non-integer or
        negative or out-of-range ids, NaN/inf values, values outside
        ``rating_scale``.
    """
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    values = np.asarray(values)
    if rows.ndim != 1 or cols.ndim != 1 or values.ndim != 1:
        raise RatingsError(
            "rows, cols and values must be 1-d arrays, got shapes "
            f"{rows.shape}, {cols.shape}, {values.shape}"
        )
    if not (rows.shape[0] == cols.shape[0] == values.shape[0]):
        raise RatingsError(
            "rows, cols and values disagree in length: "
            f"{rows.shape[0]}, {cols.shape[0]}, {values.shape[0]}"
        )
    if rows.shape[0] == 0:
        raise RatingsError("empty data: no ratings given")
    for name, ids in (("row", rows), ("column", cols)):
        if not np.issubdtype(ids.dtype, np.integer):
            if np.issubdtype(ids.dtype, np.floating) and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
                continue
            raise RatingsError(f"{name} ids must be integers, got dtype {ids.dtype}")
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    if not np.issubdtype(values.dtype, np.number):
        raise RatingsError(f"values must be numeric, got dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise RatingsError(
            f"non-finite rating {values[k]} at entry {k} (row {rows[k]}, column {cols[k]})"
        )
    for name, ids in (("row", rows), ("column", cols)):
        if ids.min() < 0:
            k = int(np.argmin(ids))
            raise RatingsError(f"negative {name} id {ids[k]} at entry {k}")
    if shape is None:
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or shape[0] <= 0 or shape[1] <= 0:
        raise RatingsError(f"shape must be two positive integers, got {shape}")
    for name, ids, size in (("row", rows, shape[0]), ("column", cols, shape[1])):
        if ids.max() >= size:
            k = int(np.argmax(ids))
            raise RatingsError(
                f"{name} id {ids[k]} at entry {k} is out of range for shape {shape} "
                f"({name} ids must be < {size})"
            )
    if rating_scale is not None:
        lo, hi = rating_scale
        out = (values < lo) | (values > hi)
        if out.any():
            k = int(np.argmax(out))
            raise RatingsError(
                f"rating {values[k]} at entry {k} (row {rows[k]}, column {cols[k]}) "
                f"is outside the rating scale [{lo}, {hi}]"
            )
    return rows, cols, values, shape


def handle_duplicates(rows, cols, values, shape, duplicates="error"):
    """Detect repeated (row, col) pairs; raise or aggregate them.

    Args:
      duplicates: ``"error"`` raises naming the first repeated pair;
        ``"mean"``, ``"sum"``, ``"last"`` aggregate (entries come back
        sorted by (row, col)).
    """
    if duplicates not in ("error", "mean", "sum", "last"):
        raise ValueError(
            f"duplicates must be 'error', 'mean', 'sum' or 'last', got {duplicates!r}"
        )
    key = rows.astype(np.int64) * int(shape[1]) + cols.astype(np.int64)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    dup = sk[1:] == sk[:-1]
    if not dup.any():
        return rows, cols, values
    if duplicates == "error":
        k = int(order[1:][dup][0])
        raise RatingsError(
            f"duplicate (row, column) pair ({rows[k]}, {cols[k]}) at entry {k}; "
            "pass duplicates='mean'|'sum'|'last' to aggregate"
        )
    uniq, start, counts = np.unique(sk, return_index=True, return_counts=True)
    sv = values[order]
    if duplicates == "last":
        agg = sv[start + counts - 1]
    else:
        agg = np.add.reduceat(sv, start)
        if duplicates == "mean":
            agg = agg / counts
    return uniq // shape[1], uniq % shape[1], agg
