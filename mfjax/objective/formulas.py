r"""Value and closed-form gradient of the masked MF objective (slides eqs 2-6), once.

With the residual ``e_k = x_k - \hat x_k`` over the stored entries and the
data weight ``s`` (:mod:`mfjax.objective.problem`)::

    f      = s sum_k w_k e_k^2 + l2 (sum_i rho_i |u_i|^2 + sum_j gamma_j |v_j|^2) [+ bias terms]
    df/du_i = -2 s sum_{k: i_k = i} w_k e_k v_{j_k} + 2 l2 rho_i u_i
    df/dv_j = -2 s sum_{k: j_k = j} w_k e_k u_{i_k} + 2 l2 gamma_j v_j
    df/db_i = -2 s sum_{k: i_k = i} w_k e_k + 2 l2_b rho_i b_i,   df/dmean = -2 s sum_k w_k e_k

(the slides' ``-2 (W o X) V^T + 2 (W o (U V)) V^T`` is ``-2 E V`` after
transposing their V).  The entries are walked in chunks inside a ``lax.scan``
(:mod:`mfjax.core.chunks`): O(nnz r) time, no m x n array.  :func:`loss` is
the fit-ready form ``loss(params, objective)`` whose ``jax.grad`` is the
closed form (``jax.custom_vjp``), so ``mf.fit(loss, opt, params,
loss_args=(objective,))`` compiles once for every objective of the same
shape.

References:
  Beresnev, D., Klyushev, V. "Recommendation systems via approximate matrix
  factorization" (slides), Innopolis University, 2024, eqs 2-6.
  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009 (biased model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mfjax.core.chunks import chunk_entries
from mfjax.core.factors import BiasedFactors, Factors, Params, predict
from mfjax.objective.problem import MFObjective, check_factors
from mfjax.objective.sharded import entry_map

__all__ = [
    "l2_penalty",
    "l2_penalty_grad",
    "penalty",
    "penalty_grad",
    "sum_sq_residuals",
    "hyperparameters_valid",
    "value",
    "value_from_sse",
    "value_and_grad",
    "grad",
    "loss",
]


def _compute_dtype(obj: MFObjective, params: Params):
    return jnp.result_type(obj.values.dtype, params.U.dtype)


def chunks(obj: MFObjective, dtype, chunk_size: int | None = None):
    """``(rows, cols, values, weights)`` of the stored entries, each ``(T, C)``."""
    cs = obj.chunk_size if chunk_size is None else chunk_size
    return chunk_entries(obj.rows, obj.cols, obj.values.astype(dtype), chunk_size=cs,
                         weights=obj.weights, dtype=dtype)


# ------------------------------------------------------------- regulariser
def _rowwise_sq(A, w):
    sq = A * A if A.ndim == 1 else jnp.sum(A * A, axis=1)
    return jnp.sum(sq) if w is None else jnp.sum(w * sq)


def l2_penalty(params: Params, l2=0.0, *, l2_bias=None, l2_weights=None) -> jax.Array:
    """The regulariser ``l2 (sum_i w_i ||u_i||^2 + sum_j w_j ||v_j||^2)``.

    Plus ``l2_bias (sum_i w_i b_i^2 + sum_j w_j c_j^2)`` for
    :class:`~mfjax.core.factors.BiasedFactors` (``l2_bias`` defaults to
    ``l2``).  ``l2_weights`` is ``None`` (all weights 1) or a pair
    ``(w_row (m,), w_col (n,))``.
    """
    wr, wc = (None, None) if l2_weights is None else l2_weights
    out = l2 * (_rowwise_sq(params.U, wr) + _rowwise_sq(params.V, wc))
    if isinstance(params, BiasedFactors):
        lb = l2 if l2_bias is None else l2_bias
        out = out + lb * (_rowwise_sq(params.row_bias, wr) + _rowwise_sq(params.col_bias, wc))
    return out


def l2_penalty_grad(params: Params, l2=0.0, *, l2_bias=None, l2_weights=None) -> Params:
    """Gradient of :func:`l2_penalty` (same pytree type as ``params``)."""
    wr, wc = (None, None) if l2_weights is None else l2_weights

    def g(A, w, lam):
        if w is None:
            return (2.0 * lam * A).astype(A.dtype)
        return (2.0 * lam * (w[:, None] * A if A.ndim == 2 else w * A)).astype(A.dtype)

    gU, gV = g(params.U, wr, l2), g(params.V, wc, l2)
    if isinstance(params, BiasedFactors):
        lb = l2 if l2_bias is None else l2_bias
        return BiasedFactors(gU, gV, g(params.row_bias, wr, lb), g(params.col_bias, wc, lb),
                             jnp.zeros_like(params.mean))
    return Factors(gU, gV)


def penalty(obj: MFObjective, params: Params) -> jax.Array:
    """:func:`l2_penalty` with the objective's ``l2``, ``l2_bias`` and row weights."""
    return l2_penalty(params, obj.l2, l2_bias=obj.l2_bias, l2_weights=obj.l2_weights)


def penalty_grad(obj: MFObjective, params: Params) -> Params:
    """:func:`l2_penalty_grad` with the objective's hyperparameters."""
    return l2_penalty_grad(params, obj.l2, l2_bias=obj.l2_bias, l2_weights=obj.l2_weights)


# --------------------------------------------------------------- data term
def sum_sq_residuals(obj: MFObjective, params: Params, chunk_size: int | None = None):
    """``sum_k w_k (x_k - xhat_k)^2`` (unscaled), chunked; differentiable by autodiff."""
    check_factors(obj, params)
    return entry_map(lambda o, p: _local_sum_sq_residuals(o, p, chunk_size), obj, params)


def _local_sum_sq_residuals(obj: MFObjective, params: Params, chunk_size):
    dt = _compute_dtype(obj, params)
    rows, cols, vals, w = chunks(obj, dt, chunk_size)

    # Rematerialised under autodiff: the backward pass recomputes each chunk's
    # gathers instead of storing all nnz x r of them (~2x faster on CPU).
    @jax.checkpoint
    def body(acc, xs):
        r, c, x, wk = xs
        e = x - predict(params, r, c)
        return acc + jnp.sum(wk * e * e).astype(acc.dtype), None

    out, _ = jax.lax.scan(body, jnp.zeros((), dt), (rows, cols, vals, w))
    return out


def hyperparameters_valid(obj: MFObjective) -> jax.Array:
    """``True`` iff ``l2`` and ``l2_bias`` are finite and ``>= 0`` (a traced check).

    :func:`mf_objective` refuses bad concrete values with a ``ValueError``;
    values that arrive traced (``loss_args`` of ``mf.fit``, a ``jit``-ed
    sweep over ``lambda``) cannot be checked in Python, so :func:`value` and
    :func:`value_and_grad` return NaN for them instead of a plausible number
    of a problem that is unbounded below, and ``mf.fit`` stops with
    ``Status.NONFINITE`` before its first step.
    """
    return (jnp.isfinite(obj.l2) & (obj.l2 >= 0) & jnp.isfinite(obj.l2_bias)
            & (obj.l2_bias >= 0))


def _guard(obj: MFObjective, x):
    """``x`` where the hyperparameters are valid, NaN (same structure) elsewhere."""
    ok = hyperparameters_valid(obj)
    return jax.tree.map(lambda a: jnp.where(ok, a, jnp.asarray(jnp.nan, a.dtype)), x)


def value(obj: MFObjective, params: Params) -> jax.Array:
    """``f(params)`` (module docstring); JAX can differentiate it (autodiff).

    NaN when a traced ``l2`` / ``l2_bias`` is negative or non-finite
    (:func:`hyperparameters_valid`).
    """
    return value_from_sse(obj, params, sum_sq_residuals(obj, params))


def value_from_sse(obj: MFObjective, params: Params, sse) -> jax.Array:
    """``f(params)`` given its unscaled data term ``sse = sum_k w_k (x_k - xhat_k)^2``
    (computed elsewhere, e.g. by a solver that already holds the residuals)."""
    return _guard(obj, obj.data_weight * sse + penalty(obj, params))


def _data_value_and_grad(obj: MFObjective, params: Params):
    """``sum w e^2`` and ``-2 sum_k w_k e_k d xhat_k / d params`` by chunked scatter-adds."""
    check_factors(obj, params)
    return entry_map(_local_data_value_and_grad, obj, params)


def _local_data_value_and_grad(obj: MFObjective, params: Params):
    dt = _compute_dtype(obj, params)
    rows, cols, vals, w = chunks(obj, dt)
    m, n = obj.shape
    biased = isinstance(params, BiasedFactors)

    def body(acc, xs):
        r, c, x, wk = xs
        res = (x - predict(params, r, c)).astype(dt)
        we = wk * res  # w_k e_k
        ce = -2.0 * we
        sse, gU, gV, gb, gc, gm = acc
        sse = sse + jnp.sum(we * res)
        gU = gU + jax.ops.segment_sum(ce[:, None] * params.V[c], r, num_segments=m)
        gV = gV + jax.ops.segment_sum(ce[:, None] * params.U[r], c, num_segments=n)
        if biased:
            gb = gb + jax.ops.segment_sum(ce, r, num_segments=m)
            gc = gc + jax.ops.segment_sum(ce, c, num_segments=n)
            gm = gm + jnp.sum(ce)
        return (sse, gU, gV, gb, gc, gm), None

    z = jnp.zeros((), dt)
    init = (z, jnp.zeros(params.U.shape, dt), jnp.zeros(params.V.shape, dt),
            jnp.zeros((m,), dt) if biased else z, jnp.zeros((n,), dt) if biased else z, z)
    (sse, gU, gV, gb, gc, gm), _ = jax.lax.scan(body, init, (rows, cols, vals, w))
    gU, gV = gU.astype(params.U.dtype), gV.astype(params.V.dtype)
    if biased:
        return sse, BiasedFactors(gU, gV, gb.astype(params.row_bias.dtype),
                                  gc.astype(params.col_bias.dtype), gm.astype(params.mean.dtype))
    return sse, Factors(gU, gV)


def value_and_grad(obj: MFObjective, params: Params):
    """``(f, df/dparams)`` by the closed form, one pass sharing the residual.

    Returns:
      ``(value, grad)`` with ``grad`` of the same type as ``params`` (both NaN
      when a traced ``l2`` is invalid, :func:`hyperparameters_valid`).
    """
    s = obj.data_weight
    sse, gdata = _data_value_and_grad(obj, params)
    val = s * sse + penalty(obj, params)
    greg = penalty_grad(obj, params)
    g = type(params)(*((s * a + b).astype(b.dtype) for a, b in zip(gdata, greg)))
    return _guard(obj, (val, g))


def grad(obj: MFObjective, params: Params) -> Params:
    """Closed-form gradient (:func:`value_and_grad`'s second output)."""
    return value_and_grad(obj, params)[1]


# ------------------------------------------------------------ fit-ready loss
@jax.custom_vjp
def loss(params: Params, obj: MFObjective) -> jax.Array:
    """``f(params)`` as ``loss(params, objective)``; ``jax.grad`` gives the closed form.

    The objective is an ordinary (traced) argument, so one compiled program
    serves every objective of the same shape::

        obj = mfjax.objective.mf_objective(train, l2=2.0)
        res = mfjax.fit(mfjax.objective.loss, opt, params, 100, loss_args=(obj,))
        res2 = mfjax.fit(mfjax.objective.loss, opt, params, 100,
                         loss_args=(obj.replace(l2=jnp.asarray(4.0)),))  # no recompilation

    First-order only (no Hessian-vector products through the custom VJP).
    """
    return value(obj, params)


def _loss_fwd(params, obj):
    v, g = value_and_grad(obj, params)
    return v, g


def _loss_bwd(g, ct):
    # cotangents only for the factors; the data and hyperparameters are constants
    return (jax.tree_util.tree_map(lambda x: (ct * x).astype(x.dtype), g), None)


loss.defvjp(_loss_fwd, _loss_bwd)
