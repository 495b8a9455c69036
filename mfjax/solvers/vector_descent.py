"""Row-wise vector descent (slides, Algorithm 13, eqs. 7-10).

With ``V`` fixed the masked loss splits into ``m`` independent problems in
``R^r``, one per row of ``U`` (slides eq. 7), and with ``U`` fixed into ``n``
problems, one per row of ``V`` (eq. 8)::

    f_i(u) = ||W_i o (X_i - u V^T)||^2 + l2 ||u||^2 = u^T A_i u - 2 b_i^T u + c_i,
    grad f_i(u) = 2 (A_i u - b_i)                                         (eq. 9)

(:mod:`mfjax.solvers._rows` computes the sufficient statistics
``(A_i, b_i, c_i)`` of all rows from a sparse bucketed layout; afterwards each
function or gradient evaluation of a row costs O(r^2)).  Vector descent runs
a few iterations of *any* optimizer x step rule of the library on each row
problem -- per-row BFGS with its r x r inverse Hessian included -- instead of
ALS's closed-form solve ``u = A_i^{-1} b_i``.  With BFGS and exact steps a
row problem is solved in at most ``r`` iterations (finite termination on a
quadratic), i.e. the half-sweep then equals the ALS half-sweep.

Schedules:

* ``"parallel"``: all rows of ``U`` at once (``vmap``) given ``V``, then all
  rows of ``V`` given the new ``U``.  The rows of ``U`` are independent given
  ``V``, so this is the same half-sweep as any sequential order.
* ``"interleaved"``: the order of Algorithm 13, blocks of ``k_U`` rows then
  ``k_V`` columns (``k_U / k_V ~ m / n``), later updates using the fresh
  values; :func:`algorithm13_schedule` gives the exact order, the solver runs
  it as a ``lax.scan`` over blocks (the ``k_U`` rows of a block are
  independent given ``V`` and are solved together with ``vmap``).

Row solvers (how each row problem is minimised, all ``vmap``-friendly):

* :func:`quadratic_bfgs` (default) -- per-row BFGS with exact steps on
  ``(A_i, b_i)`` directly: the same iterates as the generic path with
  ``mfjax.optim.bfgs_direction`` and :func:`exact_quadratic_linesearch`,
  without evaluating loss values (two r x r mat-vecs per iteration).
* :func:`fixed_count` -- every row runs ``num_steps`` iterations of an optax
  optimizer (``optax.chain(direction, step_rule)``, e.g.
  :func:`mfjax.optim.bfgs` with any :mod:`mfjax.linesearch` rule).  A step
  rule's inner ``while_loop`` is bounded by its ``max_iters``; under ``vmap``
  every row waits for the slowest row's search at each iteration.
* :func:`folded` -- the line search is folded into the row solver's single
  ``while_loop`` (the optimistix design): each loop iteration either rejects
  a trial step (and proposes the next) or accepts it (and computes the next
  direction), so under ``vmap`` each row advances on its own and the batch
  stops when the last row has converged.

Failures are data: a row whose search fails keeps its last accepted value
and is flagged in :class:`RowInfo`; rows without observations are set to
their regularised optimum ``0`` (also for ``l2 = 0``, where ``0`` is the
minimum-norm minimiser) without NaN.

References:
  Beresnev, Klyushev, "Recommendation systems via approximate matrix
  factorization" (slides), 2024, eqs. 7-10 and Algorithm 13.
  Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006 (BFGS finite
  termination on quadratics with exact line searches, Ch. 6).
  Rader, Lyons, Kidger, "Optimistix: modular optimisation in JAX and
  Equinox", 2024 (searches folded into the solver loop).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mfjax.losses.masked import Factors, init_factors, masked_sq_loss
from mfjax.metrics import rmse as _rmse
from mfjax.solvers._rows import (
    BlockLayout,
    RowLayout,
    RowQuadratic,
    block_statistics,
    build_block_layout,
    build_row_layout,
    quadratic_increment,
    row_statistics,
)
from mfjax.solvers.base import SolverResult, SolverTrace

__all__ = [
    "RowInfo",
    "FixedCount",
    "Folded",
    "QuadraticBFGS",
    "quadratic_bfgs",
    "FoldedSearch",
    "fixed_count",
    "folded",
    "armijo_search",
    "weak_wolfe_search",
    "exact_search",
    "exact_quadratic_linesearch",
    "default_row_optimizer",
    "solve_rows",
    "row_half_sweep",
    "algorithm13_schedule",
    "BlockSchedule",
    "interleaved_blocks",
    "default_block_sizes",
    "VectorDescentInfo",
    "vector_descent",
]


# ------------------------------------------------------------- diagnostics
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

    num_iters: Any
    num_fun_evals: Any
    num_grad_evals: Any
    success: Any
    converged: Any
    grad_norm: Any


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _finite(tree):
    out = jnp.asarray(True)
    for x in jax.tree_util.tree_leaves(tree):
        out = out & jnp.all(jnp.isfinite(x))
    return out


def _tol(rtol, atol, g0):
    return atol + rtol * jnp.linalg.norm(g0)


def _stall_tol(g0):
    """Below ``sqrt(eps) ||g_0||`` a failed search is rounding-limited, not a failure."""
    return jnp.sqrt(jnp.finfo(g0.dtype).eps) * jnp.linalg.norm(g0)


# --------------------------------------------------------- exact step rule
class ExactQuadraticState(NamedTuple):
    """State of :func:`exact_quadratic_linesearch` (the step-rule protocol's fields)."""

    value: Any
    grad: Any
    info: Any


def _exact_step_size(slope, curvature):
    """``a* = -<g, p> / (2 p^T A p)`` via :func:`mfjax.linesearch.exact.exact_quadratic_step`.

    Returns ``(a, ok)``; ``ok`` is False (and ``a = 0``) unless ``p`` is a
    descent direction with positive, finite curvature.
    """
    from mfjax.linesearch.exact import exact_quadratic_step as _coef_step

    return _coef_step(slope, curvature)


def _curvature(f, params, p):
    """``<p, Hess f(params) p>`` by forward-over-reverse autodiff (no cancellation)."""
    _, hp = jax.jvp(jax.grad(f), (params,), (p,))
    return optax.tree.vdot(p, hp)


def exact_quadratic_linesearch() -> optax.GradientTransformationExtraArgs:
    r"""Exact line search for a quadratic objective (a step rule).

    For ``f(u) = u^T A u - 2 b^T u + c`` and a direction ``p``,
    ``f(u + a p) = f(u) + a <g, p> + a^2 p^T A p`` exactly, so the best step is

    .. math::  a^* = -\frac{\langle g, p\rangle}{2\, p^\top A p}
                   = -\frac{\langle g, p\rangle}{p^\top \nabla^2 f\, p}.

    The curvature ``p^T (2A) p`` is one Hessian-vector product of ``value_fn``
    (``jax.jvp`` of ``jax.grad``): exact for a quadratic and free of the
    cancellation of the finite difference ``f(u + p) - f(u) - <g, p>``, which
    in float32 loses all digits near the optimum.  Follows the
    :mod:`mfjax.linesearch` protocol (state ``value``/``grad``/``info``); it
    fails (step 0, ``info.success`` False) when ``p`` is no descent direction,
    the curvature is not positive, the new point is not finite or its value
    exceeds ``f(u)`` by more than ``sqrt(eps) (|f(u)| + 1)`` (rounding slack).
    Cost per update: 1 Hessian-vector product and 1 value-and-gradient
    evaluation (counted as 1 function and 2 gradient evaluations).

    For a non-quadratic ``f`` it is the Newton step along ``p``.
    """
    from mfjax.linesearch.base import LineSearchInfo

    def init_fn(params):
        dt = jax.tree_util.tree_leaves(params)[0].dtype
        return ExactQuadraticState(
            jnp.asarray(jnp.inf, dt),
            jax.tree_util.tree_map(jnp.zeros_like, params),
            LineSearchInfo(jnp.asarray(0, dt), jnp.asarray(0, jnp.int32),
                           jnp.asarray(0, jnp.int32), jnp.asarray(True)),
        )

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra):
        del state
        f = functools.partial(value_fn, **extra) if extra else value_fn
        dt = jax.tree_util.tree_leaves(params)[0].dtype
        slope = optax.tree.vdot(grad, updates)
        a, ok = _exact_step_size(slope, 0.5 * _curvature(f, params, updates))
        new = jax.tree_util.tree_map(lambda x, d: x + a * d, params, updates)
        v, g = jax.value_and_grad(f)(new)
        ok = ok & jnp.isfinite(v) & _finite(g) & (v <= value + _slack(value))
        step = jnp.where(ok, a, 0).astype(dt)
        upd = jax.tree_util.tree_map(lambda d: jnp.where(ok, step * d, jnp.zeros_like(d)), updates)
        info = LineSearchInfo(step, jnp.asarray(1, jnp.int32), jnp.asarray(2, jnp.int32), ok)
        return upd, ExactQuadraticState(
            jnp.where(ok, v, value).astype(dt), _tree_where(ok, g, grad), info
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _slack(value):
    eps = jnp.finfo(jnp.result_type(value)).eps
    return jnp.sqrt(eps) * (jnp.abs(value) + 1.0)


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


# ---------------------------------------------------------- fixed count
class FixedCount(NamedTuple):
    """Row solver: ``num_steps`` iterations of ``optimizer`` per row (see :func:`fixed_count`)."""

    optimizer: Any
    num_steps: int
    rtol: float
    atol: float
    trust_state: bool = False

    def solve(self, fun, u0):
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
        them (e.g. :func:`exact_quadratic_linesearch`, Armijo with
        ``store_grad=True``, the Wolfe searches).  Default: True for the
        default optimizer, else False.

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
    from mfjax.linesearch.base import get_linesearch_info

    opt = cfg.optimizer
    vg = jax.value_and_grad(fun)
    f0, g0 = vg(u0)
    tol = _tol(cfg.rtol, cfg.atol, g0)
    stall = _stall_tol(g0)
    active0 = (jnp.linalg.norm(g0) > tol) & jnp.isfinite(f0) & _finite(g0)
    i32 = lambda x: jnp.asarray(x, jnp.int32)
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
            reuse = jnp.isfinite(f_s) & _finite(g_s) & (jnp.shape(f_s) == ())
            f_r = jnp.where(reuse, f_s, f_r)
            g_r = _tree_where(reuse, g_s, g_r)
        info = get_linesearch_info(st_new)
        if info is None:
            ok_ls, lnf, lng = jnp.asarray(True), i32(0), i32(0)
        else:
            ok_ls, lnf, lng = info.success, info.num_fun_evals, info.num_grad_evals
        ok = ok_ls & jnp.isfinite(f_r) & _finite(g_r) & _finite(u_new)
        take = active & ok
        u = _tree_where(take, u_new, u)
        f = jnp.where(take, f_r, f)
        g = _tree_where(take, g_r, g)
        st = _tree_where(take, st_new, st)
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


# ------------------------------------------------------------ fast path
class QuadraticBFGS(NamedTuple):
    """Per-row BFGS with exact steps working on ``(A, b)`` directly (see :func:`quadratic_bfgs`)."""

    num_steps: int
    rtol: float
    atol: float

    def solve(self, fun, u0):  # a generic function: the library path, same iterates
        return fixed_count(default_row_optimizer(), self.num_steps, rtol=self.rtol,
                           atol=self.atol, trust_state=True).solve(fun, u0)

    def solve_quadratic(self, q: RowQuadratic, u0):
        return _solve_quadratic_bfgs(self, q, u0)


def quadratic_bfgs(num_steps: int = 10, *, rtol: float = 1e-6, atol: float = 0.0) -> QuadraticBFGS:
    r"""Row solver: BFGS (``H_0 = I``, slides Algorithm 12) with exact steps, using ``A`` directly.

    The same iterates as ``fixed_count(default_row_optimizer(), num_steps)``
    (tested in float64), with the quadratic structure spelled out so that an
    iteration is two r x r mat-vecs and one rank-two update per row and the
    loss value is never needed::

        p = -H g,   a = -<g, p> / (2 p^T A p),   s = a p,   y = 2 a A p,
        u <- u + s,   g <- 2 (A u - b),   H <- BFGS(H, s, y)

    (step: :func:`mfjax.linesearch.exact.exact_quadratic_step`; update:
    :func:`mfjax.optim.bfgs_inverse_update`).  On a quadratic with exact steps
    BFGS terminates in at most ``r`` iterations, so ``num_steps = r`` gives the
    ALS half-sweep up to rounding.  ``num_grad_evals`` counts the gradient and
    the Hessian-vector product ``A p`` of each iteration; no function values
    are evaluated (``num_fun_evals = 0``).  Under :func:`solve_rows` the
    problems ``(A_i, b_i)`` are used directly; given only a function
    (``solve(fun, u0)``) it falls back to the generic path.

    Reference: Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006,
    Ch. 6 (BFGS; quadratic termination with exact line searches).
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    return QuadraticBFGS(int(num_steps), float(rtol), float(atol))


def _solve_quadratic_bfgs(cfg: QuadraticBFGS, q: RowQuadratic, u0):
    from mfjax.optim import bfgs_inverse_update

    A, b = q.A, q.b
    grad = lambda u: 2.0 * (A @ u - b)
    g0 = grad(u0)
    tol = _tol(cfg.rtol, cfg.atol, g0)
    stall = _stall_tol(g0)
    r = u0.shape[0]
    H0 = jnp.eye(r, dtype=u0.dtype)
    active0 = (jnp.linalg.norm(g0) > tol) & _finite(g0)
    i32 = lambda x: jnp.asarray(x, jnp.int32)

    def body(carry, _):
        u, g, H, active, success, it = carry
        p = -(H @ g)
        Ap = A @ p
        a, ok = _exact_step_size(jnp.vdot(g, p), jnp.vdot(p, Ap))
        s_, y_ = a * p, (2.0 * a) * Ap
        u_new = u + s_
        g_new = grad(u_new)
        ok = ok & _finite(u_new) & _finite(g_new)
        take = active & ok
        H_new = bfgs_inverse_update(H, s_, y_)
        u = jnp.where(take, u_new, u)
        g = jnp.where(take, g_new, g)
        H = jnp.where(take & _finite(H_new), H_new, H)
        success = success & ~(active & ~ok & (jnp.linalg.norm(g) > stall))
        it = it + take.astype(jnp.int32)
        active = take & (jnp.linalg.norm(g) > tol)
        return (u, g, H, active, success, it), None

    carry0 = (u0, g0, H0, active0, jnp.asarray(True), i32(0))
    (u, g, _, _, success, it), _ = jax.lax.scan(body, carry0, None, length=cfg.num_steps)
    gn = jnp.linalg.norm(g)
    return u, RowInfo(it, i32(0), 1 + 2 * it, success, gn <= tol, gn)


# ---------------------------------------------------------------- folded
class FoldedSearch(NamedTuple):
    """A line search folded into :func:`folded`'s loop (build with the functions below)."""

    kind: str  # "armijo" | "wolfe" | "exact"
    c1: float
    c2: float
    beta: float
    max_trials: int
    initial_step: float
    growth: float | None


def armijo_search(c1: float = 1e-4, beta: float = 0.5, max_trials: int = 30,
                  initial_step: float = 1.0, *, growth: float | None = None) -> FoldedSearch:
    r"""Armijo backtracking (slides Algorithm 2) as a folded search.

    Trial ``a`` accepted when ``f(u + a p) <= f(u) + c1 a <g, p>``, else
    ``a <- beta a``; a new search starts at ``initial_step`` or, with
    ``growth``, at ``min(growth * last accepted step, initial_step)`` (the
    warm start of :func:`mfjax.linesearch.armijo`).  ``max_trials`` failed
    trials in a row fail the row.
    """
    if not 0 < c1 < 1 or not 0 < beta < 1:
        raise ValueError(f"need 0 < c1 < 1 and 0 < beta < 1, got c1={c1!r}, beta={beta!r}")
    return FoldedSearch("armijo", float(c1), 0.0, float(beta), int(max_trials),
                        float(initial_step), growth)


def weak_wolfe_search(c1: float = 1e-4, c2: float = 0.9, max_trials: int = 30,
                      initial_step: float = 1.0) -> FoldedSearch:
    r"""Bisection weak-Wolfe search (slides Algorithm 3) as a folded search.

    Bracket ``[lo, hi] = [0, inf]``: sufficient decrease fails -> ``hi = a``,
    ``a = (lo + hi)/2``; curvature ``<g(u + a p), p> >= c2 <g, p>`` fails ->
    ``lo = a``, ``a = 2 lo`` while ``hi = inf`` else ``(lo + hi)/2``; else accept
    (same rule as :func:`mfjax.linesearch.weak_wolfe_bisection`).
    """
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")
    return FoldedSearch("wolfe", float(c1), float(c2), 0.5, int(max_trials),
                        float(initial_step), None)


def exact_search() -> FoldedSearch:
    """The exact step of a quadratic row problem (see :func:`exact_quadratic_linesearch`).

    Every loop iteration accepts ``a* = -<g,p> / (2 p^T A p)``; it fails when
    ``p`` is no descent direction or the curvature is not positive.
    """
    return FoldedSearch("exact", 0.0, 0.0, 0.0, 1, 1.0, None)


class Folded(NamedTuple):
    """Row solver with the search folded into one ``while_loop`` (see :func:`folded`)."""

    direction: Any
    search: FoldedSearch
    max_iters: int
    rtol: float
    atol: float

    def solve(self, fun, u0):
        return _solve_folded(self, fun, u0)


def folded(direction=None, search: FoldedSearch | None = None, max_iters: int = 10, *,
           rtol: float = 1e-6, atol: float = 0.0) -> Folded:
    """Row solver whose line search lives in the solver's single ``while_loop``.

    Loop state: the point ``u`` with ``f, g``, the direction ``p``, the trial
    step and bracket.  Each iteration evaluates ``f, grad f`` at one trial
    point; if the search accepts, the point moves and the direction rule
    (any optax transform: :func:`mfjax.optim.bfgs_direction`,
    :func:`mfjax.optim.gd_direction`, ...) proposes the next ``p``; else the
    next trial step is set.  Under ``vmap`` rows do not wait for each other's
    searches: the batch runs for ``max`` over rows of the total number of trials.

    Stops when ``||g|| <= atol + rtol ||g_0||``, after ``max_iters`` accepted
    iterations, or when the search fails (``max_trials`` rejections in a row,
    no descent direction): the row keeps its last accepted point and
    ``RowInfo.success`` is False (not when ``||g|| <= sqrt(eps) ||g_0||``:
    rounding-limited, see :func:`fixed_count`).

    Args:
      direction: optax transform mapping the gradient to a descent direction
        (default :func:`mfjax.optim.bfgs_direction` with ``H_0 = I``).
      search: :func:`armijo_search`, :func:`weak_wolfe_search` or
        :func:`exact_search` (default).
      max_iters: maximum accepted iterations per row.
    """
    if direction is None:
        direction = _default_direction()
    if search is None:
        search = exact_search()
    if not isinstance(search, FoldedSearch):
        raise TypeError(f"search must be a FoldedSearch (armijo_search(), ...), got {search!r}")
    if int(max_iters) != max_iters or max_iters < 1:
        raise ValueError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    return Folded(direction, search, int(max_iters), float(rtol), float(atol))


class _FoldCarry(NamedTuple):
    u: Any
    f: Any
    g: Any
    p: Any
    dstate: Any
    step: Any
    lo: Any
    hi: Any
    last_step: Any
    trials: Any
    it: Any
    nf: Any
    ng: Any
    done: Any
    success: Any


def _solve_folded(cfg: Folded, fun, u0):
    s = cfg.search
    vg = jax.value_and_grad(fun)
    f0, g0 = vg(u0)
    dt = f0.dtype
    tol = _tol(cfg.rtol, cfg.atol, g0)
    stall = _stall_tol(g0)
    d0 = cfg.direction.init(u0)
    p0, d0 = cfg.direction.update(g0, d0, u0)
    i32 = lambda x: jnp.asarray(x, jnp.int32)
    start_ok = jnp.isfinite(f0) & _finite(g0)
    inf = jnp.asarray(jnp.inf, dt)
    one = jnp.asarray(s.initial_step, dt)
    carry0 = _FoldCarry(u0, f0, g0, p0, d0, one, jnp.zeros((), dt), inf, one, i32(0), i32(0),
                        i32(1), i32(1), ~start_ok | (jnp.linalg.norm(g0) <= tol), start_ok)

    def body(c: _FoldCarry) -> _FoldCarry:
        slope = jnp.vdot(c.g, c.p)
        descent = (slope < 0) & jnp.isfinite(slope)
        if s.kind == "exact":
            a, ok_dir = _exact_step_size(slope, 0.5 * _curvature(fun, c.u, c.p))
            ng_trial = 2
        else:
            a, ok_dir = c.step, descent
            ng_trial = 1
        ut = c.u + a * c.p
        ft, gt = vg(ut)
        fin = jnp.isfinite(ft) & _finite(gt)
        if s.kind == "exact":
            accept = ok_dir & fin & (ft <= c.f + _slack(c.f))
            nxt, lo, hi = c.step, c.lo, c.hi
        else:
            armijo = fin & (ft <= c.f + s.c1 * a * slope)
            if s.kind == "armijo":
                accept = ok_dir & armijo
                nxt, lo, hi = s.beta * a, c.lo, c.hi
            else:
                curv = jnp.vdot(gt, c.p) >= s.c2 * slope
                accept = ok_dir & armijo & curv
                hi = jnp.where(armijo, c.hi, a)
                lo = jnp.where(armijo & ~curv, a, c.lo)
                nxt = jnp.where(jnp.isinf(hi), 2 * lo, 0.5 * (lo + hi))
        trials = c.trials + 1
        fail = ~ok_dir | (~accept & (trials >= s.max_trials))
        # accepted: move, next direction, restart the search
        p_new, d_new = cfg.direction.update(gt, c.dstate, ut)
        if s.growth is None:
            a0 = one
        else:
            a0 = jnp.minimum(s.growth * a, one).astype(dt)
        it = c.it + accept.astype(jnp.int32)
        g_acc = jnp.where(accept, jnp.linalg.norm(gt), jnp.linalg.norm(c.g))
        done = fail | (it >= cfg.max_iters) | (g_acc <= tol)
        zero = jnp.zeros((), dt)
        return _FoldCarry(
            u=jnp.where(accept, ut, c.u),
            f=jnp.where(accept, ft, c.f),
            g=jnp.where(accept, gt, c.g),
            p=jnp.where(accept, p_new, c.p),
            dstate=_tree_where(accept, d_new, c.dstate),
            step=jnp.where(accept, a0, nxt).astype(dt),
            lo=jnp.where(accept, zero, lo).astype(dt),
            hi=jnp.where(accept, inf, hi).astype(dt),
            last_step=jnp.where(accept, a, c.last_step).astype(dt),
            trials=jnp.where(accept, 0, trials),
            it=it,
            nf=c.nf + 1,
            ng=c.ng + ng_trial,
            done=done,
            success=c.success & ~(fail & (jnp.linalg.norm(c.g) > stall)),
        )

    c = jax.lax.while_loop(lambda c: ~c.done, body, carry0)
    gn = jnp.linalg.norm(c.g)
    return c.u, RowInfo(c.it, c.nf, c.ng, c.success, gn <= tol, gn)


# ------------------------------------------------------------- half sweep
def solve_rows(row_solver, U0, q: RowQuadratic):
    """Solve the row problems ``q`` (leading batch axis) from ``U0`` with ``vmap``.

    Row ``i`` minimises ``f_i(u) - f_i(U0_i)``
    (:func:`~mfjax.solvers._rows.quadratic_increment`): the same problem up to
    a constant, evaluated without the float32 cancellation of the full value.
    Rows with ``q.count == 0`` are set to ``0`` (their regularised optimum,
    and the minimum-norm minimiser when ``l2 = 0``) and reported converged.

    Returns:
      ``(U, RowInfo)`` with a leading row axis.
    """

    def one(u0, qi):
        if hasattr(row_solver, "solve_quadratic"):
            return row_solver.solve_quadratic(qi, u0)
        # f_i(u) - f_i(u0): same minimiser and gradient, no float32 cancellation
        return row_solver.solve(functools.partial(quadratic_increment, q=qi, u_ref=u0), u0)

    U, info = jax.vmap(one)(U0, q)
    empty = q.count == 0
    U = jnp.where(empty[:, None], jnp.zeros_like(U), U)
    info = info._replace(
        converged=info.converged | empty,
        success=info.success | empty,
        grad_norm=jnp.where(empty, 0.0, info.grad_norm).astype(info.grad_norm.dtype),
    )
    return U, info


def _as_row_layout(layout_or_ratings) -> RowLayout:
    if isinstance(layout_or_ratings, RowLayout):
        return layout_or_ratings
    return build_row_layout(layout_or_ratings)


def row_half_sweep(U, V, layout, l2, row_solver=None):
    """One half-sweep: every row of ``U`` minimised with ``V`` fixed (all rows in parallel).

    ``U_i <- argmin_u f_i(u)`` approximately, starting from the current
    ``U_i``, by ``row_solver`` (default :func:`quadratic_bfgs`: per-row BFGS with
    exact steps, ``r`` iterations: the ALS half-sweep up to rounding).  For
    the other half call it with ``(V, U, col_layout)`` where ``col_layout`` is
    built from ``ratings.T``.

    Args:
      U: ``(m, r)`` rows to update (the starting points).
      V: ``(n, r)`` the fixed factor.
      layout: :class:`~mfjax.solvers._rows.RowLayout` from
        ``build_row_layout(ratings)`` (or a ``Ratings``, converted on the
        host: not inside ``jit``).
      l2: the regularisation ``lambda`` of the sum-scaled loss.
      row_solver: :func:`quadratic_bfgs` (default), :func:`fixed_count` or :func:`folded`.

    Returns:
      ``(U_new, RowInfo)`` with per-row diagnostics.
    """
    layout = _as_row_layout(layout)
    if row_solver is None:
        row_solver = quadratic_bfgs(num_steps=U.shape[1])
    q = row_statistics(layout, V, l2)
    return solve_rows(row_solver, U, q)


# --------------------------------------------------------------- schedules
def algorithm13_schedule(m: int, n: int, k_u: int, k_v: int, *, complete: bool = False):
    """The exact update order of Algorithm 13 (0-based), as a list of ``("U", i)`` / ``("V", j)``.

    ``d = k_U + k_V``; for ``t = 0 .. T-1``: ``r = t mod d``; if ``r < k_U``
    then ``i = k_U (t div d) + r`` (skipped if ``i >= m``) else
    ``j = k_V (t div d) + r - k_U`` (skipped if ``j >= n``).  The slides use
    ``T = n + m``; when ``k_U / k_V`` is not exactly ``m / n`` some rows or
    columns are then never updated.  ``complete=True`` extends ``T`` to
    ``max(n + m, d * max(ceil(m / k_U), ceil(n / k_V)))`` so every row and
    column is visited once (the first ``n + m`` steps are unchanged).
    """
    blocks = interleaved_blocks(m, n, k_u, k_v, complete=complete)
    out = []
    for b in range(blocks.row_index.shape[0]):
        out += [("U", int(i)) for i, ok in zip(blocks.row_index[b], blocks.row_valid[b]) if ok]
        out += [("V", int(j)) for j, ok in zip(blocks.col_index[b], blocks.col_valid[b]) if ok]
    return out


class BlockSchedule(NamedTuple):
    """Algorithm 13 in blocks of ``d = k_U + k_V`` steps (numpy arrays, ``B`` blocks).

    Attributes:
      row_index, row_valid: ``(B, k_U)`` row ``k_U b + r`` of block ``b`` and
        whether step ``d b + r`` is inside the run and ``i < m``.
      col_index, col_valid: ``(B, k_V)`` likewise for the columns.
      num_steps: ``T``.
    """

    row_index: np.ndarray
    row_valid: np.ndarray
    col_index: np.ndarray
    col_valid: np.ndarray
    num_steps: int


def _check_k(name, k):
    if int(k) != k or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def interleaved_blocks(m: int, n: int, k_u: int, k_v: int, *, complete: bool = False) -> BlockSchedule:
    """Algorithm 13's order grouped by blocks (see :func:`algorithm13_schedule`).

    Raises:
      ValueError: ``k_u``/``k_v`` not positive integers, ``m``/``n`` < 1.
    """
    k_u, k_v = _check_k("k_u", k_u), _check_k("k_v", k_v)
    if m < 1 or n < 1:
        raise ValueError(f"need m, n >= 1, got m={m!r}, n={n!r}")
    d = k_u + k_v
    T = n + m
    if complete:
        T = max(T, d * max(-(-m // k_u), -(-n // k_v)))
    B = -(-T // d)
    b = np.arange(B)[:, None]
    ru, rv = np.arange(k_u)[None, :], np.arange(k_v)[None, :]
    row_index = k_u * b + ru
    row_valid = (d * b + ru < T) & (row_index < m)
    col_index = k_v * b + rv
    col_valid = (d * b + k_u + rv < T) & (col_index < n)
    return BlockSchedule(row_index.astype(np.int32), row_valid, col_index.astype(np.int32),
                         col_valid, T)


def default_block_sizes(m: int, n: int, block: int = 256) -> tuple[int, int]:
    """``(k_U, k_V)`` with ``k_U + k_V ~ block`` and ``k_U / k_V ~ m / n``."""
    k_u = min(max(1, round(block * m / (m + n))), m)
    k_v = min(max(1, block - k_u), n)
    return int(k_u), int(k_v)


# ------------------------------------------------------------ full solver
class VectorDescentInfo(NamedTuple):
    """Diagnostics of :func:`vector_descent` (``return_info=True``).

    Attributes:
      rows: :class:`RowInfo` of the rows of ``U`` in the last sweep, shape (m,).
      cols: :class:`RowInfo` of the rows of ``V`` in the last sweep, shape (n,).
      failed: (S,) number of rows + columns whose search failed, per sweep.
      fun_evals: (S,) total function evaluations per sweep.
      iters: (S,) total accepted row iterations per sweep.
    """

    rows: RowInfo
    cols: RowInfo
    failed: Any
    fun_evals: Any
    iters: Any


def _sweep_counts(*infos):
    failed = sum(jnp.sum(~i.success).astype(jnp.int32) for i in infos)
    nf = sum(jnp.sum(i.num_fun_evals) for i in infos)
    it = sum(jnp.sum(i.num_iters) for i in infos)
    return failed, nf, it


def _empty_info(size, dtype):
    z = jnp.zeros((size,), jnp.int32)
    t = jnp.ones((size,), bool)
    return RowInfo(z, z, z, t, t, jnp.zeros((size,), dtype))


def _scatter_info(info_all, idx, valid, info_blk, size):
    w = jnp.where(valid, idx, size)
    return jax.tree_util.tree_map(lambda a, b: a.at[w].set(b, mode="drop"), info_all, info_blk)


def _interleaved_sweep(params, row_blocks: BlockLayout, col_blocks: BlockLayout, sched, l2,
                       row_solver):
    U, V = params
    m, n = U.shape[0], V.shape[0]
    row_idx, row_valid, col_idx, col_valid = sched
    Gu, Gv = row_blocks.num_groups, col_blocks.num_groups

    def body(carry, xs):
        U, V, iu, iv = carry
        b, ridx, rval, cidx, cval = xs
        q = block_statistics(row_blocks, jnp.minimum(b, Gu - 1), V, l2)
        u_new, info_u = solve_rows(row_solver, U[jnp.minimum(ridx, m - 1)], q)
        U = U.at[jnp.where(rval, ridx, m)].set(u_new, mode="drop")
        iu = _scatter_info(iu, ridx, rval, info_u, m)
        q = block_statistics(col_blocks, jnp.minimum(b, Gv - 1), U, l2)
        v_new, info_v = solve_rows(row_solver, V[jnp.minimum(cidx, n - 1)], q)
        V = V.at[jnp.where(cval, cidx, n)].set(v_new, mode="drop")
        iv = _scatter_info(iv, cidx, cval, info_v, n)
        return (U, V, iu, iv), None

    B = row_idx.shape[0]
    carry0 = (U, V, _empty_info(m, U.dtype), _empty_info(n, U.dtype))
    (U, V, iu, iv), _ = jax.lax.scan(
        body, carry0, (jnp.arange(B), row_idx, row_valid, col_idx, col_valid))
    return Factors(U, V), iu, iv


def _parallel_sweep(params, row_layout, col_layout, l2, row_solver):
    U, V = params
    U, iu = row_half_sweep(U, V, row_layout, l2, row_solver)
    V, iv = row_half_sweep(V, U, col_layout, l2, row_solver)
    return Factors(U, V), iu, iv


@functools.partial(jax.jit, static_argnames=("row_solver", "num_sweeps", "interleaved", "has_eval"))
def _run(params, layouts, sched, train, eval_set, l2, *, row_solver, num_sweeps, interleaved,
         has_eval):
    def sweep(params, _):
        if interleaved:
            params, iu, iv = _interleaved_sweep(params, layouts[0], layouts[1], sched, l2,
                                                row_solver)
        else:
            params, iu, iv = _parallel_sweep(params, layouts[0], layouts[1], l2, row_solver)
        loss = masked_sq_loss(params, train, l2)
        ev = _rmse(params, eval_set) if has_eval else jnp.asarray(jnp.nan, loss.dtype)
        failed, nf, it = _sweep_counts(iu, iv)
        return params, (loss, ev, failed, nf, it, iu, iv)

    params, (loss, ev, failed, nf, it, iu, iv) = jax.lax.scan(sweep, params, None,
                                                               length=num_sweeps)
    last = lambda t: jax.tree_util.tree_map(lambda x: x[-1], t)
    return params, SolverTrace(loss, ev), VectorDescentInfo(last(iu), last(iv), failed, nf, it)


def vector_descent(train, rank: int, *, l2: float, optimizer=None, inner_steps: int | None = None,
                   row_solver=None, num_sweeps: int = 10, schedule: str = "parallel",
                   k_u: int | None = None, k_v: int | None = None, complete: bool = True,
                   eval=None, key=None, init: Factors | None = None, return_info: bool = False):
    """Row-wise vector descent (Algorithm 13) for the masked loss (slides eq. 4, ``scale="sum"``).

    Each sweep updates every row of ``U`` (problem eq. 7, gradient eq. 9)
    and every row of ``V`` (eq. 8 / 10) by a few iterations of a row solver,
    in the ``"parallel"`` schedule (all rows, then all columns) or Algorithm
    13's ``"interleaved"`` order (blocks of ``k_u`` rows then ``k_v`` columns,
    fresh values used at once).  Everything runs in one jit-compiled
    ``lax.scan`` over sweeps.

    Args:
      train: :class:`~mfjax.data.Ratings` (COO); no dense ``m x n`` array is built.
      rank: ``r``.
      l2: ``lambda`` of ``sum (x - u.v)^2 + l2 (||U||^2 + ||V||^2)`` (>= 0).
      optimizer: optax optimizer for every row, run by :func:`fixed_count`
        (default: :func:`quadratic_bfgs`, BFGS + exact steps on ``(A_i, b_i)``).
      inner_steps: iterations per row (default ``rank``).
      row_solver: a :func:`quadratic_bfgs`, :func:`fixed_count` or :func:`folded` row solver
        (overrides ``optimizer``/``inner_steps``).
      num_sweeps: outer sweeps (each updates U then V).
      schedule: ``"parallel"`` or ``"interleaved"``.
      k_u, k_v: block sizes of the interleaved schedule (default
        :func:`default_block_sizes`).
      complete: extend Algorithm 13's ``t``-range so that every row and column
        is visited (see :func:`algorithm13_schedule`); ``False`` is literal.
      eval: optional held-out :class:`~mfjax.data.Ratings`; its RMSE is traced.
      key: PRNG key for :func:`mfjax.losses.init_factors` (or pass ``init``).
      init: starting factors.
      return_info: also return a :class:`VectorDescentInfo`.

    Returns:
      :class:`~mfjax.solvers.base.SolverResult` (and the info if asked).

    Example::

        res = mfjax.solvers.vector_descent(train, 10, l2=10.0, num_sweeps=10,
                                           eval=test, key=jax.random.PRNGKey(0))
        print(res.trace.eval_rmse[-1])
    """
    m, n = train.shape
    if l2 < 0:
        raise ValueError(f"l2 (lambda) must be >= 0, got {l2!r}")
    if int(num_sweeps) != num_sweeps or num_sweeps < 1:
        raise ValueError(f"num_sweeps must be an integer >= 1, got {num_sweeps!r}")
    if schedule not in ("parallel", "interleaved"):
        raise ValueError(f"schedule must be 'parallel' or 'interleaved', got {schedule!r}")
    if init is None:
        if key is None:
            raise ValueError("pass key= (PRNG key for the initial factors) or init=")
        dt = np.asarray(train.values).dtype
        init = init_factors(key, train.shape, rank, dtype=dt)
    else:
        init = Factors(jnp.asarray(init[0]), jnp.asarray(init[1]))
        if init.U.shape != (m, rank) or init.V.shape != (n, rank):
            raise ValueError(
                f"init shapes {init.U.shape}, {init.V.shape} do not match ({m}, {rank}), ({n}, {rank})")
    if row_solver is None:
        steps = rank if inner_steps is None else inner_steps
        row_solver = quadratic_bfgs(steps) if optimizer is None else fixed_count(optimizer, steps)
    if schedule == "parallel":
        layouts = (build_row_layout(train), build_row_layout(train.T))
        sched = None
    else:
        if k_u is None or k_v is None:
            du, dv = default_block_sizes(m, n)
            k_u = du if k_u is None else k_u
            k_v = dv if k_v is None else k_v
        b = interleaved_blocks(m, n, k_u, k_v, complete=complete)
        sched = tuple(jnp.asarray(a) for a in b[:4])
        layouts = (build_block_layout(train, k_u), build_block_layout(train.T, k_v))
    has_eval = eval is not None
    eval_set = eval.device_put() if has_eval else None
    params, trace, info = _run(init, layouts, sched, train.device_put(), eval_set, l2,
                               row_solver=row_solver, num_sweeps=int(num_sweeps),
                               interleaved=schedule == "interleaved", has_eval=has_eval)
    result = SolverResult(params, trace)
    return (result, info) if return_info else result
