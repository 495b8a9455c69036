r"""Gauss-Newton (Jacobi / block-Jacobi) preconditioners for the masked MF loss.

The loss of :mod:`mfjax.losses.masked` (``Factors`` params)::

    f(U, V) = s sum_{(i,j) in Omega} (x_ij - u_i . v_j)^2 + l2 (sum_i w_i |u_i|^2 + sum_j w_j |v_j|^2)

(``s`` from :func:`mfjax.losses.masked.data_scale`: 1 for ``scale="sum"``,
``1/|Omega|`` for ``"mean"``; ``w = 1`` unless ``l2_weights`` is given)
is, for fixed ``V``, a sum of independent ridge regressions over the rows of
``U``.  Its Hessian with respect to ``U`` is therefore exactly block
diagonal, one ``r x r`` block per row::

    H_i = 2 s sum_{j in Omega_i} v_j v_j^T + 2 l2 w_i I            (U block, V fixed)
    H_j = 2 s sum_{i in Omega^j} u_i u_i^T + 2 l2 w_j I            (V block, U fixed)

and these are also the diagonal blocks of the Gauss-Newton matrix ``2 J^T J``
of the data term (plus the ridge) in the joint variables ``(U, V)``: the GN
matrix drops the residual-times-second-derivative terms and the coupling
blocks between ``U`` and ``V`` are what block-Jacobi ignores.  Their
diagonals are::

    d_ik = 2 s sum_{j in Omega_i} v_jk^2 + 2 l2 w_i,   d_jk = 2 s sum_{i in Omega^j} u_ik^2 + 2 l2 w_j.

Row degrees on ML-1M range from 20 to ~2300 (users) and 1 to ~3400
(movies), so ``-g`` is badly scaled across rows; ``M^{-1} g`` with
``M = diag(d)`` ("diagonal", Jacobi) or ``M = blockdiag(H)`` ("block",
block-Jacobi) removes that scaling.  With the block kind, ``-H_i^{-1} g_i``
is exactly the Newton step of row ``i``'s ridge regression, i.e.
``u_i^{ALS} - u_i`` (the row solution of :func:`mfjax.solvers.als_update_rows`):
the direction ``(U_ALS(V) - U, V_ALS(U) - V)`` is a *simultaneous* (Jacobi)
ALS step, and an exact line search along it (:func:`mfjax.linesearch.exact_mf`)
picks the best point on that segment's line.

Costs per evaluation (one chunked pass over the observed entries, like a
loss evaluation): the diagonal gathers two factor rows per entry and
scatter-adds ``2 r`` floats (about one gradient's work); the block kind
scatter-adds ``2 r^2`` floats (the normal equations of
:func:`mfjax.solvers.als.normal_equations`, O(nnz r^2)) and then solves
``m + n`` ``r x r`` systems by batched Cholesky
(:func:`mfjax.solvers.als.solve_ridge_rows`).

Rows without observations: ``d = 2 l2 w_i`` (and the gradient there is
``2 l2 w_i u_i``, so the preconditioned step sends the row to 0 exactly);
when that is 0 too (``l2 = 0``) the gradient is 0 and ``z = g = 0`` is
returned instead of dividing by zero.  The block kind inherits the
safeguards of :func:`~mfjax.solvers.als.solve_ridge_rows` (unit ridge for
empty rows without a ridge, pseudo-inverse for singular rows).

References:
  Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006, Sec. 5.1
  (preconditioning, Algorithm 5.3) and Sec. 10.3 (Gauss-Newton).
  Buchanan, Fitzgibbon, "Damped Newton algorithms for matrix factorization
  with missing data", CVPR 2005 (Gauss-Newton / alternation for MF).
  Hager, Zhang, "A survey of nonlinear conjugate gradient methods", 2006,
  Sec. 9 (preconditioned nonlinear CG).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mfjax.core.checks import check_l2
from mfjax.core.factors import Factors
from mfjax.objective import MFObjective, as_objective
from mfjax.objective.curvature import gauss_newton_blocks, gauss_newton_diagonal, solve_ridge_rows

__all__ = [
    "mf_gauss_newton_diagonal",
    "mf_gauss_newton_blocks",
    "mf_preconditioner",
    "MFPreconditionerState",
]

_KINDS = ("diagonal", "block")


def _as_objective(ratings, l2, scale, l2_weights, chunk_size, params=None) -> MFObjective:
    return as_objective(ratings, l2, scale=scale, l2_weights=l2_weights, chunk_size=chunk_size,
                        like=params)


def mf_gauss_newton_diagonal(params, ratings, l2=0.0, *, scale: str = "sum",
                             l2_weights=None, chunk_size: int | None = None) -> Factors:
    r"""Diagonal of the per-row Gauss-Newton blocks of the masked MF loss.

    ``d_ik = 2 s sum_{j in Omega_i} v_jk^2 + 2 l2 w_i`` and
    ``d_jk = 2 s sum_{i in Omega^j} u_ik^2 + 2 l2 w_j`` (module docstring):
    :func:`mfjax.objective.gauss_newton_diagonal`.  For fixed ``V`` the first
    is exactly the diagonal of ``jax.hessian`` of the loss with respect to
    ``U`` (tested), and symmetrically.  ``ratings`` may be an
    :class:`~mfjax.objective.MFObjective`.

    Returns:
      ``Factors(dU (m, r), dV (n, r))``.
    """
    U, V = params
    obj = _as_objective(ratings, l2, scale, l2_weights, None, params)
    return Factors(*gauss_newton_diagonal(obj, Factors(U, V), chunk_size=chunk_size))


def mf_gauss_newton_blocks(params, ratings, l2=0.0, *, scale: str = "sum",
                           l2_weights=None, chunk_size: int | None = None):
    r"""The per-row Gauss-Newton blocks ``H_i`` (U rows) and ``H_j`` (V rows).

    :func:`mfjax.objective.gauss_newton_blocks`: the Gram matrices
    ``A_i = sum_{j in Omega_i} v_j v_j^T`` of the ALS normal equations,
    ``H_i = 2 s A_i + 2 l2 w_i I``.

    Returns:
      ``((A_U, ridge_U, n_U), (A_V, ridge_V, n_V))`` with ``H = A + diag(ridge)``:
      ``A_U`` (m, r, r) is ``2 s`` times the Gram matrices, ``ridge_U`` (m, r)
      is ``2 l2 w_i``, ``n_U`` (m,) the row counts; the same for ``V``.
    """
    obj = _as_objective(ratings, l2, scale, l2_weights, None, params)
    kw = {} if chunk_size is None else {"chunk_size": int(chunk_size)}
    return gauss_newton_blocks(obj, Factors(*params), **kw)


class MFPreconditionerState(NamedTuple):
    """State of :func:`mf_preconditioner`.

    Attributes:
      count: number of updates so far (int32).
      curvature: the preconditioner built at the last refresh: ``Factors(dU, dV)``
        for ``kind="diagonal"``; for ``kind="block"`` the blocks of
        :func:`mf_gauss_newton_blocks` stacked over the ``m + n`` rows of
        ``U`` and ``V``: ``(A (m+n, r, r), ridge (m+n, r), counts (m+n,))``.
    """

    count: jax.Array
    curvature: Any


def mf_preconditioner(ratings=None, l2=0.0, *, kind: str = "diagonal", scale: str = "sum",
                      l2_weights=None, refresh_every: int = 1, chunk_size: int | None = None
                      ) -> optax.GradientTransformationExtraArgs:
    r"""Gauss-Newton (block-)Jacobi preconditioner: ``g -> z = M(U, V)^{-1} g``.

    ``M`` is rebuilt from the current params every ``refresh_every``
    updates (default: every update; in between the stored ``M`` is reused,
    which saves its pass over the entries; module docstring).
    ``kind="diagonal"`` divides each entry of the gradient by
    :func:`mf_gauss_newton_diagonal` (Jacobi); ``kind="block"`` solves each
    row's ``r x r`` system ``H_i z_i = g_i`` by Cholesky
    (:func:`mf_gauss_newton_blocks`, :func:`mfjax.solvers.als.solve_ridge_rows`).
    ``M`` is symmetric positive definite (for ``l2 > 0``), so ``-z`` is a
    descent direction: ``g . z > 0`` for ``g != 0``.

    Like ``optax.scale_by_*`` it keeps the sign of ``g``; chain a sign flip
    and a step rule after it, or pass it to
    :func:`mfjax.optim.cg_direction` as ``preconditioner=`` for
    preconditioned nonlinear CG::

        pre = mfjax.optim.mf_preconditioner(train, 2.0, kind="diagonal")
        # preconditioned steepest descent with the exact MF step
        opt = optax.chain(pre, mfjax.optim.gd_direction(), mfjax.linesearch.exact_mf(train, 2.0))
        # preconditioned PR+ nonlinear CG with the exact MF step
        opt = mfjax.optim.cg("pr+", preconditioner=pre, linesearch=mfjax.linesearch.exact_mf(train, 2.0))

    With ``kind="block"`` and the exact step, a half-step with the other
    factor's gradient zeroed is exactly an ALS half sweep (tested).

    It needs the problem (like :func:`mfjax.linesearch.exact_mf`), so it is
    not in the data-free :data:`mfjax.optim.REGISTRY`.  With ``ratings=None``
    it reads the objective from ``value_fn.objective`` at each update (the
    loss of :func:`mfjax.losses.masked_mse`, or :func:`mfjax.fit` with
    :func:`mfjax.objective.loss` and the objective in ``loss_args``), so one
    compiled run serves every fold and ``l2`` of the same shape.

    Args:
      ratings: the observed entries of the loss, an
        :class:`~mfjax.objective.MFObjective`, or ``None`` (module docstring).
      l2, scale, l2_weights: as in :func:`mfjax.losses.masked_sq_loss`.
      kind: ``"diagonal"`` or ``"block"``.
      refresh_every: rebuild ``M`` at updates ``0, k, 2k, ...`` (a positive integer).
      chunk_size: entries per block of the scatter-add pass.

    References:
      Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006, Sec. 5.1.
      Buchanan, Fitzgibbon, "Damped Newton algorithms for matrix
      factorization with missing data", CVPR 2005.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if scale not in ("sum", "mean"):
        raise ValueError(f"scale must be 'sum' or 'mean', got {scale!r}")
    check_l2("l2", l2)
    if int(refresh_every) != refresh_every or refresh_every < 1:
        raise ValueError(f"refresh_every must be a positive integer, got {refresh_every!r}")
    fixed = None
    if ratings is not None:
        fixed = (ratings if isinstance(ratings, MFObjective)
                 else _as_objective(ratings.device_put(), l2, scale, l2_weights, None))

    def objective_for(params, value_fn):
        obj = fixed if fixed is not None else getattr(value_fn, "objective", None)
        if not isinstance(obj, MFObjective):
            if value_fn is None and fixed is None:
                # init / shape inference: any objective of the right shape will do
                return None
            raise TypeError(
                "mf_preconditioner() without ratings needs the loss's objective: use "
                "mfjax.losses.masked_mse(...) or mfjax.fit(mfjax.objective.loss, ..., "
                "loss_args=(objective,)), or pass ratings")
        return obj

    def build(params, obj):
        params = Factors(*params)
        if kind == "diagonal":
            return Factors(*gauss_newton_diagonal(obj, params, chunk_size=chunk_size))
        # stacked once per refresh: the update solves all m + n rows in one batched call
        kw = {} if chunk_size is None else {"chunk_size": int(chunk_size)}
        blocks_u, blocks_v = gauss_newton_blocks(obj, params, **kw)
        return tuple(jnp.concatenate(pair) for pair in zip(blocks_u, blocks_v))

    def init_fn(params):
        if len(params) != 2:
            raise TypeError(f"mf_preconditioner supports Factors(U, V) params, got {type(params).__name__}")
        # zeros of the right shapes (no pass over the data at init)
        U, V = params
        r, dt = U.shape[1], jnp.result_type(U.dtype, V.dtype)
        m, n = U.shape[0], V.shape[0]
        if kind == "diagonal":
            curv = Factors(jnp.zeros(U.shape, U.dtype), jnp.zeros(V.shape, V.dtype))
        else:
            curv = (jnp.zeros((m + n, r, r), dt), jnp.zeros((m + n, r), dt),
                    jnp.zeros((m + n,), dt))
        return MFPreconditionerState(jnp.zeros([], jnp.int32), curv)

    def update_fn(updates, state, params=None, *, value_fn=None, **extra):
        del extra
        if params is None:
            raise ValueError("mf_preconditioner needs params: call update(grad, state, params)")
        if len(params) != 2 or len(updates) != 2:
            raise TypeError(f"mf_preconditioner supports Factors(U, V) params, got {type(params).__name__}")
        obj = objective_for(params, value_fn if value_fn is not None else _MISSING)
        if refresh_every == 1:
            curv = build(params, obj)
        else:
            curv = jax.lax.cond(state.count % refresh_every == 0, lambda p: build(p, obj),
                                lambda _: state.curvature, params)
        gU, gV = updates
        if kind == "diagonal":
            # d = 0 only where the row has no information and no ridge: there g = 0 too.
            z = [jnp.where(d > 0, g / jnp.where(d > 0, d, 1), g).astype(g.dtype)
                 for g, d in zip((gU, gV), curv)]
        else:
            # One batched solve over the m + n systems: two independent batched Cholesky
            # calls can deadlock jaxlib's CPU LAPACK thread pool on a 2-core machine
            # (both pool threads block in ParallelBatchMap), and one call is simpler anyway.
            A, ridge, counts = curv
            m = gU.shape[0]
            zz = solve_ridge_rows(A, jnp.concatenate([gU, gV]).astype(A.dtype), ridge, counts)
            z = [zz[:m].astype(gU.dtype), zz[m:].astype(gV.dtype)]
        out = jax.tree.unflatten(jax.tree.structure(updates), z)
        return out, MFPreconditionerState(state.count + 1, curv)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_MISSING = object()  # update() called without value_fn: only a fixed objective can serve
