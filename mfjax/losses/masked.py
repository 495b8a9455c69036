"""Masked matrix-factorization losses and their gradients, as pure functions.

Convention.  The factors are ``Factors(U, V)`` with ``U`` of shape (m, r)
and ``V`` of shape (n, r); the model is ``X ~ U V^T``.  The slides write
``X ~ U V`` with their V of shape (r, n): their V is our ``V.T``.  Storing
both factors row-major makes rows of U and rows of V the same kind of object
(an r-vector per user / per item), so every row-wise routine (ALS, vector
descent) serves both halves by transposing the ratings.

The masked squared loss (slides eq. 4)::

    f(U, V) = ||W o (X - U V^T)||_F^2 + l2 (||U||_F^2 + ||V||_F^2)
            = sum_{(i,j) in Omega} (x_ij - u_i . v_j)^2 + l2 (||U||^2 + ||V||^2)

Scaling conventions.

* ``scale="sum"`` is the formula above, the slides' scaling (their best model
  uses ``l2=2`` in it).
* The lecture (Jaggi, CS-433) writes ``1/2 sum_Omega (...)^2 + l2/2 ||.||^2``:
  exactly half of ``scale="sum"`` for the same ``l2``, hence the same
  minimiser (and the same ALS normal equations); gradients are halved.
* ``scale="mean"`` divides the data term by ``|Omega|`` and keeps the
  regulariser as ``l2 (||U||^2 + ||V||^2)``; step sizes then do not depend on
  the data size.  ``l2`` in "mean" scale equals ``l2 * |Omega|`` in "sum" scale.

Optional per-row regulariser weights (``l2_weights=(w_row, w_col)``) give
``l2 (sum_i w_i ||u_i||^2 + sum_j w_j ||v_j||^2)``; with ``w = counts`` this is
the frequency-weighted ("ALS-WR") penalty of Zhou et al. (2008).

Biased model.  :class:`BiasedFactors` adds a global mean and row / column
biases, ``x_ij ~ mean + b_i + c_j + u_i . v_j`` (Koren et al., 2009).  The
biases are regularised with ``l2_bias`` (default ``l2``) and the same weights;
the mean is not regularised.  :func:`predict`, the losses, the gradients and
:mod:`mfjax.metrics` accept both ``Factors`` and ``BiasedFactors`` (one
implementation of each formula).

Gradients (slides eqs 2, 3, 5, 6, in our orientation), with the residual
``E = W o (X - U V^T)`` (``e_k = x_k - xhat_k`` over ``Omega`` in COO form)
and ``s`` = 1 ("sum") or ``1/|Omega|`` ("mean")::

    df/dU = -2 s E V   + 2 l2 U      i.e.  g_i = -2 s sum_{j in Omega_i} e_ij v_j + 2 l2 u_i
    df/dV = -2 s E^T U + 2 l2 V      i.e.  h_j = -2 s sum_{i in Omega^j} e_ij u_i + 2 l2 v_j
    df/db = -2 s E 1   + 2 l2_bias b,  df/dc = -2 s E^T 1 + 2 l2_bias c,  df/dmean = -2 s 1^T E 1

(the slides' ``-2 (W o X) V^T + 2 (W o (U V)) V^T`` is ``-2 E V`` after
transposing their V).  The COO forms are thin wrappers over the one objective,
:mod:`mfjax.objective` (:class:`~mfjax.objective.MFObjective` and its
formulas): it gathers the rows ``u_i, v_j`` of the observed entries and
scatter-adds ``e_k v_j`` into row ``i`` (``jax.ops.segment_sum``), in chunks
of :data:`CHUNK_SIZE` inside a ``lax.scan``: O(nnz r) time, never an m x n
array (``benchmarks/loss_sparse_vs_dense.py``).  The dense form (:func:`masked_sq_grad_dense`) is the formula
as written, O(m n r).  :func:`masked_sq_value_and_grad` shares the residual
between the value and the gradient.  ``masked_mse(..., grad="closed_form")``
wires the closed form into ``jax.grad`` / ``jax.value_and_grad`` through
``jax.custom_vjp``; ``grad="autodiff"`` (default) lets JAX differentiate
:func:`masked_sq_loss`.

References:
  Beresnev, D., Klyushev, V. "Recommendation systems via approximate matrix
  factorization" (slides), Innopolis University, 2024.

  Jaggi, M. "Matrix Factorizations", EPFL CS-433 lecture notes, 2024.

  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009.

  Zhou, Y., Wilkinson, D., Schreiber, R., Pan, R. "Large-scale parallel
  collaborative filtering for the Netflix prize", AAIM 2008.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mfjax.core.checks import check_l2
from mfjax.core.chunks import CHUNK_SIZE, chunk_entries
from mfjax.core.factors import (BiasedFactors, Factors, Params, init_biased_factors, init_factors,
                                predict, predict_dense, residuals)
from mfjax.data.ratings import Ratings
from mfjax.objective import formulas as _f
from mfjax.objective.formulas import l2_penalty, l2_penalty_grad
from mfjax.objective.problem import mf_objective

__all__ = [
    "Factors",
    "BiasedFactors",
    "init_factors",
    "init_biased_factors",
    "predict",
    "predict_dense",
    "residuals",
    "l2_penalty",
    "masked_sq_loss",
    "masked_sq_loss_dense",
    "masked_sq_loss_biased",
    "masked_sq_grad",
    "masked_sq_grad_dense",
    "masked_sq_value_and_grad",
    "masked_mse",
    "data_scale",
    "CHUNK_SIZE",
]


def data_scale(scale: str, nnz):
    """Weight of the data term: ``1`` for ``scale="sum"`` (the slides'
    ``||W∘(X-UV)||²``), ``1/nnz`` for ``scale="mean"`` (mean squared error
    over the observed entries).  The same rule as
    :func:`mfjax.objective.mf_objective`'s ``data_weight``.

    >>> data_scale("sum", 10), data_scale("mean", 10)
    (1.0, 0.1)
    """
    if scale == "sum":
        return 1.0
    if scale == "mean":
        return 1.0 / nnz
    raise ValueError(f"scale must be 'sum' or 'mean', got {scale!r}")


def _objective(ratings: Ratings, l2, scale, l2_bias, l2_weights, params, chunk_size=CHUNK_SIZE):
    return mf_objective(ratings, l2, scale=scale, l2_bias=l2_bias, l2_weights=l2_weights,
                        dtype=_dtype(ratings, params), chunk_size=chunk_size)


def _dtype(ratings, params):
    return jnp.result_type(jnp.asarray(ratings.values).dtype, params.U.dtype)


def _sum_sq_residuals(params: Params, ratings: Ratings, chunk_size: int = CHUNK_SIZE):
    """``sum_Omega (x_ij - xhat_ij)^2``, chunked over the entries."""
    return _f.sum_sq_residuals(_objective(ratings, 0.0, "sum", None, None, params, chunk_size),
                               params)


# ------------------------------------------------------------------ losses
def masked_sq_loss(params: Params, ratings: Ratings, l2=0.0, *, scale: str = "sum",
                   l2_bias=None, l2_weights=None) -> jax.Array:
    """COO form of ``||W o (X - U V^T)||^2 + l2 (||U||^2 + ||V||^2)`` (slides eq. 4).

    O(nnz r); no m x n array: :func:`mfjax.objective.value` of
    ``mf_objective(ratings, l2, ...)``.  Accepts :class:`Factors` and
    :class:`BiasedFactors`; ``l2_bias`` / ``l2_weights`` as in
    :func:`l2_penalty`.  See the module docstring for ``scale``.

    Raises:
      ValueError: ``l2 < 0`` or ``l2_bias < 0`` (when given as concrete numbers),
        unknown ``scale``.
    """
    return _f.value(_objective(ratings, l2, scale, l2_bias, l2_weights, params), params)


def masked_sq_loss_biased(params: BiasedFactors, ratings: Ratings, l2=0.0, l2_bias=None, *,
                          scale: str = "sum", l2_weights=None) -> jax.Array:
    """The biased loss ``sum_Omega (x_ij - mean - b_i - c_j - u_i.v_j)^2 + l2 (||U||^2+||V||^2)
    + l2_bias (||b||^2 + ||c||^2)``; :func:`masked_sq_loss` on :class:`BiasedFactors`.

    Raises:
      TypeError: ``params`` is not a :class:`BiasedFactors`.
    """
    if not isinstance(params, BiasedFactors):
        raise TypeError(f"masked_sq_loss_biased needs BiasedFactors, got {type(params).__name__}")
    return masked_sq_loss(params, ratings, l2, scale=scale, l2_bias=l2_bias, l2_weights=l2_weights)


def masked_sq_loss_dense(params: Params, X, W, l2=0.0, *, scale: str = "sum",
                         l2_bias=None, l2_weights=None) -> jax.Array:
    """Dense-mask form of the same loss, as written in the documents (eq. 4)."""
    check_l2("l2", l2)
    check_l2("l2_bias", l2_bias)
    R = W * (X - predict_dense(params))
    data = data_scale(scale, jnp.sum(W)) * jnp.sum(R * R)
    return data + l2_penalty(params, l2, l2_bias=l2_bias, l2_weights=l2_weights)


# --------------------------------------------------------------- gradients
def masked_sq_value_and_grad(params: Params, ratings: Ratings, l2=0.0, *, scale: str = "sum",
                             l2_bias=None, l2_weights=None, chunk_size: int = CHUNK_SIZE):
    """``(f, df/dparams)`` of :func:`masked_sq_loss` by the closed form, sharing the residual.

    One pass over the entries (in chunks of ``chunk_size`` inside a
    ``lax.scan``) computes the residual ``e_k`` once and accumulates both
    ``sum e_k^2`` and the scatter-added gradient rows
    (:func:`mfjax.objective.value_and_grad`).

    Returns:
      ``(value, grad)`` with ``grad`` of the same type as ``params``.
    """
    obj = _objective(ratings, l2, scale, l2_bias, l2_weights, params, chunk_size)
    return _f.value_and_grad(obj, params)


def masked_sq_grad(params: Params, ratings: Ratings, l2=0.0, *, scale: str = "sum",
                   l2_bias=None, l2_weights=None) -> Params:
    """Closed-form gradient of :func:`masked_sq_loss` (slides eqs 5, 6), COO form.

    ``g_i = -2 s sum_{j in Omega_i} e_ij v_j + 2 l2 u_i`` (and the column
    analogue), computed with gathers and ``jax.ops.segment_sum``: O(nnz r),
    no m x n array.
    """
    return masked_sq_value_and_grad(params, ratings, l2, scale=scale, l2_bias=l2_bias,
                                    l2_weights=l2_weights)[1]


def masked_sq_grad_dense(params: Params, X, W, l2=0.0, *, scale: str = "sum",
                         l2_bias=None, l2_weights=None) -> Params:
    """Closed-form gradient, dense-mask form, as written in the slides (eqs 5, 6).

    ``dU = -2 s (W o X) V + 2 s (W o (U V^T)) V + 2 l2 U``,
    ``dV = -2 s (W o X)^T U + 2 s (W o (U V^T))^T U + 2 l2 V``
    (our ``V`` is the slides' ``V^T``); bias parts as in the module docstring.
    """
    check_l2("l2", l2)
    check_l2("l2_bias", l2_bias)
    s = data_scale(scale, jnp.sum(W))
    P = predict_dense(params)
    c = -2.0 * s
    WX, WP = W * X, W * P
    gU = c * (WX @ params.V) - c * (WP @ params.V)
    gV = c * (WX.T @ params.U) - c * (WP.T @ params.U)
    if isinstance(params, BiasedFactors):
        E = WX - WP
        data = BiasedFactors(gU, gV, c * jnp.sum(E, axis=1), c * jnp.sum(E, axis=0),
                             (c * jnp.sum(E)).astype(params.mean.dtype))
    else:
        data = Factors(gU, gV)
    reg = l2_penalty_grad(params, l2, l2_bias=l2_bias, l2_weights=l2_weights)
    return type(params)(*(a + b for a, b in zip(data, reg)))


# ------------------------------------------------------------- the factory
def masked_mse(ratings: Ratings, l2=0.0, *, scale: str = "sum", grad: str = "autodiff",
               l2_bias=None, l2_weights=None):
    """The loss as a function of the factors alone: ``loss(params) -> scalar``.

    A closure over ``mfjax.objective.mf_objective(ratings, l2, ...)``; the
    objective is also available as ``loss.objective`` (the exact line search
    and the preconditioner read it from there when built without ratings).
    To reuse one compiled program across folds or ``l2`` values, pass the
    objective as an argument instead: ``mf.fit(mf.objective.loss, opt,
    params, n, loss_args=(objective,))``.

    Args:
      ratings: training entries.
      l2: regularisation weight (>= 0); ``l2_bias``, ``l2_weights`` as in
        :func:`l2_penalty`.
      scale: ``"sum"`` or ``"mean"`` (module docstring).
      grad: ``"autodiff"`` (JAX differentiates :func:`masked_sq_loss`) or
        ``"closed_form"`` (``jax.grad`` / ``jax.value_and_grad`` of the
        returned function use the hand-derived gradient of slides eqs 5, 6
        through ``jax.custom_vjp``; the forward pass keeps the residual for
        the backward pass).  Same values either way; first-order only
        (no Hessian-vector products through ``"closed_form"``).

    Example::

        loss = mfjax.losses.masked_mse(train, l2=2.0, grad="closed_form")
        value, g = jax.value_and_grad(loss)(params)

    Raises:
      ValueError: ``l2 < 0``, unknown ``scale`` or ``grad``.
    """
    check_l2("l2", l2)
    check_l2("l2_bias", l2_bias)
    data_scale(scale, 1)
    if grad not in ("autodiff", "closed_form"):
        raise ValueError(f"grad must be 'autodiff' or 'closed_form', got {grad!r}")
    ratings = ratings.device_put()
    obj = mf_objective(ratings, l2, scale=scale, l2_bias=l2_bias, l2_weights=l2_weights)

    def _obj_for(params):
        # x64 params on float32 ratings compute in float64, as before
        dt = _dtype(ratings, params)
        return obj if obj.values.dtype == dt else _objective(ratings, l2, scale, l2_bias,
                                                            l2_weights, params)

    if grad == "autodiff":
        def loss(params: Params) -> jax.Array:
            return _f.value(_obj_for(params), params)
    else:
        def loss(params: Params) -> jax.Array:
            return _f.loss(params, _obj_for(params))

    loss.objective = obj
    return loss
