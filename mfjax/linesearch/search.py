"""The optax driver of the search kernels: one ``lax.while_loop`` per update.

:func:`line_search` turns a kernel of :mod:`mfjax.linesearch.kernels` into an
:class:`optax.GradientTransformationExtraArgs` following the
:mod:`mfjax.linesearch.base` protocol: ``update(p, state, theta, value=f,
grad=g, value_fn=f)`` returns ``(a p, state)`` with the accepted step ``a``
(``0`` on failure).  Every trial evaluates what the kernel needs
(:class:`~mfjax.linesearch.kernels.Needs`) and nothing more:

* the kernel reads gradient changes, or slopes at every trial: ``value_and_grad``
  per trial (``num_fun_evals = num_grad_evals = trials``);
* the kernel reads slopes and says at which trials (``kernel.slope_needed(state,
  trial)``: the bisection weak Wolfe and the shrink-only strong Wolfe searches
  without interpolation need them only where sufficient decrease holds): a
  ``jax.vjp`` per trial, transposed under ``lax.cond`` where the slope is needed
  (the same trials and steps, ``num_grad_evals`` those transposes);
* values only, ``store_grad=False``: ``f`` per trial, no gradient;
* values only, ``store_grad=True, lazy_grad=False``: ``f`` per trial, then one
  ``value_and_grad`` at the accepted point (``num_fun_evals = trials + 1``);
* values only, ``store_grad=True, lazy_grad=True``: a ``jax.vjp`` per trial,
  transposed under ``lax.cond`` at the accepted trial only (optax's scheme);
  ``lazy_grad="auto"``: so for an autodiff loss, the final ``value_and_grad``
  for a loss with a custom VJP (:func:`has_custom_vjp`).

The search starts only from a finite descent direction
(:func:`~mfjax.linesearch.kernels.can_start`) and ends when the kernel
accepts, stops, or after ``kernel.max_trials`` trials.  A trial the kernel
*keeps* (``Decision.keep``: it passes, and the search tries a longer one) is
the step taken when the search ends without a later accepted or kept trial.

>>> import jax.numpy as jnp, optax
>>> from mfjax.linesearch.kernels import Backtracking, SufficientDecrease
>>> rule = line_search(Backtracking(SufficientDecrease(1e-4), beta=0.5))
>>> f = lambda x: jnp.sum(x ** 2)
>>> x = jnp.array([1.0, -2.0]); g = 2 * x
>>> upd, st = rule.update(-g, rule.init(x), x, value=f(x), grad=g, value_fn=f)
>>> float(st.info.step_size), int(st.info.num_fun_evals)    # a = 1 overshoots, a = 1/2 is exact
(0.5, 3)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.trees import tree_all_finite, tree_where
from mfjax.linesearch import base
from mfjax.linesearch.base import LineSearchInfo
from mfjax.linesearch.kernels import can_start, make_origin, make_trial

__all__ = ["SearchState", "line_search", "measure_trial"]


class SearchState(NamedTuple):
    """State of every kernel-driven step rule (Armijo, 1/L, the Wolfe searches).

    Attributes:
      step: the warm start hint of the last accepted trial, passed to the next
        search's ``kernel.init`` as ``prev_step``: the last accepted step
        (``1 / L_loc`` there for the interpolating 1/L rule, see
        :class:`~mfjax.linesearch.kernels.Decision`).
      value: ``f`` at the accepted point (``+inf`` if not stored).
      grad: ``grad f`` at the accepted point (zeros if not stored).
      info: :class:`LineSearchInfo` of the last update.
    """

    step: jax.Array
    value: jax.Array
    grad: optax.Params
    info: LineSearchInfo


class _Carry(NamedTuple):
    i: jax.Array          # trials made
    step: jax.Array       # next trial step
    kstate: object        # the kernel's state
    done: jax.Array
    ok: jax.Array         # a trial was accepted
    acc_step: jax.Array
    warm: jax.Array       # the kernel's warm start hint of the accepted trial
    value: jax.Array
    grad: optax.Params
    num_grad: jax.Array


def measure_trial(kernel, vg, params, grad, a, p):
    """Evaluate ``value_and_grad`` at ``theta + a p`` and the trial fields ``kernel`` reads.

    Shared by both drivers (this one and the folded row loop).

    Args:
      kernel: the search kernel (its ``needs`` decide what is measured).
      vg: ``jax.value_and_grad(f)``.
      params, grad: ``theta`` and ``grad f(theta)``.
      a: the trial step.
      p: the direction.

    Returns:
      ``(trial, x, g)``: the :class:`~mfjax.linesearch.kernels.Trial`, the
      trial point ``x = theta + a p`` and ``grad f(x)``.
    """
    x = base.trial_point(params, a, p)
    v, g = vg(x)
    needs = kernel.needs
    fin = jnp.isfinite(v) & tree_all_finite(g)
    d = dg = None
    if needs.slope:
        d = base.slope(g, p).astype(v.dtype)
        fin = fin & jnp.isfinite(d)
    if needs.grad_change:
        dg = optax.tree.norm(optax.tree.sub(grad, g))
    return make_trial(a, v, fin, slope=d, grad_change=dg), x, g


def _takes(dec) -> jax.Array:
    """Whether the driver takes the trial: accepted, or kept (``Decision.keep``) as the step to take if
    the search ends without a later accepted or kept trial (an extrapolation phase)."""
    return dec.accept if dec.keep is None else dec.accept | dec.keep


def _value_then_grad(f, x, wanted_of, otherwise):
    """``(f(x), grad f(x) or otherwise, wanted)``: one ``jax.vjp``, transposed under ``lax.cond`` only when
    ``wanted_of(f(x))`` holds (the gradient costs nothing where the search does not read it)."""
    v, vjp = jax.vjp(f, x)
    wanted = wanted_of(v)
    return v, jax.lax.cond(wanted, lambda: vjp(jnp.ones_like(v))[0], lambda: otherwise), wanted


def has_custom_vjp(f, params) -> bool:
    """Whether ``f(params)`` calls a function with a custom VJP (e.g. :func:`mfjax.objective.loss`, whose
    forward pass computes the closed-form gradient with the value); traced once, at trace time."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), params)

    def walk(jaxpr) -> bool:
        for eqn in jaxpr.eqns:
            if "custom_vjp" in eqn.primitive.name:
                return True
            for v in eqn.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns") and walk(inner):
                        return True
        return False

    return walk(jax.make_jaxpr(f)(shapes).jaxpr)


def _run_search(kernel, f, params, p, value, grad, origin, step0, kstate0, *, store_grad,
                lazy_grad):
    """The search loop; returns the final :class:`_Carry`."""
    if lazy_grad == "auto":  # a vjp per trial saves the final value_and_grad, unless the forward pass is it
        lazy_grad = not has_custom_vjp(f, params)
    vg = jax.value_and_grad(f)
    trial_grad = kernel.needs.trial_grad
    values_only = not trial_grad and not (store_grad and lazy_grad)
    # slope kernels that say when a decision reads the slope: the value first, the gradient only then
    lazy_slope = trial_grad and not kernel.needs.grad_change and hasattr(kernel, "slope_needed")

    def body(c: _Carry) -> _Carry:
        a = c.step
        ng = c.num_grad
        if lazy_slope:
            v, g, wanted = _value_then_grad(
                f, base.trial_point(params, a, p),
                lambda v: kernel.slope_needed(c.kstate, make_trial(a, v, jnp.isfinite(v))), c.grad)
            d = jnp.where(wanted, base.slope(g, p).astype(v.dtype), jnp.nan)
            fin = jnp.isfinite(v) & (~wanted | (tree_all_finite(g) & jnp.isfinite(d)))
            trial = make_trial(a, v, fin, slope=d)
            ng = ng + wanted.astype(jnp.int32)
        elif trial_grad:
            trial, _, g = measure_trial(kernel, vg, params, grad, a, p)
            ng = ng + 1
        elif values_only:
            v = f(base.trial_point(params, a, p))
            trial, g = make_trial(a, v, jnp.isfinite(v)), c.grad
        else:  # lazy: the gradient of the accepted trial only
            v, g, wanted = _value_then_grad(
                f, base.trial_point(params, a, p),
                lambda v: _takes(kernel.step(c.kstate, make_trial(a, v, jnp.isfinite(v)))[0]), c.grad)
            trial = make_trial(a, v, jnp.isfinite(v) & tree_all_finite(g))
            ng = ng + wanted.astype(jnp.int32)
        dec, kstate = kernel.step(c.kstate, trial)
        ok = dec.accept
        take = _takes(dec)   # accepted, or kept as the candidate of an extrapolation phase
        i = c.i + 1
        warm = a if dec.warm is None else dec.warm
        return _Carry(i, jnp.where(ok, a, dec.next_step).astype(a.dtype), kstate,
                      ok | dec.stop | (i >= kernel.max_trials), c.ok | take,
                      jnp.where(take, a, c.acc_step).astype(a.dtype),
                      jnp.where(take, warm, c.warm).astype(a.dtype),
                      jnp.where(take, trial.value, c.value).astype(c.value.dtype),
                      tree_where(take, g, c.grad), ng)

    zero = jnp.zeros_like(step0)
    init = _Carry(jnp.asarray(0, jnp.int32), step0, kstate0, ~can_start(origin),
                  jnp.asarray(False), zero, zero, value, grad, jnp.asarray(0, jnp.int32))
    c = jax.lax.while_loop(lambda c: ~c.done, body, init)
    if trial_grad or not store_grad or lazy_grad:
        return c
    # values only, then one value_and_grad at the accepted point
    v, g = vg(base.trial_point(params, jnp.where(c.ok, c.acc_step, 0).astype(c.step.dtype), p))
    ok = c.ok & jnp.isfinite(v) & tree_all_finite(g)
    return c._replace(ok=ok, value=jnp.where(ok, v, value).astype(value.dtype),
                      grad=tree_where(ok, g, grad), i=c.i + c.ok.astype(jnp.int32),
                      num_grad=c.num_grad + c.ok.astype(jnp.int32))


def line_search(kernel, *, store_grad: bool = True, lazy_grad: bool | str = False,
                rule: str = "line_search") -> optax.GradientTransformationExtraArgs:
    """The optax step rule running ``kernel`` (see the module docstring).

    Args:
      kernel: a search kernel (:class:`~mfjax.linesearch.kernels.Backtracking`,
        :class:`~mfjax.linesearch.kernels.BisectionWolfe`,
        :class:`~mfjax.linesearch.wolfe.ZoomWolfe`, ...).
      store_grad: store ``f`` and ``grad f`` at the accepted point for reuse
        (kernels that read gradients always store them).
      lazy_grad: for value-only kernels with ``store_grad``: a vjp per trial,
        transposed at the accepted one, instead of one final ``value_and_grad``;
        ``"auto"``: so unless the loss has a custom VJP (:func:`has_custom_vjp`:
        its forward pass, run at every trial, would compute the gradient too).
      rule: name used in error messages.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a :class:`SearchState`.
      On failure the update is exactly zero, the state keeps the previous
      step and the current ``value``/``grad``, and ``info.success`` is False.
    """
    store = store_grad or kernel.needs.trial_grad
    initial_step = kernel.initial_step

    def init_fn(params):
        dt = base.value_dtype(params)
        return SearchState(
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
        pnorm = optax.tree.norm(updates) if kernel.needs.grad_change else None
        origin = make_origin(value, s0, direction_norm=pnorm)
        step0, kstate0 = kernel.init(origin, state.step)
        c = _run_search(kernel, f, params, updates, value, grad, origin, step0.astype(dt), kstate0,
                        store_grad=store, lazy_grad=lazy_grad)
        step = jnp.where(c.ok, c.acc_step, 0).astype(dt)
        if store:
            new_value, new_grad = c.value, c.grad
        else:
            new_value, new_grad = jnp.asarray(jnp.inf, dt), optax.tree.zeros_like(params)
        new_state = SearchState(
            step=jnp.where(c.ok, c.warm, state.step).astype(dt),
            value=new_value, grad=new_grad,
            info=base.make_info(step, c.i, c.num_grad, c.ok))
        return base.scaled_update(step, updates, c.ok), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
