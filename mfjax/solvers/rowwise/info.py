"""Per-row diagnostics and the stopping tests shared by the row solvers."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["RowInfo"]


class RowInfo(NamedTuple):
    """Per-row diagnostics of one row solve (one entry per row under ``vmap``).

    Attributes:
      num_iters: accepted iterations (int32).
      num_fun_evals: function evaluations, the initial one included (int32).
      num_grad_evals: gradient evaluations, the initial one included (int32).
      success: False when a search failed (the row kept its last accepted value).
      converged: the gradient-norm test ``||g|| <= atol + rtol ||g_0||`` holds.
      grad_norm: ``||grad f_i||`` at the returned point.
    """

    num_iters: jax.Array
    num_fun_evals: jax.Array
    num_grad_evals: jax.Array
    success: jax.Array
    converged: jax.Array
    grad_norm: jax.Array


def grad_tol(rtol, atol, g0) -> jax.Array:
    """``atol + rtol ||g_0||``: the gradient-norm stopping test."""
    return atol + rtol * jnp.linalg.norm(g0)


def stall_tol(g0) -> jax.Array:
    """Below ``sqrt(eps) ||g_0||`` a failed search is rounding-limited, not a failure."""
    return jnp.sqrt(jnp.finfo(g0.dtype).eps) * jnp.linalg.norm(g0)


def i32(x) -> jax.Array:
    return jnp.asarray(x, jnp.int32)
