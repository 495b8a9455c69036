r"""The objective along a direction: a quartic in the step (for the exact line search).

Along ``(P, Q)`` the residual of a stored entry ``k = (i, j)`` is a quadratic
in the step ``a``::

    x_k - (u_i + a p_i) . (v_j + a q_j) = e0 + a e1 + a^2 e2,
    e0 = x_k - u_i . v_j,   e1 = -(p_i . v_j + u_i . q_j),   e2 = -(p_i . q_j),

so ``f(U + aP, V + aQ) = c0 + c1 a + c2 a^2 + c3 a^3 + c4 a^4`` with
(``s`` the data weight, ``w_k`` the entry weights, ``<.,.>_rho`` the
row-weighted inner products of the regulariser)::

    c0 = s sum w e0^2             + l2 (|U|^2 + |V|^2)
    c1 = 2 s sum w e0 e1          + 2 l2 (<U,P> + <V,Q>)
    c2 = s sum w (e1^2 + 2 e0 e2) + l2 (|P|^2 + |Q|^2)
    c3 = 2 s sum w e1 e2
    c4 = s sum w e2^2

One chunked pass gives the three products per entry and the five sums; the
gradient at the chosen point follows from the stored products, since the new
residual is ``e0 + a e1 + a^2 e2`` (:func:`grad_from_products`).

References:
  Rajih, Comon & Harshman, "Enhanced line search: a novel method to
  accelerate PARAFAC", SIAM J. Matrix Anal. Appl., 2008.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mfjax.core.factors import Factors, predict
from mfjax.objective.formulas import chunks, l2_penalty, penalty_grad
from mfjax.objective.problem import MFObjective, check_factors
from mfjax.objective.sharded import entry_map

__all__ = ["quartic_coefficients", "quartic_with_products", "grad_from_products"]


def _weighted_inner(A, B, w):
    """``sum_i w_i a_i . b_i`` (``w=None``: plain ``<A, B>``)."""
    if w is None:
        return jnp.vdot(A, B)
    return jnp.sum(w * jnp.sum(A * B, axis=1))


def _as_factors(params, direction) -> tuple[Factors, Factors]:
    if len(params) != 2 or len(direction) != 2:
        raise TypeError("the quartic along a direction supports Factors(U, V) params, "
                        f"got {type(params).__name__}")
    return Factors(*params), Factors(*direction)


def _local_products(obj: MFObjective, x: Factors, d: Factors, keep: bool):
    """The five data sums and (if ``keep``) the per-entry products, over this device's entries."""
    U, V = x
    P, Q = d
    dt = jnp.result_type(obj.values.dtype, U.dtype, V.dtype)
    rows, cols, vals, w = chunks(obj, dt)

    def body(acc, xs):
        r, c, xv, wk = xs
        e0 = xv - predict(x, r, c)
        e1 = -(predict(Factors(P, V), r, c) + predict(Factors(U, Q), r, c))
        e2 = -predict(d, r, c)
        w0, w1, w2 = wk * e0, wk * e1, wk * e2
        sums = jnp.stack([jnp.sum(w0 * e0), jnp.sum(w0 * e1), jnp.sum(w1 * e1 + 2 * w0 * e2),
                          jnp.sum(w1 * e2), jnp.sum(w2 * e2)])
        return acc + sums.astype(dt), (jnp.stack([e0, e1, e2]).astype(dt) if keep else None)

    sums, es = jax.lax.scan(body, jnp.zeros((5,), dt), (rows, cols, vals, w))
    return sums, es


def _pass(obj: MFObjective, x: Factors, d: Factors, keep: bool):
    check_factors(obj, x)
    check_factors(obj, d)
    U, V = x
    P, Q = d
    dt = jnp.result_type(obj.values.dtype, U.dtype, V.dtype)
    if keep:
        sums, es = entry_map(lambda o, a, b: _local_products(o, a, b, True), obj, x, d,
                             local_out=True)
    else:
        sums = entry_map(lambda o, a, b: _local_products(o, a, b, False)[0], obj, x, d)
        es = None
    wr, wc = (None, None) if obj.l2_weights is None else obj.l2_weights
    s, lam = obj.data_weight, obj.l2
    cross = _weighted_inner(U, P, wr) + _weighted_inner(V, Q, wc)
    pen0 = l2_penalty(x, lam, l2_weights=obj.l2_weights)
    pen2 = l2_penalty(d, lam, l2_weights=obj.l2_weights)
    coeffs = jnp.stack([s * sums[0] + pen0, 2 * s * sums[1] + 2 * lam * cross,
                        s * sums[2] + pen2, 2 * s * sums[3], s * sums[4]]).astype(dt)
    return coeffs, es


def quartic_coefficients(obj: MFObjective, params, direction) -> jax.Array:
    """``(c0, ..., c4)`` of ``a -> f(U + aP, V + aQ)`` (increasing powers; module docstring).

    Args:
      obj: the objective.
      params: ``Factors(U, V)``; direction: ``Factors(P, Q)`` (or pairs) of the same shapes.
    """
    x, d = _as_factors(params, direction)
    return _pass(obj, x, d, keep=False)[0]


def quartic_with_products(obj: MFObjective, params, direction):
    """:func:`quartic_coefficients` and the per-entry products ``(e0, e1, e2)``, shape (T, 3, C)."""
    x, d = _as_factors(params, direction)
    return _pass(obj, x, d, keep=True)


def grad_from_products(obj: MFObjective, new_params, products, a) -> Factors:
    r"""``grad f`` at ``new_params = (U + aP, V + aQ)`` from the stored products.

    The residual there is ``e = e0 + a (e1 + a e2)`` (no new predictions);
    the data gradient is the vector-Jacobian product of
    :func:`~mfjax.core.factors.predict` with the cotangent ``-2 s w e`` (JAX
    turns the gathers into the scatter-adds of the closed form).
    """
    new_params = Factors(*new_params)
    gdata = entry_map(_local_grad_from_products, obj, new_params, a, local_in=products)
    greg = penalty_grad(obj.replace(l2_bias=obj.l2), new_params)
    return Factors(*((x + y).astype(y.dtype) for x, y in zip(gdata, greg)))


def _local_grad_from_products(obj: MFObjective, new_params: Factors, a, products):
    dt = jnp.result_type(obj.values.dtype, new_params.U.dtype)
    rows, cols, _, w = chunks(obj, dt)
    s = obj.data_weight
    zero = optax.tree.zeros_like(new_params)

    def body(acc, xs):
        r, c, wk, e = xs
        resid = e[0] + a * (e[1] + a * e[2])
        _, vjp = jax.vjp(lambda p: predict(p, r, c), new_params)
        (g,) = vjp(((-2.0 * s) * wk * resid).astype(dt))
        return jax.tree.map(jnp.add, acc, g), None

    gdata, _ = jax.lax.scan(body, zero, (rows, cols, w, products))
    return gdata
