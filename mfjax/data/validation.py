"""Input validation for rating data: every error names the problem and the value.

All errors are :class:`~mfjax.data.RatingsError` (a ``ValueError``) or one of
its subclasses (defined in :mod:`mfjax.data.errors`, re-exported here):

- :class:`MalformedFileError`: a line of a ratings file that cannot be parsed
  (wrong number of fields, a field that is not a number); the message names
  the file, the line number and the line.
- :class:`ChecksumError`: a downloaded or local file whose size / MD5 /
  SHA-256 disagrees with the expected value.
- :class:`DataNotFoundError`: a data set that is not in any of the places
  looked at (also a ``FileNotFoundError``); the message lists them.

:func:`data_checksum` fingerprints a :class:`~mfjax.data.Ratings` (SHA-256 over
the shape and the COO arrays) for experiment records.

This module imports only :mod:`mfjax.data.errors` (not the container), so
:mod:`mfjax.data.ratings` can import it at module level without a cycle.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from mfjax.data.errors import ChecksumError, DataNotFoundError, MalformedFileError, RatingsError

__all__ = [
    "ChecksumError",
    "DataNotFoundError",
    "MalformedFileError",
    "RatingsError",
    "INDEX_LIMIT",
    "check_coo",
    "check_index_range",
    "check_shape",
    "check_rating_scale",
    "check_fractions",
    "data_checksum",
    "combine_checksums",
    "handle_duplicates",
    "duplicate_timestamps",
    "check_timestamps",
]


def check_rating_scale(values: np.ndarray, rating_scale, describe) -> None:
    """Raise :class:`RatingsError` for the first value outside ``rating_scale``
    (``(lo, hi)`` inclusive; ``None`` skips the check).  ``describe(k)``
    names the offending entry for the message (its line, or its index)."""
    if rating_scale is None:
        return
    lo, hi = rating_scale
    out = (values < lo) | (values > hi)
    if out.any():
        k = int(np.argmax(out))
        raise RatingsError(f"{describe(k)} is outside the rating scale [{lo}, {hi}]")

#: Largest matrix dimension: indices are stored as int32, so ids must be ``< 2**31 - 1``.
INDEX_LIMIT = 2**31 - 1


def _integral(d) -> bool:
    if isinstance(d, (bool, np.bool_)):
        return False
    if isinstance(d, (int, np.integer)):
        return True
    return isinstance(d, (float, np.floating)) and math.isfinite(d) and float(d) == int(d)


def check_shape(shape, *, name: str = "shape") -> tuple[int, int]:
    """``shape`` as a pair of Python ints in ``[1, INDEX_LIMIT]``, or :class:`RatingsError`.

    Integral floats (``3.0``) are accepted; ``2.5``, ``True``, complex,
    negative or zero dimensions, and dimensions over the int32 index range
    are refused with a message naming the value.

    >>> check_shape((3, 4.0))
    (3, 4)
    >>> check_shape((3, 2.5))
    Traceback (most recent call last):
      ...
    mfjax.data.errors.RatingsError: shape must be two positive integers (m, n), got (3, 2.5): 2.5 is not an integer
    """
    try:
        dims = tuple(shape)
    except TypeError:
        raise RatingsError(f"{name} must be a pair (m, n) of positive integers, got {shape!r}") from None
    if len(dims) != 2:
        raise RatingsError(f"{name} must be a pair (m, n) of positive integers, got {shape!r} ({len(dims)} values)")
    for d in dims:
        if not _integral(d):
            raise RatingsError(f"{name} must be two positive integers (m, n), got {shape!r}: {d!r} is not an integer")
        if not 1 <= int(d) <= INDEX_LIMIT:
            raise RatingsError(
                f"{name} must be two positive integers (m, n) of at most {INDEX_LIMIT} (int32 indices), "
                f"got {shape!r}"
            )
    return int(dims[0]), int(dims[1])


def check_index_range(rows, cols, values, shape) -> None:
    """Check host COO arrays against ``shape``: 1-d, equal lengths, integer ids in ``[0, m) x [0, n)``.

    The check of a directly constructed :class:`~mfjax.data.Ratings` (JAX
    gathers clamp out-of-range indices, so an id outside the shape would
    silently score another row).

    Raises:
      RatingsError: naming the offending id, its entry and the shape.

    >>> check_index_range(np.array([0, 5]), np.array([1, 1]), np.array([4.0, 3.0]), (3, 2))
    Traceback (most recent call last):
      ...
    mfjax.data.errors.RatingsError: row id 5 at entry 1 is out of range for shape (3, 2) (row ids must be in [0, 3))
    """
    rows, cols, values = np.asarray(rows), np.asarray(cols), np.asarray(values)
    if rows.ndim != 1 or cols.ndim != 1 or values.ndim != 1 or not rows.size == cols.size == values.size:
        raise RatingsError(
            "rows, cols and values must be 1-d arrays of one length, got shapes "
            f"{rows.shape}, {cols.shape}, {values.shape}"
        )
    for name, ids, size in (("row", rows, shape[0]), ("column", cols, shape[1])):
        if not np.issubdtype(ids.dtype, np.integer):
            raise RatingsError(f"{name} ids must be integers, got dtype {ids.dtype}")
        if ids.size == 0:
            continue
        bad = (ids < 0) | (ids >= size)
        if bad.any():
            k = int(np.argmax(bad))
            raise RatingsError(
                f"{name} id {ids[k]} at entry {k} is out of range for shape {tuple(shape)} "
                f"({name} ids must be in [0, {size}))"
            )


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
    if np.iscomplexobj(values):
        raise RatingsError(f"values must be real numbers, got dtype {values.dtype}")
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
    shape = check_shape(shape)
    for name, ids, size in (("row", rows, shape[0]), ("column", cols, shape[1])):
        if ids.max() >= size:
            k = int(np.argmax(ids))
            raise RatingsError(
                f"{name} id {ids[k]} at entry {k} is out of range for shape {shape} "
                f"({name} ids must be < {size})"
            )
    check_rating_scale(values, rating_scale,
                       lambda k: f"rating {values[k]} at entry {k} (row {rows[k]}, column {cols[k]})")
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
    sk = np.sort(key)  # cheaper than argsort for the common no-duplicate case
    if not (sk[1:] == sk[:-1]).any():
        return rows, cols, values
    order = np.argsort(key, kind="stable")
    sk = key[order]
    dup = sk[1:] == sk[:-1]
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


def duplicate_timestamps(rows, cols, timestamps, shape, duplicates="mean"):
    """The timestamps that go with :func:`handle_duplicates`' aggregated entries.

    For each (row, col) pair, in the order :func:`handle_duplicates` returns
    the pairs: its timestamp if it is not repeated (then the input order is
    kept, as there); for a repeated pair the latest timestamp of the group,
    or with ``duplicates="last"`` the timestamp of its last occurrence.

    >>> duplicate_timestamps(np.array([0, 1, 0]), np.array([1, 0, 1]), np.array([5, 7, 3]), (2, 2))
    array([5, 7])
    >>> duplicate_timestamps(np.array([0, 1, 0]), np.array([1, 0, 1]), np.array([5, 7, 3]), (2, 2), "last")
    array([3, 7])
    """
    timestamps = np.asarray(timestamps)
    key = rows.astype(np.int64) * int(shape[1]) + cols.astype(np.int64)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    if not (sk[1:] == sk[:-1]).any():
        return timestamps
    _, start, counts = np.unique(sk, return_index=True, return_counts=True)
    st = timestamps[order]
    if duplicates == "last":
        return st[start + counts - 1]
    return np.maximum.reduceat(st, start)


def check_timestamps(timestamps, nnz: int) -> np.ndarray:
    """``timestamps`` as a 1-d numeric host array of length ``nnz``, or :class:`RatingsError`.

    Integers (e.g. seconds since the epoch) are kept as they are; floats
    must be finite; ``datetime64`` values are stored as int64 seconds.

    >>> check_timestamps([3, 1], 3)
    Traceback (most recent call last):
      ...
    mfjax.data.errors.RatingsError: timestamps has 2 entries but there are 3 ratings (one timestamp per rating)
    """
    t = np.asarray(timestamps)
    if np.issubdtype(t.dtype, np.datetime64):
        if np.isnat(t).any():
            k = int(np.argmax(np.isnat(t)))
            raise RatingsError(f"missing timestamp (NaT) at entry {k}")
        t = t.astype("datetime64[s]").astype(np.int64)
    if t.ndim != 1:
        raise RatingsError(f"timestamps must be a 1-d array, got shape {t.shape}")
    if t.shape[0] != nnz:
        raise RatingsError(f"timestamps has {t.shape[0]} entries but there are {nnz} ratings "
                           "(one timestamp per rating)")
    if t.dtype == np.bool_ or not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise RatingsError(f"timestamps must be integers or real numbers, got dtype {t.dtype}")
    if np.issubdtype(t.dtype, np.floating):
        bad = ~np.isfinite(t)
        if bad.any():
            k = int(np.argmax(bad))
            raise RatingsError(f"non-finite timestamp {t[k]} at entry {k}")
    return t


def check_fractions(fractions, *, name="fractions") -> np.ndarray:
    """Check split fractions: a non-empty sequence of numbers in [0, 1] summing to 1.

    Returns them as a float64 array.
    """
    try:
        f = np.asarray(fractions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {fractions!r}") from None
    if f.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(f)) or np.any(f < 0) or np.any(f > 1):
        raise ValueError(f"{name} must lie in [0, 1], got {tuple(f.tolist())}")
    if not math.isclose(float(f.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"{name} must sum to 1, got {tuple(f.tolist())} (sum {float(f.sum())!r})"
        )
    return f


def data_checksum(ratings) -> str:
    """SHA-256 fingerprint of a :class:`~mfjax.data.Ratings` for experiment records.

    Hashes the shape and the COO arrays in their stored order: ``rows`` and
    ``cols`` as little-endian int64, ``values`` as little-endian float64 (so a
    float32 and a float64 copy of the same ratings agree).  Entry order
    matters: two splits with the same entries in a different order differ;
    call ``ratings.sort()`` first for an order-free fingerprint.

    Returns:
      the hex digest, prefixed ``"sha256:"``.
    """
    h = hashlib.sha256()
    m, n = ratings.shape
    h.update(f"mfjax-ratings-v1:{int(m)}x{int(n)}:{int(ratings.nnz)};".encode())
    h.update(np.ascontiguousarray(np.asarray(ratings.rows), dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(np.asarray(ratings.cols), dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(np.asarray(ratings.values), dtype="<f8").tobytes())
    return "sha256:" + h.hexdigest()


def combine_checksums(checksums) -> str:
    """One fingerprint of a data set held in parts (one per process), from the parts' :func:`data_checksum`.

    SHA-256 of ``"mfjax-parts-v1:<N>;"`` followed by the ``N`` parts'
    checksums in the given order (process order), each ended by ``";"``: it
    names the parts and their order, so it differs from the whole data set's
    :func:`data_checksum` (which would need every entry in one place) and
    from the same data cut into other parts.

    >>> combine_checksums(["sha256:ab", "sha256:cd"]) == combine_checksums(["sha256:ab", "sha256:cd"])
    True
    """
    parts = [str(c) for c in checksums]
    if not parts:
        raise ValueError("combine_checksums needs at least one checksum")
    h = hashlib.sha256(f"mfjax-parts-v1:{len(parts)};".encode())
    for c in parts:
        h.update(c.encode() + b";")
    return "sha256:" + h.hexdigest()
