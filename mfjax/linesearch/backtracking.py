"""Shrink-only step rules: 1/L estimate, Armijo backtracking, strong Wolfe (as written).

All three follow the same scheme (slides, Algorithms 1, 2 and 4): start at
``alpha_0``, test a condition at ``theta + alpha p``, multiply ``alpha`` by
``beta`` while it fails.  Each is the kernel
:class:`~mfjax.linesearch.kernels.Backtracking` with its acceptance test
(:class:`~mfjax.linesearch.kernels.LipschitzEstimate`,
:class:`~mfjax.linesearch.kernels.SufficientDecrease`,
:class:`~mfjax.linesearch.kernels.StrongWolfeConditions`) run by
:func:`mfjax.linesearch.search.line_search`; a trial whose value or gradient
is not finite fails its test.  See :mod:`mfjax.linesearch.base` for the
protocol and the failure convention (step 0, ``success=False``).
"""

from __future__ import annotations

import warnings

import optax

from mfjax.linesearch import base
from mfjax.linesearch.kernels import Backtracking, LipschitzEstimate, StrongWolfeConditions, SufficientDecrease
from mfjax.linesearch.search import SearchState, line_search

#: the extrapolating settings (issue 11; :data:`mfjax.linesearch.CHEAP`, the default of ``inverse_lipschitz``):
#: warm start ``min(2 a_prev, initial_step)`` and extrapolation by 2 on the halving grid
DEFAULT_GROWTH = 2.0
DEFAULT_EXTRAPOLATE = 2.0
#: warm start factors of the interpolating settings :data:`mfjax.linesearch.WARM`
ARMIJO_GROWTH = 2.0
LIPSCHITZ_GROWTH = 1.0
STRONG_WOLFE_GROWTH = 2.0

__all__ = [
    "armijo",
    "inverse_lipschitz",
    "strong_wolfe",
]


def __getattr__(name):
    if name == "BacktrackingState":
        warnings.warn("mfjax.linesearch.backtracking.BacktrackingState is deprecated: use "
                      "mfjax.linesearch.SearchState (the same fields)", DeprecationWarning, stacklevel=2)
        return SearchState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_backtracking(rule, *, beta, max_iters, initial_step, growth, min_step, extrapolate=None):
    base.check_unit("beta", beta, rule)
    base.check_extrapolate(extrapolate, rule)
    base.check_iters(max_iters, rule)
    base.check_positive("initial_step", initial_step, rule)
    base.check_positive("growth", growth, rule)
    base.check_positive("min_step", min_step, rule, strict=False)


def armijo(c1: float = 1e-4, beta: float = 0.5, max_iters: int = 30,
           initial_step: float = 1.0, *, growth: float | None = None,
           interpolate: bool = False, extrapolate: float | None = None, min_step: float = 0.0,
           store_grad: bool = True, grad_at: str = "auto") -> optax.GradientTransformationExtraArgs:
    r"""Armijo backtracking (slides, Algorithm 2).

    Finds the first ``alpha`` in ``alpha_0, beta alpha_0, beta^2 alpha_0, ...``
    with the sufficient decrease (Armijo) condition

    .. math::
      f(\theta + \alpha p) \le f(\theta) + c_1 \alpha \langle \nabla f(\theta), p \rangle

    and returns ``alpha p``.

    Extrapolating setting (issue 11; ``mfjax.linesearch.CHEAP[rule]``): the search starts at ``alpha_0 = min(growth *
    previous step, initial_step)`` (``growth=2``) and, when that first trial
    passes, *extrapolates*: while the trials pass and the model of the last
    one predicts that ``extrapolate`` times it passes too, it tries
    ``min(extrapolate * alpha, initial_step)`` and takes the longest passing
    trial (:func:`~mfjax.linesearch.kernels.extrapolation_step`); a failing
    first trial is followed by the halving search.  With ``beta = 1/2``,
    ``initial_step = 1`` and a condition that holds on an interval
    ``(0, alpha_max]`` this takes the slides' step (the longest ``2^-k <=
    alpha_max``) in about two trials instead of ``k + 1`` (BENCHMARKS.md,
    "Step rules").  The slides' algorithm as written (``alpha_0 =
    initial_step`` every search) is ``**mfjax.linesearch.LITERAL['armijo']``:
    ``growth=None, extrapolate=None,
    grad_at="end"``; the default is the same search with ``grad_at="auto"`` (the same steps): on the synthetic problem of ``mfjax
    compare`` the extrapolating setting ends 200 GD steps 0.08% above the
    slides' search (ML-1M: 2.8% below, at 2.0 instead of 14.8 value passes
    per step), so it is opt-in, ``armijo(**mfjax.linesearch.CHEAP['armijo'])``.

    With ``mfjax.linesearch.WARM['armijo']`` (``growth=2.0, interpolate=True, extrapolate=None``) a search starts at
    ``alpha_0 = min(growth * previous step, initial_step)`` (optax's
    ``increase_factor``/``max_learning_rate`` warm start) and
    (``interpolate=True``) a rejected trial ``alpha`` is followed by the
    minimiser of the quadratic through ``phi(0), phi'(0), phi(alpha)``,

    .. math:: \alpha_q = -\frac{\phi'(0) \alpha^2}{2 (\phi(\alpha) - \phi(0) - \phi'(0)\alpha)},

    safeguarded to ``[0.1 alpha, 0.5 alpha]`` (Nocedal & Wright eq. 3.58;
    Dennis & Schnabel A6.3.1), instead of ``beta alpha``.  The slides'
    Algorithm 2 as written (``alpha_0 = initial_step = 1`` every search,
    ``alpha <- beta alpha``) is ``growth=None, extrapolate=None``; with
    ``growth=1.5, initial_step=1, beta=0.8, extrapolate=None`` this picks the
    same steps as ``optax.scale_by_backtracking_linesearch`` with its defaults.

    Each trial evaluates ``f`` only.  With ``store_grad=True`` the value and
    gradient at the accepted point are stored for reuse (otherwise the state
    holds ``value=+inf`` so :func:`optax.value_and_grad_from_state`
    recomputes); ``grad_at`` chooses how they are obtained:

    - ``"auto"`` (default): ``"trial"`` for a loss differentiated by autodiff, ``"end"`` for one with a
      custom VJP (:func:`mfjax.linesearch.search.has_custom_vjp`; e.g. :func:`mfjax.objective.loss`,
      whose forward pass computes the closed-form gradient, so a vjp per trial would compute it at every
      trial). On ``mfjax compare``'s autodiff loss this is 0.43 → 0.35 s for 200 GD steps, same steps;
    - ``"end"``: plain value trials, then one ``value_and_grad`` at
      the accepted point (``num_fun_evals = trials + 1``, ``num_grad_evals = 1``);
    - ``"trial"`` (``CHEAP['armijo']``): every trial is a ``jax.vjp`` and the vjp of each
      accepted or kept (extrapolation) trial is transposed under ``lax.cond``
      (optax's scheme; ``num_fun_evals = trials``, ``num_grad_evals`` = the
      accepted and kept trials).

    On ML-1M (GD, rank 10, 2-core CPU) ``"end"`` was the faster with the
    closed-form MF gradient (``masked_mse(grad="closed_form")``: 107 vs 144
    CPU ms per iteration, optax 140) and ``"trial"`` with autodiff (163 vs
    177, optax 152); see ``benchmarks/results/linesearch.md``.

    Args:
      c1: sufficient-decrease constant in (0, 1).
      beta: shrink factor in (0, 1).
      max_iters: maximum number of trials (the slides' ``t``).
      initial_step: first trial step (and cap when ``growth`` is set).
      growth: warm start factor (e.g. 2.0), ``None`` (default) restarts at ``initial_step``.
      interpolate: quadratic interpolation after a rejection (``True``;
        :data:`~mfjax.linesearch.WARM`), ``False`` (default): ``alpha <- beta alpha``.
      extrapolate: extrapolation factor after a passing first trial (e.g.
        2.0), ``None`` (default): none (the slides' algorithm).
      min_step: the slides' ``epsilon``: stop (failure) when the next trial
        step would fall below it.
      store_grad: compute and store ``grad f`` at the accepted point.
      grad_at: ``"auto"``, ``"end"`` or ``"trial"`` (see above); the same steps in every case.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`~mfjax.linesearch.search.SearchState`.  On failure the step is 0 and
      ``info.success`` is False.

    Example::

      opt = optax.chain(optax.scale(-1.0), mfjax.linesearch.armijo())
      updates, state = opt.update(g, state, x, value=f(x), grad=g, value_fn=f)

    References:
      Armijo, "Minimization of functions having Lipschitz continuous first
      partial derivatives", 1966.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithm 3.1.
    """
    base.check_unit("c1", c1, "armijo")
    if grad_at not in ("auto", "trial", "end"):
        raise ValueError(f"mfjax.linesearch.armijo: grad_at must be 'auto', 'trial' or 'end', got {grad_at!r}")
    _check_backtracking("armijo", beta=beta, max_iters=max_iters, initial_step=initial_step,
                        growth=growth, min_step=min_step, extrapolate=extrapolate)
    kernel = Backtracking(SufficientDecrease(c1), beta, int(max_iters), initial_step, growth, min_step,
                          bool(interpolate), extrapolate)
    lazy = "auto" if grad_at == "auto" else grad_at == "trial"
    return line_search(kernel, store_grad=store_grad, lazy_grad=lazy, rule="armijo")


def inverse_lipschitz(beta: float = 0.5, max_iters: int = 30, initial_step: float = 1.0,
                      *, growth: float | None = DEFAULT_GROWTH, interpolate: bool = False,
                      extrapolate: float | None = DEFAULT_EXTRAPOLATE,
                      min_step: float = 0.0) -> optax.GradientTransformationExtraArgs:
    r"""Step ``alpha ~ 1/L`` from a local Lipschitz estimate (slides, Algorithm 1).

    Shrinks ``alpha`` by ``beta`` until

    .. math::
      \|\nabla f(\theta) - \nabla f(\theta + \alpha p)\| \le \frac{\|\alpha p\|}{\alpha},

    i.e. the local Lipschitz constant ``L_loc = ||Delta grad|| / ||alpha p||``
    satisfies ``alpha <= 1 / L_loc`` (the reading noted in the seeds README).
    The test does not look at ``f``: the step is the classic ``1/L`` step of
    gradient descent with ``L`` estimated along ``p``.  Every trial evaluates
    value and gradient (the accepted ones are stored for reuse).

    Defaults (issue 11; ``mfjax.linesearch.CHEAP['inverse_lipschitz']``): the search starts at ``alpha_0 = min(growth *
    previous step, initial_step)`` (``growth=2``) and, when that first trial
    passes, *extrapolates*: while the trials pass and the model of the last
    one predicts that ``extrapolate`` times it passes too, it tries
    ``min(extrapolate * alpha, initial_step)`` and takes the longest passing
    trial (:func:`~mfjax.linesearch.kernels.extrapolation_step`); a failing
    first trial is followed by the halving search.  With ``beta = 1/2``,
    ``initial_step = 1`` and a condition that holds on an interval
    ``(0, alpha_max]`` this takes the slides' step (the longest ``2^-k <=
    alpha_max``) in about two trials instead of ``k + 1`` (BENCHMARKS.md,
    "Step rules").  The slides' algorithm as written (``alpha_0 =
    initial_step`` every search) is ``**mfjax.linesearch.LITERAL['inverse_lipschitz']``:
    ``growth=None, extrapolate=None``.

    With ``mfjax.linesearch.WARM['inverse_lipschitz']`` (``growth=1.0, interpolate=True, extrapolate=None``): every trial measures
    ``L_loc`` itself, so a rejected trial ``alpha`` is followed directly by
    ``0.95 / L_loc(alpha) = 0.95 alpha ||p|| / ||Delta grad||`` (at most
    ``0.9 alpha``; ``beta alpha`` when the trial is not finite), and the next
    search starts at ``min(growth / L_loc, initial_step)`` with ``L_loc``
    measured at the last accepted trial.  On the ``"sum"``-scaled ML-1M loss,
    whose ``L`` is large, this takes 1-2 trials per update instead of ~10.

    The slides' Algorithm 1 as written (``alpha_0 = 1`` every update, the
    slides' ``alpha <- 1``; ``alpha <- beta alpha``) is ``growth=None,
    interpolate=False, extrapolate=None``.  ``extrapolate=None`` with ``growth`` set is the
    warm start ``alpha_0 = min(growth * previous alpha, initial_step)`` of the
    earlier releases (``inverse_lipschitz(growth=2.0, extrapolate=None)``).

    Args:
      beta: shrink factor in (0, 1).
      max_iters: maximum number of trials.
      initial_step: first trial step (and cap when ``growth`` is set).
      growth: warm start factor (default 2.0) on the last accepted step
        (on ``1 / L_loc`` of the last accepted trial with ``interpolate=True``);
        ``None`` restarts at ``initial_step``.
      interpolate: next trial ``0.95 / L_loc`` after a rejection and the
        ``1 / L_loc`` warm start; ``False`` (default): ``alpha <- beta alpha``.
      extrapolate: extrapolation factor after a passing first trial (default
        2.0), ``None``: none (the slides' algorithm).
      min_step: the slides' ``epsilon`` (stop, failure, below it).

    References:
      Slides "Recommendation systems via approximate matrix factorization"
      (Beresnev, Klyushev, 2024), Algorithm 1; Nesterov, "Introductory Lectures
      on Convex Optimization", 2004, Sec. 2.1.5 (the 1/L step).
    """

    _check_backtracking("inverse_lipschitz", beta=beta, max_iters=max_iters,
                        initial_step=initial_step, growth=growth, min_step=min_step,
                        extrapolate=extrapolate)
    kernel = Backtracking(LipschitzEstimate(), beta, int(max_iters), initial_step, growth, min_step,
                          bool(interpolate), extrapolate)
    return line_search(kernel, rule="inverse_lipschitz")


def strong_wolfe(c1: float = 1e-4, c2: float = 0.9, beta: float = 0.5, max_iters: int = 30,
                 initial_step: float = 1.0, *, growth: float | None = None,
                 interpolate: bool = False, extrapolate: float | None = None, min_step: float = 0.0
                 ) -> optax.GradientTransformationExtraArgs:
    r"""Shrink-only strong Wolfe step (slides, Algorithm 4).

    Shrinks ``alpha`` by ``beta`` until both

    .. math::
      f(\theta + \alpha p) \le f(\theta) + c_1 \alpha \langle \nabla f(\theta), p\rangle,
      \qquad |\langle p, \nabla f(\theta + \alpha p)\rangle| \le c_2 |\langle p, \nabla f(\theta)\rangle|.

    It never grows the step within a search, so when the first trial is
    shorter than every strong Wolfe step it fails (``success=False``, step
    0); use :func:`strong_wolfe_zoom` for the bracketing version that can
    expand.  Every trial evaluates value and gradient.

    The default is the slides' algorithm as written (``growth=None,
    extrapolate=None``, as ``mfjax.linesearch.LITERAL['strong_wolfe']``):
    with the warm start (``growth=2``) the shrink-only search fails on
    ML-1M (GD, step 31) once a first trial is shorter than every strong
    Wolfe step, so the cheap setting ``growth=2.0, extrapolate=2.0`` is
    opt-in (BENCHMARKS.md, "Step rules").

    With ``mfjax.linesearch.WARM['strong_wolfe']`` (``growth=2.0, interpolate=True, extrapolate=None``): the first trial is
    ``min(growth * previous step, initial_step)`` and a rejected trial
    ``alpha`` is followed by the minimiser of the cubic through ``phi(0),
    phi'(0), phi(alpha), phi'(alpha)`` (Nocedal & Wright eq. 3.59; the
    quadratic one where the cubic has none) in ``[0.1 alpha, 0.5 alpha]``
    instead of ``beta alpha``.  The slides' Algorithm 4 as written
    (``alpha_0 = initial_step`` every search, ``alpha <- beta alpha``) is
    ``growth=None, interpolate=False, extrapolate=None``.

    Args:
      c1, c2: Wolfe constants, ``0 < c1 < c2 < 1``.
      beta: shrink factor in (0, 1).
      max_iters: maximum number of trials.
      initial_step: first trial step (and cap of the warm start).
      growth: warm start factor (e.g. 2.0), ``None`` (default) restarts at ``initial_step``.
      interpolate: cubic interpolation after a rejection, ``False`` (default): ``alpha <- beta alpha``.
      extrapolate: extrapolation factor after a passing first trial (default
        2.0), ``None``: none (the slides' algorithm).
      min_step: stop (failure) when the next trial step would fall below it.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, eq. (3.7).
    """
    base.check_unit("c1", c1, "strong_wolfe")
    if not (c1 < c2 < 1):
        raise ValueError(f"mfjax.linesearch.strong_wolfe: need c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")

    _check_backtracking("strong_wolfe", beta=beta, max_iters=max_iters, initial_step=initial_step,
                        growth=growth, min_step=min_step, extrapolate=extrapolate)
    kernel = Backtracking(StrongWolfeConditions(c1, c2), beta, int(max_iters), initial_step, growth, min_step,
                          bool(interpolate), extrapolate)
    return line_search(kernel, rule="strong_wolfe")
