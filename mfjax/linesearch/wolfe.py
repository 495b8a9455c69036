"""Wolfe step rules that can grow the step: bisection weak Wolfe and bracketing/zoom strong Wolfe.

Both evaluate value and gradient at every trial (the curvature condition
needs ``<p, grad f(theta + alpha p)>``) inside one ``lax.while_loop``; the
accepted value and gradient are stored for reuse.  A non-finite trial counts
as a violation of sufficient decrease (the step shrinks).  On failure the
step is 0 and ``info.success`` is False (see :mod:`mfjax.linesearch.base`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.linesearch import base
from mfjax.linesearch.base import LineSearchInfo

__all__ = [
    "WolfeState",
    "weak_wolfe_bisection",
    "strong_wolfe_zoom",
    "cubic_minimizer",
]


class WolfeState(NamedTuple):
    """State of :func:`weak_wolfe_bisection` and :func:`strong_wolfe_zoom`.

    Attributes:
      step: last accepted step.
      value, grad: ``f`` and ``grad f`` at the accepted point.
      info: :class:`LineSearchInfo` of the last update.
    """

    step: Any
    value: Any
    grad: Any
    info: LineSearchInfo


def _check_wolfe(c1, c2, rule):
    base.check_unit("c1", c1, rule)
    if not (c1 < c2 < 1):
        raise ValueError(f"mfjax.linesearch.{rule}: need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")


def _finish(c, state: WolfeState, updates, dt):
    """Update and state after a search loop with carry ``c`` (fields ``i, ok,
    acc_step, value, grad``): the accepted step, or a zero update and the
    previous step when the search failed."""
    step = jnp.where(c.ok, c.acc_step, 0).astype(dt)
    new_state = WolfeState(
        step=jnp.where(c.ok, c.acc_step, state.step).astype(dt),
        value=c.value, grad=c.grad,
        info=base.make_info(step, c.i, c.i, c.ok))
    return base.scaled_update(step, updates, c.ok), new_state


def _init_fn(initial_step):
    def init_fn(params):
        dt = base.value_dtype(params)
        return WolfeState(
            step=jnp.asarray(initial_step, dt),
            value=jnp.asarray(jnp.inf, dt),
            grad=optax.tree.zeros_like(params),
            info=base.make_info(jnp.asarray(0, dt), 0, 0, True),
        )

    return init_fn


def _eval(vg, params, step, p):
    v, g = vg(base.trial_point(params, step, p))
    d = base.slope(g, p).astype(v.dtype)
    fin = jnp.isfinite(v) & jnp.isfinite(d) & base.all_finite(g)
    return v, g, d, fin


# ---------------------------------------------------------------- weak Wolfe


class _BisectCarry(NamedTuple):
    i: Any
    step: Any
    lo: Any
    hi: Any
    done: Any
    ok: Any
    acc_step: Any
    value: Any
    grad: Any


def weak_wolfe_bisection(c1: float = 1e-4, c2: float = 0.9, max_iters: int = 30,
                         initial_step: float = 1.0) -> optax.GradientTransformationExtraArgs:
    r"""Bisection search for a weak Wolfe step (slides, Algorithm 3).

    Keeps a bracket ``[a, b]`` (``a = 0``, ``b = +inf``) and a trial ``alpha``
    (``initial_step``) and repeats:

    - sufficient decrease fails,
      :math:`f(\theta+\alpha p) > f(\theta) + c_1\alpha\langle\nabla f(\theta),p\rangle`
      (or the trial is not finite): ``b = alpha``, ``alpha = (a + b) / 2``;
    - else the curvature condition fails,
      :math:`\langle p, \nabla f(\theta+\alpha p)\rangle < c_2 \langle p, \nabla f(\theta)\rangle`:
      ``a = alpha``, ``alpha = 2a`` while ``b = inf`` (the step grows), else ``(a + b) / 2``;
    - else accept ``alpha``.

    Args:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_iters: maximum number of trials.
      initial_step: first trial step.

    References:
      Lewis & Overton, "Nonsmooth optimization via quasi-Newton methods",
      Math. Programming, 2013 (the bisection weak Wolfe search);
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, eq. (3.6).
    """
    rule = "weak_wolfe_bisection"
    _check_wolfe(c1, c2, rule)
    base.check_iters(max_iters, rule)
    base.check_positive("initial_step", initial_step, rule)

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        f = base.bind_value_fn(value_fn, extra_args, rule)
        vg = jax.value_and_grad(f)
        dt = base.value_dtype(params)
        value = jnp.asarray(value, dt)
        s0 = base.slope(grad, updates).astype(dt)
        start = jnp.isfinite(value) & jnp.isfinite(s0) & (s0 < 0)
        inf = jnp.asarray(jnp.inf, dt)

        def body(c: _BisectCarry) -> _BisectCarry:
            v, g, d, fin = _eval(vg, params, c.step, updates)
            armijo = fin & (v <= value + c1 * c.step * s0)
            curv = d >= c2 * s0
            ok = armijo & curv
            hi = jnp.where(armijo, c.hi, c.step)
            lo = jnp.where(armijo & ~curv, c.step, c.lo)
            nxt = jnp.where(jnp.isinf(hi), 2 * lo, 0.5 * (lo + hi))
            i = c.i + 1
            return _BisectCarry(
                i, nxt.astype(dt), lo, hi, ok | (i >= max_iters), ok,
                jnp.where(ok, c.step, c.acc_step), jnp.where(ok, v, c.value),
                base.select_tree(ok, g, c.grad))

        zero = jnp.asarray(0, dt)
        init = _BisectCarry(jnp.asarray(0, jnp.int32), jnp.asarray(initial_step, dt), zero,
                            inf, ~start, jnp.asarray(False), zero, value, grad)
        c = jax.lax.while_loop(lambda c: ~c.done, body, init)
        return _finish(c, state, updates, dt)

    return optax.GradientTransformationExtraArgs(_init_fn(initial_step), update_fn)


# ---------------------------------------------------------------- zoom


def cubic_minimizer(a, fa, da, b, fb, db):
    r"""Minimiser of the cubic interpolating ``(a, fa, f'(a)=da)``, ``(b, fb, f'(b)=db)``.

    Nocedal & Wright (2006) eq. (3.59)::

        d1 = da + db - 3 (fa - fb) / (a - b)
        d2 = sign(b - a) sqrt(d1^2 - da db)
        x  = b - (b - a) (db + d2 - d1) / (db - da + 2 d2)

    Returns NaN when the cubic has no minimiser (negative radicand) or the
    inputs are not finite; callers fall back to bisection.
    """
    d1 = da + db - 3 * (fa - fb) / (a - b)
    rad = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.where(rad >= 0, rad, jnp.nan))
    return b - (b - a) * (db + d2 - d1) / (db - da + 2 * d2)


class _ZoomCarry(NamedTuple):
    i: Any
    step: Any          # next trial
    zoom: Any          # False: bracketing phase, True: zoom phase
    done: Any
    ok: Any
    prev: Any          # bracketing: previous trial (a_{i-1}, f, f')
    f_prev: Any
    d_prev: Any
    lo: Any            # zoom: a_lo (sufficient decrease, lowest f so far), a_hi
    f_lo: Any
    d_lo: Any
    hi: Any
    f_hi: Any
    d_hi: Any
    acc_step: Any
    value: Any
    grad: Any


def strong_wolfe_zoom(c1: float = 1e-4, c2: float = 0.9, max_iters: int = 30,
                      initial_step: float = 1.0, *, expand: float = 2.0,
                      max_step: float = float("inf"), interpolation: str = "cubic",
                      ) -> optax.GradientTransformationExtraArgs:
    r"""Strong Wolfe line search by bracketing and zoom (Nocedal & Wright, Algorithms 3.5/3.6).

    Finds ``alpha`` with

    .. math::
      f(\theta + \alpha p) \le f(\theta) + c_1 \alpha \phi'(0), \qquad
      |\phi'(\alpha)| \le c_2 |\phi'(0)|, \qquad
      \phi(\alpha) = f(\theta + \alpha p).

    Bracketing: trials ``alpha_1 = initial_step``, ``alpha_{i+1} = min(expand
    alpha_i, max_step)``, until a trial violates sufficient decrease, or is
    not below the previous value, or has ``phi' >= 0``; that brackets a strong
    Wolfe step in ``[alpha_lo, alpha_hi]``.  Zoom: the next trial is the
    minimiser of the cubic through both ends (``interpolation="cubic"``,
    safeguarded to the middle 80% of the interval, bisection when it is
    undefined) or the midpoint (``"bisection"``); the bracket is updated as in
    Algorithm 3.6.  Any trial meeting both conditions is accepted.  A
    non-finite trial counts as a sufficient-decrease violation, so it becomes
    ``alpha_hi`` and the zoom moves away from it.

    Unlike :func:`strong_wolfe` (slides, Algorithm 4) the step can grow.

    Args:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_iters: maximum number of trials (value+gradient evaluations).
      initial_step: first trial step.
      expand: growth factor of the bracketing phase (> 1).
      max_step: largest step tried; reaching it without a Wolfe step fails.
      interpolation: ``"cubic"`` or ``"bisection"``.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithms 3.5
      and 3.6, eq. (3.59); Moré & Thuente, "Line search algorithms with
      guaranteed sufficient decrease", ACM TOMS, 1994.
    """
    rule = "strong_wolfe_zoom"
    _check_wolfe(c1, c2, rule)
    base.check_iters(max_iters, rule)
    base.check_positive("initial_step", initial_step, rule)
    base.check_positive("max_step", max_step, rule)
    if not expand > 1:
        raise ValueError(f"mfjax.linesearch.{rule}: expand must be > 1, got {expand!r}")
    if interpolation not in ("cubic", "bisection"):
        raise ValueError(
            f"mfjax.linesearch.{rule}: interpolation must be 'cubic' or 'bisection', got {interpolation!r}")

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        f = base.bind_value_fn(value_fn, extra_args, rule)
        vg = jax.value_and_grad(f)
        dt = base.value_dtype(params)
        value = jnp.asarray(value, dt)
        s0 = base.slope(grad, updates).astype(dt)
        start = jnp.isfinite(value) & jnp.isfinite(s0) & (s0 < 0)
        inf = jnp.asarray(jnp.inf, dt)
        eps = jnp.finfo(dt).eps

        def next_zoom_trial(lo, f_lo, d_lo, hi, f_hi, d_hi):
            mid = 0.5 * (lo + hi)
            if interpolation == "bisection":
                return mid
            x = cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi)
            w = jnp.abs(hi - lo)
            left = jnp.minimum(lo, hi) + 0.1 * w
            right = jnp.maximum(lo, hi) - 0.1 * w
            good = jnp.isfinite(x) & (x >= left) & (x <= right)
            return jnp.where(good, x, mid)

        def body(c: _ZoomCarry) -> _ZoomCarry:
            a = c.step
            v, g, d, fin = _eval(vg, params, a, updates)
            v_ = jnp.where(fin, v, inf)
            d_ = jnp.where(fin, d, jnp.nan)
            armijo = fin & (v <= value + c1 * a * s0)
            curv = fin & (jnp.abs(d) <= -c2 * s0)
            ok = armijo & curv

            # ---- bracketing phase (Algorithm 3.5)
            b_hi = ~armijo | ((c.i > 0) & (v_ >= c.f_prev))      # zoom(prev, a)
            b_rev = ~b_hi & (d_ >= 0)                            # zoom(a, prev)
            b_zoom = b_hi | b_rev
            b_lo, b_flo, b_dlo = (jnp.where(b_hi, c.prev, a), jnp.where(b_hi, c.f_prev, v_),
                                  jnp.where(b_hi, c.d_prev, d_))
            b_hi_, b_fhi, b_dhi = (jnp.where(b_hi, a, c.prev), jnp.where(b_hi, v_, c.f_prev),
                                   jnp.where(b_hi, d_, c.d_prev))
            expanded = jnp.minimum(expand * a, max_step).astype(dt)
            b_stuck = ~b_zoom & (a >= max_step)

            # ---- zoom phase (Algorithm 3.6)
            z_hi_is_a = ~armijo | (v_ >= c.f_lo)
            z_swap = ~z_hi_is_a & (d_ * (c.hi - c.lo) >= 0)
            z_lo = jnp.where(z_hi_is_a, c.lo, a)
            z_flo = jnp.where(z_hi_is_a, c.f_lo, v_)
            z_dlo = jnp.where(z_hi_is_a, c.d_lo, d_)
            z_hi = jnp.where(z_hi_is_a, a, jnp.where(z_swap, c.lo, c.hi))
            z_fhi = jnp.where(z_hi_is_a, v_, jnp.where(z_swap, c.f_lo, c.f_hi))
            z_dhi = jnp.where(z_hi_is_a, d_, jnp.where(z_swap, c.d_lo, c.d_hi))

            zoom = c.zoom | b_zoom
            lo = jnp.where(c.zoom, z_lo, b_lo)
            f_lo = jnp.where(c.zoom, z_flo, b_flo)
            d_lo = jnp.where(c.zoom, z_dlo, b_dlo)
            hi = jnp.where(c.zoom, z_hi, b_hi_)
            f_hi = jnp.where(c.zoom, z_fhi, b_fhi)
            d_hi = jnp.where(c.zoom, z_dhi, b_dhi)
            nxt = jnp.where(zoom, next_zoom_trial(lo, f_lo, d_lo, hi, f_hi, d_hi), expanded)
            tiny = zoom & (jnp.abs(hi - lo) <= 10 * eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
            i = c.i + 1
            done = ok | (i >= max_iters) | tiny | (~c.zoom & b_stuck)
            return _ZoomCarry(
                i, nxt.astype(dt), zoom, done, ok,
                a, v_, d_, lo, f_lo, d_lo, hi, f_hi, d_hi,
                jnp.where(ok, a, c.acc_step), jnp.where(ok, v, c.value),
                base.select_tree(ok, g, c.grad))

        zero = jnp.asarray(0, dt)
        init = _ZoomCarry(
            jnp.asarray(0, jnp.int32), jnp.minimum(initial_step, max_step).astype(dt),
            jnp.asarray(False), ~start, jnp.asarray(False),
            zero, value, s0, zero, value, s0, zero, value, s0,
            zero, value, grad)
        c = jax.lax.while_loop(lambda c: ~c.done, body, init)
        return _finish(c, state, updates, dt)

    return optax.GradientTransformationExtraArgs(_init_fn(initial_step), update_fn)
