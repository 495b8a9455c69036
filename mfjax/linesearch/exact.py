r"""Exact line search for the masked matrix-factorization loss.

Along a direction ``(P, Q)`` the residual of an observed entry ``(i, j)`` is a
quadratic in the step ``a``::

    x_ij - (u_i + a p_i) . (v_j + a q_j) = e0 + a e1 + a^2 e2,
    e0 = x_ij - u_i . v_j,   e1 = -(p_i . v_j + u_i . q_j),   e2 = -(p_i . q_j),

so the masked loss of :mod:`mfjax.losses.masked`
``f(a) = s sum (e0 + a e1 + a^2 e2)^2 + l2 (||U + aP||^2 + ||V + aQ||^2)``
(``s = 1`` for ``scale="sum"``, ``1/|Omega|`` for ``"mean"``) is the quartic
``c0 + c1 a + c2 a^2 + c3 a^3 + c4 a^4`` with::

    c0 = s sum e0^2            + l2 (|U|^2 + |V|^2)
    c1 = 2 s sum e0 e1         + 2 l2 (<U,P> + <V,Q>)
    c2 = s sum (e1^2 + 2 e0 e2) + l2 (|P|^2 + |Q|^2)
    c3 = 2 s sum e1 e2
    c4 = s sum e2^2

One pass over the observed entries gives the three products per entry (and
five sums); no trial evaluation of ``f`` is needed.  The value at the chosen
step is the quartic itself, and the gradient there follows from the stored
products: the new residual is ``e0 + a e1 + a^2 e2`` (a second pass that only
scatter-adds, see :func:`exact_mf`).  The best step minimises
the quartic over ``a >= 0``: the real roots of the cubic ``f'(a) = 0`` (closed
form, Cardano / trigonometric), polished by Newton steps, compared by their
quartic values.  With one factor's direction zero (``e2 = 0``) the quartic is
the quadratic ``c0 + c1 a + c2 a^2`` (:func:`exact_quadratic_step`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.checks import check_l2
from mfjax.core.factors import Factors
from mfjax.linesearch import base
from mfjax.linesearch.base import LineSearchInfo
from mfjax.objective import MFObjective, as_objective
from mfjax.objective.directional import grad_from_products, quartic_coefficients, quartic_with_products
from mfjax.objective.side import SideObjective, side_grad_from_products, side_quartic_with_products

__all__ = [
    "ExactMFState",
    "exact_mf",
    "mf_quartic_coefficients",
    "minimize_quartic",
    "exact_quadratic_step",
    "polyval_increment",
]


class ExactMFState(NamedTuple):
    """State of :func:`exact_mf`: ``value``/``grad`` at the new point (or ``+inf``/zeros), ``info``."""

    value: Any
    grad: Any
    info: LineSearchInfo


def _check_factors(params, direction):
    if len(params) != 2 or len(direction) != 2:
        raise TypeError(
            f"mfjax.linesearch.exact_mf supports Factors(U, V) params, got {type(params).__name__}")


def mf_quartic_coefficients(params, direction, ratings, l2=0.0, *, scale: str = "sum",
                            l2_weights=None, chunk_size: int | None = None):
    """Coefficients ``(c0, c1, c2, c3, c4)`` of ``a -> f(U + aP, V + aQ)`` for the masked loss.

    :func:`mfjax.objective.quartic_coefficients` of ``mf_objective(ratings,
    l2, scale=scale, l2_weights=l2_weights)``: one chunked pass over the
    observed entries (module docstring).

    Args:
      params: ``Factors(U, V)``.
      direction: ``Factors(P, Q)`` (or a pair) of the same shapes.
      ratings: the observed entries (or an :class:`~mfjax.objective.MFObjective`,
        whose ``l2`` etc. are then used).
      l2, scale, l2_weights: as in :func:`mfjax.losses.masked_sq_loss`.
      chunk_size: entries per block (default: the loss's ``CHUNK_SIZE``).

    Returns:
      A length-5 array, increasing powers of ``a``.
    """
    _check_factors(params, direction)
    obj = _as_objective(ratings, l2, scale, l2_weights, chunk_size, params)
    return quartic_coefficients(obj, params, direction)


def _same_problem(c0, value, rtol: float = 1e-3):
    """``c0 = f(0)`` agrees with the loss value the loop passed (when it passed a finite one).

    A step rule built for another problem (other ratings, ``l2`` or scale)
    would otherwise report a plausible but wrong loss: the step then fails
    (``success=False``) and :func:`mfjax.fit` stops with ``linesearch_failed``.
    """
    if value is None:
        return jnp.asarray(True)
    v = jnp.asarray(value, c0.dtype)
    return ~jnp.isfinite(v) | (jnp.abs(c0 - v) <= rtol * jnp.maximum(jnp.abs(v), 1.0))


def _as_objective(ratings, l2, scale, l2_weights, chunk_size, params=None) -> MFObjective:
    return as_objective(ratings, l2, scale=scale, l2_weights=l2_weights, chunk_size=chunk_size,
                        like=params)


def polyval_increment(coeffs, a):
    """``f(a) - f(0) = a (c1 + a (c2 + a (c3 + a c4)))`` (no cancellation against ``c0``)."""
    c = coeffs
    return a * (c[1] + a * (c[2] + a * (c[3] + a * c[4])))


def exact_quadratic_step(c1, c2):
    r"""Minimiser over ``a >= 0`` of the quadratic ``c0 + c1 a + c2 a^2``.

    ``a* = -c1 / (2 c2)`` when ``c2 > 0`` and ``c1 < 0`` (a descent direction).
    This is the exact step of a row subproblem: for row ``u_i`` with ``V``
    fixed and direction ``p``, ``c1 = -2 s sum_j e0_j (p . v_j) + 2 l2 u_i . p``
    and ``c2 = s sum_j (p . v_j)^2 + l2 |p|^2``.  Elementwise, so it vmaps /
    broadcasts over a batch of rows.

    Returns:
      ``(a, success)``; ``a = 0`` and ``success = False`` when the direction is
      not a descent direction, the quadratic is not bounded below along it, or
      an input is not finite.
    """
    c1 = jnp.asarray(c1)
    c2 = jnp.asarray(c2)
    ok = jnp.isfinite(c1) & jnp.isfinite(c2) & (c1 < 0) & (c2 > 0)
    a = jnp.where(ok, -c1 / jnp.where(ok, 2 * c2, 1), 0)
    return a.astype(jnp.result_type(c1, c2)), ok


def _cubic_candidates(c1, c2, c3, c4):
    """Candidate real roots of ``c1 + 2 c2 a + 3 c3 a^2 + 4 c4 a^3`` (NaN where undefined)."""
    lead = 4 * c4
    A = 3 * c3 / lead
    B = 2 * c2 / lead
    C = c1 / lead
    # a = t - A/3:  t^3 + p t + q = 0
    p = B - A * A / 3
    q = 2 * A * A * A / 27 - A * B / 3 + C
    shift = -A / 3
    disc = (q / 2) ** 2 + (p / 3) ** 3
    # one real root (disc >= 0): Cardano
    sq = jnp.sqrt(jnp.maximum(disc, 0))
    u = jnp.cbrt(-q / 2 + sq)
    w = jnp.cbrt(-q / 2 - sq)
    t_card = u + w
    # three real roots (disc < 0, p < 0): trigonometric form
    m = 2 * jnp.sqrt(jnp.maximum(-p / 3, 0))
    # (3q / (2p)) sqrt(-3/p) = 3q / (p m)
    arg = jnp.clip(jnp.where(m > 0, 3 * q / (p * m), 0.0), -1, 1)
    phi = jnp.arccos(arg) / 3
    ts = [m * jnp.cos(phi - 2 * jnp.pi * k / 3) for k in range(3)]
    return [t_card + shift] + [t + shift for t in ts]


def minimize_quartic(coeffs, newton_steps: int = 6):
    r"""Minimiser over ``a >= 0`` of ``c0 + c1 a + c2 a^2 + c3 a^3 + c4 a^4`` (``c4 >= 0``).

    Candidates: the real roots of ``f'(a) = c1 + 2c2 a + 3c3 a^2 + 4c4 a^3``
    from the closed form (Cardano when the discriminant is positive, the
    trigonometric form otherwise; both are always computed and the invalid
    ones are harmless candidates), the quadratic step ``-c1/(2c2)`` (exact
    when ``c3 = c4 = 0``) and the roots of ``f'`` without its cubic term
    (good starts when ``c4`` is tiny and the closed form loses precision), each polished by
    ``newton_steps`` safeguarded Newton steps on ``f'`` and clipped to
    ``a >= 0``.  The candidate with the smallest ``f(a) - f(0)`` wins; if none
    decreases ``f`` (``c1 >= 0``: not a descent direction; or the quartic is
    unbounded below) the result is ``a = 0`` with ``success = False``.

    Returns:
      ``(a, decrease, success)`` with ``decrease = f(a) - f(0) <= 0``.
    """
    c = jnp.asarray(coeffs)
    dt = c.dtype
    c1, c2, c3, c4 = c[1], c[2], c[3], c[4]
    descent = jnp.isfinite(c).all() & (c1 < 0)
    quartic = c4 > 0
    cands = _cubic_candidates(c1, c2, c3, jnp.where(quartic, c4, 1))
    cands = [jnp.where(quartic, x, jnp.nan) for x in cands]
    aq, okq = exact_quadratic_step(c1, c2)
    cands.append(jnp.where(okq, aq, jnp.nan))
    # roots of f' without its cubic term (accurate starts when c4 is tiny):
    # 3 c3 a^2 + 2 c2 a + c1 = 0, in the cancellation-free form.
    qa, qb = 3 * c3, 2 * c2
    disc = qb * qb - 4 * qa * c1
    qq = -0.5 * (qb + jnp.where(qb >= 0, 1, -1) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan)))
    cands += [qq / qa, c1 / qq]

    def dfun(a):
        return c1 + a * (2 * c2 + a * (3 * c3 + a * 4 * c4))

    def d2fun(a):
        return 2 * c2 + a * (6 * c3 + a * 12 * c4)

    a = jnp.stack(cands)  # vectorised over the candidates: a small graph to compile
    for _ in range(newton_steps):
        h = d2fun(a)
        a_new = a - dfun(a) / h
        a = jnp.where(jnp.isfinite(a_new) & (h > 0), a_new, a)
    a = jnp.maximum(a, 0)
    fa = polyval_increment(c, a)
    fa = jnp.where(jnp.isfinite(fa), fa, jnp.inf)
    k = jnp.argmin(fa)
    best_a = jnp.where(fa[k] < 0, a[k], 0)
    best_f = jnp.minimum(fa[k], 0)
    success = descent & (best_a > 0) & (best_f < 0)
    return (jnp.where(success, best_a, 0).astype(dt), jnp.where(success, best_f, 0).astype(dt),
            success)


def exact_mf(ratings=None, l2=0.0, *, scale: str = "sum", l2_weights=None,
             store_grad: bool = True, chunk_size: int | None = None
             ) -> optax.GradientTransformationExtraArgs:
    r"""Exact line search for the masked MF loss: ``argmin_{a >= 0} f(U + aP, V + aQ)``.

    ``f`` must be ``mfjax.losses.masked_mse(ratings, l2, scale=scale,
    l2_weights=l2_weights)`` (same arguments; ``grad="autodiff"`` or
    ``"closed_form"``); params and the direction are ``Factors(U, V)``
    (``BiasedFactors`` are not supported).  The quartic's coefficients come from one
    pass over the observed entries (:func:`mf_quartic_coefficients`, built on
    :func:`mfjax.losses.masked.predict` / ``residuals``) and its minimiser
    from :func:`minimize_quartic`.

    Cost and diagnostics.  One update makes two passes over the observed
    entries and no trial evaluation:

    1. the coefficient pass (:func:`mf_quartic_coefficients`): gathers four
       factor rows per entry (``u_i, v_j, p_i, q_j``) where a loss evaluation
       gathers two, forms ``e0, e1, e2``, keeps them (``3 nnz`` floats, with
       ``store_grad=True``) and sums the quartic's coefficients -- reported
       as ``num_fun_evals = 2``;
    2. with ``store_grad=True`` (default), the gradient at the new point from
       the stored products: the new residual is ``e0 + a e1 + a^2 e2`` (no new
       predictions) and the data gradient is its scatter-add against the new
       rows (:func:`_grad_from_residual_pass`) -- reported as
       ``num_grad_evals = 1``.  The value at the new point is the quartic at
       ``a`` (``c0 + (f(a) - f(0))``), so no function evaluation is needed.

    Value and gradient are stored for reuse by the loop
    (:func:`optax.value_and_grad_from_state`), so an outer loop needs no other
    evaluation; they equal the loss and its closed-form gradient at the new
    point up to float rounding (tested against ``jax.grad`` in float64).
    Measured costs on ML-1M: ``benchmarks/results/linesearch.md``.  With
    ``store_grad=False`` only pass 1 runs and the state holds ``value=+inf``.
    ``value_fn`` (and any extra keyword arguments) are ignored when
    ``ratings`` is given: the loss is the masked MF loss given by
    ``ratings, l2, scale, l2_weights``.

    Side features.  With :func:`mfjax.objective.side_loss` and a
    :class:`~mfjax.objective.SideObjective` in ``loss_args`` (params
    :class:`~mfjax.objective.SideFactors` or ``SideBiasedFactors``) the
    effective factors are linear in the parameters, so ``f`` is still a
    quartic along the direction; ``exact_mf()`` then uses
    :func:`mfjax.objective.side_quartic_with_products` (same costs).

    The problem as an argument.  ``exact_mf()`` (no ratings) reads the
    objective at each update from ``value_fn.objective``: the attribute of
    :func:`mfjax.losses.masked_mse`'s closures, and what :func:`mfjax.fit`
    sets when its loss is :func:`mfjax.objective.loss` with an
    :class:`~mfjax.objective.MFObjective` in ``loss_args`` -- then one
    compiled run serves every fold and every ``l2`` of the same shape.

    Failure (``success=False``, step 0): ``c1 >= 0`` (not a descent direction,
    e.g. at a stationary point), non-finite coefficients, no decrease, or a
    rule built for another problem: the quartic's ``c0 = f(0)`` disagrees
    with the loss value the loop passes (relative 1e-3).

    Args:
      ratings: the observed entries of the loss being minimised, an
        :class:`~mfjax.objective.MFObjective`, or ``None`` (read the
        objective from ``value_fn.objective`` at each update).
      l2: regularisation ``lambda`` of the loss.
      scale: ``"sum"`` or ``"mean"`` as in the loss.
      l2_weights: optional per-row regulariser weights, as in the loss.
      store_grad: evaluate and store value and gradient at the new point.
      chunk_size: entries per block of the coefficient pass.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Sec. 3.1
      (exact line search); Rajih, Comon & Harshman, "Enhanced line search: a
      novel method to accelerate PARAFAC", SIAM J. Matrix Anal. Appl., 2008
      (the optimal step of a multilinear least-squares fit as a polynomial root).
    """
    if scale not in ("sum", "mean"):
        raise ValueError(f"scale must be 'sum' or 'mean', got {scale!r}")
    check_l2("l2", l2)
    fixed = None
    if ratings is not None:
        fixed = (ratings if isinstance(ratings, (MFObjective, SideObjective))
                 else _as_objective(ratings.device_put(), l2, scale, l2_weights, chunk_size))

    def objective_for(params, value_fn):
        obj = fixed if fixed is not None else getattr(value_fn, "objective", None)
        if isinstance(obj, SideObjective):
            return obj
        if fixed is None:
            if not isinstance(obj, MFObjective):
                raise TypeError(
                    "mfjax.linesearch.exact_mf() without ratings needs the loss's objective: "
                    "use mfjax.losses.masked_mse(...) or mfjax.fit(mfjax.objective.loss, ..., "
                    "loss_args=(objective,)), or pass ratings to exact_mf")
        dt = base.value_dtype(params)
        return obj if obj.values.dtype == dt else obj.replace(values=obj.values.astype(dt))

    def init_fn(params):
        dt = base.value_dtype(params)
        return ExactMFState(jnp.asarray(jnp.inf, dt), optax.tree.zeros_like(params),
                            base.make_info(jnp.asarray(0, dt), 0, 0, True))

    def update_fn(updates, state, params, *, value=None, grad=None, value_fn=None, **extra_args):
        del grad, extra_args  # the loss is known: f is the masked MF loss
        obj = objective_for(params, value_fn)
        dt = base.value_dtype(params)
        if isinstance(obj, SideObjective):  # side features: the same quartic in the effective factors
            coeffs, es = side_quartic_with_products(obj, params, updates, keep=store_grad)

            def grad_at(new_updates, a):
                return side_grad_from_products(obj, optax.apply_updates(params, new_updates), es, a)
        else:
            _check_factors(params, updates)
            x, direction = Factors(*params), Factors(*updates)
            if store_grad:
                coeffs, es = quartic_with_products(obj, x, direction)
            else:
                coeffs, es = quartic_coefficients(obj, x, direction), None

            def grad_at(new_updates, a):
                new_x = Factors(*(xi + ui for xi, ui in zip(x, new_updates)))
                g = grad_from_products(obj, new_x, es, a)
                return jax.tree.unflatten(jax.tree.structure(params), list(g))  # params' own pytree type
        coeffs = coeffs.astype(dt)
        a, decrease, ok = minimize_quartic(coeffs)
        ok = ok & _same_problem(coeffs[0], value)
        a = jnp.where(ok, a, jnp.zeros_like(a))
        decrease = jnp.where(ok, decrease, jnp.zeros_like(decrease))
        new_updates = base.scaled_update(a, updates, ok)
        if store_grad:
            g = grad_at(new_updates, a)
            v = coeffs[0] + decrease  # f(a) = c0 + (f(a) - f(0)); decrease = 0 on failure
            nf, ng = 2, 1
        else:
            v, g = jnp.asarray(jnp.inf, dt), optax.tree.zeros_like(params)
            nf, ng = 2, 0
        return new_updates, ExactMFState(
            jnp.asarray(v, dt), g, base.make_info(a, nf, ng, ok))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
