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
    "predicted_decrease",
    "predicted_strong_curvature",
    "decrease_boundary",
    "grid_below",
    "bisection_bracket",
    "cubic_minimizer",
    "safeguarded_cubic",
    "midpoint",
    "quadratic_step",
    "model_hint",
    "cubic_step",
    "safeguard",
    "warm_start",
    "SufficientDecrease",
    "StrongWolfeConditions",
    "LipschitzEstimate",
    "Backtracking",
    "ExtrapolationState",
    "extrapolation_state",
    "extrapolation_step",
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
      warm: what the *next* search's ``init`` receives as ``prev_step`` when
        this trial is accepted; ``None`` (the default): the accepted step.
        :class:`Backtracking` with :class:`LipschitzEstimate` and
        ``interpolate=True`` passes ``1 / L_loc`` measured at the accepted trial.
      keep: ``None`` (the default) or whether the trial passes but the search
        goes on to try a longer step (an extrapolation phase): the driver keeps
        the trial (step, value, gradient, ``warm``) as the step it takes if the
        search ends (``stop``, or out of trials) without a later accepted or
        kept trial.
    """

    accept: jax.Array
    next_step: jax.Array
    stop: jax.Array
    warm: Any = None
    keep: Any = None


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


def predicted_decrease(origin: Origin, trial: Trial, b, c1) -> jax.Array:
    r"""Whether the quadratic through :math:`\phi(0), \phi'(0), \phi(a)` meets the Armijo condition at ``b``.

    With :math:`C = (\phi(a) - \phi(0) - \phi'(0) a) / a^2` the model is
    :math:`\phi(0) + \phi'(0) b + C b^2`, so the test is
    :math:`C b \le -(1 - c_1) \phi'(0)` (always true for ``C <= 0``).
    False where the trial is not finite.
    """
    a = trial.step
    curv = (trial.value - origin.value - origin.slope * a) / (a * a)
    return trial.finite & (curv * b <= -(1 - c1) * origin.slope)


def predicted_strong_curvature(origin: Origin, trial: Trial, b, c2) -> jax.Array:
    r"""Whether the slope interpolated linearly through :math:`\phi'(0), \phi'(a)` meets strong curvature at ``b``."""
    a = trial.step
    d = origin.slope + (trial.slope - origin.slope) * (b / a)
    return trial.finite & (jnp.abs(d) <= c2 * jnp.abs(origin.slope))


def decrease_boundary(origin: Origin, trial: Trial, c1) -> jax.Array:
    r"""The step where the quadratic of :func:`predicted_decrease` leaves the Armijo condition:
    :math:`b^* = (1 - c_1)(-\phi'(0)) / C` (NaN where ``C <= 0`` or the trial is not finite)."""
    a = trial.step
    curv = (trial.value - origin.value - origin.slope * a) / (a * a)
    ok = trial.finite & (curv > 0)
    return jnp.where(ok, -(1 - c1) * origin.slope / jnp.where(ok, curv, 1.0), jnp.nan)


def grid_below(x, initial_step, beta) -> jax.Array:
    """The largest ``initial_step * beta^k <= x`` (``k >= 0``); NaN where ``x`` is not finite and positive."""
    k = jnp.ceil(jnp.log(x / initial_step) / jnp.log(beta))
    ok = jnp.isfinite(x) & (x > 0)
    return jnp.where(ok, initial_step * beta ** jnp.maximum(jnp.where(ok, k, 0), 0), jnp.nan)


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


def midpoint(lo, f_lo, d_lo, hi, f_hi, d_hi):
    """Zoom trial by bisection: ``(lo + hi) / 2``."""
    return 0.5 * (lo + hi)


def safeguarded_cubic(lo, f_lo, d_lo, hi, f_hi, d_hi):
    """Zoom trial: :func:`cubic_minimizer` when it lies in the middle 80% of the bracket, else the midpoint."""
    mid = 0.5 * (lo + hi)
    x = cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi)
    w = jnp.abs(hi - lo)
    left = jnp.minimum(lo, hi) + 0.1 * w
    right = jnp.maximum(lo, hi) - 0.1 * w
    good = jnp.isfinite(x) & (x >= left) & (x <= right)
    return jnp.where(good, x, mid)


def quadratic_step(origin: Origin, trial: Trial) -> jax.Array:
    r"""Minimiser of the quadratic through :math:`\phi(0), \phi'(0), \phi(a)` (Nocedal & Wright eq. 3.58).

    .. math::  a_q = -\frac{\phi'(0)\, a^2}{2\,(\phi(a) - \phi(0) - \phi'(0)\, a)}

    NaN when the quadratic has no minimiser (``phi(a)`` not above the tangent
    at 0) or the trial is not finite.
    """
    a = trial.step
    curv = trial.value - origin.value - origin.slope * a
    ok = trial.finite & (curv > 0)
    return jnp.where(ok, -origin.slope * a * a / (2 * jnp.where(ok, curv, 1.0)), jnp.nan)


def cubic_step(origin: Origin, trial: Trial) -> jax.Array:
    r"""Minimiser of the cubic through :math:`\phi(0), \phi'(0), \phi(a), \phi'(a)` (N&W eq. 3.59).

    Falls back to :func:`quadratic_step` where the cubic has no minimiser;
    NaN when neither exists.
    """
    zero = jnp.zeros_like(trial.step)
    x = cubic_minimizer(zero, origin.value, origin.slope, trial.step, trial.value, trial.slope)
    x = jnp.where(trial.finite & jnp.isfinite(x) & (x > 0), x, jnp.nan)
    return jnp.where(jnp.isnan(x), quadratic_step(origin, trial), x)


def safeguard(x, lo, hi, fallback) -> jax.Array:
    """``x`` clipped to ``[lo, hi]``; ``fallback`` where ``x`` is not finite."""
    return jnp.where(jnp.isfinite(x), jnp.clip(x, lo, hi), fallback)


def warm_start(initial_step, growth, prev_step, dtype) -> jax.Array:
    """First trial of a search: ``initial_step``, or ``min(growth * prev_step, initial_step)``.

    ``growth=None`` or ``prev_step=None`` is the cold start; a non-finite
    ``prev_step`` (the folded loop's "no step yet") gives ``initial_step``.
    """
    if growth is None or prev_step is None:
        return jnp.asarray(initial_step, dtype)
    warm = jnp.asarray(growth * prev_step, dtype)
    ok = jnp.isfinite(warm) & (warm > 0)
    return jnp.where(ok, jnp.minimum(warm, initial_step), initial_step).astype(dtype)


#: safeguard of an interpolated backtracking step: ``[0.1 a, 0.5 a]`` (Dennis & Schnabel, A6.3.1)
SHRINK_BOUNDS = (0.1, 0.5)
#: safeguard of a warm start hint from an accepted trial ``a``: ``[0.1 a, 10 a]``
WARM_BOUNDS = (0.1, 10.0)


def model_hint(model, trial: Trial) -> jax.Array:
    """Warm start hint from an accepted trial: the model's minimiser ``model`` in
    ``[0.1 a, 10 a]`` (:data:`WARM_BOUNDS`), the accepted step ``a`` where it is undefined."""
    a = trial.step
    lo, hi = WARM_BOUNDS
    return safeguard(model, lo * a, hi * a, a)

# ---------------------------------------------- acceptance tests (shrink)
def _shrunk(step, a, fallback) -> jax.Array:
    """A model step after rejecting ``a``, safeguarded to ``SHRINK_BOUNDS`` times ``a`` (``fallback`` if undefined)."""
    lo, hi = SHRINK_BOUNDS
    return safeguard(step, lo * a, hi * a, fallback)


class SufficientDecrease(NamedTuple):
    """Accept on the Armijo condition (slides, Algorithm 2); trials need values only.

    ``propose``: after a rejection, the quadratic interpolation step
    (:func:`quadratic_step`) safeguarded to ``[0.1 a, 0.5 a]``; ``warm``:
    after an acceptance, the same model's minimiser (:func:`model_hint`), an
    estimate of the line minimiser for the next search's start.
    """

    c1: float = 1e-4
    needs = Needs()

    def __call__(self, origin: Origin, trial: Trial) -> jax.Array:
        return sufficient_decrease(origin, trial, self.c1)

    def propose(self, origin: Origin, trial: Trial, fallback) -> jax.Array:
        return _shrunk(quadratic_step(origin, trial), trial.step, fallback)

    def warm(self, origin: Origin, trial: Trial) -> jax.Array:
        return model_hint(quadratic_step(origin, trial), trial)

    def predicts(self, origin: Origin, trial: Trial, b) -> jax.Array:
        """Whether the quadratic model of a passing trial predicts that ``b`` passes (:func:`predicted_decrease`)."""
        return predicted_decrease(origin, trial, b, self.c1)

    def boundary(self, origin: Origin, trial: Trial) -> jax.Array:
        """The model's longest passing step (:func:`decrease_boundary`)."""
        return decrease_boundary(origin, trial, self.c1)


class StrongWolfeConditions(NamedTuple):
    """Accept on sufficient decrease and strong curvature (slides, Algorithm 4)."""

    c1: float = 1e-4
    c2: float = 0.9
    needs = Needs(slope=True)

    def __call__(self, origin: Origin, trial: Trial) -> jax.Array:
        return sufficient_decrease(origin, trial, self.c1) & strong_curvature(origin, trial, self.c2)

    def propose(self, origin: Origin, trial: Trial, fallback) -> jax.Array:
        """After a rejection: the cubic interpolation step (:func:`cubic_step`) in ``[0.1 a, 0.5 a]``."""
        return _shrunk(cubic_step(origin, trial), trial.step, fallback)

    def warm(self, origin: Origin, trial: Trial) -> jax.Array:
        """After an acceptance: the cubic model's minimiser (:func:`model_hint`)."""
        return model_hint(cubic_step(origin, trial), trial)

    def predicts(self, origin: Origin, trial: Trial, b) -> jax.Array:
        """Whether the models of a passing trial predict that ``b`` passes both tests."""
        return (predicted_decrease(origin, trial, b, self.c1)
                & predicted_strong_curvature(origin, trial, b, self.c2))
    # no ``boundary``: the strong Wolfe set is bounded below too, so a jump could fall below it


class LipschitzEstimate(NamedTuple):
    r"""Accept when :math:`\|\nabla f(\theta) - \nabla f(\theta + a p)\| \le \|a p\| / a = \|p\|`.

    The local Lipschitz estimate ``L = ||Delta grad|| / ||a p||`` then satisfies
    ``a <= 1 / L`` (slides, Algorithm 1); ``f`` is not looked at.

    ``propose``: after a rejection, ``safety / L_loc = safety a ||p|| / ||Delta grad||``
    (the measured estimate gives the next trial directly), at most ``0.9 a``;
    ``too_short``: a trial that meets the test with ``a L_loc < min_ratio``
    (much shorter than ``1 / L_loc``) is not taken by the interpolating
    search, which tries ``extend = safety / L_loc`` instead (the slides'
    halving from 1 ends in ``(1/(2 L), 1/L]``); ``warm``: ``1 / L_loc`` at the
    accepted trial (``>= a``), the next search's start.

    Attributes:
      safety: factor ``< 1`` on ``1 / L_loc`` for a new trial (on a quadratic
        ``a = 1/L_loc`` meets the test with equality, rounding may break it).
      min_ratio: the shortest accepted ``a L_loc`` of the interpolating search.
    """

    safety: float = 0.95
    min_ratio: float = 0.5
    needs = Needs(grad_change=True)

    def __call__(self, origin: Origin, trial: Trial) -> jax.Array:
        return trial.grad_change <= origin.direction_norm

    def inverse_estimate(self, origin: Origin, trial: Trial) -> jax.Array:
        """``1 / L_loc = a ||p|| / ||Delta grad||`` (NaN when not finite or ``Delta grad = 0``)."""
        x = trial.step * origin.direction_norm / trial.grad_change
        return jnp.where(trial.finite & jnp.isfinite(x), x, jnp.nan)

    def propose(self, origin: Origin, trial: Trial, fallback) -> jax.Array:
        a = trial.step
        x = self.safety * self.inverse_estimate(origin, trial)
        return safeguard(x, jnp.zeros_like(a), 0.9 * a, fallback)

    def too_short(self, origin: Origin, trial: Trial) -> jax.Array:
        """``a L_loc < min_ratio``: the trial is far shorter than ``1 / L_loc``."""
        return trial.grad_change < self.min_ratio * origin.direction_norm

    def extend(self, origin: Origin, trial: Trial) -> jax.Array:
        """The next trial after a too short one: ``safety / L_loc`` in ``[a, 10 a]``."""
        a = trial.step
        return safeguard(self.safety * self.inverse_estimate(origin, trial), a, WARM_BOUNDS[1] * a, a)

    def predicts(self, origin: Origin, trial: Trial, b) -> jax.Array:
        """Whether ``b <= 1 / L_loc`` with ``L_loc`` measured at the passing trial ``a``."""
        return trial.finite & (b * trial.grad_change <= trial.step * origin.direction_norm)

    def boundary(self, origin: Origin, trial: Trial) -> jax.Array:
        """``1 / L_loc`` measured at the trial."""
        return self.inverse_estimate(origin, trial)

    def warm(self, origin: Origin, trial: Trial) -> jax.Array:
        """After an acceptance: ``1 / L_loc`` (``>= a``) in ``[a, 10 a]``."""
        a = trial.step
        return safeguard(self.inverse_estimate(origin, trial), a, WARM_BOUNDS[1] * a, a)


# ------------------------------------------------------------- kernels
class Backtracking(NamedTuple):
    """Shrink-only search: try ``a_0, beta a_0, beta^2 a_0, ...`` until ``condition`` holds.

    ``a_0 = initial_step``, or with ``growth`` the warm start
    ``min(growth * prev_step, initial_step)``.  Stops (failure) when the next
    trial would fall below ``min_step``.  With :class:`SufficientDecrease`
    this is Algorithm 2, with :class:`LipschitzEstimate` Algorithm 1, with
    :class:`StrongWolfeConditions` Algorithm 4 of the slides (``growth=None,
    interpolate=False``: the slides' algorithms as written).

    ``interpolate=True``: a rejected trial ``a`` is followed by the
    condition's model step (``condition.propose``: the safeguarded quadratic
    (Armijo) or cubic (strong Wolfe) interpolation minimiser in
    ``[0.1 a, 0.5 a]``, or ``0.95 / L_loc`` for the 1/L test) instead of
    ``beta a`` (``beta a`` where the model is undefined, e.g. a non-finite
    trial), and an accepted trial passes ``condition.warm`` (the same model's
    minimiser, or ``1 / L_loc`` for the 1/L test, in ``[0.1 a, 10 a]``) to
    the next search, which starts at ``min(growth * warm, initial_step)``.

    Attributes:
      condition: the acceptance test, called as ``condition(origin, trial)``.
      beta: shrink factor in (0, 1).
      max_trials: most trials per search.
      initial_step: first trial step (and cap of the warm start).
      growth: warm start factor, ``None`` for a cold start every search.
      min_step: smallest trial step.
      interpolate: model steps after a rejection (see above).
      extrapolate: ``None``, or the factor of an extrapolation phase: while
        every trial of the search has passed, a passing trial is kept and
        ``extrapolate`` times it is tried (:func:`extrapolation_step`).  With
        it a rejected trial is followed by the largest grid step
        ``initial_step beta^k`` at or below the condition's model boundary
        (``condition.boundary``: :func:`decrease_boundary` for Armijo, ``1 / L_loc``;
        none for strong Wolfe, whose set is bounded below too),
        and below ``beta a``, skipping the grid points the model says fail.
    """

    condition: Any = SufficientDecrease()
    beta: float = 0.5
    max_trials: int = 30
    initial_step: float = 1.0
    growth: float | None = None
    min_step: float = 0.0
    interpolate: bool = False
    extrapolate: float | None = None

    @property
    def needs(self) -> Needs:
        return self.condition.needs

    def init(self, origin: Origin, prev_step):
        dt = jnp.result_type(origin.value)
        a0 = warm_start(self.initial_step, self.growth, prev_step, dt)
        if self.extrapolate is None:
            return a0, origin
        return a0, extrapolation_state(origin)

    def step(self, state, trial: Trial):
        if self.extrapolate is None:
            return self._step(state, trial)
        return extrapolation_step(self, state, trial)

    def predicts(self, origin: Origin, trial: Trial, b) -> jax.Array:
        """Whether the condition's model of the passing ``trial`` predicts that ``b`` passes too."""
        return self.condition.predicts(origin, trial, b)

    def slope_needed(self, state, trial: Trial) -> jax.Array:
        """Whether the decision on ``trial`` (its value known) reads its slope: with the strong Wolfe test
        and no interpolation, only where sufficient decrease holds (else the step shrinks whatever the
        slope), so a driver may skip that trial's gradient (:func:`mfjax.linesearch.search.line_search`)."""
        if self.interpolate or not isinstance(self.condition, StrongWolfeConditions):
            return jnp.asarray(True)
        origin = state if self.extrapolate is None else state.inner
        return trial.finite & sufficient_decrease(origin, trial, self.condition.c1)

    def boundary(self, origin: Origin, trial: Trial) -> jax.Array:
        """The condition's model boundary (NaN where it has none)."""
        if hasattr(self.condition, "boundary"):
            return self.condition.boundary(origin, trial)
        return jnp.full_like(trial.step, jnp.nan)

    def _step(self, origin: Origin, trial: Trial):
        accept = trial.finite & self.condition(origin, trial)
        dt = trial.step.dtype
        nxt = (self.beta * trial.step).astype(dt)
        if self.extrapolate is not None and hasattr(self.condition, "boundary"):
            # skip the grid points above the model's boundary: the largest initial_step beta^k below it,
            # at least one and at most 20 halvings down (a plain halving where the model is undefined)
            jump = grid_below(self.condition.boundary(origin, trial), self.initial_step, self.beta)
            nxt = safeguard(jump, self.beta ** 20 * trial.step, nxt, nxt).astype(dt)
        warm = None
        if self.interpolate:
            nxt = self.condition.propose(origin, trial, nxt).astype(dt)
            warm = self.condition.warm(origin, trial).astype(dt)
            if hasattr(self.condition, "too_short"):  # the 1/L test: retry a far too short step once longer
                short = accept & self.condition.too_short(origin, trial) & (trial.step < self.initial_step)
                longer = jnp.minimum(self.condition.extend(origin, trial), self.initial_step).astype(dt)
                short = short & (longer > trial.step)
                accept = accept & ~short
                nxt = jnp.where(short, longer, nxt)
        return Decision(accept, nxt, nxt < self.min_step, warm), origin


class ExtrapolationState(NamedTuple):
    """State of a kernel with an extrapolation phase (``extrapolate`` set).

    Attributes:
      inner: the kernel's own state (the origin for :class:`Backtracking`).
      expanding: every trial of this search so far has passed (the phase goes on).
      kept: a passing trial is kept (the driver takes it if the phase ends).
    """

    inner: Any
    expanding: jax.Array
    kept: jax.Array


def extrapolation_state(inner) -> ExtrapolationState:
    """The state before a search's first trial (``inner``: the kernel's own state)."""
    return ExtrapolationState(inner, jnp.asarray(True), jnp.asarray(False))


def extrapolation_step(kernel, state: ExtrapolationState, trial: Trial):
    """One trial of a search with an extrapolation phase (Nocedal & Wright, Algorithm 3.5's expansion).

    While every trial of the search has passed the kernel's test (starting
    with the first), a passing trial ``a`` below ``initial_step`` whose
    models predict that ``b = min(extrapolate * a, initial_step)`` passes too
    (``kernel.predicts(state, trial, b)``: the quadratic/linear-slope models of
    :func:`predicted_decrease`, :func:`predicted_strong_curvature`, or
    ``b <= 1 / L_loc(a)``) is *kept* and ``b`` is tried next (else ``a`` is
    accepted without the doomed trial); the first
    failing trial after a kept one ends the search with the kept step (the
    longest passing one), and a failing first trial starts the kernel's own
    search (shrinking) from it.  With ``beta = 1 / extrapolate`` and a test that
    holds exactly on ``(0, a_max]`` the accepted step is the longest
    ``a_0 extrapolate^j <= a_max`` (capped at ``initial_step``): the step of the
    cold search from ``initial_step`` when ``a_0`` is on its grid
    ``initial_step beta^k``, found in about two trials instead of ``k``.
    """
    dec, inner = kernel._step(state.inner, trial)
    a = trial.step
    dt = a.dtype
    passed = dec.accept
    longer = jnp.minimum(kernel.extrapolate * a, kernel.initial_step).astype(dt)
    grow = state.expanding & passed & (a < kernel.initial_step) & kernel.predicts(state.inner, trial, longer)
    if hasattr(kernel, "boundary"):  # straight to the longest grid step the model predicts to pass
        far = grid_below(kernel.boundary(state.inner, trial), kernel.initial_step, 1.0 / kernel.extrapolate)
        longer = jnp.where(jnp.isfinite(far) & (far > longer), jnp.minimum(far, kernel.initial_step),
                           longer).astype(dt)
    end = state.expanding & ~passed & state.kept        # the longest passing trial is the kept one
    expanding = state.expanding & passed
    decision = Decision(accept=passed & ~grow,
                        next_step=jnp.where(grow, longer, dec.next_step).astype(dt),
                        stop=jnp.where(grow, False, dec.stop | end),
                        warm=dec.warm, keep=grow)
    return decision, ExtrapolationState(inner, expanding, state.kept | grow)


class BisectionState(NamedTuple):
    """State of :class:`BisectionWolfe`: the origin, the bracket ``[lo, hi]`` and ``phi, phi'`` at its ends."""

    origin: Origin
    lo: jax.Array
    hi: jax.Array
    f_lo: jax.Array
    d_lo: jax.Array
    f_hi: jax.Array
    d_hi: jax.Array


class BisectionWolfe(NamedTuple):
    """Bisection search for a weak Wolfe step (slides, Algorithm 3).

    Bracket ``[0, inf]``, updated by :func:`bisection_bracket` with the
    sufficient-decrease (a non-finite trial violates it) and weak-curvature
    tests; accept when both hold.  Trials need values and slopes.

    ``growth=None, interpolate=False`` is the slides' algorithm as written.
    ``growth``: the first trial is ``min(growth * prev_step, initial_step)``.
    ``interpolate=True``: once the bracket is finite the next trial is the
    safeguarded cubic minimiser through both ends
    (:func:`safeguarded_cubic`: the middle 80% of the bracket, the midpoint
    where the cubic is undefined) instead of the midpoint, and an accepted
    trial passes the minimiser of the cubic through ``phi, phi'`` at 0 and at
    the trial (:func:`model_hint`) to the next search's warm start.

    Attributes:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      max_trials: most trials per search.
      initial_step: first trial step (and cap of the warm start).
      growth: warm start factor, ``None`` for a cold start every search.
      interpolate: cubic instead of midpoint trials inside a finite bracket.
      extrapolate: ``None``, or the factor of an extrapolation phase after
        an accepted first trial (:func:`extrapolation_step`); with it a
        trial failing sufficient decrease while ``lo = 0`` is followed by the
        largest ``initial_step 2^-k`` at or below :func:`decrease_boundary`
        (below the midpoint) instead of the midpoint.
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_trials: int = 30
    initial_step: float = 1.0
    growth: float | None = None
    interpolate: bool = False
    extrapolate: float | None = None
    needs = Needs(slope=True)

    def init(self, origin: Origin, prev_step):
        dt = jnp.result_type(origin.value)
        zero, inf = jnp.asarray(0, dt), jnp.asarray(jnp.inf, dt)
        nan = jnp.asarray(jnp.nan, dt)
        state = BisectionState(origin, zero, inf, origin.value, origin.slope, nan, nan)
        a0 = warm_start(self.initial_step, self.growth, prev_step, dt)
        return a0, (state if self.extrapolate is None else extrapolation_state(state))

    def step(self, state, trial: Trial):
        if self.extrapolate is None:
            return self._step(state, trial)
        return extrapolation_step(self, state, trial)

    def slope_needed(self, state, trial: Trial) -> jax.Array:
        """Whether the decision on ``trial`` (its value known) reads its slope: without interpolation only
        where sufficient decrease holds (else ``hi = a`` whatever the slope), so a driver may skip that
        trial's gradient (:func:`mfjax.linesearch.search.line_search`)."""
        if self.interpolate:  # the cubic through the bracket's ends reads the slope at hi too
            return jnp.asarray(True)
        inner = state if self.extrapolate is None else state.inner
        return trial.finite & sufficient_decrease(inner.origin, trial, self.c1)

    def predicts(self, state: BisectionState, trial: Trial, b) -> jax.Array:
        """Whether the quadratic model of the passing ``trial`` predicts sufficient decrease at ``b``
        (the slope rises along a convex line, so weak curvature stays true)."""
        return predicted_decrease(state.origin, trial, b, self.c1)

    def _step(self, state: BisectionState, trial: Trial):
        decrease = trial.finite & sufficient_decrease(state.origin, trial, self.c1)
        curv = weak_curvature(state.origin, trial, self.c2)
        lo, hi, nxt = bisection_bracket(state.lo, state.hi, trial.step, decrease, curv)
        dt = trial.step.dtype
        if self.extrapolate is not None:
            # sufficient decrease fails with lo = 0: skip the halvings the quadratic model says fail (the
            # largest initial_step 2^-k at or below its boundary, inside the bracket (0, a))
            jump = grid_below(decrease_boundary(state.origin, trial, self.c1), self.initial_step, 0.5)
            jump = safeguard(jump, 0.5 ** 20 * trial.step, nxt, nxt)
            nxt = jnp.where(~decrease & (state.lo == 0), jump, nxt)
        new_hi = ~decrease
        new_lo = decrease & ~curv
        v = jnp.where(trial.finite, trial.value, jnp.nan)
        d = jnp.where(trial.finite, trial.slope, jnp.nan)
        f_lo, d_lo = jnp.where(new_lo, v, state.f_lo), jnp.where(new_lo, d, state.d_lo)
        f_hi, d_hi = jnp.where(new_hi, v, state.f_hi), jnp.where(new_hi, d, state.d_hi)
        if self.interpolate:
            cubic = safeguarded_cubic(lo, f_lo, d_lo, hi, f_hi, d_hi)
            nxt = jnp.where(jnp.isinf(hi), nxt, cubic)
        warm = None
        if self.interpolate:
            warm = model_hint(cubic_step(state.origin, trial), trial).astype(dt)
        return (Decision(decrease & curv, nxt.astype(dt), jnp.asarray(False), warm),
                BisectionState(state.origin, lo, hi, f_lo, d_lo, f_hi, d_hi))


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
