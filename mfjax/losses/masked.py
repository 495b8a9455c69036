"""Masked matrix-factorization losses as pure functions.

Convention.  The factors are ``Factors(U, V)`` with ``U`` of shape (m, r)
and ``V`` of shape (n, r); the model is ``X ~ U V^T``.  The slides write
``X ~ U V`` with their V of shape (r, n): their V is our ``V.T``.  Storing
both factors row-major makes rows of U and rows of V the same kind of object
(an r-vector per user / per item), so every row-wise routine (ALS, vector
descent) serves both halves by transposing the ratings.

The masked squared loss (slides eq. 4)::

    f(U, V) = ||W o (X - U V^T)||_F^2 + l2 (||U||_F^2 + ||V||_F^2)
            = sum_{(i,j) in Omega} (x_ij - u_i . v_j)^2 + l2 (||U||^2 + ||V||^2)

``scale="sum"`` is this, the slides' scaling (their best model uses
``l2=2`` in it).  The lecture's objective is half of it
(``1/2 sum (...)^2 + l2/2 ||.||^2``): same minimiser for the same ``l2``.
``scale="mean"`` divides the data term by ``|Omega|`` (and keeps the
regulariser as ``l2 (||U||^2+||V||^2)``), which makes step sizes independent
of the data size.

Two forms that give the same values: :func:`masked_sq_loss` over the COO
entries (O(nnz r) time and memory, the form that scales) and
:func:`masked_sq_loss_dense` with the documents' dense ``X`` and mask ``W``
(O(m n r)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mfjax.data.ratings import Ratings

__all__ = [
    "Factors",
    "init_factors",
    "predict",
    "residuals",
    "masked_sq_loss",
    "masked_sq_loss_dense",
    "masked_mse",
]


class Factors(NamedTuple):
    """Low-rank factors: ``X ~ U @ V.T`` with ``U`` (m, r), ``V`` (n, r)."""

    U: jax.Array
    V: jax.Array


def init_factors(key, shape, rank: int, *, scale: float | None = None,
                 dtype=jnp.float32, nonneg: bool = False) -> Factors:
    """Random factors, entries ``N(0, scale^2)`` (``|.|`` if ``nonneg``).

    The default ``scale = 1/sqrt(rank)`` gives predictions of order 1.

    Raises:
      ValueError: ``rank <= 0`` or ``rank > min(m, n)``.
    """
    m, n = shape
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


def predict(params: Factors, rows, cols) -> jax.Array:
    """Predictions ``u_i . v_j`` at the given (row, col) index pairs."""
    U, V = params
    return jnp.einsum("kr,kr->k", U[rows], V[cols])


def residuals(params: Factors, ratings: Ratings) -> jax.Array:
    """``x_ij - u_i . v_j`` over the observed entries."""
    return jnp.asarray(ratings.values) - predict(params, ratings.rows, ratings.cols)


def _data_scale(scale: str, nnz):
    if scale == "sum":
        return 1.0
    if scale == "mean":
        return 1.0 / nnz
    raise ValueError(f"scale must be 'sum' or 'mean', got {scale!r}")


def _l2_term(params: Factors, l2):
    U, V = params
    return l2 * (jnp.sum(U * U) + jnp.sum(V * V))


def masked_sq_loss(params: Factors, ratings: Ratings, l2=0.0, *, scale: str = "sum") -> jax.Array:
    """COO form of ``||W o (X - U V^T)||^2 + l2 (||U||^2 + ||V||^2)`` (slides eq. 4)."""
    r = residuals(params, ratings)
    return _data_scale(scale, ratings.nnz) * jnp.sum(r * r) + _l2_term(params, l2)


def masked_sq_loss_dense(params: Factors, X, W, l2=0.0, *, scale: str = "sum") -> jax.Array:
    """Dense-mask form of the same loss, as written in the documents (eq. 4)."""
    U, V = params
    R = W * (X - U @ V.T)
    nnz = jnp.sum(W)
    return _data_scale(scale, nnz) * jnp.sum(R * R) + _l2_term(params, l2)


def masked_mse(ratings: Ratings, l2=0.0, *, scale: str = "sum"):
    """The loss as a function of the factors alone: ``loss(params) -> scalar``.

    Example::

        loss = mfjax.losses.masked_mse(train, l2=2.0)
        value, grad = jax.value_and_grad(loss)(params)
    """
    if l2 < 0:
        raise ValueError(f"l2 (lambda) must be >= 0, got {l2}")
    ratings = ratings.device_put()

    def loss(params: Factors) -> jax.Array:
        return masked_sq_loss(params, ratings, l2, scale=scale)

    return loss
