"""Shrink-only step rules: 1/L estimate, Armijo backtracking, strong Wolfe (as written).

All three follow the same scheme (slides, Algorithms 1, 2 and 4): start at
``alpha_0``, test a condition at ``theta + alpha p``, multiply ``alpha`` by
``beta`` while it fails.  One ``lax.while_loop`` per update; a trial whose
value or gradient is not finite fails its test.  See :mod:`mfjax.linesearch.base`
for the protocol and the failure convention (step 0, ``success=False``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.linesearch import base
from mfjax.linesearch.base import LineSearchInfo

__all__ = [
    "BacktrackingState",
    "armijo",
    "inverse_lipschitz",
    "strong_wolfe",
]


class BacktrackingState(NamedTuple):
    """State of :func:`armijo`, :func:`inverse_lipschitz`, :func:`strong_wolfe`.

    Attributes:
      step: last accepted step (start of the next search when ``growth`` is set).
      value: ``f`` at the accepted point (``+inf`` if not stored).
      grad: ``grad f`` at the accepted point (zeros if not stored).
      info: :class:`LineSearchInfo` of the last update.
    """

    step: Any
    value: Any
    grad: Any
    info: LineSearchInfo


class _Carry(NamedTuple):
    i: Any
    step: Any
    done: Any
    ok: Any
    value: Any
    grad: Any
    num_grad: Any


def _backtrack(f, params, direction, value, grad, step0, accept: Callable, *, beta,
               max_iters, min_step, grad_mode: str, start: Any):
    """Shrink ``step`` by ``beta`` until ``accept(step, value_i, grad_i)`` holds.

    ``grad_mode``: ``"all"`` evaluates value and gradient at every trial;
    ``"accepted"`` evaluates the value at every trial and the gradient only at
    the accepted one (a vjp transposed under ``lax.cond``); ``"none"`` only values.
    ``start=False`` skips the loop (failed before any trial).
    """
    vg = jax.value_and_grad(f)

    def body(c: _Carry) -> _Carry:
        x = base.trial_point(params, c.step, direction)
        if grad_mode == "all":
            v, g = vg(x)
            fin = jnp.isfinite(v) & base.all_finite(g)
            ok = fin & accept(c.step, v, g)
            ng = c.num_grad + 1
        elif grad_mode == "accepted":
            v, vjp = jax.vjp(f, x)
            ok0 = jnp.isfinite(v) & accept(c.step, v, None)
            g = jax.lax.cond(ok0, lambda: vjp(jnp.ones_like(v))[0], lambda: c.grad)
            ok = ok0 & base.all_finite(g)
            ng = c.num_grad + ok0.astype(jnp.int32)
        else:
            v = f(x)
            ok = jnp.isfinite(v) & accept(c.step, v, None)
            g = c.grad
            ng = c.num_grad
        nxt = jnp.where(ok, c.step, beta * c.step).astype(c.step.dtype)
        i = c.i + 1
        done = ok | (i >= max_iters) | (nxt < min_step)
        return _Carry(i, nxt, done, ok, jnp.where(ok, v, c.value).astype(c.value.dtype),
                      base.select_tree(ok, g, c.grad), ng)

    init = _Carry(jnp.asarray(0, jnp.int32), step0, ~start, jnp.asarray(False),
                  value, grad, jnp.asarray(0, jnp.int32))
    if grad_mode != "end":
        return jax.lax.while_loop(lambda c: ~c.done, body, init)
    # "end": value-only trials, then one value_and_grad at the accepted point.
    grad_mode = "none"
    c = jax.lax.while_loop(lambda c: ~c.done, body, init)
    v, g = vg(base.trial_point(params, jnp.where(c.ok, c.step, 0).astype(c.step.dtype), direction))
    ok = c.ok & jnp.isfinite(v) & base.all_finite(g)
    return c._replace(ok=ok, value=jnp.where(ok, v, value).astype(value.dtype),
                      grad=base.select_tree(ok, g, grad), i=c.i + c.ok.astype(jnp.int32),
                      num_grad=c.num_grad + c.ok.astype(jnp.int32))


def _make_rule(rule: str, accept_factory, *, beta, max_iters, initial_step, growth,
               min_step, grad_mode: str, store: bool):
    base.check_unit("beta", beta, rule)
    base.check_iters(max_iters, rule)
    base.check_positive("initial_step", initial_step, rule)
    base.check_positive("growth", growth, rule)
    base.check_positive("min_step", min_step, rule, strict=False)

    def init_fn(params):
        dt = base.value_dtype(params)
        return BacktrackingState(
            step=jnp.asarray(initial_step, dt),
            value=jnp.asarray(jnp.inf, dt),
            grad=optax.tree.zeros_like(params),
            info=base.make_info(jnp.asarray(0, dt), 0, 0, True),
        )

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        f = base.bind_value_fn(value_fn, extra_args, rule)
        dt = base.value_dtype(params)
        value = jnp.asarray(value, dt)
        s0 = base.slope(grad, updates).astype(dt)
        start = jnp.isfinite(value) & jnp.isfinite(s0) & (s0 < 0)
        if growth is None:
            step0 = jnp.asarray(initial_step, dt)
        else:
            step0 = jnp.minimum(growth * state.step, initial_step).astype(dt)
        accept = accept_factory(params, updates, value, grad, s0)
        c = _backtrack(f, params, updates, value, grad, step0, accept, beta=beta,
                       max_iters=max_iters, min_step=min_step, grad_mode=grad_mode,
                       start=start)
        step = jnp.where(c.ok, c.step, 0).astype(dt)
        new_updates = base.scaled_update(step, updates, c.ok)
        if store:
            new_value, new_grad = c.value, c.grad
        else:
            new_value, new_grad = jnp.asarray(jnp.inf, dt), optax.tree.zeros_like(params)
        new_state = BacktrackingState(
            step=jnp.where(c.ok, c.step, state.step).astype(dt),
            value=new_value,
            grad=new_grad,
            info=base.make_info(step, c.i, c.num_grad, c.ok),
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def armijo(c1: float = 1e-4, beta: float = 0.5, max_iters: int = 30,
           initial_step: float = 1.0, *, growth: float | None = None,
           min_step: float = 0.0, store_grad: bool = True, grad_at: str = "end"
           ) -> optax.GradientTransformationExtraArgs:
    r"""Armijo backtracking (slides, Algorithm 2).

    Finds the first ``alpha`` in ``alpha_0, beta alpha_0, beta^2 alpha_0, ...``
    with the sufficient decrease (Armijo) condition

    .. math::
      f(\theta + \alpha p) \le f(\theta) + c_1 \alpha \langle \nabla f(\theta), p \rangle

    and returns ``alpha p``.  ``alpha_0 = initial_step`` (the slides' 1), or,
    when ``growth`` is given, ``min(growth * previous step, initial_step)``
    (optax's ``increase_factor``/``max_learning_rate`` warm start; with
    ``growth=1.5, initial_step=1, beta=0.8`` this picks the same steps as
    ``optax.scale_by_backtracking_linesearch`` with its defaults).

    Each trial evaluates ``f`` only.  With ``store_grad=True`` the value and
    gradient at the accepted point are stored for reuse (otherwise the state
    holds ``value=+inf`` so :func:`optax.value_and_grad_from_state`
    recomputes); ``grad_at`` chooses how they are obtained:

    - ``"end"`` (default): plain value trials, then one ``value_and_grad`` at
      the accepted point (``num_fun_evals = trials + 1``, ``num_grad_evals = 1``);
    - ``"trial"``: every trial is a ``jax.vjp`` and the accepted trial's vjp is
      transposed under ``lax.cond`` (optax's scheme; ``num_fun_evals = trials``).

    On ML-1M (GD, rank 10, 2-core CPU) ``"end"`` was the faster with the
    closed-form MF gradient (``masked_mse(grad="closed_form")``: 107 vs 144
    CPU ms per iteration, optax 140) and ``"trial"`` with autodiff (163 vs
    177, optax 152); see ``benchmarks/results/linesearch.md``.

    Args:
      c1: sufficient-decrease constant in (0, 1).
      beta: shrink factor in (0, 1).
      max_iters: maximum number of trials (the slides' ``t``).
      initial_step: first trial step (and cap when ``growth`` is set).
      growth: warm start factor, ``None`` restarts at ``initial_step``.
      min_step: the slides' ``epsilon``: stop (failure) when the next trial
        step would fall below it.
      store_grad: compute and store ``grad f`` at the accepted point.
      grad_at: ``"end"`` or ``"trial"`` (see above); same steps either way.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`BacktrackingState`.  On failure the step is 0 and
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

    def accept_factory(params, p, value, grad, s0):
        return lambda a, v, g: v <= value + c1 * a * s0

    if grad_at not in ("trial", "end"):
        raise ValueError(f"mfjax.linesearch.armijo: grad_at must be 'trial' or 'end', got {grad_at!r}")
    mode = ("accepted" if grad_at == "trial" else "end") if store_grad else "none"
    return _make_rule("armijo", accept_factory, beta=beta, max_iters=max_iters,
                      initial_step=initial_step, growth=growth, min_step=min_step,
                      grad_mode=mode, store=store_grad)


def inverse_lipschitz(beta: float = 0.5, max_iters: int = 30, initial_step: float = 1.0,
                      *, growth: float | None = None, min_step: float = 0.0
                      ) -> optax.GradientTransformationExtraArgs:
    r"""Step ``alpha ~ 1/L`` from a local Lipschitz estimate (slides, Algorithm 1).

    Shrinks ``alpha`` by ``beta`` until

    .. math::
      \|\nabla f(\theta) - \nabla f(\theta + \alpha p)\| \le \frac{\|\alpha p\|}{\alpha},

    i.e. the local Lipschitz constant ``L_loc = ||Delta grad|| / ||alpha p||``
    satisfies ``alpha <= 1 / L_loc`` (the reading noted in the seeds README).
    The test does not look at ``f``: the step is the classic ``1/L`` step of
    gradient descent with ``L`` estimated along ``p``.  Every trial evaluates
    value and gradient (the accepted ones are stored for reuse).

    ``alpha_0 = initial_step`` each update (the slides' ``alpha <- 1``).  With
    ``growth`` set, ``alpha_0 = min(growth * previous alpha, initial_step)``:
    on a problem whose ``L`` is large (the ``"sum"``-scaled ML-1M loss) this
    replaces ~20 halvings per update by one or two trials.

    Args:
      beta: shrink factor in (0, 1).
      max_iters: maximum number of trials.
      initial_step: first trial step (and cap when ``growth`` is set).
      growth: warm start factor (e.g. 2.0); ``None`` restarts at ``initial_step``.
      min_step: the slides' ``epsilon`` (stop, failure, below it).

    References:
      Slides "Recommendation systems via approximate matrix factorization"
      (Beresnev, Klyushev, 2024), Algorithm 1; Nesterov, "Introductory Lectures
      on Convex Optimization", 2004, Sec. 2.1.5 (the 1/L step).
    """

    def accept_factory(params, p, value, grad, s0):
        pnorm = optax.tree.norm(p)

        def accept(a, v, g):
            dg = optax.tree.norm(optax.tree.sub(grad, g))
            # ||a p|| / a = ||p||: no division by a tiny alpha.
            return dg <= pnorm

        return accept

    return _make_rule("inverse_lipschitz", accept_factory, beta=beta, max_iters=max_iters,
                      initial_step=initial_step, growth=growth, min_step=min_step,
                      grad_mode="all", store=True)


def strong_wolfe(c1: float = 1e-4, c2: float = 0.9, beta: float = 0.5, max_iters: int = 30,
                 initial_step: float = 1.0, *, min_step: float = 0.0
                 ) -> optax.GradientTransformationExtraArgs:
    r"""Shrink-only strong Wolfe step (slides, Algorithm 4, as written).

    Shrinks ``alpha`` by ``beta`` until both

    .. math::
      f(\theta + \alpha p) \le f(\theta) + c_1 \alpha \langle \nabla f(\theta), p\rangle,
      \qquad |\langle p, \nabla f(\theta + \alpha p)\rangle| \le c_2 |\langle p, \nabla f(\theta)\rangle|.

    It never grows the step, so when ``initial_step`` is shorter than every
    strong Wolfe step it fails (``success=False``, step 0); use
    :func:`strong_wolfe_zoom` for the bracketing version that can expand.
    Every trial evaluates value and gradient.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, eq. (3.7).
    """
    base.check_unit("c1", c1, "strong_wolfe")
    if not (c1 < c2 < 1):
        raise ValueError(f"mfjax.linesearch.strong_wolfe: need c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")

    def accept_factory(params, p, value, grad, s0):
        def accept(a, v, g):
            d = base.slope(g, p)
            return (v <= value + c1 * a * s0) & (jnp.abs(d) <= c2 * jnp.abs(s0))

        return accept

    return _make_rule("strong_wolfe", accept_factory, beta=beta, max_iters=max_iters,
                      initial_step=initial_step, growth=None, min_step=min_step,
                      grad_mode="all", store=True)
