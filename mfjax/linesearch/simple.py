"""Step rules without trial evaluations: constant, 1/sqrt(k), adaptive gradient descent.

They never evaluate ``f`` at the new point, so their state stores
``value=+inf`` (and a zero ``grad``): :func:`optax.value_and_grad_from_state`
and the mfjax loop then recompute ``f`` and ``grad f`` at the new point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from mfjax.linesearch import base
from mfjax.linesearch.base import LineSearchInfo

__all__ = [
    "ConstantState",
    "InverseSqrtState",
    "AdaptiveGDState",
    "constant",
    "inverse_sqrt",
    "adaptive_gd",
]


class ConstantState(NamedTuple):
    """State of :func:`constant` (``value=+inf``: nothing evaluated)."""

    value: Any
    grad: Any
    info: LineSearchInfo


class InverseSqrtState(NamedTuple):
    """State of :func:`inverse_sqrt`: ``count`` = updates done so far."""

    count: Any
    value: Any
    grad: Any
    info: LineSearchInfo


class AdaptiveGDState(NamedTuple):
    """State of :func:`adaptive_gd`.

    Attributes:
      count: updates done so far.
      prev_params, prev_grad: ``x_{t-1}`` and ``grad f(x_{t-1})``.
      prev_step: ``lambda_{t-1}``.
      theta: ``theta_{t-1} = lambda_{t-1} / lambda_{t-2}`` (``+inf`` initially).
      value, grad: ``+inf`` and zeros (the new point is not evaluated).
      info: :class:`LineSearchInfo`.
    """

    count: Any
    prev_params: Any
    prev_grad: Any
    prev_step: Any
    theta: Any
    value: Any
    grad: Any
    info: LineSearchInfo


def _unknown(params):
    dt = base.value_dtype(params)
    return jnp.asarray(jnp.inf, dt), optax.tree.zeros_like(params)


def constant(step_size: float) -> optax.GradientTransformationExtraArgs:
    r"""Constant step: returns ``step_size * p``.

    .. math:: \theta_{k+1} = \theta_k + \gamma p_k

    Accepts (and ignores) ``value``/``grad``/``value_fn`` so that it drops into
    the same chains as the searching rules.  ``info.success`` is False only when
    the scaled update is not finite (then the update is zero).

    References:
      Slides "Recommendation systems via approximate matrix factorization"
      (Beresnev, Klyushev, 2024), "Constant + decreasing".
    """
    base.check_positive("step_size", step_size, "constant")

    def init_fn(params):
        v, g = _unknown(params)
        dt = base.value_dtype(params)
        return ConstantState(v, g, base.make_info(jnp.asarray(step_size, dt), 0, 0, True))

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None,
                  **extra_args):
        dt = base.value_dtype(updates)
        step = jnp.asarray(step_size, dt)
        ok = base.all_finite(updates)
        v, g = _unknown(updates)
        return base.scaled_update(step, updates, ok), ConstantState(
            v, g, base.make_info(jnp.where(ok, step, 0).astype(dt), 0, 0, ok))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def inverse_sqrt(step_size: float = 1.0) -> optax.GradientTransformationExtraArgs:
    r"""Decreasing step ``gamma_k = gamma_0 / sqrt(k)``, ``k = 1, 2, ...`` counted in the state.

    .. math:: \theta_{k} = \theta_{k-1} + \frac{\gamma_0}{\sqrt{k}} p_k

    References:
      Slides (Beresnev, Klyushev, 2024), "Constant + decreasing";
      Nesterov, "Introductory Lectures on Convex Optimization", 2004, Sec. 3.2.3.
    """
    base.check_positive("step_size", step_size, "inverse_sqrt")

    def init_fn(params):
        v, g = _unknown(params)
        dt = base.value_dtype(params)
        return InverseSqrtState(jnp.asarray(0, jnp.int32), v, g,
                                base.make_info(jnp.asarray(step_size, dt), 0, 0, True))

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None,
                  **extra_args):
        dt = base.value_dtype(updates)
        k = state.count + 1
        step = (step_size / jnp.sqrt(k.astype(dt))).astype(dt)
        ok = base.all_finite(updates)
        v, g = _unknown(updates)
        return base.scaled_update(step, updates, ok), InverseSqrtState(
            k, v, g, base.make_info(jnp.where(ok, step, 0).astype(dt), 0, 0, ok))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adaptive_gd(initial_step: float = 1e-6) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive gradient descent without descent (Malitsky & Mishchenko, 2020; slides Algorithm 6).

    With ``x_t`` = params and ``g_t = grad f(x_t)`` (the ``grad`` argument),
    the step applied to the direction at update ``t`` is

    .. math::
      \lambda_0 = \text{initial\_step}, \qquad
      \lambda_t = \min\Big\{\sqrt{1+\theta_{t-1}}\,\lambda_{t-1},\;
                  \frac{\|x_t - x_{t-1}\|}{2\|g_t - g_{t-1}\|}\Big\}, \qquad
      \theta_t = \lambda_t / \lambda_{t-1},

    with ``theta_0 = +inf`` (so ``lambda_1`` is the local ``1/(2L)`` estimate).
    This is the corrected formula: the slides print
    ``sqrt(1 + theta_{t-1} lambda_{t-1})``.  With the direction ``p = -g`` it
    is exactly the authors' method; with another direction the step size still
    comes from the gradients.  No evaluations: the state keeps ``x_{t-1}`` and
    ``g_{t-1}``.  If the minimum is not finite (``g_t = g_{t-1}`` at the very
    first adaptive step) the previous ``lambda`` is kept.

    References:
      Malitsky & Mishchenko, "Adaptive gradient descent without descent",
      ICML 2020, Algorithm 1.
    """
    base.check_positive("initial_step", initial_step, "adaptive_gd")

    def init_fn(params):
        v, g = _unknown(params)
        dt = base.value_dtype(params)
        return AdaptiveGDState(
            count=jnp.asarray(0, jnp.int32), prev_params=params,
            prev_grad=optax.tree.zeros_like(params), prev_step=jnp.asarray(initial_step, dt),
            theta=jnp.asarray(jnp.inf, dt), value=v, grad=g,
            info=base.make_info(jnp.asarray(initial_step, dt), 0, 0, True))

    def update_fn(updates, state, params, *, value=None, grad, value_fn=None, **extra_args):
        dt = base.value_dtype(params)
        dx = optax.tree.norm(optax.tree.sub(params, state.prev_params))
        dg = optax.tree.norm(optax.tree.sub(grad, state.prev_grad))
        local = dx / (2 * dg)
        grown = jnp.sqrt(1 + state.theta) * state.prev_step
        lam = jnp.minimum(grown, jnp.where(jnp.isnan(local), jnp.inf, local))
        lam = jnp.where(jnp.isfinite(lam) & (lam > 0), lam, state.prev_step)
        lam = jnp.where(state.count == 0, jnp.asarray(initial_step, dt), lam).astype(dt)
        theta = jnp.where(state.count == 0, jnp.asarray(jnp.inf, dt), lam / state.prev_step)
        ok = base.all_finite(updates) & base.all_finite(grad)
        v, g = _unknown(params)
        new_state = AdaptiveGDState(
            count=state.count + 1, prev_params=params, prev_grad=grad, prev_step=lam,
            theta=theta.astype(dt), value=v, grad=g,
            info=base.make_info(jnp.where(ok, lam, 0).astype(dt), 0, 0, ok))
        return base.scaled_update(lam, updates, ok), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
