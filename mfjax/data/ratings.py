"""The ratings container: observed entries of an m x n matrix in COO form.

A :class:`Ratings` holds three equally long arrays ``rows``, ``cols``,
``values`` (one entry per observed rating) and the static ``shape=(m, n)``.
It is a JAX pytree: the arrays are leaves, the shape and the id maps are
static metadata, so a ``Ratings`` can be passed straight into ``jax.jit`` /
``vmap`` / ``lax.scan`` bodies.

The source documents write the masked problem densely as ``X`` (m x n) and a
binary mask ``W``; :meth:`Ratings.to_dense` gives that form, and
:meth:`Ratings.from_dense` goes back.  Everything that scales uses the COO
arrays directly and never builds an m x n array.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data import validation
from mfjax.data.errors import RatingsError

__all__ = ["IdMap", "Ratings", "RatingsError"]


class IdMap:
    """Maps dense indices 0..k-1 back to the original (user or item) ids.

    ``IdMap(original)`` where ``original[i]`` is the original id of index
    ``i``.  Hashed by identity so it can live in a pytree's static metadata.
    """

    __slots__ = ("original", "_lookup")

    def __init__(self, original: Any):
        self.original = np.asarray(original)
        self._lookup: dict | None = None

    def __len__(self) -> int:
        return int(self.original.shape[0])

    def to_original(self, index: Any) -> np.ndarray:
        """Original ids of dense indices."""
        return self.original[np.asarray(index)]

    def to_index(self, original_ids: Any) -> np.ndarray:
        """Dense indices of original ids (KeyError names the first unknown id)."""
        if self._lookup is None:
            self._lookup = {v: i for i, v in enumerate(self.original.tolist())}
        out = []
        for v in np.atleast_1d(np.asarray(original_ids)).tolist():
            if v not in self._lookup:
                raise KeyError(f"id {v!r} is not in this id map")
            out.append(self._lookup[v])
        return np.asarray(out, dtype=np.int64)

    def lookup(self, original_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`to_index`: ``(index, known)`` for every id, unknown ones marked.

        ``index[k]`` is the dense index of ``original_ids[k]`` where
        ``known[k]`` is True, and -1 elsewhere (no error: the caller decides).
        O(n log k) by binary search in the sorted original ids.

        >>> IdMap([3, 7, 9]).lookup([9, 4, 3])
        (array([ 2, -1,  0]), array([ True, False,  True]))
        """
        ids = np.asarray(original_ids).reshape(-1)
        orig = self.original.reshape(-1)
        if orig.size == 0:
            return np.full(ids.shape, -1, np.int64), np.zeros(ids.shape, bool)
        order = np.argsort(orig, kind="stable")
        sorted_ids = orig[order]
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, orig.size - 1)
        known = sorted_ids[pos] == ids
        index = np.where(known, order[pos], -1).astype(np.int64)
        return index, known

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids)"


@dataclasses.dataclass(frozen=True)
class Ratings:
    """Observed entries ``(rows[k], cols[k]) -> values[k]`` of an ``shape`` matrix.

    Attributes:
      rows: int32 array (nnz,), row (user) index in ``[0, m)``.
      cols: int32 array (nnz,), column (item) index in ``[0, n)``.
      values: float array (nnz,), the ratings.
      shape: ``(m, n)``, static.
      row_ids, col_ids: optional :class:`IdMap` back to the original ids.
      timestamps: optional array (nnz,) of each rating's time (MovieLens:
        int seconds since the epoch), or None.  A host array that
        :meth:`select` / :meth:`sort` subset with the entries; a pytree leaf
        when present (``None`` adds no leaf), for the time-based splits
        (:func:`~mfjax.data.splits.leave_last_out`,
        :func:`~mfjax.data.splits.temporal_split`).

    Arrays may be numpy (host) or JAX arrays.  Direct construction checks
    the shape (two positive integers) and, for concrete (non-traced)
    arrays, that the ids lie inside it (:func:`~mfjax.data.validation.check_index_range`:
    JAX gathers clamp out-of-range indices, which would silently score
    another row); :meth:`Ratings.create` also checks the values (finite,
    real, scale, duplicates).  Transforms of a valid ``Ratings`` and pytree
    unflattening (inside ``jit``) skip the checks.

    >>> Ratings(np.array([0, 3]), np.array([0, 1]), np.array([4.0, 5.0]), (2, 2))
    Traceback (most recent call last):
      ...
    mfjax.data.errors.RatingsError: row id 3 at entry 1 is out of range for shape (2, 2) (row ids must be in [0, 2))
    """

    rows: Any
    cols: Any
    values: Any
    shape: tuple[int, int]
    row_ids: IdMap | None = None
    col_ids: IdMap | None = None
    timestamps: Any = None

    def __post_init__(self):
        object.__setattr__(self, "shape", validation.check_shape(self.shape))
        if all(_concrete(a) for a in (self.rows, self.cols, self.values)):
            validation.check_index_range(self.rows, self.cols, self.values, self.shape)
        for name, ids, size in (("row_ids", self.row_ids, self.shape[0]), ("col_ids", self.col_ids, self.shape[1])):
            if ids is not None and len(ids) != size:
                raise RatingsError(f"{name} maps {len(ids)} ids but the shape {self.shape} has {size}")
        if (self.timestamps is not None and not isinstance(self.timestamps, jax.core.Tracer)
                and _concrete(self.values)):
            object.__setattr__(self, "timestamps",
                               validation.check_timestamps(self.timestamps, int(np.shape(self.values)[0])))

    @classmethod
    def _trusted(cls, rows, cols, values, shape, row_ids=None, col_ids=None, timestamps=None) -> "Ratings":
        """Build without checks: for transforms of a valid ``Ratings`` and pytree unflattening."""
        obj = object.__new__(cls)
        for name, v in (("rows", rows), ("cols", cols), ("values", values), ("shape", shape),
                        ("row_ids", row_ids), ("col_ids", col_ids), ("timestamps", timestamps)):
            object.__setattr__(obj, name, v)
        return obj

    def _replace(self, **changes) -> "Ratings":
        fields = {f: getattr(self, f) for f in _FIELDS}
        fields.update(changes)
        return Ratings._trusted(**fields)

    # ------------------------------------------------------------------ build
    @classmethod
    def create(
        cls,
        rows,
        cols,
        values,
        shape: tuple[int, int] | None = None,
        *,
        row_ids: IdMap | None = None,
        col_ids: IdMap | None = None,
        rating_scale: tuple[float, float] | None = None,
        duplicates: str = "error",
        dtype=np.float32,
        timestamps=None,
    ) -> "Ratings":
        """Validated constructor from host arrays.

        Args:
          rows, cols: integer indices (0-based).
          values: ratings.
          shape: ``(m, n)``; default ``(max(rows)+1, max(cols)+1)``.
          rating_scale: optional ``(lo, hi)``; values outside raise.
          duplicates: ``"error"`` (default) raises on a repeated (row, col)
            pair; ``"mean"``, ``"sum"``, ``"last"`` aggregate them.
          dtype: dtype of ``values``.
          timestamps: optional time of each rating (see the class);
            aggregated duplicates keep the latest (``"last"``: the last one's).

        Raises:
          RatingsError: naming the problem (empty data, NaN/inf value,
            negative or out-of-range id, shape mismatch, duplicate pair,
            value outside the rating scale).

        >>> r = Ratings.create([0, 1, 1], [2, 0, 2], [4.0, 3.0, 5.0], rating_scale=(1, 5))
        >>> r, r.shape, r.row_counts().tolist()
        (Ratings(shape=(2, 3), nnz=3), (2, 3), [1, 2])
        >>> Ratings.create([0, 0], [1, 1], [4.0, 2.0], duplicates="mean").values.tolist()
        [3.0]
        >>> Ratings.create([0], [0], [7.0], rating_scale=(1, 5))
        Traceback (most recent call last):
          ...
        mfjax.data.errors.RatingsError: rating 7.0 at entry 0 (row 0, column 0) is outside the rating scale [1, 5]
        """
        rows, cols, values, shape = validation.check_coo(
            rows, cols, values, shape, rating_scale=rating_scale
        )
        if timestamps is not None:
            timestamps = validation.check_timestamps(timestamps, rows.shape[0])
            timestamps = validation.duplicate_timestamps(rows, cols, timestamps, shape, duplicates)
        rows, cols, values = validation.handle_duplicates(
            rows, cols, values, shape, duplicates
        )
        return cls(
            rows.astype(np.int32),
            cols.astype(np.int32),
            values.astype(dtype),
            (int(shape[0]), int(shape[1])),
            row_ids,
            col_ids,
            timestamps,
        )

    @classmethod
    def from_dense(cls, X, W=None, **kwargs) -> "Ratings":
        """From the documents' dense form: ``X`` (m x n) and binary mask ``W``.

        With ``W=None`` the observed entries are the finite entries of ``X``.
        """
        X = np.asarray(X)
        if X.ndim != 2:
            raise RatingsError(f"X must be a 2-d matrix, got shape {X.shape}")
        if W is None:
            W = np.isfinite(X)
        W = np.asarray(W)
        if W.shape != X.shape:
            raise RatingsError(
                f"mask shape {W.shape} disagrees with matrix shape {X.shape}"
            )
        r, c = np.nonzero(W)
        return cls.create(r, c, X[r, c], X.shape, **kwargs)

    # ------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        """Number of observed entries."""
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        return self.nnz / float(self.shape[0] * self.shape[1])

    def to_dense(self, fill: float = 0.0):
        """Dense ``(X, W)``: ``X[i, j]`` the rating (``fill`` where missing), ``W`` the 0/1 mask.

        Returns JAX arrays of ``values``' dtype.  Costs O(m n) memory: meant
        for small problems, tests and the dense-mask loss form.
        """
        m, n = self.shape
        vals = jnp.asarray(self.values)
        X = jnp.full((m, n), fill, dtype=vals.dtype).at[self.rows, self.cols].set(vals)
        W = jnp.zeros((m, n), dtype=vals.dtype).at[self.rows, self.cols].set(1.0)
        return X, W

    def row_counts(self) -> np.ndarray:
        """Observed entries per row (host numpy, length m)."""
        return np.bincount(np.asarray(self.rows), minlength=self.shape[0])

    def col_counts(self) -> np.ndarray:
        """Observed entries per column (host numpy, length n)."""
        return np.bincount(np.asarray(self.cols), minlength=self.shape[1])

    def mean(self) -> float:
        """Mean observed rating (float64 on the host)."""
        return float(np.mean(np.asarray(self.values, dtype=np.float64)))

    @property
    def rating_scale(self) -> tuple[float, float] | None:
        """The observed scale ``(min, max)`` of the values (host floats; ``None`` when empty).

        The data's own scale, e.g. for clipping predictions
        (``compare``'s clipped RMSE) instead of a fixed (1, 5).

        >>> Ratings.create([0, 1], [0, 0], [0.5, 4.0]).rating_scale
        (0.5, 4.0)
        """
        if self.nnz == 0:
            return None
        v = np.asarray(self.values, dtype=np.float64)
        return float(v.min()), float(v.max())

    # ------------------------------------------------------------ transforms
    def select(self, index) -> "Ratings":
        """Subset of the entries (boolean mask or integer index); same shape and id maps."""
        index = np.asarray(index)
        return self._replace(
            rows=np.asarray(self.rows)[index],
            cols=np.asarray(self.cols)[index],
            values=np.asarray(self.values)[index],
            timestamps=None if self.timestamps is None else np.asarray(self.timestamps)[index],
        )

    def transpose(self) -> "Ratings":
        """The n x m transposed ratings (columns become rows)."""
        return Ratings._trusted(
            self.cols, self.rows, self.values, (self.shape[1], self.shape[0]),
            self.col_ids, self.row_ids, self.timestamps,
        )

    @property
    def T(self) -> "Ratings":
        return self.transpose()

    def with_values(self, values) -> "Ratings":
        """Same pattern, new values."""
        return self._replace(values=values)

    def sort(self, by: str = "row") -> "Ratings":
        """Entries sorted by (row, col) (``by="row"``) or (col, row) (``by="col"``)."""
        r, c = np.asarray(self.rows), np.asarray(self.cols)
        order = np.lexsort((c, r)) if by == "row" else np.lexsort((r, c))
        return self.select(order)

    def astype(self, dtype) -> "Ratings":
        return self._replace(values=np.asarray(self.values).astype(dtype))

    def device_put(self) -> "Ratings":
        """The same ratings with the arrays on the default JAX device."""
        return self._replace(
            rows=jnp.asarray(self.rows),
            cols=jnp.asarray(self.cols),
            values=jnp.asarray(self.values),
        )

    def __repr__(self) -> str:
        m, n = self.shape
        return f"Ratings(shape=({m}, {n}), nnz={self.nnz})"


_FIELDS = ("rows", "cols", "values", "shape", "row_ids", "col_ids", "timestamps")


def _concrete(a) -> bool:
    """A host or committed device array (not a tracer, not a placeholder inside a JAX transform)."""
    if isinstance(a, np.ndarray):
        return True
    return isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)


# children: rows, cols, values, timestamps (None -- no leaf -- when absent)
def _flatten_with_keys(r: Ratings):
    keys = (jax.tree_util.GetAttrKey("rows"), jax.tree_util.GetAttrKey("cols"),
            jax.tree_util.GetAttrKey("values"), jax.tree_util.GetAttrKey("timestamps"))
    return (tuple(zip(keys, (r.rows, r.cols, r.values, r.timestamps))),
            (r.shape, r.row_ids, r.col_ids))


def _unflatten(aux, children) -> Ratings:
    rows, cols, values, timestamps = children
    shape, row_ids, col_ids = aux
    return Ratings._trusted(rows, cols, values, shape, row_ids, col_ids, timestamps)


jax.tree_util.register_pytree_with_keys(
    Ratings, _flatten_with_keys, _unflatten,
    flatten_func=lambda r: ((r.rows, r.cols, r.values, r.timestamps), (r.shape, r.row_ids, r.col_ids)),
)
