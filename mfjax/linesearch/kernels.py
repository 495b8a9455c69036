r"""Search kernels: one pure description per step rule, shared by every driver.

A line search looks at the one-dimensional function
:math:`\phi(a) = f(\theta + a p)` along a descent direction ``p``.  A
*kernel* says where to try next and when to stop; it never evaluates ``f``
itself.  Two drivers run the kernels:

* :func:`mfjax.linesearch.search.line_search` -- the optax
  ``GradientTransformationExtraArgs`` (one ``lax.while_loop`` per update),
  behind :func:`~mfjax.linesearch.armijo`, :func:`~mfjax.linesearch.strong_wolfe_zoom`, ...;
* the folded per-row loop of vector descent
  (:func:`mfjax.solvers.rowwise.folded`), where one loop iteration is one trial
  and an accepted trial starts the next direction.

Protocol (the optimistix ``AbstractSearch`` idea, with the evaluations left
to the driver).  A kernel is a hashable NamedTuple of its parameters (so a
solver holding one is a valid static ``jit`` argument and equal kernels do
not recompile) with

* ``max_trials``: int, most trials of one search;
* ``needs``: :class:`Needs`, what the driver must measure;
* ``init(origin, prev_step) -> (step, state)``: the first trial step of a
  search starting at :class:`Origin` (``prev_step``: the last accepted step,
  for warm starts) and the kernel's state;
* ``step(state, trial) -> (Decision, state)``: judge one :class:`Trial`.

The conditions below are written once and used by every kernel:

.. math::
  \text{sufficient decrease (Armijo):}\quad \phi(a) \le \phi(0) + c_1 a \phi'(0),

  \text{weak curvature:}\quad \phi'(a) \ge c_2 \phi'(0), \qquad
  \text{strong curvature:}\quad |\phi'(a)| \le c_2 |\phi'(0)|.

A kernel's ``step`` rejects a trial that is not finite.  Drivers start a
search only from a finite descent direction (:func:`can_start`).

>>> import jax.numpy as jnp
>>> k = Backtracking(SufficientDecrease(c1=0.5), beta=0.5)
>>> origin = Origin(value=jnp.asarray(1.0), slope=jnp.asarray(-2.0))
>>> a, state = k.init(origin, None)
>>> trial = Trial(step=a, value=jnp.asarray(0.5), finite=jnp.asarray(True))
>>> decision, state = k.step(state, trial)     # 0.5 > 1 - 0.5 * 1 * 2 = 0: reject
>>> bool(decision.accept), float(decision.next_step)
(False, 0.5)

References:
  Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Ch. 3.
  Rader, Lyons, Kidger, "Optimistix: modular optimisation in JAX and
  Equinox", 2024 (searches as objects with ``init``/``step``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from mfjax.linesearch.exact import exact_quadratic_step

__all__ = [
    "Needs",
    "Origin",
    "Trial",
    "Decision",
    "SearchKernel",
    "make_origin",
    "make_trial",
    "can_start",
    "sufficient_decrease",
    "weak_curvature",
    "strong_curvature",
    "bisection_bracket",
    "SufficientDecrease",
    "StrongWolfeConditions",
    "LipschitzEstimate",
    "Backtracking",
    "BisectionWolfe",
    "ExactQuadratic",
    "rounding_slack",
]

_NAN = float("nan")


class Needs(NamedTuple):
    """What a kernel reads, so a driver measures only that (static flags).

    Attributes:
      slope: trials need ``phi'(a) = <grad f(theta + a p), p>``.
      grad_change: trials need ``||grad f(theta + a p) - grad f(theta)||``
        and the origin ``||p||``.
      curvature: the origin needs ``phi''(0) = <p, Hess f(theta) p>``
        (one Hessian-vector product, counted as a gradient evaluation).
    """

    slope: bool = False
    grad_change: bool = False
    curvature: bool = False

    @property
    def trial_grad(self) -> bool:
        """Whether every trial must evaluate the gradient."""
        return self.slope or self.grad_change


class Origin(NamedTuple):
    """The line at ``a = 0``; fields a kernel does not need are NaN.

    Attributes:
      value: ``phi(0) = f(theta)``.
      slope: ``phi'(0) = <grad f(theta), p>``.
      direction_norm: ``||p||`` (for :class:`LipschitzEstimate`).
      curvature: ``phi''(0) = <p, Hess f(theta) p>`` (for :class:`ExactQuadratic`).
    """

    value: jax.Array
    slope: jax.Array
    direction_norm: jax.Array = _NAN
    curvature: jax.Array = _NAN


class Trial(NamedTuple):
    """One evaluated trial step; fields the kernel does not need are NaN.

    Attributes:
      step: the trial ``a``.
      value: ``phi(a)``.
      finite: the value (and the gradient, when evaluated) is finite.
      slope: ``phi'(a)``.
      grad_change: ``||grad f(theta + a p) - grad f(theta)||``.
    """

    step: jax.Array
    value: jax.Array
    finite: jax.Array
    slope: jax.Array = _NAN
    grad_change: jax.Array = _NAN


class Decision(NamedTuple):
    """A kernel's verdict on a trial.

    Attributes:
      accept: take the trial step.
      next_step: the next trial step when not accepted.
      stop: give up now (no further trial; a failure unless ``accept``).
    """

    accept: jax.Array
    next_step: jax.Array
    stop: jax.Array


@runtime_checkable
class SearchKernel(Protocol):
    """The kernel protocol (see the module docstring)."""

    max_trials: int

    @property
    def needs(self) -> Needs: ...

    def init(self, origin: Origin, prev_step) -> tuple[jax.Array, Any]: ...

    def step(self, state, trial: Trial) -> tuple[Decision, Any]: ...


def make_origin(value, slope, *, direction_norm=None, curvature=None) -> Origin:
    """An :class:`Origin` with every field an array of ``value``'s dtype (NaN when not given)."""
    dt = jnp.result_type(value)
    nan = jnp.asarray(jnp.nan, dt)
    fill = lambda x: nan if x is None else jnp.asarray(x).astype(dt)
    return Origin(jnp.asarray(value, dt), jnp.asarray(slope).astype(dt), fill(direction_norm),
                  fill(curvature))


def make_trial(step, value, finite, *, slope=None, grad_change=None) -> Trial:
    """A :class:`Trial` with every field an array (NaN of ``value``'s dtype when not given)."""
    dt = jnp.result_type(value)
    nan = jnp.asarray(jnp.nan, dt)
    fill = lambda x: nan if x is None else jnp.asarray(x).astype(dt)
    return Trial(step, value, finite, fill(slope), fill(grad_change))


# ------------------------------------------------------------- conditions
def can_start(origin: Origin) -> jax.Array:
    """A search starts only from a finite value along a finite descent direction (``phi'(0) < 0``)."""
    return jnp.isfinite(origin.value) & jnp.isfinite(origin.slope) & (origin.slope < 0)


def sufficient_decrease(origin: Origin, trial: Trial, c1) -> jax.Array:
    r"""Armijo: :math:`\phi(a) \le \phi(0) + c_1 a \phi'(0)` (finiteness not included)."""
    return trial.value <= origin.value + c1 * trial.step * origin.slope


def weak_curvature(origin: Origin, trial: Trial, c2) -> jax.Array:
    r"""Weak Wolfe curvature: :math:`\phi'(a) \ge c_2 \phi'(0)`."""
    return trial.slope >= c2 * origin.slope


def strong_curvature(origin: Origin, trial: Trial, c2) -> jax.Array:
    r"""Strong Wolfe curvature: :math:`|\phi'(a)| \le c_2 |\phi'(0)|`."""
    return jnp.abs(trial.slope) <= c2 * jnp.abs(origin.slope)


def bisection_bracket(lo, hi, a, decrease, curvature):
    """Bracket update of the bisection weak Wolfe search (slides, Algorithm 3).

    Sufficient decrease fails: ``hi = a``; else curvature fails: ``lo = a``.
    Next trial ``2 lo`` while ``hi = inf`` (the step grows), else ``(lo + hi) / 2``.

    Returns:
      ``(lo, hi, next_step)``.
    """
    hi = jnp.where(decrease, hi, a)
    lo = jnp.where(decrease & ~curvature, a, lo)
    return lo, hi, jnp.where(jnp.isinf(hi), 2 * lo, 0.5 * (lo + hi))


def rounding_slack(value) -> jax.Array:
    """``sqrt(eps) (|value| + 1)``: how much a value may rise by rounding alone."""
    eps = jnp.finfo(jnp.result_type(value)).eps
    return jnp.sqrt(eps) * (jnp.abs(value) + 1.0)


# ---------------------------------------------- acceptance tests (shrink)
class SufficientDecrease(NamedTuple):
    """Accept on the Armijo condition (slides, Algorithm 2); trials need values only."""

    c1: float = 1e-4
    needs = Needs()

    def __call__(self, origin: Origin, trial: Trial) -> jax.Array:
        return sufficient_decrease(origin, trial, self.c1)


class StrongWolfeConditions(NamedTuple):
    """Accept on sufficient decrease and strong curvature (slides, Algorithm 4)."""

    c1: float = 1e-4
    c2: float = 0.9
    needs = Needs(slope=True)

    def __call__(self, origin: Origin, trial: Trial) -> jax.Array:
        return sufficient_decrease(origin, trial, self.c1) & strong_curvature(origin, trial, self.c2)


class LipschitzEstimate(NamedTuple):
    r"""Accept when :math:`\|\nabla f(\theta) - \nabla f(\theta + a p)\| \le \|a p\| / a = \|p\|`.

    The local Lipschitz estimate ``L = ||Delta grad|| / ||a p||`` then satisfies
    ``a <= 1 / L`` (slides, Algorithm 1); ``f`` is not looked at.
    """

    needs = Needs(grad_change=True)

    def __call__(self, origin: Origin, trial: Trial) -> jax.Array:
        return trial.grad_change <= origin.direction_norm


# ------------------------------------------------------------- kernels
class Backtracking(NamedTuple):
    """Shrink-only search: try ``a_0, beta a_0, beta^2 a_0, ...`` until ``condition`` holds.

    ``a_0 = initial_step``, or with ``growth`` the warm start
    ``min(growth * prev_step, initial_step)``.  Stops (failure) when the next
    trial would fall below ``min_step``.  With :class:`SufficientDecrease`
    this is Algorithm 2, with :class:`LipschitzEstimate` Algorithm 1, with
    :class:`StrongWolfeConditions` Algorithm 4 of the slides.

    Attributes:
      condition: the acceptance test, called as ``condition(origin, trial)``.
      beta: shrink factor in (0, 1).
      max_trials: most trials per search.
      initial_step: first trial step (and cap of the warm start).
      growth: warm start factor, ``None`` for a cold start every search.
      min_step: smallest trial step.
    """

    condition: Any = SufficientDecrease()
    beta: float = 0.5
    max_trials: int = 30
    initial_step: float = 1.0
    growth: float | None = None
    min_step: float = 0.0

    @property
    def needs(self) -> Needs:
        return self.condition.needs

    def init(self, origin: Origin, prev_step):
        dt = jnp.result_type(origin.value)
        if self.growth is None or prev_step is None:
            step = jnp.asarray(self.initial_step, dt)
        else:
            step = jnp.minimum(self.growth * prev_step, self.initial_step).astype(dt)
        return step, origin

    def step(self, origin: Origin, trial: Trial):
        accept = trial.finite & self.condition(origin, trial)
        nxt = (self.beta * trial.step).astype(trial.step.dtype)
        return Decision(accept, nxt, nxt < self.min_step), origin


class BisectionState(NamedTuple):
    """State of :class:`BisectionWolfe`: the origin and the bracket ``[lo, hi]``."""

    origin: Origin
    lo: jax.Array
    hi: jax.Array


class BisectionWolfe(NamedTuple):
    """Bisection search for a weak Wolfe step (slides, Algorithm 3).

    Bracket ``[0, inf]``, updated by :func:`bisection_bracket` with the
    sufficient-decrease (a non-finite trial violates it) and weak-curvature
    tests; accept when both hold.  Trials need values and slopes.

    Attributes:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_trials: most trials per search.
      initial_step: first trial step of every search.
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_trials: int = 30
    initial_step: float = 1.0
    needs = Needs(slope=True)

    def init(self, origin: Origin, prev_step):
        dt = jnp.result_type(origin.value)
        zero, inf = jnp.asarray(0, dt), jnp.asarray(jnp.inf, dt)
        return jnp.asarray(self.initial_step, dt), BisectionState(origin, zero, inf)

    def step(self, state: BisectionState, trial: Trial):
        decrease = trial.finite & sufficient_decrease(state.origin, trial, self.c1)
        curv = weak_curvature(state.origin, trial, self.c2)
        lo, hi, nxt = bisection_bracket(state.lo, state.hi, trial.step, decrease, curv)
        dt = trial.step.dtype
        return (Decision(decrease & curv, nxt.astype(dt), jnp.asarray(False)),
                BisectionState(state.origin, lo, hi))


class ExactState(NamedTuple):
    """State of :class:`ExactQuadratic`: ``phi(0)`` and whether the exact step exists."""

    value: jax.Array
    ok: jax.Array


class ExactQuadratic(NamedTuple):
    r"""The exact step of a quadratic along ``p``: one trial.

    For :math:`\phi(a) = \phi(0) + a \phi'(0) + \tfrac12 a^2 \phi''(0)`,

    .. math::  a^* = -\frac{\phi'(0)}{\phi''(0)}
                   = -\frac{\langle g, p\rangle}{p^\top \nabla^2 f\, p}

    (:func:`mfjax.linesearch.exact.exact_quadratic_step`), which needs
    ``Origin.curvature``.  The trial is accepted when the step exists
    (descent, positive finite curvature), the trial is finite and
    ``phi(a*) <= phi(0) + sqrt(eps) (|phi(0)| + 1)`` (rounding slack).  For
    a non-quadratic ``f`` it is the Newton step along ``p``.
    """

    max_trials: int = 1
    needs = Needs(curvature=True)

    def step_size(self, origin: Origin):
        """``(a*, ok)`` from the origin's slope and curvature."""
        return exact_quadratic_step(origin.slope, 0.5 * origin.curvature)

    def init(self, origin: Origin, prev_step):
        a, ok = self.step_size(origin)
        return a, ExactState(origin.value, ok)

    def step(self, state: ExactState, trial: Trial):
        accept = state.ok & trial.finite & (trial.value <= state.value + rounding_slack(state.value))
        return Decision(accept, trial.step, jnp.asarray(True)), state
