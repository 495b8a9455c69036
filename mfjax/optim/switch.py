"""``switch``: one optax transform that runs one of several rules, chosen by a traced index.

Sweeping over methods usually means one compiled program per method.  With
``switch(rules, index)`` the choice is data: the program holds every rule
once and ``lax.switch`` runs the selected one, so a whole grid
``direction x step rule`` compiles once and each cell is one call::

    run = jax.jit(lambda i, j, p: mfjax.fit(
        loss, optax.chain(switch(directions, i), switch(step_rules, j)), p, 100))
    for i, j in grid:
        result = run(i, j, params)            # compiled once

(``vmap`` over ``index`` also works but then every rule runs and the results
are selected.)  The selected rule sees exactly its own state and arguments,
so the result equals ``optax.chain`` of the selected rules.

For step rules (states with ``value``, ``grad`` and ``info`` fields, the
:mod:`mfjax.linesearch` protocol) the active rule's ``value``/``grad``/
``info`` are exposed at the top of the state, and the inner states are kept
as bare leaves, so :func:`optax.value_and_grad_from_state` and
:func:`mfjax.linesearch.get_linesearch_info` find exactly one of each.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import optax

__all__ = ["switch", "SwitchState"]


class SwitchState(NamedTuple):
    """State of :func:`switch` over step rules.

    Attributes:
      value, grad, info: those of the last active rule (initially rule 0's).
      inner: per rule, the leaves of its state (tree structure kept statically).
    """

    value: Any
    grad: Any
    info: Any
    inner: tuple


def _is_step_state(s) -> bool:
    return all(hasattr(s, f) for f in ("value", "grad", "info"))


def switch(rules: Sequence[optax.GradientTransformation], index) -> optax.GradientTransformationExtraArgs:
    """Run ``rules[index]`` (``index`` may be traced; it is clipped to range by ``lax.switch``).

    Args:
      rules: optax transformations whose updates have the same structure
        (e.g. all direction rules, or all step rules, for the same params).
      index: int scalar, Python or traced.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra keyword arguments
      (``value=``, ``grad=``, ``value_fn=``) are passed to the active rule.
    """
    rules = [optax.with_extra_args_support(r) for r in rules]
    if not rules:
        raise ValueError("switch needs at least one rule, got an empty sequence")
    treedefs: list = []
    mode: dict = {}

    def init(params):
        states = [r.init(params) for r in rules]
        treedefs[:] = [jax.tree.structure(s) for s in states]
        step = all(_is_step_state(s) for s in states)
        mode["step"] = step
        inner = tuple(tuple(jax.tree.leaves(s)) for s in states)
        if not step:
            return inner
        from mfjax.linesearch import get_linesearch_info

        return SwitchState(states[0].value, states[0].grad, get_linesearch_info(states[0]), inner)

    def update(updates, state, params=None, **extra):
        if not treedefs:
            jax.eval_shape(init, params)  # structure only (state built by another instance)
        step = mode["step"]
        inner = state.inner if step else state

        def branch(k):
            def run(updates, inner, params):
                st = jax.tree.unflatten(treedefs[k], inner[k])
                u, new = rules[k].update(updates, st, params, **extra)
                new_inner = tuple(
                    tuple(jax.tree.leaves(new)) if j == k else inner[j] for j in range(len(rules))
                )
                if not step:
                    return u, new_inner
                from mfjax.linesearch import get_linesearch_info

                return u, SwitchState(new.value, new.grad, get_linesearch_info(new), new_inner)
            return run

        return jax.lax.switch(index, [branch(k) for k in range(len(rules))], updates, inner, params)

    return optax.GradientTransformationExtraArgs(init, update)
