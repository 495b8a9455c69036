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
transposing their V).  The COO form (:func:`masked_sq_grad`) gathers the
rows ``u_i, v_j`` of the observed entries and scatter-adds ``e_k v_j`` into
row ``i`` (``jax.ops.segment_sum``): O(nnz r) time, never an m x n array.
The COO value and gradient walk the entries in chunks of
:data:`CHUNK_SIZE` inside a ``lax.scan`` (each chunk's gathers and
scatter-adds stay in cache; on ML-1M this is several times faster than one
flat pass over all entries and than the dense-mask form, see
``benchmarks/loss_sparse_vs_dense.py``).  The dense form (:func:`masked_sq_grad_dense`) is the formula
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

import functools
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings

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


Params = Union[Factors, BiasedFactors]


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


def residuals(params: Params, ratings: Ratings) -> jax.Array:
    """``x_ij - xhat_ij`` over the observed entries."""
    return jnp.asarray(ratings.values) - predict(params, ratings.rows, ratings.cols)


# ----------------------------------------------------------------- helpers
# Entries are processed in chunks of this many inside a ``lax.scan``: the
# gathers and scatter-adds of one chunk stay in cache, which on CPU makes the
# COO loss and gradient several times faster than one flat gather / scatter
# over all nnz entries (and bounds the temporary memory).  Padding entries
# carry weight 0.
CHUNK_SIZE = 65536


def _chunked(ratings: Ratings, chunk_size: int, params: Params):
    """``(rows, cols, values, weight)``, each reshaped to (T, C), zero-padded.

    Values and weights are cast to the common dtype of values and factors.
    """
    nnz = int(ratings.values.shape[0])
    c = max(1, min(int(chunk_size), nnz))
    t = -(-nnz // c)
    pad = t * c - nnz
    vals = jnp.asarray(ratings.values)
    vals = vals.astype(jnp.result_type(vals.dtype, params.U.dtype))

    def prep(a):
        a = jnp.asarray(a)
        if pad:
            a = jnp.pad(a, (0, pad))
        return a.reshape(t, c)

    w = (jnp.arange(t * c) < nnz).astype(vals.dtype).reshape(t, c)
    return prep(ratings.rows), prep(ratings.cols), prep(vals), w


def _sum_sq_residuals(params: Params, ratings: Ratings, chunk_size: int = CHUNK_SIZE):
    """``sum_Omega (x_ij - xhat_ij)^2``, chunked over the entries."""
    rows, cols, vals, w = _chunked(ratings, chunk_size, params)

    # Rematerialised under autodiff: the backward pass recomputes each chunk's
    # gathers instead of storing all nnz x r of them (~2x faster on CPU).
    @jax.checkpoint
    def body(acc, xs):
        r, c, x, wk = xs
        e = wk * residuals(params, Ratings(r, c, x, ratings.shape))
        return acc + jnp.sum(e * e).astype(acc.dtype), None

    out, _ = jax.lax.scan(body, jnp.zeros((), vals.dtype), (rows, cols, vals, w))
    return out


def data_scale(scale: str, nnz):
    """Weight of the data term: ``1`` for ``scale="sum"`` (the slides'
    ``||W∘(X-UV)||²``), ``1/nnz`` for ``scale="mean"`` (mean squared error
    over the observed entries).  The one definition used by every loss,
    gradient and the exact line search."""
    if scale == "sum":
        return 1.0
    if scale == "mean":
        return 1.0 / nnz
    raise ValueError(f"scale must be 'sum' or 'mean', got {scale!r}")


def _check_l2(name: str, value) -> None:
    """Raise on a negative regularisation weight when it is concrete (not traced)."""
    if value is None or isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    if np.any(np.isnan(v)) or np.any(v < 0):
        raise ValueError(f"{name} (lambda) must be >= 0, got {value}")


def _rowwise_sq(A, w):
    """``sum_i w_i ||a_i||^2`` (``w=None`` -> plain ``||A||^2``)."""
    if A.ndim == 1:
        sq = A * A
    else:
        sq = jnp.sum(A * A, axis=1)
    return jnp.sum(sq) if w is None else jnp.sum(w * sq)


def l2_penalty(params: Params, l2=0.0, *, l2_bias=None, l2_weights=None) -> jax.Array:
    """The regulariser ``l2 (sum_i w_i ||u_i||^2 + sum_j w_j ||v_j||^2)``.

    Plus ``l2_bias (sum_i w_i b_i^2 + sum_j w_j c_j^2)`` for
    :class:`BiasedFactors` (``l2_bias`` defaults to ``l2``).  ``l2_weights``
    is ``None`` (all weights 1) or a pair ``(w_row (m,), w_col (n,))``.
    """
    wr, wc = (None, None) if l2_weights is None else l2_weights
    out = l2 * (_rowwise_sq(params.U, wr) + _rowwise_sq(params.V, wc))
    if isinstance(params, BiasedFactors):
        lb = l2 if l2_bias is None else l2_bias
        out = out + lb * (_rowwise_sq(params.row_bias, wr) + _rowwise_sq(params.col_bias, wc))
    return out


def _l2_grad(params: Params, l2, l2_bias, l2_weights) -> Params:
    """Gradient of :func:`l2_penalty`."""
    wr, wc = (None, None) if l2_weights is None else l2_weights

    def g(A, w, lam):
        if w is None:
            return 2.0 * lam * A
        return 2.0 * lam * (w[:, None] * A if A.ndim == 2 else w * A)

    gU, gV = g(params.U, wr, l2), g(params.V, wc, l2)
    if isinstance(params, BiasedFactors):
        lb = l2 if l2_bias is None else l2_bias
        return BiasedFactors(gU, gV, g(params.row_bias, wr, lb), g(params.col_bias, wc, lb),
                             jnp.zeros_like(params.mean))
    return Factors(gU, gV)


# ------------------------------------------------------------------ losses
def masked_sq_loss(params: Params, ratings: Ratings, l2=0.0, *, scale: str = "sum",
                   l2_bias=None, l2_weights=None) -> jax.Array:
    """COO form of ``||W o (X - U V^T)||^2 + l2 (||U||^2 + ||V||^2)`` (slides eq. 4).

    O(nnz r); no m x n array.  Accepts :class:`Factors` and
    :class:`BiasedFactors`; ``l2_bias`` / ``l2_weights`` as in
    :func:`l2_penalty`.  See the module docstring for ``scale``.

    Raises:
      ValueError: ``l2 < 0`` or ``l2_bias < 0`` (when given as concrete numbers),
        unknown ``scale``.
    """
    _check_l2("l2", l2)
    _check_l2("l2_bias", l2_bias)
    data = data_scale(scale, ratings.nnz) * _sum_sq_residuals(params, ratings)
    return data + l2_penalty(params, l2, l2_bias=l2_bias, l2_weights=l2_weights)


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
    _check_l2("l2", l2)
    _check_l2("l2_bias", l2_bias)
    R = W * (X - predict_dense(params))
    nnz = jnp.sum(W)
    data = data_scale(scale, nnz) * jnp.sum(R * R)
    return data + l2_penalty(params, l2, l2_bias=l2_bias, l2_weights=l2_weights)


# --------------------------------------------------------------- gradients
def _add(a: Params, b: Params) -> Params:
    return type(a)(*(x + y for x, y in zip(a, b)))


def _value_and_data_grad_coo(params: Params, ratings: Ratings, chunk_size: int):
    """``sum e^2`` and ``-2 sum_k e_k (d xhat_k / d params)``, chunked scatter-adds."""
    rows, cols, vals, w = _chunked(ratings, chunk_size, params)
    m, n = ratings.shape
    biased = isinstance(params, BiasedFactors)
    dt = vals.dtype

    def body(acc, xs):
        r, c, x, wk = xs
        e = wk * residuals(params, Ratings(r, c, x, ratings.shape))
        e = e.astype(dt)
        ce = -2.0 * e
        sse, gU, gV, gb, gc, gm = acc
        sse = sse + jnp.sum(e * e)
        gU = gU + jax.ops.segment_sum(ce[:, None] * params.V[c], r, num_segments=m)
        gV = gV + jax.ops.segment_sum(ce[:, None] * params.U[r], c, num_segments=n)
        if biased:
            gb = gb + jax.ops.segment_sum(ce, r, num_segments=m)
            gc = gc + jax.ops.segment_sum(ce, c, num_segments=n)
            gm = gm + jnp.sum(ce)
        return (sse, gU, gV, gb, gc, gm), None

    z = jnp.zeros((), dt)
    init = (z, jnp.zeros(params.U.shape, dt), jnp.zeros(params.V.shape, dt),
            jnp.zeros((m,), dt) if biased else z,
            jnp.zeros((n,), dt) if biased else z, z)
    (sse, gU, gV, gb, gc, gm), _ = jax.lax.scan(body, init, (rows, cols, vals, w))
    gU, gV = gU.astype(params.U.dtype), gV.astype(params.V.dtype)
    if biased:
        return sse, BiasedFactors(gU, gV, gb.astype(params.row_bias.dtype),
                                  gc.astype(params.col_bias.dtype), gm.astype(params.mean.dtype))
    return sse, Factors(gU, gV)


def masked_sq_value_and_grad(params: Params, ratings: Ratings, l2=0.0, *, scale: str = "sum",
                             l2_bias=None, l2_weights=None, chunk_size: int = CHUNK_SIZE):
    """``(f, df/dparams)`` of :func:`masked_sq_loss` by the closed form, sharing the residual.

    One pass over the entries (in chunks of ``chunk_size`` inside a
    ``lax.scan``) computes the residual ``e_k`` once and accumulates both
    ``sum e_k^2`` and the scatter-added gradient rows.

    Returns:
      ``(value, grad)`` with ``grad`` of the same type as ``params``.
    """
    _check_l2("l2", l2)
    _check_l2("l2_bias", l2_bias)
    s = data_scale(scale, ratings.nnz)
    sse, gdata = _value_and_data_grad_coo(params, ratings, chunk_size)
    value = s * sse + l2_penalty(params, l2, l2_bias=l2_bias, l2_weights=l2_weights)
    if scale != "sum":
        gdata = jax.tree_util.tree_map(lambda g: s * g, gdata)
    grad = _add(gdata, _l2_grad(params, l2, l2_bias, l2_weights))
    return value, grad


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
    _check_l2("l2", l2)
    _check_l2("l2_bias", l2_bias)
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
    return _add(data, _l2_grad(params, l2, l2_bias, l2_weights))


# ------------------------------------------------------------- the factory
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _closed_form_loss(params, ratings, l2, l2_extra, scale):
    l2_bias, l2_weights = l2_extra
    return masked_sq_loss(params, ratings, l2, scale=scale, l2_bias=l2_bias,
                          l2_weights=l2_weights)


def _closed_form_fwd(params, ratings, l2, l2_extra, scale):
    l2_bias, l2_weights = l2_extra
    value, grad = masked_sq_value_and_grad(params, ratings, l2, scale=scale, l2_bias=l2_bias,
                                           l2_weights=l2_weights)
    return value, grad


def _closed_form_bwd(scale, grad, ct):
    # Cotangents only for the factors; the data and the weights are constants.
    return (jax.tree_util.tree_map(lambda g: ct * g, grad), None, None, None)


_closed_form_loss.defvjp(_closed_form_fwd, _closed_form_bwd)


def masked_mse(ratings: Ratings, l2=0.0, *, scale: str = "sum", grad: str = "autodiff",
               l2_bias=None, l2_weights=None):
    """The loss as a function of the factors alone: ``loss(params) -> scalar``.

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
    _check_l2("l2", l2)
    _check_l2("l2_bias", l2_bias)
    data_scale(scale, 1)
    if grad not in ("autodiff", "closed_form"):
        raise ValueError(f"grad must be 'autodiff' or 'closed_form', got {grad!r}")
    ratings = ratings.device_put()

    if grad == "autodiff":
        def loss(params: Params) -> jax.Array:
            return masked_sq_loss(params, ratings, l2, scale=scale, l2_bias=l2_bias,
                                  l2_weights=l2_weights)
    else:
        def loss(params: Params) -> jax.Array:
            return _closed_form_loss(params, ratings, l2, (l2_bias, l2_weights), scale)

    return loss
