r"""The masked MF problem as one pytree: data, hyperparameters and weights are leaves.

:class:`MFObjective` holds everything that defines

.. math::

    f(U, V) = s \sum_{k} w_k (x_k - \hat x_k)^2
              + \lambda (\sum_i \rho_i \|u_i\|^2 + \sum_j \gamma_j \|v_j\|^2)
              [+ \lambda_b (\sum_i \rho_i b_i^2 + \sum_j \gamma_j c_j^2)]

over the observed entries ``k = (i_k, j_k)``: their indices and values, the
entry weights ``w_k`` (1 for a rating, 0 for padding: the slides' mask
``W``), the data weight ``s`` (1 for ``scale="sum"``, the slides'
``||W∘(X-UV)||²``; ``1/|Omega|`` for ``scale="mean"``), ``lambda``,
``lambda_b`` and the optional per-row regulariser weights ``rho``,
``gamma`` (ALS-WR: the row counts).  All of these are *array leaves*, so a
compiled program that takes the objective as an argument serves every fold
of a cross-validation padded to the same size (:func:`bucket_size`) and every
``lambda`` of a search without recompiling; only the matrix shape and the
presence of row weights are static.

The formulas that use it live next door, once each:
:mod:`mfjax.objective.formulas` (value, closed-form gradient, the fit-ready
:func:`~mfjax.objective.loss`), :mod:`mfjax.objective.directional` (the
quartic along a direction, for :func:`mfjax.linesearch.exact_mf`),
:mod:`mfjax.objective.curvature` (per-row normal equations and Gauss-Newton
blocks, for ALS, the preconditioner and vector descent).

>>> import mfjax as mf
>>> train = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=0)
>>> obj = mf_objective(train, l2=0.5)
>>> obj.shape == train.shape, obj.num_entries == train.nnz
(True, True)
>>> padded = mf_objective(train, l2=0.5, pad_to=bucket_size(train.nnz))
>>> padded.rows.shape[0] >= train.nnz, float(padded.num_ratings) == train.nnz
(True, True)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core.checks import check_l2
from mfjax.core.chunks import CHUNK_SIZE

__all__ = ["MFObjective", "mf_objective", "bucket_size", "SCALES"]

#: The data-term scalings: ``"sum"`` (slides) and ``"mean"`` (MSE over Omega).
SCALES = ("sum", "mean")


@dataclasses.dataclass(frozen=True)
class MFObjective:
    """The masked MF problem (a pytree; see the module docstring for the formula).

    Attributes:
      rows, cols: ``(N,)`` int32 entry indices (``N >= nnz``: padding allowed).
      values: ``(N,)`` observed values ``x_k`` (0 on padding).
      weights: ``(N,)`` entry weights ``w_k`` (1 observed, 0 padding).
      l2: ``lambda`` (scalar array).
      l2_bias: ``lambda_b`` (scalar array; equals ``l2`` unless given).
      data_weight: ``s`` (scalar array).
      num_ratings: ``sum_k w_k`` (scalar array; the ``|Omega|`` of ``"mean"``).
      row_weights, col_weights: ``(m,)`` / ``(n,)`` regulariser weights or ``None``.
      shape: ``(m, n)`` (static).
      chunk_size: entries per chunk of the scans (static).
      mesh: ``None``, or the :class:`jax.sharding.Mesh` whose ``axis`` the
        entries are split over (:func:`mfjax.objective.shard_objective`; static).
      axis: the mesh axis name of the entries (static).
    """

    rows: jax.Array
    cols: jax.Array
    values: jax.Array
    weights: jax.Array
    l2: jax.Array
    l2_bias: jax.Array
    data_weight: jax.Array
    num_ratings: jax.Array
    row_weights: Optional[jax.Array]
    col_weights: Optional[jax.Array]
    shape: tuple
    chunk_size: int = CHUNK_SIZE
    mesh: Optional[Any] = None
    axis: Optional[str] = None

    @property
    def num_entries(self) -> int:
        """Stored entries ``N`` (observed plus padding; static)."""
        return int(self.rows.shape[0])

    @property
    def l2_weights(self):
        """``(row_weights, col_weights)`` or ``None``."""
        if self.row_weights is None and self.col_weights is None:
            return None
        return (self.row_weights, self.col_weights)

    @property
    def T(self) -> "MFObjective":
        """The same problem for the transposed matrix (rows <-> columns)."""
        return dataclasses.replace(self, rows=self.cols, cols=self.rows,
                                   row_weights=self.col_weights, col_weights=self.row_weights,
                                   shape=(self.shape[1], self.shape[0]))

    def replace(self, **changes) -> "MFObjective":
        """A copy with some fields changed (e.g. ``obj.replace(l2=jnp.asarray(1.0))``)."""
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    MFObjective,
    data_fields=["rows", "cols", "values", "weights", "l2", "l2_bias", "data_weight",
                 "num_ratings", "row_weights", "col_weights"],
    meta_fields=["shape", "chunk_size", "mesh", "axis"],
)


def bucket_size(nnz: int, *, chunk_size: int = CHUNK_SIZE, min_size: int = 8) -> int:
    """A padded entry count shared by problems of similar size.

    The next power of two up to ``chunk_size``, then the next multiple of
    ``chunk_size``: at most 2x padding for small problems and less than one
    chunk for large ones.  Folds of one cross-validation land in the same
    bucket, so they share one compiled program.

    >>> bucket_size(1000), bucket_size(80_000, chunk_size=65536)
    (1024, 131072)
    """
    nnz = max(int(nnz), int(min_size))
    if nnz <= chunk_size:
        return 1 << (nnz - 1).bit_length()
    return -(-nnz // chunk_size) * chunk_size


def _data_weight(scale: str, count):
    if scale == "sum":
        return 1.0
    if scale == "mean":
        return 1.0 / count
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def _check_indices(ratings, rows, cols, nnz):
    """Ids inside the shape (concrete data only: JAX would clamp an out-of-range gather)."""
    if nnz == 0 or isinstance(rows, jax.core.Tracer) or isinstance(cols, jax.core.Tracer):
        return
    m, n = int(ratings.shape[0]), int(ratings.shape[1])
    for name, idx, size in (("row", rows, m), ("column", cols, n)):
        idx = np.asarray(idx)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= size:
            bad = hi if hi >= size else lo
            raise ValueError(f"{name} index {bad} is outside the ratings' shape {(m, n)} "
                             f"({name} indices must be in [0, {size}))")


def check_factors(obj: "MFObjective", params) -> None:
    """Raise ``ValueError`` unless ``params`` fit the objective's ``(m, n)`` shape (static check).

    ``U`` must have ``m`` rows and ``V`` ``n`` rows with the same rank; a
    transposed initialisation (``init_factors(key, (n, m), r)``) is the
    usual mistake.
    """
    check_factor_shapes(obj.shape, params)


def check_factor_shapes(shape, params, rank: int | None = None) -> None:
    """Raise ``ValueError`` unless ``params.U`` is ``(m, r)`` and ``params.V`` is ``(n, r)``.

    ``shape`` is the ratings' ``(m, n)``; ``rank``, if given, is the ``r``
    required.  The message names both shapes and spots a transposed pair.

    >>> import numpy as np
    >>> from mfjax.core.factors import Factors
    >>> check_factor_shapes((4, 3), Factors(np.zeros((3, 2)), np.zeros((4, 2))))
    Traceback (most recent call last):
      ...
    ValueError: factors U (3, 2), V (4, 2) do not fit ratings of shape (4, 3): need U (m, r) = (4, r) and V (n, r) = (3, r) (transposed? use init_factors(key, ratings.shape, rank))
    """
    m, n = (int(d) for d in shape)
    U, V = params.U, params.V
    bad = (U.ndim != 2 or V.ndim != 2 or U.shape[0] != m or V.shape[0] != n
           or U.shape[1] != V.shape[1] or (rank is not None and U.shape[1] != rank))
    if bad:
        r = "r" if rank is None else str(rank)
        hint = " (transposed? use init_factors(key, ratings.shape, rank))" if (
            U.ndim == 2 and V.ndim == 2 and U.shape[0] == n and V.shape[0] == m and m != n) else ""
        raise ValueError(f"factors U {tuple(U.shape)}, V {tuple(V.shape)} do not fit ratings of "
                         f"shape {(m, n)}: need U (m, {r}) = ({m}, {r}) and V (n, {r}) = ({n}, {r}){hint}")


def mf_objective(ratings, l2=0.0, *, scale: str = "sum", l2_bias=None, l2_weights=None,
                 entry_weights=None, pad_to: int | None = None, dtype=None,
                 chunk_size: int = CHUNK_SIZE) -> MFObjective:
    """Build the :class:`MFObjective` of ``ratings`` (works inside ``jit`` too).

    Args:
      ratings: a :class:`mfjax.data.Ratings` (anything with ``rows``, ``cols``,
        ``values``, ``shape``).
      l2: ``lambda >= 0``.
      scale: ``"sum"`` or ``"mean"`` (module docstring).
      l2_bias: ``lambda_b`` for biased factors (default ``l2``).
      l2_weights: ``None`` or ``(w_row (m,), w_col (n,))``.
      entry_weights: optional ``(nnz,)`` weights ``w_k >= 0`` (default 1).
      pad_to: pad the entries to this count with weight-0 entries
        (:func:`bucket_size`); ``None`` keeps ``nnz``.
      dtype: dtype of values and weights (default: the values' float dtype).
      chunk_size: entries per chunk of the scans (static).

    Raises:
      ValueError: negative or non-finite ``l2`` / ``l2_bias``, unknown ``scale``,
        ``pad_to`` below ``nnz``, a row or column id outside ``shape``.
    """
    check_l2("l2", l2)
    check_l2("l2_bias", l2_bias)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    entries = (ratings.rows, ratings.cols, ratings.values, entry_weights)
    # concrete data is laid out on the host (numpy) and moved once: no eager device ops
    xp = jnp if any(isinstance(a, jax.core.Tracer) for a in entries) else np
    values = xp.asarray(ratings.values)
    if dtype is None:
        dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    values = values.astype(dtype)
    nnz = int(values.shape[0])
    w = xp.ones((nnz,), dtype) if entry_weights is None else xp.asarray(entry_weights).astype(dtype)
    rows = xp.asarray(ratings.rows).astype(np.int32)
    cols = xp.asarray(ratings.cols).astype(np.int32)
    _check_indices(ratings, rows, cols, nnz)
    if pad_to is not None:
        if int(pad_to) < nnz:
            raise ValueError(f"pad_to={pad_to} is below the number of entries {nnz}")
        pad = int(pad_to) - nnz
        rows, cols, values, w = (xp.pad(a, (0, pad)) for a in (rows, cols, values, w))
    count = np.asarray(nnz, dtype) if entry_weights is None else xp.sum(w)
    s = _data_weight(scale, count)
    rows, cols, values, w = (jnp.asarray(a) for a in (rows, cols, values, w))
    count = jnp.asarray(count, dtype)
    wr, wc = (None, None) if l2_weights is None else l2_weights
    lam = jnp.asarray(l2, dtype)
    return MFObjective(
        rows=rows, cols=cols, values=values, weights=w, l2=lam,
        l2_bias=lam if l2_bias is None else jnp.asarray(l2_bias, dtype),
        data_weight=jnp.asarray(s, dtype), num_ratings=count,
        row_weights=None if wr is None else jnp.asarray(wr, dtype),
        col_weights=None if wc is None else jnp.asarray(wc, dtype),
        shape=(int(ratings.shape[0]), int(ratings.shape[1])), chunk_size=int(chunk_size),
    )


def as_objective(problem, l2=0.0, *, scale: str = "sum", l2_weights=None,
                 chunk_size: int | None = None, like=None) -> MFObjective:
    """``problem`` itself if it is an :class:`MFObjective`, else ``mf_objective(problem, ...)``.

    ``like``: factors whose dtype the values are promoted with (float64
    factors on float32 ratings compute in float64).
    """
    if isinstance(problem, MFObjective):
        return problem
    kw = {} if chunk_size is None else {"chunk_size": int(chunk_size)}
    dt = None
    if like is not None:
        dt = jnp.result_type(jnp.asarray(problem.values).dtype, jax.tree_util.tree_leaves(like)[0].dtype)
    return mf_objective(problem, l2, scale=scale, l2_weights=l2_weights, dtype=dt, **kw)


def row_counts(obj: MFObjective) -> tuple[jax.Array, jax.Array]:
    """``(n_i (m,), n_j (n,))``: the weighted number of entries of each row and column."""
    m, n = obj.shape
    if not any(isinstance(a, jax.core.Tracer) for a in (obj.rows, obj.cols, obj.weights)):
        w = np.asarray(obj.weights)
        return (jnp.asarray(np.bincount(np.asarray(obj.rows), w, m).astype(w.dtype)),
                jnp.asarray(np.bincount(np.asarray(obj.cols), w, n).astype(w.dtype)))
    return (jax.ops.segment_sum(obj.weights, obj.rows, num_segments=m),
            jax.ops.segment_sum(obj.weights, obj.cols, num_segments=n))


__all__ += ["row_counts", "as_objective", "check_factors", "check_factor_shapes"]
