r"""Exact step of a quadratic objective along ``p`` (the row problems of vector descent).

For ``f(u) = u^T A u - 2 b^T u + c`` the line ``phi(a) = f(u + a p)`` is the
parabola ``phi(0) + a <g, p> + a^2 p^T A p``; its minimiser
``a* = -<g, p> / (2 p^T A p)`` is the kernel
:class:`~mfjax.linesearch.kernels.ExactQuadratic`.  This module is its optax
rule (one trial: no loop) and the Hessian-vector product it needs.

>>> import jax.numpy as jnp, optax
>>> A = jnp.array([[2.0, 0.0], [0.0, 1.0]]); b = jnp.array([1.0, 1.0])
>>> f = lambda u: u @ A @ u - 2 * b @ u
>>> u = jnp.zeros(2); g = jax.grad(f)(u)
>>> rule = exact_quadratic_linesearch()
>>> upd, st = rule.update(-g, rule.init(u), u, value=f(u), grad=g, value_fn=f)
>>> bool(st.info.success), bool(f(u + upd) < f(u))
(True, True)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.trees import tree_all_finite, tree_where
from mfjax.linesearch import base
from mfjax.linesearch.base import LineSearchInfo
from mfjax.linesearch.kernels import ExactQuadratic, make_origin, make_trial

__all__ = ["ExactQuadraticState", "exact_quadratic_linesearch", "hessian_curvature"]


class ExactQuadraticState(NamedTuple):
    """State of :func:`exact_quadratic_linesearch` (the step-rule protocol's fields)."""

    value: jax.Array
    grad: optax.Params
    info: LineSearchInfo


def hessian_curvature(f, params, p) -> jax.Array:
    r"""``<p, Hess f(params) p>`` by forward-over-reverse autodiff (no cancellation).

    This is :math:`\phi''(0)` of :math:`\phi(a) = f(\theta + a p)`: exact for a
    quadratic, and free of the cancellation of the finite difference
    ``f(u + p) - f(u) - <g, p>``, which in float32 loses all digits near the optimum.
    """
    _, hp = jax.jvp(jax.grad(f), (params,), (p,))
    return optax.tree.vdot(p, hp)


def exact_quadratic_linesearch() -> optax.GradientTransformationExtraArgs:
    r"""Exact line search for a quadratic objective (a step rule).

    For ``f(u) = u^T A u - 2 b^T u + c`` and a direction ``p``,
    ``f(u + a p) = f(u) + a <g, p> + a^2 p^T A p`` exactly, so the best step is

    .. math::  a^* = -\frac{\langle g, p\rangle}{2\, p^\top A p}
                   = -\frac{\langle g, p\rangle}{p^\top \nabla^2 f\, p}.

    The curvature ``p^T (2A) p`` is one Hessian-vector product of ``value_fn``
    (:func:`hessian_curvature`).  Follows the :mod:`mfjax.linesearch`
    protocol (state ``value``/``grad``/``info``); it fails (step 0,
    ``info.success`` False) when ``p`` is no descent direction, the curvature
    is not positive, the new point is not finite or its value exceeds
    ``f(u)`` by more than ``sqrt(eps) (|f(u)| + 1)`` (rounding slack).  Cost
    per update: 1 Hessian-vector product and 1 value-and-gradient evaluation
    (counted as 1 function and 2 gradient evaluations).  The step and the
    acceptance are those of :class:`~mfjax.linesearch.kernels.ExactQuadratic`.

    For a non-quadratic ``f`` it is the Newton step along ``p``.
    """
    kernel = ExactQuadratic()

    def init_fn(params):
        dt = jax.tree_util.tree_leaves(params)[0].dtype
        return ExactQuadraticState(
            jnp.asarray(jnp.inf, dt),
            jax.tree_util.tree_map(jnp.zeros_like, params),
            LineSearchInfo(jnp.asarray(0, dt), jnp.asarray(0, jnp.int32),
                           jnp.asarray(0, jnp.int32), jnp.asarray(True)),
        )

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra):
        del state
        f = functools.partial(value_fn, **extra) if extra else value_fn
        dt = jax.tree_util.tree_leaves(params)[0].dtype
        origin = make_origin(value, optax.tree.vdot(grad, updates),
                             curvature=hessian_curvature(f, params, updates))
        a, kstate = kernel.init(origin, None)
        v, g = jax.value_and_grad(f)(base.trial_point(params, a, updates))
        trial = make_trial(a, v, jnp.isfinite(v) & tree_all_finite(g))
        ok = kernel.step(kstate, trial)[0].accept
        step = jnp.where(ok, a, 0).astype(dt)
        info = LineSearchInfo(step, jnp.asarray(1, jnp.int32), jnp.asarray(2, jnp.int32), ok)
        return base.scaled_update(step, updates, ok), ExactQuadraticState(
            jnp.where(ok, v, value).astype(dt), tree_where(ok, g, grad), info)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
