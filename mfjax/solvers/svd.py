"""Truncated SVD by power iteration with deflation, and the SVD completion baseline.

Power iteration (lecture "SVD, power iteration, NMF").  The top right
singular vector of ``A`` is the top eigenvector of ``A^T A``::

    v_{t+1} = A^T A v_t / ||A^T A v_t||,     until ||v_{t+1} - v_t|| <= tol,
    sigma = ||A v||,   u = A v / sigma.

(``A^T A`` is positive semi-definite, so ``v_t`` does not flip sign and the
difference is a valid stopping test.)  The next triplet is the top one of
the deflated matrix ``A^(2) = A - sigma u v^T`` (the lecture's
``A^(2) = A - lambda_1 v v^T`` for symmetric ``A``), and so on for ``k``
triplets.  The deflation is applied implicitly -- ``A^(l) x = A x -
U_l (s_l * (V_l^T x))`` -- so ``A`` may be any linear operator given by its
products ``x -> A x`` and ``y -> A^T y``
(:func:`power_iteration_svd_operator`); each iterate is also
re-orthogonalised against the earlier ``v``'s (Gram-Schmidt), a standard
safeguard against round-off.  Convergence of triplet ``l`` goes like
``(sigma_{l+1} / sigma_l)^{2t}``: it needs a spectral gap.  All ``k``
triplets are one jit-compiled ``lax.scan`` over a ``lax.while_loop``.

SVD completion baseline (:func:`svd_complete`).  Fill the missing entries
of the rating matrix (global mean, row means, column means or zero), take
the rank-``r`` truncated SVD of the filled matrix, and predict with it.  The
filled matrix is never formed: it is a low-rank baseline ``B`` plus a sparse
correction on the observed entries, ``F = B + P_Omega(X - B)``, whose
products cost O(nnz + (m + n) r).  With ``num_refits > 0`` the missing
entries are refilled with the current rank-``r`` prediction and the SVD is
recomputed (the "hard impute" / SVD-impute iteration), each refit one more
trace entry.

References:
  Golub, G. H., Van Loan, C. F. "Matrix Computations", 4th ed., 2013
  (power iteration, deflation).

  Sarwar, B., Karypis, G., Konstan, J., Riedl, J. "Application of
  dimensionality reduction in recommender system -- a case study",
  WebKDD 2000 (mean filling + truncated SVD).

  Troyanskaya, O. et al. "Missing value estimation methods for DNA
  microarrays", Bioinformatics 17(6), 2001 (SVD-impute refits).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.losses.masked import Factors, masked_sq_loss
from mfjax.solvers import _args
from mfjax.solvers._args import UNSET
from mfjax.solvers.base import RMSE, Solver, SolverResult, run

__all__ = [
    "TruncatedSVD",
    "power_iteration_svd",
    "power_iteration_svd_operator",
    "svd_complete",
    "svd_solver",
    "svd_fill",
    "SVDProblem",
    "SVDState",
    "SVDInfo",
    "FILLS",
]

#: Fill rules of :func:`svd_complete`.
FILLS = ("mean", "row_mean", "col_mean", "zero")


class TruncatedSVD(NamedTuple):
    """Top-``k`` singular triplets: ``A ~ U @ diag(s) @ Vt``.

    Attributes:
      U: (m, k) left singular vectors (orthonormal columns).
      s: (k,) singular values, non-increasing.
      Vt: (k, n) right singular vectors (orthonormal rows).
    """

    U: jax.Array
    s: jax.Array
    Vt: jax.Array


def _check_k(k, shape):
    m, n = shape
    if not isinstance(k, (int, np.integer)) or k <= 0 or k > min(m, n):
        raise ValueError(f"k (rank) must be an integer in 1..min(m, n) = {min(m, n)} for shape "
                         f"{(m, n)}, got {k!r}")


def _check_iters(num_iters, tol):
    if int(num_iters) < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if not float(tol) >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")


def _safe_normalise(x):
    nrm = jnp.linalg.norm(x)
    return jnp.where(nrm > 0, x / jnp.where(nrm > 0, nrm, 1.0), jnp.zeros_like(x)), nrm


def _power_svd(matvec, rmatvec, shape, k, num_iters, tol, key, dtype) -> TruncatedSVD:
    m, n = shape

    def component(carry, xs):
        Us, ss, Vs = carry
        key_l, l = xs

        def Av(v):  # the deflated operator A^(l)
            return matvec(v) - Us @ (ss * (Vs.T @ v))

        def ATu(u):
            return rmatvec(u) - Vs @ (ss * (Us.T @ u))

        def orth(v):  # Gram-Schmidt against the earlier (zero-padded) v's
            return v - Vs @ (Vs.T @ v)

        v0, _ = _safe_normalise(orth(jax.random.normal(key_l, (n,), dtype)))

        def cond(state):
            _, delta, it = state
            return (it < num_iters) & (delta > tol)

        def body(state):
            v, _, it = state
            w, _ = _safe_normalise(orth(ATu(Av(v))))
            return w, jnp.linalg.norm(w - v), it + 1

        v, _, _ = jax.lax.while_loop(cond, body, (v0, jnp.asarray(jnp.inf, dtype), 0))
        u, sigma = _safe_normalise(Av(v))
        Us = Us.at[:, l].set(u)
        Vs = Vs.at[:, l].set(v)
        ss = ss.at[l].set(sigma)
        return (Us, ss, Vs), None

    init = (jnp.zeros((m, k), dtype), jnp.zeros((k,), dtype), jnp.zeros((n, k), dtype))
    keys = jax.random.split(key, k)
    (Us, ss, Vs), _ = jax.lax.scan(component, init, (keys, jnp.arange(k)))
    return TruncatedSVD(Us, ss, Vs.T)


def power_iteration_svd_operator(matvec: Callable, rmatvec: Callable, shape, k: int,
                                 num_iters: int = 500, *, key=None, tol: float = 1e-6,
                                 dtype=jnp.float32) -> TruncatedSVD:
    """Top-``k`` SVD of a linear operator given by ``matvec(x) = A x`` and ``rmatvec(y) = A^T y``.

    Same algorithm as :func:`power_iteration_svd` (call it inside ``jax.jit``
    with ``k`` and ``num_iters`` static to compile once).

    Args:
      matvec: (n,) -> (m,); rmatvec: (m,) -> (n,); shape: ``(m, n)``.
      k: number of triplets, ``1 <= k <= min(m, n)``.
      num_iters: maximum power iterations per triplet.
      key: PRNG key for the starting vectors (default ``jax.random.key(0)``).
      tol: stop a triplet when ``||v_{t+1} - v_t|| <= tol``.
    """
    shape = (int(shape[0]), int(shape[1]))
    _check_k(k, shape)
    _check_iters(num_iters, tol)
    key = jax.random.key(0) if key is None else key
    return _power_svd(matvec, rmatvec, shape, int(k), int(num_iters), tol, key, dtype)


@functools.partial(jax.jit, static_argnames=("k", "num_iters"))
def _dense_power_svd(A, k, num_iters, tol, key):
    return _power_svd(lambda v: A @ v, lambda u: A.T @ u, A.shape, k, num_iters,
                      jnp.asarray(tol, A.dtype), key, A.dtype)


def power_iteration_svd(A, k: int, num_iters: int = 500, *, key=None,
                        tol: float = 1e-6) -> TruncatedSVD:
    """Top-``k`` singular triplets of a dense matrix by power iteration with deflation.

    See the module docstring for the algorithm.

    Args:
      A: (m, n) matrix.
      k: number of triplets, ``1 <= k <= min(m, n)``.
      num_iters: maximum power iterations per triplet.
      key: PRNG key for the starting vectors (default ``jax.random.key(0)``).
      tol: per-triplet stopping tolerance on ``||v_{t+1} - v_t||``.

    Returns:
      :class:`TruncatedSVD` ``(U, s, Vt)``, unpackable as ``U, s, Vt = ...``;
      singular vectors are defined up to sign.

    Raises:
      ValueError: ``A`` not 2-d or not finite, ``k`` out of range,
        ``num_iters < 1``, ``tol < 0``.

    Example::

        U, s, Vt = power_iteration_svd(A, k=3)
        A3 = U @ jnp.diag(s) @ Vt
    """
    A = jnp.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"A must be a 2-d matrix, got shape {A.shape}")
    if not jnp.issubdtype(A.dtype, jnp.floating):
        A = A.astype(jnp.float32)
    _check_k(k, A.shape)
    _check_iters(num_iters, tol)
    if not isinstance(A, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(A))):
        raise ValueError("A contains NaN or inf")
    key = jax.random.key(0) if key is None else key
    return _dense_power_svd(A, int(k), int(num_iters), tol, key)


# --------------------------------------------------------------- completion
def _baseline(train: Ratings, fill: str, dtype):
    """The fill as a rank-1 product ``Ub Vb^T`` ((m, 1), (n, 1))."""
    m, n = train.shape
    vals = np.asarray(train.values, dtype=np.float64)
    mu = vals.mean()

    def group_mean(idx, size):
        cnt = np.bincount(idx, minlength=size)
        tot = np.bincount(idx, weights=vals, minlength=size)
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), mu)  # empty -> global mean

    if fill == "mean":
        Ub, Vb = np.full((m, 1), mu), np.ones((n, 1))
    elif fill == "row_mean":
        Ub, Vb = group_mean(np.asarray(train.rows), m)[:, None], np.ones((n, 1))
    elif fill == "col_mean":
        Ub, Vb = np.ones((m, 1)), group_mean(np.asarray(train.cols), n)[:, None]
    else:  # zero
        Ub, Vb = np.zeros((m, 1)), np.zeros((n, 1))
    return jnp.asarray(Ub, dtype), jnp.asarray(Vb, dtype)


def _filled_svd(train, Ub, Vb, rank, num_iters, tol, key):
    """Top-``rank`` SVD of ``F = Ub Vb^T + P_Omega(X - Ub Vb^T)`` (never formed)."""
    m, n = train.shape
    rows, cols = train.rows, train.cols
    corr = jnp.asarray(train.values) - jnp.einsum("kr,kr->k", Ub[rows], Vb[cols])

    def matvec(v):
        return Ub @ (Vb.T @ v) + jax.ops.segment_sum(corr * v[cols], rows, num_segments=m)

    def rmatvec(u):
        return Vb @ (Ub.T @ u) + jax.ops.segment_sum(corr * u[rows], cols, num_segments=n)

    return _power_svd(matvec, rmatvec, (m, n), rank, num_iters, tol, key, Ub.dtype)


def _to_factors(t: TruncatedSVD) -> Factors:
    r = jnp.sqrt(t.s)
    return Factors(t.U * r, t.Vt.T * r)


class SVDProblem(NamedTuple):
    """The observed ratings and the power-iteration tolerance (traced)."""

    train: Ratings
    tol: jax.Array


class SVDState(NamedTuple):
    """State of :func:`svd_solver`.

    Attributes:
      params: the current rank-``r`` model; before the first step, the fill
        baseline ``Ub Vb^T`` (zero-padded to ``r`` columns).
      key: PRNG key of the run; step ``t`` starts its power iterations from
        ``fold_in(key, t)``.
      refit: int32 steps done.
    """

    params: Factors
    key: jax.Array
    refit: jax.Array


class SVDInfo(NamedTuple):
    """Diagnostics of one SVD (re)fit: ``loss``, the unregularised masked loss on ``train``."""

    loss: jax.Array


def svd_fill(train: Ratings, rank: int, fill: str = "mean", dtype=None) -> Factors:
    """The fill rule as rank-``rank`` factors (the rank-1 baseline, zero-padded).

    The starting ``params`` of :func:`svd_solver`: the first step fills the
    missing entries with their product.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    Ub, Vb = _baseline(train, fill, _args.float_dtype(train, dtype))
    return Factors(jnp.pad(Ub, ((0, 0), (0, rank - 1))), jnp.pad(Vb, ((0, 0), (0, rank - 1))))


def _svd_init(params, problem=None, key=None) -> SVDState:
    del problem
    key = jax.random.key(0) if key is None else key
    return SVDState(Factors(*params), key, jnp.asarray(0, jnp.int32))


@functools.lru_cache(maxsize=None)
def _refit_step(num_iters: int):
    """The cached ``step`` of :func:`svd_solver`."""

    def step(state: SVDState, problem: SVDProblem):
        p = state.params
        k = jax.random.fold_in(state.key, state.refit)
        t = _filled_svd(problem.train, p.U, p.V, p.U.shape[1], num_iters, problem.tol, k)
        p = _to_factors(t)
        info = SVDInfo(masked_sq_loss(p, problem.train, 0.0))
        return SVDState(p, state.key, state.refit + 1), info

    return step


def svd_solver(num_iters: int = 300) -> Solver:
    """SVD-impute as a :class:`~mfjax.solvers.base.Solver`: one step = one truncated SVD.

    A step takes the top ``r`` singular triplets (``r`` = the columns of
    ``params``) of ``F = P U V^T + P_Omega(X - P U V^T)`` -- the ratings with
    the missing entries filled by the current model -- by power iteration
    (``num_iters`` per triplet, stop at ``problem.tol``) and returns
    ``Factors(U sqrt(s), V sqrt(s))``.  From :func:`svd_fill` the first step
    is the classic fill-and-truncate baseline; later steps are the
    "hard impute" refits.

    Returns:
      ``Solver(init, step)`` on an :class:`SVDProblem`.
    """
    return Solver(_svd_init, _refit_step(int(num_iters)))


def svd_complete(
    train: Ratings,
    rank: int,
    fill: str = "mean",
    *,
    num_refits: int = 0,
    num_iters: int = 300,
    tol: float = 1e-5,
    key=None,
    eval_set: Ratings | None = None,
    clip: tuple[float, float] | None = None,
    eval: Ratings | None = UNSET,  # noqa: A002  (deprecated alias of eval_set)
) -> SolverResult:
    """Classic SVD completion: fill the missing entries, truncate the SVD.

    A thin alias: :func:`svd_fill` + :func:`svd_solver` + :func:`mfjax.solvers.run`
    with ``1 + num_refits`` steps.  (``num_iters`` keeps its meaning, the
    power-iteration budget per triplet; the number of solver steps is
    ``1 + num_refits``.)

    Args:
      train: observed ratings (m x n).
      rank: truncation rank ``r``, ``1 <= r <= min(m, n)``.
      fill: ``"mean"`` (global mean), ``"row_mean"``, ``"col_mean"`` (empty
        rows / columns get the global mean) or ``"zero"``.
      num_refits: extra SVD-impute iterations (missing entries refilled with
        the current rank-``r`` prediction); 0 is the classic one-shot baseline.
      num_iters, tol: power-iteration budget per singular triplet.
      key: PRNG key of the starting vectors (default ``jax.random.key(0)``).
      eval_set: held-out ratings; their RMSE is traced.
      clip: clip predictions to ``(lo, hi)`` in the traced RMSE.
      eval: deprecated alias of ``eval_set``.

    Returns:
      :class:`~mfjax.solvers.base.SolverResult` with ``params =
      Factors(U sqrt(s), V sqrt(s))`` (so ``U @ V.T`` is the truncated SVD)
      and a trace of length ``1 + num_refits``: the unregularised masked
      loss on ``train`` and the held-out RMSE (``eval_metric``; NaN without
      ``eval_set``).

    Raises:
      ValueError: unknown ``fill``, rank out of range, non-finite ratings,
        ``num_refits < 0``, ``eval_set`` of another shape.

    Example::

        res = svd_complete(train, rank=10, fill="row_mean", eval_set=test, clip=(1, 5))
    """
    eval_set = _args.eval_alias("svd_complete", eval_set, eval)
    if not isinstance(train, Ratings):
        raise TypeError(f"train must be a mfjax.data.Ratings, got {type(train).__name__}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    _check_k(rank, train.shape)
    _check_iters(num_iters, tol)
    if int(num_refits) < 0:
        raise ValueError(f"num_refits must be >= 0, got {num_refits}")
    for what, r in (("training", train), ("evaluation", eval_set)):
        if r is None:
            continue
        vals = np.asarray(r.values)
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{what} ratings contain a non-finite value "
                             f"{vals[~np.isfinite(vals)][0]}")
    if eval_set is not None and tuple(eval_set.shape) != tuple(train.shape):
        raise ValueError(f"eval shape {tuple(eval_set.shape)} differs from train shape "
                         f"{tuple(train.shape)}")
    dtype = _args.float_dtype(train)
    start = svd_fill(train, int(rank), fill, dtype)
    problem = SVDProblem(train.device_put(), jnp.asarray(tol, dtype))
    solver = svd_solver(int(num_iters))
    res = run(solver, problem, solver.init(start, problem, key), 1 + int(num_refits),
              eval_set=None if eval_set is None else eval_set.device_put(),
              metric=RMSE(None if clip is None else (float(clip[0]), float(clip[1]))))
    return _args.raise_if_nonfinite(res, "SVD completion", "refit")
