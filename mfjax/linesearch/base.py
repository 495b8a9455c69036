"""Shared pieces of the step-size rules: diagnostics, state lookup, helpers.

Protocol (shared with :mod:`mfjax.optim` and :mod:`mfjax.loop`).  Every step
rule is an :class:`optax.GradientTransformationExtraArgs` whose ``update``::

    update(updates, state, params, *, value, grad, value_fn, **extra_args)

receives ``updates`` = the direction ``p`` (a descent direction such as
``-g`` or ``-H g``), the current ``params`` (theta), ``value = f(theta)``,
``grad = grad f(theta)`` and ``value_fn = f``, and returns
``(gamma * p, new_state)``.  So ``optax.chain(direction_rule, step_rule)`` is
an optimizer, exactly like ``optax.chain(..., optax.scale_by_zoom_linesearch(...))``.

Extra keyword arguments follow optax's convention: those whose names are
parameters of ``value_fn`` are forwarded to it; any other name raises a
``TypeError`` naming them.

Every rule's state is a NamedTuple with the fields

- ``value``: ``f`` at the accepted new point, or ``+inf`` when the rule did
  not evaluate it (then :func:`optax.value_and_grad_from_state`, which reuses
  ``value``/``grad`` only when ``value`` is finite, recomputes them);
- ``grad``: ``grad f`` at the accepted new point (zeros when unknown; never
  ``None``, so :func:`optax.value_and_grad_from_state` accepts the state);
- ``info``: a :class:`LineSearchInfo` with the step taken and the evaluations
  made by this update.

Failure.  When a search fails (no acceptable step within ``max_iters``, the
step fell below ``min_step``, the direction is not a descent direction, or
the inputs are not finite) the rule returns the step ``0`` (params
unchanged, the update is exactly zero even when ``p`` holds NaN), stores the
*current* ``value``/``grad`` in its state and sets ``info.success = False``,
so a training loop can stop with a status instead of producing NaN
parameters.  A trial point whose value or gradient is not finite is a failed
trial (the search backtracks / shrinks), never an accepted step.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.trees import tree_all_finite, tree_where

__all__ = [
    "LineSearchInfo",
    "get_linesearch_info",
]


class LineSearchInfo(NamedTuple):
    """Diagnostics of one step-size update.

    Attributes:
      step_size: the step ``gamma`` applied to the direction (``0`` on failure).
      num_fun_evals: int32, function evaluations made by this update (for
        :func:`mfjax.linesearch.exact_mf`: the equivalent cost, see there).
      num_grad_evals: int32, gradient evaluations made by this update.
      success: bool, whether an acceptable step was found.
    """

    step_size: Any
    num_fun_evals: Any
    num_grad_evals: Any
    success: Any


def make_info(step, nf, ng, success) -> LineSearchInfo:
    return LineSearchInfo(
        step_size=step,
        num_fun_evals=jnp.asarray(nf, jnp.int32),
        num_grad_evals=jnp.asarray(ng, jnp.int32),
        success=jnp.asarray(success, bool),
    )


def _optax_info(state) -> LineSearchInfo | None:
    """Map optax's own line-search states to :class:`LineSearchInfo`."""
    if isinstance(state, optax.ScaleByBacktrackingLinesearchState):
        info = state.info
        nf = jnp.asarray(info.num_linesearch_steps, jnp.int32)
        # optax evaluates the gradient once (at the end) iff store_grad=True.
        ng = jnp.asarray(0 if state.grad is None else 1, jnp.int32)
        # Success assumes atol=0 (optax's default): decrease_error is clipped at 0.
        return LineSearchInfo(jnp.asarray(state.learning_rate), nf, ng,
                              jnp.asarray(info.decrease_error <= 0))
    if isinstance(state, optax.ScaleByZoomLinesearchState):
        info = state.info
        n = jnp.asarray(info.num_linesearch_steps, jnp.int32)
        # Every zoom step evaluates value and gradient.  Success = sufficient
        # decrease holds (a positive curvature error alone is "not stringent",
        # optax's own words: the returned step still decreases f).
        return LineSearchInfo(jnp.asarray(state.learning_rate), n, n,
                              jnp.asarray(info.decrease_error <= 0))
    return None


_OPTAX_STATES = (optax.ScaleByBacktrackingLinesearchState, optax.ScaleByZoomLinesearchState)


def get_linesearch_info(opt_state, default=None) -> LineSearchInfo | None:
    """Find the step-size diagnostics in a (possibly chained) optax state.

    Searches the state pytree (tuples of a chain, NamedTuples, dicts, optax
    wrappers) for the first :class:`LineSearchInfo`, or the first state of
    :func:`optax.scale_by_backtracking_linesearch` /
    :func:`optax.scale_by_zoom_linesearch`, which is mapped to a
    :class:`LineSearchInfo` (``num_fun_evals`` from ``num_linesearch_steps``;
    for zoom also ``num_grad_evals``; ``success`` from ``decrease_error <= 0``).

    Args:
      opt_state: an optax optimizer state.
      default: returned when the state holds no line search (e.g. ``optax.adam``).

    Returns:
      A :class:`LineSearchInfo` or ``default``.  The lookup is structural
      (static), so it works on traced states inside ``jit``/``scan``.
    """
    is_leaf = lambda x: isinstance(x, (LineSearchInfo,) + _OPTAX_STATES)
    for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=is_leaf):
        if isinstance(leaf, LineSearchInfo):
            return leaf
        mapped = _optax_info(leaf)
        if mapped is not None:
            return mapped
    return default


# --------------------------------------------------------------------------
# internal helpers shared by the rules
# --------------------------------------------------------------------------


def bind_value_fn(value_fn: Callable, extra_args: dict, rule: str) -> Callable:
    """``value_fn`` with the extra keyword arguments it accepts bound (optax's rule).

    Raises:
      TypeError: an extra keyword argument is not a parameter of ``value_fn``.
    """
    if value_fn is None:
        raise TypeError(f"mfjax.linesearch.{rule}: update() needs value_fn=, got None")
    if not extra_args:
        return value_fn
    names = set(inspect.signature(value_fn).parameters)
    unused = sorted(k for k in extra_args if k not in names)
    if unused:
        raise TypeError(
            f"mfjax.linesearch.{rule}: unexpected keyword arguments {unused}: they are "
            "not parameters of value_fn"
        )
    return functools.partial(value_fn, **extra_args)


def value_dtype(params):
    leaf = jax.tree_util.tree_leaves(params)[0]
    return jnp.real(jnp.empty((), leaf.dtype)).dtype


def slope(grad, direction):
    """``<grad, p>``: derivative of ``a -> f(theta + a p)`` at 0."""
    return optax.tree.real(optax.tree.vdot(grad, direction))


all_finite = tree_all_finite
"""``True`` when every leaf is finite (:func:`mfjax.core.tree_all_finite`)."""


def trial_point(params, step, direction):
    """``theta + step * p`` (leaf dtypes kept)."""
    return jax.tree_util.tree_map(lambda x, d: (x + step * d).astype(x.dtype), params, direction)


def scaled_update(step, direction, ok):
    """``step * p`` where ``ok``, exactly zero otherwise (also when ``p`` holds NaN)."""
    return jax.tree_util.tree_map(
        lambda d: jnp.where(ok, (step * d).astype(d.dtype), jnp.zeros_like(d)), direction
    )


select_tree = tree_where
"""Leaf-wise ``where`` (:func:`mfjax.core.tree_where`)."""


def check_positive(name: str, value, rule: str, *, strict: bool = True):
    if value is None:
        return
    bad = not (value > 0) if strict else not (value >= 0)
    if bad:
        cmp = "> 0" if strict else ">= 0"
        raise ValueError(f"mfjax.linesearch.{rule}: {name} must be {cmp}, got {value!r}")


def check_unit(name: str, value, rule: str):
    if not (0 < value < 1):
        raise ValueError(f"mfjax.linesearch.{rule}: {name} must be in (0, 1), got {value!r}")


def check_iters(max_iters, rule: str):
    if int(max_iters) != max_iters or max_iters < 1:
        raise ValueError(f"mfjax.linesearch.{rule}: max_iters must be an integer >= 1, got {max_iters!r}")


def check_extrapolate(extrapolate, rule):
    """``extrapolate`` is ``None`` or a number ``> 1``."""
    if extrapolate is not None and not (isinstance(extrapolate, (int, float)) and extrapolate > 1):
        raise ValueError(f"mfjax.linesearch.{rule}: extrapolate must be None or a number > 1, "
                         f"got {extrapolate!r}")
