"""Wolfe step rules that can grow the step: bisection weak Wolfe and bracketing/zoom strong Wolfe.

Both evaluate value and gradient at every trial (the curvature condition
needs ``<p, grad f(theta + alpha p)>``); the accepted value and gradient are
stored for reuse.  Bisection is the kernel
:class:`~mfjax.linesearch.kernels.BisectionWolfe`; the bracketing/zoom
search is the kernel :class:`ZoomWolfe` defined here.  Both run in
:func:`mfjax.linesearch.search.line_search` (one ``lax.while_loop`` per
update) and in the folded row loop of vector descent.  A non-finite trial
counts as a violation of sufficient decrease (the step shrinks).  On failure
the step is 0 and ``info.success`` is False (see :mod:`mfjax.linesearch.base`).
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.linesearch import base
from mfjax.linesearch.kernels import (  # the interpolation formulas live with the kernels
    BisectionWolfe,
    cubic_minimizer,
    cubic_step,
    midpoint,
    model_hint,
    safeguarded_cubic,
    warm_start,
    extrapolation_state,
    extrapolation_step,
    Decision,
    Needs,
    Origin,
    Trial,
    predicted_decrease,
    predicted_strong_curvature,
    strong_curvature,
    sufficient_decrease,
)
from mfjax.linesearch.search import SearchState, line_search

__all__ = [
    "weak_wolfe_bisection",
    "strong_wolfe_zoom",
    "cubic_minimizer",
    "safeguarded_cubic",
    "midpoint",
    "ZoomState",
    "ZoomWolfe",
]


def __getattr__(name):
    if name == "WolfeState":
        warnings.warn("mfjax.linesearch.wolfe.WolfeState is deprecated: use "
                      "mfjax.linesearch.SearchState (the same fields)", DeprecationWarning, stacklevel=2)
        return SearchState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the extrapolating settings :data:`mfjax.linesearch.CHEAP` (issue 11): warm start ``min(2 a_prev, initial_step)``, extrapolation by 2
DEFAULT_GROWTH = 2.0
DEFAULT_EXTRAPOLATE = 2.0
#: warm start factors of :data:`mfjax.linesearch.WARM` (the interpolating settings)
WOLFE_GROWTH = 2.0
ZOOM_GROWTH = 2.0


def _check_wolfe(c1, c2, rule):
    base.check_unit("c1", c1, rule)
    if not (c1 < c2 < 1):
        raise ValueError(f"mfjax.linesearch.{rule}: need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")


# ---------------------------------------------------------------- weak Wolfe
def weak_wolfe_bisection(c1: float = 1e-4, c2: float = 0.9, max_iters: int = 30,
                         initial_step: float = 1.0, *, growth: float | None = None,
                         interpolate: bool = False,
                         extrapolate: float | None = None) -> optax.GradientTransformationExtraArgs:
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

    The kernel is :class:`~mfjax.linesearch.kernels.BisectionWolfe`.

    Extrapolating setting (issue 11, ``mfjax.linesearch.CHEAP['weak_wolfe_bisection']``,
    opt-in): the first trial is ``min(growth * previous step,
    initial_step)`` (``growth=2``) and, when it is accepted, the search
    *extrapolates*: while the trials are accepted and the quadratic model of
    the last one predicts sufficient decrease at ``extrapolate`` times it, it
    tries ``min(extrapolate * alpha, initial_step)`` and takes the longest
    accepted trial (:func:`~mfjax.linesearch.kernels.extrapolation_step`);
    a rejected first trial is followed by the bisection search.  Where the
    curvature condition holds at every trial (MF with GD: the steps are far
    below the line minimiser's) the slides' search halves from 1, and this
    takes the same step in about two trials (BENCHMARKS.md, "Step rules").
    The default is the slides' Algorithm 3 as written
    (``mfjax.linesearch.LITERAL['weak_wolfe_bisection']``: ``growth=None, extrapolate=None``):
    the extrapolating setting ends 200 GD steps 2.6% lower on ML-1M at 2.3
    instead of 13.8 passes per step, but 0.46% higher on the synthetic
    problem of ``mfjax compare``.

    With ``mfjax.linesearch.WARM['weak_wolfe_bisection']`` (``growth=2.0, interpolate=True, extrapolate=None``): the first trial is
    ``min(growth * previous step, initial_step)``, and once the bracket is
    finite the next trial is the minimiser of the cubic through both ends
    (:func:`safeguarded_cubic`: the middle 80% of the bracket, the midpoint
    where the cubic is undefined) instead of the midpoint.  The slides'
    Algorithm 3 as written (``alpha = initial_step`` every search, midpoints)
    is ``growth=None, interpolate=False, extrapolate=None``.

    Args:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_iters: maximum number of trials.
      initial_step: first trial step (and cap of the warm start).
      growth: warm start factor (e.g. 2.0), ``None`` (default) restarts at ``initial_step``.
      interpolate: cubic trials inside a finite bracket, ``False`` (default): midpoints.
      extrapolate: extrapolation factor after an accepted first trial
        (e.g. 2.0), ``None`` (default): none (the slides' algorithm).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`~mfjax.linesearch.search.SearchState`.

    References:
      Lewis & Overton, "Nonsmooth optimization via quasi-Newton methods",
      Math. Programming, 2013 (the bisection weak Wolfe search);
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, eq. (3.6).
    """
    rule = "weak_wolfe_bisection"
    _check_wolfe(c1, c2, rule)
    base.check_iters(max_iters, rule)
    base.check_positive("initial_step", initial_step, rule)
    base.check_positive("growth", growth, rule)
    base.check_extrapolate(extrapolate, rule)
    return line_search(BisectionWolfe(c1, c2, int(max_iters), initial_step, growth, bool(interpolate), extrapolate),
                       rule=rule)


# ---------------------------------------------------------------- zoom
class ZoomState(NamedTuple):
    """State of :class:`ZoomWolfe`.

    Attributes:
      origin: the line at ``a = 0``.
      zoom: False in the bracketing phase, True in the zoom phase.
      first: no trial judged yet.
      prev, f_prev, d_prev: bracketing: the previous trial and ``phi, phi'`` there.
      lo, f_lo, d_lo: zoom: ``a_lo`` (sufficient decrease, lowest ``phi`` so far).
      hi, f_hi, d_hi: zoom: the other end ``a_hi``.
    """

    origin: Origin
    zoom: jax.Array
    first: jax.Array
    prev: jax.Array
    f_prev: jax.Array
    d_prev: jax.Array
    lo: jax.Array
    f_lo: jax.Array
    d_lo: jax.Array
    hi: jax.Array
    f_hi: jax.Array
    d_hi: jax.Array


class ZoomWolfe(NamedTuple):
    """Strong Wolfe search by bracketing and zoom (Nocedal & Wright, Algorithms 3.5/3.6) as a kernel.

    See :func:`strong_wolfe_zoom` for the rule; trials need values and slopes.

    Attributes:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_trials: most trials per search.
      initial_step: first trial step.
      expand: growth factor of the bracketing phase (> 1).
      max_step: largest step tried.
      interpolate: the zoom trial ``interpolate(lo, f_lo, d_lo, hi, f_hi, d_hi)``:
        :func:`safeguarded_cubic` or :func:`midpoint`.
      growth: warm start: the first trial is ``min(growth * prev_step,
        initial_step, max_step)`` where ``prev_step`` is the minimiser of the
        cubic through ``phi, phi'`` at 0 and at the last accepted trial
        (:func:`~mfjax.linesearch.kernels.model_hint`); ``None``:
        ``initial_step`` every search (Algorithm 3.5 as written).
      extrapolate: ``None``, or the factor of an extrapolation phase after an
        accepted first trial
        (:func:`~mfjax.linesearch.kernels.extrapolation_step`).
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_trials: int = 30
    initial_step: float = 1.0
    expand: float = 2.0
    max_step: float = float("inf")
    interpolate: Callable = safeguarded_cubic
    growth: float | None = None
    extrapolate: float | None = None
    needs = Needs(slope=True)

    def init(self, origin: Origin, prev_step):
        dt = jnp.result_type(origin.value)
        zero, v, s0 = jnp.asarray(0, dt), origin.value, origin.slope
        state = ZoomState(origin, jnp.asarray(False), jnp.asarray(True),
                          zero, v, s0, zero, v, s0, zero, v, s0)
        a0 = jnp.minimum(warm_start(self.initial_step, self.growth, prev_step, dt), self.max_step).astype(dt)
        return a0, (state if self.extrapolate is None else extrapolation_state(state))

    def step(self, state, trial: Trial):
        if self.extrapolate is None:
            return self._step(state, trial)
        return extrapolation_step(self, state, trial)

    def predicts(self, c: ZoomState, trial: Trial, b) -> jax.Array:
        """Whether the models of the passing ``trial`` predict that ``b`` meets both strong Wolfe conditions."""
        return (predicted_decrease(c.origin, trial, b, self.c1)
                & predicted_strong_curvature(c.origin, trial, b, self.c2))

    def _step(self, c: ZoomState, trial: Trial):
        a, v, d, fin = trial.step, trial.value, trial.slope, trial.finite
        dt = a.dtype
        inf = jnp.asarray(jnp.inf, dt)
        v_ = jnp.where(fin, v, inf)
        d_ = jnp.where(fin, d, jnp.nan)
        armijo = fin & sufficient_decrease(c.origin, trial, self.c1)
        ok = armijo & fin & strong_curvature(c.origin, trial, self.c2)

        # ---- bracketing phase (Algorithm 3.5)
        b_hi = ~armijo | (~c.first & (v_ >= c.f_prev))     # zoom(prev, a)
        b_zoom = b_hi | (d_ >= 0)                            # else zoom(a, prev)
        b_lo, b_flo, b_dlo = (jnp.where(b_hi, c.prev, a), jnp.where(b_hi, c.f_prev, v_),
                              jnp.where(b_hi, c.d_prev, d_))
        b_hi_, b_fhi, b_dhi = (jnp.where(b_hi, a, c.prev), jnp.where(b_hi, v_, c.f_prev),
                               jnp.where(b_hi, d_, c.d_prev))
        expanded = jnp.minimum(self.expand * a, self.max_step).astype(dt)
        b_stuck = ~b_zoom & (a >= self.max_step)

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
        nxt = jnp.where(zoom, self.interpolate(lo, f_lo, d_lo, hi, f_hi, d_hi), expanded)
        eps = jnp.finfo(dt).eps
        tiny = zoom & (jnp.abs(hi - lo) <= 10 * eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
        state = ZoomState(c.origin, zoom, jnp.asarray(False), a, v_, d_, lo, f_lo, d_lo, hi, f_hi, d_hi)
        warm = None if self.growth is None else model_hint(cubic_step(c.origin, trial), trial).astype(dt)
        return Decision(ok, nxt.astype(dt), tiny | (~c.zoom & b_stuck), warm), state


_INTERPOLATIONS = {"cubic": safeguarded_cubic, "bisection": midpoint}


def strong_wolfe_zoom(c1: float = 1e-4, c2: float = 0.9, max_iters: int = 30,
                      initial_step: float = 1.0, *, expand: float = 2.0,
                      max_step: float = float("inf"), interpolation: str = "cubic",
                      growth: float | None = None,
                      extrapolate: float | None = None) -> optax.GradientTransformationExtraArgs:
    r"""Strong Wolfe line search by bracketing and zoom (Nocedal & Wright, Algorithms 3.5/3.6).

    Finds ``alpha`` with

    .. math::
      f(\theta + \alpha p) \le f(\theta) + c_1 \alpha \phi'(0), \qquad
      |\phi'(\alpha)| \le c_2 |\phi'(0)|, \qquad
      \phi(\alpha) = f(\theta + \alpha p).

    Bracketing: trials ``alpha_1 = min(growth * previous step, initial_step,
    max_step)`` (the default ``growth=None``: ``initial_step`` every search,
    Algorithm 3.5 as written; ``growth=2.0`` in ``CHEAP``), ``alpha_{i+1} = min(expand
    alpha_i, max_step)``, until a trial violates sufficient decrease, or is
    not below the previous value, or has ``phi' >= 0``; that brackets a strong
    Wolfe step in ``[alpha_lo, alpha_hi]``.  Zoom: the next trial is the
    minimiser of the cubic through both ends (``interpolation="cubic"``,
    safeguarded to the middle 80% of the interval, bisection when it is
    undefined) or the midpoint (``"bisection"``); the bracket is updated as in
    Algorithm 3.6.  Any trial meeting both conditions is accepted.  A
    non-finite trial counts as a sufficient-decrease violation, so it becomes
    ``alpha_hi`` and the zoom moves away from it.  The kernel is :class:`ZoomWolfe`.

    ``extrapolate=2.0`` (issue 11, with ``growth=2.0``: ``mfjax.linesearch.CHEAP['strong_wolfe_zoom']``,
    opt-in: 2.66-2.74 passes per step, above the 2.5 target): a first trial that meets both
    conditions is kept and, while the models of the last accepted trial
    predict both conditions at twice it, twice it is tried; the longest
    accepted trial is taken (:func:`~mfjax.linesearch.kernels.extrapolation_step`).
    Algorithm 3.5 as written (every search from ``initial_step``, a strong
    Wolfe trial taken at once) is ``**mfjax.linesearch.LITERAL['strong_wolfe_zoom']``:
    ``growth=None, extrapolate=None``.

    Unlike :func:`strong_wolfe` (slides, Algorithm 4) the step can grow.

    Args:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_iters: maximum number of trials (value+gradient evaluations).
      initial_step: first trial step.
      expand: growth factor of the bracketing phase (> 1).
      max_step: largest step tried; reaching it without a Wolfe step fails.
      interpolation: ``"cubic"`` or ``"bisection"``.
      growth: warm start factor (e.g. 2.0), ``None`` (default) restarts at ``initial_step``.
      extrapolate: extrapolation factor after an accepted first trial
        (e.g. 2.0), ``None`` (default): none (Algorithm 3.5 as written).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`~mfjax.linesearch.search.SearchState`.

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
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"mfjax.linesearch.{rule}: interpolation must be 'cubic' or 'bisection', got {interpolation!r}")
    base.check_positive("growth", growth, rule)
    base.check_extrapolate(extrapolate, rule)
    kernel = ZoomWolfe(c1, c2, int(max_iters), initial_step, expand, max_step,
                       _INTERPOLATIONS[interpolation], growth, extrapolate)
    return line_search(kernel, rule=rule)
