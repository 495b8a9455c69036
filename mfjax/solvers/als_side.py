r"""ALS with side features: exact block solves of :mod:`mfjax.objective.side`.

The model is ``U = P + X_u A``, ``V = Q + X_v B`` (biased: ``b = beta + X_u
a``, ``c = gamma + X_v b``, ``mean`` fixed at the training mean), the
objective :func:`mfjax.objective.side_value`.  One sweep is four exact block
minimisations, so the objective never increases (up to round-off):

1. ``(P, beta)`` for fixed ``A, a, V, c``: the rows separate; row ``i`` is
   the ridge problem of plain ALS with features ``f_j = [v_j, 1]`` and the
   target shifted by the feature part, ``y_ij = x_ij - mean - c_j - (X_u
   A)_i . v_j - (X_u a)_i``: ``(G_i + diag(l2, l2_bias) rho_i / s) [p_i,
   beta_i] = G-rhs`` with ``G_i = sum_{j in Omega_i} w f_j f_j^T``
   (:func:`mfjax.objective.normal_equations`).
2. ``Theta = [A, a]`` (``d_u x (r + 1)``) for fixed ``P, beta, V, c``: the
   prediction's part ``x_i^T Theta f_j`` is linear in ``Theta``, so this is
   one ridge least-squares problem in ``d_u (r + 1)`` unknowns whose normal
   equations are built from the same per-row Gram matrices::

       (sum_i (x_i x_i^T) kron G_i + diag(l2_side, l2_side_bias) / s) vec(Theta)
           = vec(X_u^T [b_i(y')]_i),     y'_ij = x_ij - mean - c_j - p_i . v_j - beta_i,

   solved densely (a ``(d_u (r+1))^2`` system: 330 x 330 for ML-1M's users
   at rank 10).  ``b_i(y')`` follows from step 1's right-hand side without
   a second pass over the entries (``y' = y + theta_i . f_j``).
3. and 4. the same for ``(Q, gamma)`` and ``[B, b]`` on the transposed problem.

Without features (``d = 0``) steps 2 and 4 vanish and a sweep is exactly the
plain (biased) ALS sweep of :func:`mfjax.solvers.als`.  A row without
training entries gets ``P_i = 0``: its factor is the cold-start ``X_u[i]
A``.  :func:`side_fold_in` solves ``(P_i, beta_i)`` of new users (or
``(Q_j, gamma_j)`` of new items) from a few revealed ratings, everything
else fixed: step 1 restricted to them.

References:
  Singh, A. P., Gordon, G. J. "Relational learning via collective matrix
  factorization", KDD 2008.
  Zhou, Y., Wilkinson, D., Schreiber, R., Pan, R. "Large-scale parallel
  collaborative filtering for the Netflix prize", AAIM 2008 (ALS, ALS-WR).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core import check_l2, check_not_all_zero
from mfjax.data.ratings import Ratings
from mfjax.metrics import rmse
from mfjax.objective import row_counts
from mfjax.objective.curvature import normal_equations, solve_ridge_rows
from mfjax.objective.side import (SideBiasedFactors, SideFactors, SideObjective, SideParams, effective_factors,
                                  init_side_factors, side_objective, side_value)
from mfjax.solvers import _args
from mfjax.solvers.base import Solver, SolverResult, check_ratings, run

__all__ = [
    "side_als",
    "side_als_solver",
    "side_als_objective",
    "side_als_sweep",
    "side_update_rows",
    "side_update_cols",
    "side_fold_in",
    "SideALSState",
    "SideALSInfo",
    "SideRMSE",
]


class SideALSState(NamedTuple):
    """State of :func:`side_als_solver`: the parameters (:class:`~mfjax.objective.SideFactors` / biased)."""

    params: SideParams


class SideALSInfo(NamedTuple):
    """Diagnostics of one sweep: ``loss``, the objective after it."""

    loss: jax.Array


class SideRMSE(NamedTuple):
    """Held-out RMSE of side-feature params: the metric of :func:`mfjax.solvers.run`.

    ``eval_set`` is the pair ``(side, ratings)``: the training
    :class:`~mfjax.objective.SideObjective` (for its features) and the held-out entries.
    """

    clip: Optional[tuple[float, float]] = None

    def __call__(self, params, eval_set) -> jax.Array:
        side, ratings = eval_set
        return rmse(effective_factors(params, side), ratings, clip=self.clip)


def _swap(p: SideParams) -> SideParams:
    if isinstance(p, SideFactors):
        return SideFactors(p.Q, p.P, p.B, p.A)
    return SideBiasedFactors(p.Q, p.P, p.B, p.A, p.col_bias, p.row_bias, p.mean, p.B_bias, p.A_bias)


def _ridge_rows(obj, counts):
    """Per-row ridge multiplier ``rho_i`` (the row weights, or 1)."""
    return 1.0 if obj.row_weights is None else obj.row_weights.astype(counts.dtype)[:, None]


def _solve_map(Xu, G, rhs, ridge):
    """``Theta`` (d, k) of ``(sum_i x_i x_i^T kron G_i + diag(ridge)) vec(Theta) = vec(X^T rhs)``."""
    m, d = Xu.shape
    k = G.shape[-1]
    T = (Xu[:, :, None, None] * G[:, None, :, :]).reshape(m, d * k * k)
    H = (Xu.T @ T).reshape(d, d, k, k).transpose(0, 2, 1, 3).reshape(d * k, d * k)
    b = (Xu.T @ rhs).reshape(1, d * k)
    ridge = jnp.broadcast_to(ridge, (d, k)).reshape(1, d * k)
    return solve_ridge_rows(H[None], b, ridge)[0].reshape(d, k)


def side_update_rows(params: SideParams, side: SideObjective, *, maps: bool = True) -> SideParams:
    """Steps 1 and 2 of a sweep (module docstring): exact in ``(P, beta)``, then in ``(A, a)``.

    ``maps=False`` runs step 1 only (the fold-in of :func:`side_fold_in`).
    """
    obj = side.base
    biased = isinstance(params, SideBiasedFactors)
    eff = effective_factors(params, side)
    V, dt = eff.V, eff.V.dtype
    s = obj.data_weight.astype(dt)
    Xu = side.user_features.astype(dt)
    rows, cols = obj.rows, obj.cols
    offU = Xu @ params.A
    x = obj.values.astype(dt)
    if biased:
        offb = Xu @ params.A_bias
        F = jnp.concatenate([V, jnp.ones((V.shape[0], 1), dt)], axis=1)
        off = jnp.concatenate([offU, offb[:, None]], axis=1)
        base_y = x - eff.mean - eff.col_bias[cols]
        lam = jnp.concatenate([jnp.full((V.shape[1],), obj.l2, dt), obj.l2_bias.astype(dt)[None]])
        lam_side = jnp.concatenate([jnp.full((V.shape[1],), side.l2_side, dt),
                                    side.l2_side_bias.astype(dt)[None]])
    else:
        F, off, base_y = V, offU, x
        lam = jnp.full((V.shape[1],), obj.l2, dt)
        lam_side = jnp.full((V.shape[1],), side.l2_side, dt)
    y = base_y - jnp.sum(off[rows] * F[cols], axis=1)
    G, b, n = normal_equations(obj, F, y)
    sol = solve_ridge_rows(G, b, lam[None, :] / s * _ridge_rows(obj, n), n)
    if maps and Xu.shape[1] > 0:
        # right-hand side for the targets without the new free part: y' = y + (off_i - sol_i) . f_j
        b2 = b + jnp.einsum("ikl,il->ik", G, off - sol)
        theta = _solve_map(Xu, G, b2, lam_side / s)
    else:
        theta = (jnp.concatenate([params.A, params.A_bias[:, None]], axis=1) if biased else params.A)
    if biased:
        return params._replace(P=sol[:, :-1].astype(params.P.dtype), row_bias=sol[:, -1],
                               A=theta[:, :-1].astype(params.A.dtype), A_bias=theta[:, -1])
    return params._replace(P=sol.astype(params.P.dtype), A=theta.astype(params.A.dtype))


def side_update_cols(params: SideParams, side: SideObjective, *, maps: bool = True) -> SideParams:
    """Steps 3 and 4: :func:`side_update_rows` on the transposed problem."""
    return _swap(side_update_rows(_swap(params), side.T, maps=maps))


def side_als_sweep(params: SideParams, side: SideObjective) -> SideParams:
    """One sweep: users (``P``, then ``A``), then items (``Q``, then ``B``)."""
    return side_update_cols(side_update_rows(params, side), side)


@functools.lru_cache(maxsize=None)
def _sweep_step():
    def step(state: SideALSState, problem: SideObjective):
        p = side_als_sweep(state.params, problem)
        return SideALSState(p), SideALSInfo(side_value(problem, p))

    return step


def _side_init(params, problem=None, key=None) -> SideALSState:
    del problem, key
    return SideALSState(params)


def side_als_solver() -> Solver:
    """Side-feature ALS as a :class:`~mfjax.solvers.base.Solver` (one step = one sweep).

    The problem is a :class:`~mfjax.objective.SideObjective`; its numbers
    (``l2``, ``l2_side``, features) are traced, so one compiled run serves
    every ``l2`` of the same shapes.
    """
    return Solver(_side_init, _sweep_step())


def side_als_objective(train: Ratings, user_features=None, item_features=None, *, l2=0.0, l2_side=None,
                       l2_bias=None, l2_side_bias=None, weighted_l2: bool = False, dtype=None) -> SideObjective:
    """The problem :func:`side_als` solves ("sum" scale; ``weighted_l2``: ALS-WR row weights on ``P, Q``)."""
    side = side_objective(train, user_features, item_features, l2, l2_side=l2_side, l2_bias=l2_bias,
                          l2_side_bias=l2_side_bias, dtype=dtype)
    if weighted_l2:
        side = side.replace(base=side.base.replace(**dict(zip(("row_weights", "col_weights"),
                                                              row_counts(side.base)))))
    return side


def side_als(train: Ratings, rank: int, user_features=None, item_features=None, *, l2=0.0, l2_side=None,
             l2_bias=None, l2_side_bias=None, biases: bool = False, weighted_l2: bool = False,
             num_steps: int = 20, init: SideParams | None = None, key=None,
             eval_set: Ratings | None = None, eval_every: int = 1,
             clip: tuple[float, float] | None = None, callback=None, callback_every: int = 1) -> SolverResult:
    """ALS on ``U = P + X_u A``, ``V = Q + X_v B`` (module docstring).

    Args:
      train: training ratings (m x n).
      rank: ``r``.
      user_features: (m, d_u) or ``None``; item_features: (n, d_v) or ``None``.
      l2: ridge on ``P, Q``; l2_side: on ``A, B`` (default ``l2``);
      l2_bias, l2_side_bias: on the free biases / the bias maps (defaults ``l2`` / ``l2_side``).
      biases: the biased model (``mean`` = training mean, fixed).
      weighted_l2: ALS-WR weights ``n_i`` on ``P`` and ``beta`` (the maps stay unweighted).
      num_steps: sweeps.
      init: starting :class:`~mfjax.objective.SideFactors` (only ``Q``, ``B``, the column
        biases matter: the first step solves ``P`` and ``A``); default
        :func:`~mfjax.objective.init_side_factors` from ``key``.
      eval_set: held-out ratings; their RMSE after each sweep is traced.

    Returns:
      :class:`~mfjax.solvers.SolverResult` with ``SideFactors`` / ``SideBiasedFactors``
      (use :func:`mfjax.objective.effective_factors` for predictions).

    Raises:
      ValueError: as :func:`mfjax.objective.side_objective` (feature rows not matching
        ``m`` / ``n``, NaN features), bad rank, ``l2``, ``num_steps``, non-finite ratings.
    """
    check_ratings(train, "training")
    rank = _args.check_rank(rank, train.shape)
    for name, v in (("l2", l2), ("l2_side", l2_side), ("l2_bias", l2_bias), ("l2_side_bias", l2_side_bias)):
        check_l2(name, v)
    num_steps = _args.check_num_steps(num_steps, "num_steps")
    _args.check_eval_set(eval_set, train)
    dtype = _args.float_dtype(train)
    side = side_als_objective(train, user_features, item_features, l2=l2, l2_side=l2_side, l2_bias=l2_bias,
                              l2_side_bias=l2_side_bias, weighted_l2=weighted_l2, dtype=dtype)
    if init is None:
        key = jax.random.key(0) if key is None else key
        init = init_side_factors(key, side, rank, biased=biases, mean=train.mean(), dtype=dtype)
    else:
        if biases != isinstance(init, SideBiasedFactors):
            raise ValueError(f"init is {type(init).__name__} but biases={biases}")
        effective_factors(init, side)  # shape check
        check_not_all_zero(init, "init")
    solver = side_als_solver()
    ev = None if eval_set is None else (side, eval_set.device_put())
    res = run(solver, side, solver.init(init, side), num_steps, eval_set=ev, eval_every=eval_every,
              metric=SideRMSE(None if clip is None else (float(clip[0]), float(clip[1]))),
              callback=callback, callback_every=callback_every)
    return _args.raise_if_nonfinite(res, "side ALS", "sweep")


def _restricted(side: SideObjective, ratings: Ratings, keep: np.ndarray) -> SideObjective:
    """``side`` with the entries replaced by those of ``ratings`` selected by ``keep``."""
    sub = ratings.select(np.flatnonzero(keep))
    new = side_objective(sub, l2=side.base.l2, l2_bias=side.base.l2_bias, dtype=side.base.values.dtype)
    return side.replace(base=new.base.replace(data_weight=side.base.data_weight))


def side_fold_in(params: SideParams, side: SideObjective, revealed: Ratings, *, rows=None, cols=None) -> SideParams:
    """Fold new users (``rows``) and / or new items (``cols``) in from a few revealed ratings.

    For each listed user the ridge problem of step 1 (module docstring) is
    solved from that user's revealed entries alone, with ``A, a, V, c``
    fixed: ``P_i`` (and ``beta_i``) are set, the feature part ``X_u[i] A``
    stays.  Then the listed items alike (with the updated users).  A listed
    user without revealed entries keeps ``P_i = 0``: the cold start ``U_i =
    X_u[i] A``.  Everything not listed is unchanged.

    Args:
      params: trained side parameters; side: the training objective (features, ``l2``).
      revealed: ratings of the same shape (e.g. ``extendability_split(...).revealed``).
      rows, cols: indices of the users / items to fold in.
    """
    if tuple(revealed.shape) != tuple(side.shape):
        raise ValueError(f"revealed ratings have shape {tuple(revealed.shape)}, the model {tuple(side.shape)}")
    r_rows, r_cols = np.asarray(revealed.rows), np.asarray(revealed.cols)
    for idx, size, entry_idx, upd, which in ((rows, side.shape[0], r_rows, side_update_rows, "rows"),
                                              (cols, side.shape[1], r_cols, side_update_cols, "cols")):
        if idx is None:
            continue
        idx = np.asarray(idx, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(f"{which} to fold in must be in [0, {size})")
        mask = np.zeros(size, bool)
        mask[idx] = True
        sub = _restricted(side, revealed, mask[entry_idx])
        # step 1 on the listed rows' entries only; the free part of the listed rows is taken
        params = _take_free(params, upd(params, sub, maps=False), jnp.asarray(mask), which)
    return params


def _take_free(old: SideParams, new: SideParams, mask, which: str) -> SideParams:
    """``old`` with the free part (and free bias) of the masked rows / cols taken from ``new``."""
    name, bias = ("P", "row_bias") if which == "rows" else ("Q", "col_bias")
    out = {name: jnp.where(mask[:, None], getattr(new, name), getattr(old, name))}
    if isinstance(old, SideBiasedFactors):
        out[bias] = jnp.where(mask, getattr(new, bias), getattr(old, bias))
    return old._replace(**out)
