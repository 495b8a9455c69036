"""Small pytree helpers used by the step rules, the loop and the solvers (one copy each)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["tree_where", "tree_all_finite", "tree_norm", "tree_vdot"]


def tree_where(pred, a, b):
    """Leaf-wise ``jnp.where(pred, a, b)``."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def tree_all_finite(tree) -> jax.Array:
    """``True`` when every entry of every leaf is finite (``True`` for an empty tree)."""
    out = jnp.asarray(True)
    for x in jax.tree_util.tree_leaves(tree):
        out = out & jnp.all(jnp.isfinite(x))
    return out


def tree_vdot(a, b) -> jax.Array:
    """``sum over leaves of <a, b>`` (real part)."""
    leaves = [jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                             jax.tree_util.tree_leaves(b))]
    return jnp.real(sum(leaves)) if leaves else jnp.asarray(0.0)


def tree_norm(tree) -> jax.Array:
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(tree_vdot(tree, tree))
