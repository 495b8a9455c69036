"""Row solver running a fixed number of optax iterations per row (any direction x step rule)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.trees import tree_all_finite, tree_where
from mfjax.linesearch import exact_quadratic_linesearch, get_linesearch_info
from mfjax.solvers.rowwise.info import RowInfo, grad_tol, i32, stall_tol

__all__ = ["FixedCount", "fixed_count", "default_row_optimizer"]


@functools.lru_cache(maxsize=None)
def _default_direction():
    from mfjax.optim import bfgs_direction

    return bfgs_direction(scale_init=False)


@functools.lru_cache(maxsize=None)
def default_row_optimizer() -> optax.GradientTransformationExtraArgs:
    """Per-row BFGS (:func:`mfjax.optim.bfgs_direction`, ``H_0 = I``) with exact steps.

    Cached: the same object on every call, so solvers built from it hash
    equal and ``jit`` does not recompile.
    """
    return optax.chain(_default_direction(), exact_quadratic_linesearch())


class FixedCount(NamedTuple):
    """Row solver: ``num_steps`` iterations of ``optimizer`` per row (see :func:`fixed_count`)."""

    optimizer: optax.GradientTransformationExtraArgs
    num_steps: int
    rtol: float
    atol: float
    trust_state: bool = False

    def solve(self, fun, u0):
        """Minimise ``fun`` from ``u0``; returns ``(u, RowInfo)``."""
        return _solve_fixed(self, fun, u0)


def fixed_count(optimizer=None, num_steps: int = 10, *, rtol: float = 1e-6,
                atol: float = 0.0, trust_state: bool | None = None) -> FixedCount:
    """Row solver running a fixed number of optimizer iterations per row.

    Each iteration is ``optimizer.update(g, state, u, value=f, grad=g,
    value_fn=f_i)`` (the :mod:`mfjax.linesearch` protocol), then ``u += update``.
    The value and gradient at the new point are taken from the step rule's
    state (fields ``value``/``grad``) when finite, else recomputed.  A row stops
    moving (its state frozen) once ``||g|| <= atol + rtol ||g_0||`` or when its
    search fails (``info.success`` False, or a non-finite point): it then keeps
    its last accepted value and ``RowInfo.success`` is False -- unless the
    failure happens at ``||g|| <= sqrt(eps) ||g_0||``, where no search can make
    progress in floating point (reported as success, ``converged`` by the
    user's tolerance).

    Args:
      optimizer: an optax ``GradientTransformationExtraArgs`` (default:
        :func:`default_row_optimizer`, BFGS + exact steps).
      num_steps: iterations per row (``r`` suffices for BFGS + exact steps).
      rtol, atol: gradient-norm stopping test.
      trust_state: take ``f, grad f`` at the new point from the step rule's
        state without the safety re-evaluation (which, under ``vmap``, is
        otherwise computed for every row: the value is only used where the
        state's value is not finite).  Only for step rules that always store
        them (e.g. :func:`mfjax.linesearch.exact_quadratic_linesearch`, Armijo
        with ``store_grad=True``, the Wolfe searches).  Default: True for the
        default optimizer, else False.

    Returns:
      A :class:`FixedCount` row solver.

    Raises:
      TypeError / ValueError: not an optax transform; ``num_steps < 1``.
    """
    if trust_state is None:
        trust_state = optimizer is None
    if optimizer is None:
        optimizer = default_row_optimizer()
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {optimizer!r}")
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    return FixedCount(optimizer, int(num_steps), float(rtol), float(atol), bool(trust_state))


def _state_field(state, name):
    try:
        return optax.tree_utils.tree_get(state, name)
    except KeyError:  # several fields of that name: do not guess
        return None


def _solve_fixed(cfg: FixedCount, fun, u0):
    opt = cfg.optimizer
    vg = jax.value_and_grad(fun)
    f0, g0 = vg(u0)
    tol = grad_tol(cfg.rtol, cfg.atol, g0)
    stall = stall_tol(g0)
    active0 = (jnp.linalg.norm(g0) > tol) & jnp.isfinite(f0) & tree_all_finite(g0)
    carry0 = (u0, f0, g0, opt.init(u0), active0, jnp.asarray(True), i32(0), i32(1), i32(1))

    def body(carry, _):
        u, f, g, st, active, success, it, nf, ng = carry
        upd, st_new = opt.update(g, st, u, value=f, grad=g, value_fn=fun)
        u_new = jax.tree_util.tree_map(lambda x, d: x + d, u, upd)
        f_s, g_s = _state_field(st_new, "value"), _state_field(st_new, "grad")
        if cfg.trust_state and f_s is not None and g_s is not None:
            f_r, g_r, reuse = f_s, g_s, jnp.asarray(True)
        elif f_s is None or g_s is None:
            f_r, g_r = vg(u_new)
            reuse = jnp.asarray(False)
        else:
            f_r, g_r = vg(u_new)
            reuse = jnp.isfinite(f_s) & tree_all_finite(g_s) & (jnp.shape(f_s) == ())
            f_r = jnp.where(reuse, f_s, f_r)
            g_r = tree_where(reuse, g_s, g_r)
        info = get_linesearch_info(st_new)
        if info is None:
            ok_ls, lnf, lng = jnp.asarray(True), i32(0), i32(0)
        else:
            ok_ls, lnf, lng = info.success, info.num_fun_evals, info.num_grad_evals
        ok = ok_ls & jnp.isfinite(f_r) & tree_all_finite(g_r) & tree_all_finite(u_new)
        take = active & ok
        u = tree_where(take, u_new, u)
        f = jnp.where(take, f_r, f)
        g = tree_where(take, g_r, g)
        st = tree_where(take, st_new, st)
        extra = (~reuse).astype(jnp.int32)
        nf = nf + jnp.where(active, lnf + extra, 0)
        ng = ng + jnp.where(active, lng + extra, 0)
        it = it + take.astype(jnp.int32)
        success = success & ~(active & ~ok & (jnp.linalg.norm(g) > stall))
        active = take & (jnp.linalg.norm(g) > tol)
        return (u, f, g, st, active, success, it, nf, ng), None

    (u, f, g, _, _, success, it, nf, ng), _ = jax.lax.scan(body, carry0, None, length=cfg.num_steps)
    gn = jnp.linalg.norm(g)
    return u, RowInfo(it, nf, ng, success, gn <= tol, gn)
