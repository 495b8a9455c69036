"""Row solver with the line search folded into its single ``while_loop`` (the optimistix design).

The search is a kernel of :mod:`mfjax.linesearch.kernels` -- the same object
that :func:`mfjax.linesearch.armijo` and the other optax rules run -- so this
loop holds no search code: each iteration measures one trial
(:func:`mfjax.linesearch.search.measure_trial`), asks the kernel, and either
moves (then the direction rule proposes the next ``p`` and a new search
starts) or tries the kernel's next step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.trees import tree_all_finite, tree_where
from mfjax.linesearch.kernels import (
    Backtracking,
    BisectionWolfe,
    ExactQuadratic,
    SearchKernel,
    SufficientDecrease,
    make_origin,
)
from mfjax.linesearch.quadratic import hessian_curvature
from mfjax.linesearch.search import measure_trial
from mfjax.solvers.rowwise.fixed import _default_direction
from mfjax.solvers.rowwise.info import RowInfo, grad_tol, i32, stall_tol

__all__ = ["Folded", "folded", "armijo_search", "weak_wolfe_search", "exact_search"]


def armijo_search(c1: float = 1e-4, beta: float = 0.5, max_trials: int = 30,
                  initial_step: float = 1.0, *, growth: float | None = None,
                  interpolate: bool = False) -> Backtracking:
    r"""Armijo backtracking (slides Algorithm 2) as a folded search.

    Trial ``a`` accepted when ``f(u + a p) <= f(u) + c1 a <g, p>``, else
    ``a <- beta a`` (``interpolate=True``: the safeguarded quadratic
    interpolation step in ``[0.1 a, 0.5 a]``); a new search starts at
    ``initial_step`` or, with ``growth``, at ``min(growth * last accepted
    step, initial_step)`` (the warm start of :func:`mfjax.linesearch.armijo`).
    ``max_trials`` failed trials in a row fail the row.  The defaults are the
    slides' algorithm as written (unlike :func:`mfjax.linesearch.armijo`,
    whose defaults warm-start and interpolate: pass ``growth=2.0,
    interpolate=True`` for the same search).

    Returns:
      The kernel ``Backtracking(SufficientDecrease(c1), ...)`` of :func:`mfjax.linesearch.armijo`.
    """
    if not 0 < c1 < 1 or not 0 < beta < 1:
        raise ValueError(f"need 0 < c1 < 1 and 0 < beta < 1, got c1={c1!r}, beta={beta!r}")
    return Backtracking(SufficientDecrease(float(c1)), float(beta), int(max_trials),
                        float(initial_step), growth, 0.0, bool(interpolate))


def weak_wolfe_search(c1: float = 1e-4, c2: float = 0.9, max_trials: int = 30,
                      initial_step: float = 1.0, *, growth: float | None = None,
                      interpolate: bool = False) -> BisectionWolfe:
    r"""Bisection weak-Wolfe search (slides Algorithm 3) as a folded search.

    Bracket ``[lo, hi] = [0, inf]``: sufficient decrease fails -> ``hi = a``,
    ``a = (lo + hi)/2``; curvature ``<g(u + a p), p> >= c2 <g, p>`` fails ->
    ``lo = a``, ``a = 2 lo`` while ``hi = inf`` else ``(lo + hi)/2``; else accept
    (the kernel of :func:`mfjax.linesearch.weak_wolfe_bisection`).  The
    defaults are the slides' algorithm as written; ``growth`` warm-starts at
    ``min(growth * last accepted step, initial_step)``, ``interpolate=True``
    replaces the midpoint of a finite bracket by the safeguarded cubic step.
    """
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")
    return BisectionWolfe(float(c1), float(c2), int(max_trials), float(initial_step), growth,
                          bool(interpolate))


def exact_search() -> ExactQuadratic:
    """The exact step of a quadratic row problem (see :func:`mfjax.linesearch.exact_quadratic_linesearch`).

    Every loop iteration accepts ``a* = -<g,p> / (2 p^T A p)``; it fails when
    ``p`` is no descent direction or the curvature is not positive.
    """
    return ExactQuadratic()


class Folded(NamedTuple):
    """Row solver with the search folded into one ``while_loop`` (see :func:`folded`)."""

    direction: optax.GradientTransformation
    search: Any  # a search kernel
    max_iters: int
    rtol: float
    atol: float

    def solve(self, fun, u0):
        """Minimise ``fun`` from ``u0``; returns ``(u, RowInfo)``."""
        return _solve_folded(self, fun, u0)


def folded(direction=None, search=None, max_iters: int = 10, *,
           rtol: float = 1e-6, atol: float = 0.0) -> Folded:
    """Row solver whose line search lives in the solver's single ``while_loop``.

    Loop state: the point ``u`` with ``f, g``, the direction ``p``, the trial
    step and the kernel's state.  Each iteration evaluates ``f, grad f`` at
    one trial point; if the search accepts, the point moves and the direction
    rule (any optax transform: :func:`mfjax.optim.bfgs_direction`,
    :func:`mfjax.optim.gd_direction`, ...) proposes the next ``p``; else the
    next trial step is set.  Under ``vmap`` rows do not wait for each other's
    searches: the batch runs for ``max`` over rows of the total number of trials.

    Stops when ``||g|| <= atol + rtol ||g_0||``, after ``max_iters`` accepted
    iterations, or when the search fails (``max_trials`` rejections in a row,
    the kernel gives up, no descent direction): the row keeps its last
    accepted point and ``RowInfo.success`` is False (not when
    ``||g|| <= sqrt(eps) ||g_0||``: rounding-limited, see
    :func:`~mfjax.solvers.rowwise.fixed_count`).

    Args:
      direction: optax transform mapping the gradient to a descent direction
        (default :func:`mfjax.optim.bfgs_direction` with ``H_0 = I``).
      search: a search kernel: :func:`armijo_search`, :func:`weak_wolfe_search`,
        :func:`exact_search` (default), or any kernel of
        :mod:`mfjax.linesearch.kernels` (e.g. :class:`mfjax.linesearch.ZoomWolfe`).
      max_iters: maximum accepted iterations per row.
      rtol, atol: gradient-norm stopping test.

    Returns:
      A :class:`Folded` row solver.
    """
    if direction is None:
        direction = _default_direction()
    if search is None:
        search = exact_search()
    if not isinstance(search, SearchKernel):
        raise TypeError(f"search must be a search kernel (armijo_search(), ...), got {search!r}")
    if int(max_iters) != max_iters or max_iters < 1:
        raise ValueError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    return Folded(direction, search, int(max_iters), float(rtol), float(atol))


class _FoldCarry(NamedTuple):
    u: jax.Array
    f: jax.Array
    g: jax.Array
    p: jax.Array
    dstate: Any
    step: jax.Array       # next trial step of the running search
    kstate: Any           # the kernel's state of the running search
    last_step: jax.Array  # warm start hint of the last accepted trial (Decision.warm, else its step)
    trials: jax.Array     # trials of the running search (0: start a new one)
    it: jax.Array
    nf: jax.Array
    ng: jax.Array
    done: jax.Array
    success: jax.Array


def _origin(kernel, fun, u, f, g, p):
    """The line at the current point: what ``kernel`` needs of it."""
    needs = kernel.needs
    curv = hessian_curvature(fun, u, p) if needs.curvature else None
    pnorm = jnp.linalg.norm(p) if needs.grad_change else None
    return make_origin(f, jnp.vdot(g, p), direction_norm=pnorm, curvature=curv)


def _solve_folded(cfg: Folded, fun, u0):
    k = cfg.search
    vg = jax.value_and_grad(fun)
    f0, g0 = vg(u0)
    dt = f0.dtype
    tol = grad_tol(cfg.rtol, cfg.atol, g0)
    stall = stall_tol(g0)
    d0 = cfg.direction.init(u0)
    p0, d0 = cfg.direction.update(g0, d0, u0)
    start_ok = jnp.isfinite(f0) & tree_all_finite(g0)
    # the kernel state's structure only: every search starts inside the loop
    shapes = jax.eval_shape(lambda: k.init(_origin(k, fun, u0, f0, g0, p0), f0)[1])
    ks0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    inf = jnp.asarray(jnp.inf, dt)  # no step accepted yet: the warm start is the cold start
    carry0 = _FoldCarry(u0, f0, g0, p0, d0, inf, ks0, inf, i32(0), i32(0), i32(1), i32(1),
                        ~start_ok | (jnp.linalg.norm(g0) <= tol), start_ok)
    ng_trial = 1 + int(k.needs.curvature)  # the Hessian-vector product counts as one
    one_trial = k.max_trials == 1

    def body(c: _FoldCarry) -> _FoldCarry:
        origin = _origin(k, fun, c.u, c.f, c.g, c.p)
        a0, ks_new = k.init(origin, c.last_step)
        if one_trial:  # every iteration starts a new search: no search state to carry
            a, ks = a0.astype(dt), ks_new
        else:
            fresh = c.trials == 0
            a = jnp.where(fresh, a0, c.step).astype(dt)
            ks = tree_where(fresh, ks_new, c.kstate)
        trial, ut, gt = measure_trial(k, vg, c.u, c.g, a, c.p)
        dec, ks = k.step(ks, trial)
        # f is finite here (the start and every accepted trial are): only the slope is checked
        descent = (origin.slope < 0) & jnp.isfinite(origin.slope)
        accept = descent & dec.accept
        trials = c.trials + 1
        fail = ~descent | (~accept & (dec.stop | (trials >= k.max_trials)))
        # accepted: move, next direction, and the next iteration starts a new search
        p_new, d_new = cfg.direction.update(gt, c.dstate, ut)
        it = c.it + accept.astype(jnp.int32)
        g_acc = jnp.where(accept, jnp.linalg.norm(gt), jnp.linalg.norm(c.g))
        done = fail | (it >= cfg.max_iters) | (g_acc <= tol)
        return _FoldCarry(
            u=jnp.where(accept, ut, c.u),
            f=jnp.where(accept, trial.value, c.f),
            g=jnp.where(accept, gt, c.g),
            p=jnp.where(accept, p_new, c.p),
            dstate=tree_where(accept, d_new, c.dstate),
            step=c.step if one_trial else dec.next_step.astype(dt),
            kstate=c.kstate if one_trial else ks,
            last_step=jnp.where(accept, a if dec.warm is None else dec.warm, c.last_step).astype(dt),
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
