"""Low-rank factor models: ``Factors(U, V)`` and ``BiasedFactors``, initialisation, prediction.

Convention.  ``U`` has shape (m, r) and ``V`` (n, r); the model is
``X ~ U V^T``.  The slides write ``X ~ U V`` with their V of shape (r, n):
their V is our ``V.T``.  Storing both factors row-major makes rows of U and
rows of V the same kind of object (an r-vector per user / per item), so every
row-wise routine (ALS, vector descent) serves both halves by transposing the
ratings.  The biased model adds a global mean and row / column biases,
``x_ij ~ mean + b_i + c_j + u_i . v_j`` (Koren, Bell & Volinsky, 2009).

>>> import jax
>>> p = init_factors(jax.random.key(0), (4, 3), rank=2)
>>> p.U.shape, p.V.shape, predict_dense(p).shape
((4, 2), (3, 2), (4, 3))
"""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

__all__ = [
    "Factors",
    "BiasedFactors",
    "Params",
    "init_factors",
    "init_biased_factors",
    "predict",
    "predict_dense",
    "residuals",
    "swap_factors",
]


class Factors(NamedTuple):
    """Low-rank factors: ``X ~ U @ V.T`` with ``U`` (m, r), ``V`` (n, r)."""

    U: jax.Array
    V: jax.Array


class BiasedFactors(NamedTuple):
    """Biased factor model ``x_ij ~ mean + row_bias_i + col_bias_j + u_i . v_j``.

    Attributes:
      U: (m, r); V: (n, r); row_bias: (m,); col_bias: (n,); mean: scalar.
    """

    U: jax.Array
    V: jax.Array
    row_bias: jax.Array
    col_bias: jax.Array
    mean: jax.Array


#: Either factor model.
Params = Union[Factors, BiasedFactors]


def init_factors(key, shape, rank: int, *, scale: float | None = None,
                 dtype=jnp.float32, nonneg: bool = False) -> Factors:
    """Random factors, entries ``N(0, scale^2)`` (``|.|`` if ``nonneg``).

    The default ``scale = 1/sqrt(rank)`` gives predictions of order 1.

    Raises:
      ValueError: ``rank <= 0`` or ``rank > min(m, n)``; ``scale`` not a
        positive finite number (``scale=0`` would start at the saddle
        ``U = V = 0``, see :func:`mfjax.core.check_not_all_zero`).
    """
    m, n = shape
    if scale is not None and not (isinstance(scale, jax.core.Tracer) or 0 < float(scale) < float("inf")):
        raise ValueError(f"scale (the initial factors' std) must be a positive finite number, "
                         f"got {scale!r}")
    if rank <= 0 or rank > min(m, n):
        raise ValueError(
            f"rank must be in 1..min(m, n) = {min(m, n)} for shape {tuple(shape)}, got {rank}"
        )
    if scale is None:
        scale = 1.0 / float(rank) ** 0.5
    ku, kv = jax.random.split(key)
    U = scale * jax.random.normal(ku, (m, rank), dtype)
    V = scale * jax.random.normal(kv, (n, rank), dtype)
    if nonneg:
        U, V = jnp.abs(U), jnp.abs(V)
    return Factors(U, V)


def init_biased_factors(key, shape, rank: int, *, mean=0.0, scale: float | None = None,
                        dtype=jnp.float32) -> BiasedFactors:
    """:func:`init_factors` plus zero biases and the given global ``mean``.

    Typically ``mean=train.mean()``.
    """
    U, V = init_factors(key, shape, rank, scale=scale, dtype=dtype)
    m, n = shape
    return BiasedFactors(U, V, jnp.zeros((m,), dtype), jnp.zeros((n,), dtype),
                         jnp.asarray(mean, dtype))


def predict(params: Params, rows, cols) -> jax.Array:
    """Predictions at the given (row, col) index pairs.

    ``u_i . v_j`` for :class:`Factors`; ``mean + b_i + c_j + u_i . v_j`` for
    :class:`BiasedFactors`.
    """
    p = jnp.einsum("kr,kr->k", params.U[rows], params.V[cols])
    if isinstance(params, BiasedFactors):
        p = p + params.mean + params.row_bias[rows] + params.col_bias[cols]
    return p


def predict_dense(params: Params) -> jax.Array:
    """The full m x n prediction matrix (O(m n) memory: small problems only)."""
    P = params.U @ params.V.T
    if isinstance(params, BiasedFactors):
        P = P + params.mean + params.row_bias[:, None] + params.col_bias[None, :]
    return P


def residuals(params: Params, ratings) -> jax.Array:
    """``x_ij - xhat_ij`` over the observed entries."""
    return jnp.asarray(ratings.values) - predict(params, ratings.rows, ratings.cols)


def swap_factors(params: Params) -> Params:
    """The same model for the transposed matrix (rows <-> columns)."""
    if isinstance(params, BiasedFactors):
        return BiasedFactors(params.V, params.U, params.col_bias, params.row_bias, params.mean)
    return Factors(params.V, params.U)
