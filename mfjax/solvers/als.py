"""Alternating least squares (ALS) with missing entries, all rows at once.

Objective (the masked loss of :mod:`mfjax.losses.masked`, ``scale="sum"``)::

    f(U, V) = sum_{(i,j) in Omega} (x_ij - u_i . v_j)^2 + l2 (sum_i w_i ||u_i||^2 + sum_j w_j ||v_j||^2)

with ``w = 1`` (plain ridge; the lecture's ``1/2``-scaled objective has the
same minimiser for the same ``l2``) or, with ``weighted_l2=True``, ``w_i =
n_i`` and ``w_j = n_j``, the observed counts: the frequency-weighted
"ALS-WR" penalty of Zhou et al. (2008).

Half sweep.  For fixed ``V`` the objective separates over rows; setting the
gradient of row ``i``'s part to zero gives the regularised normal equations
(the lecture's "ALS with missing entries")::

    (V_{Omega_i}^T V_{Omega_i} + l2 w_i I) u_i = V_{Omega_i}^T x_{Omega_i}

where ``V_{Omega_i}`` stacks the rows ``v_j`` of the items rated by ``i``.
All ``m`` systems are built at once: the ``A_i`` and ``b_i`` are scatter-adds
(``jax.ops.segment_sum``) of the per-entry outer products ``v_j v_j^T`` and of
``x_ij v_j`` over the observed entries, processed in chunks inside a
``lax.scan`` (O(nnz r^2) work, O(m r^2 + chunk r^2) memory, no m x n array),
then solved by a batched Cholesky factorisation.  The column half is the
same function applied to the transposed ratings with the roles of ``U`` and
``V`` swapped (both factors are stored row-major).

Biases (``biases=True``).  The model is ``x_ij ~ mean + b_i + c_j + u_i . v_j``
(:class:`~mfjax.losses.BiasedFactors`; ``mean`` is the training mean, fixed).
The row half solves for ``[u_i, b_i]`` with features ``[v_j, 1]``, target
``x_ij - mean - c_j`` and ridge ``diag(l2, ..., l2, l2_bias) w_i``; the column
half is symmetric.

Empty rows / columns and singular systems.  A row with no training entry
has ``A_i = l2 w_i I`` and ``b_i = 0``; its optimum is ``u_i = 0`` (biases
0: the prediction falls back to the mean).  When the ridge is zero there
(``l2 = 0``, or ``weighted_l2`` where ``w_i = n_i = 0``) a unit ridge is
added for those rows only, which leaves the solution ``0`` unchanged and
keeps the Cholesky factorisation finite.  With ``l2 = 0`` a non-empty row
can still be singular (fewer ratings than the rank): rows with a zero ridge
(and any row whose Cholesky solve is not finite) are solved by a symmetric
eigendecomposition pseudo-inverse, i.e. the minimum-norm least-squares
solution (what ``numpy.linalg.lstsq`` returns); this costs one batched
``eigh`` per half sweep.  No NaN leaves the solver.

Each half sweep minimises the objective exactly in one block, so the
training loss never increases (up to round-off).  The whole run
(``num_sweeps`` sweeps, the training loss and the held-out RMSE after each)
is one jit-compiled ``lax.scan``.

References:
  Jaggi, M. "Matrix Factorizations", EPFL CS-433 lecture notes, 2024
  (ALS, ALS with missing entries).

  Zhou, Y., Wilkinson, D., Schreiber, R., Pan, R. "Large-scale parallel
  collaborative filtering for the Netflix prize", AAIM 2008 (ALS-WR).

  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009 (biases).
"""

from __future__ import annotations

import functools
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.losses.masked import (
    BiasedFactors,
    Factors,
    init_biased_factors,
    init_factors,
    masked_sq_loss,
)
from mfjax.metrics import rmse
from mfjax.solvers.base import SolverResult, SolverTrace, check_ratings

__all__ = [
    "als",
    "als_half_sweep",
    "als_update_rows",
    "als_update_cols",
    "als_sweep",
    "normal_equations",
    "solve_ridge_rows",
]

Params = Union[Factors, BiasedFactors]

#: Entries per chunk when scatter-adding the outer products (memory: chunk x r^2).
CHUNK_SIZE = 32768


# ------------------------------------------------------------ building blocks
def normal_equations(F, ratings: Ratings, targets=None, *, chunk_size: int = CHUNK_SIZE):
    """The per-row Gram matrices, right-hand sides and counts of a half sweep.

    ``A_i = sum_{j in Omega_i} f_j f_j^T``, ``b_i = sum_{j in Omega_i} y_ij f_j``,
    ``n_i = |Omega_i|`` for every row ``i`` of ``ratings`` at once.

    Args:
      F: (n, k) feature rows, indexed by ``ratings.cols``.
      ratings: the entries; rows index the systems.
      targets: (nnz,) ``y`` (default ``ratings.values``).
      chunk_size: entries per chunk of the scatter-add scan.

    Returns:
      ``(A (m, k, k), b (m, k), counts (m,))``.
    """
    m = ratings.shape[0]
    k = F.shape[1]
    y = jnp.asarray(ratings.values if targets is None else targets).astype(F.dtype)
    nnz = int(y.shape[0])
    c = max(1, min(int(chunk_size), nnz))
    t = -(-nnz // c)
    pad = t * c - nnz

    def prep(a):
        a = jnp.asarray(a)
        return (jnp.pad(a, (0, pad)) if pad else a).reshape(t, c)

    w = (jnp.arange(t * c) < nnz).astype(F.dtype).reshape(t, c)
    xs = (prep(ratings.rows), prep(ratings.cols), prep(y), w)

    def body(acc, chunk):
        r, cc, yy, ww = chunk
        f = F[cc]
        fw = f * ww[:, None]
        A, b, n = acc
        A = A + jax.ops.segment_sum(fw[:, :, None] * f[:, None, :], r, num_segments=m)
        b = b + jax.ops.segment_sum(fw * yy[:, None], r, num_segments=m)
        n = n + jax.ops.segment_sum(ww, r, num_segments=m)
        return (A, b, n), None

    init = (jnp.zeros((m, k, k), F.dtype), jnp.zeros((m, k), F.dtype), jnp.zeros((m,), F.dtype))
    (A, b, n), _ = jax.lax.scan(body, init, xs)
    return A, b, n


def _pinv_solve(A, b):
    """Minimum-norm least-squares solutions of symmetric PSD systems (batched)."""
    evals, evecs = jnp.linalg.eigh(A)
    k = A.shape[-1]
    cutoff = jnp.finfo(A.dtype).eps * k * jnp.max(jnp.abs(evals), axis=-1, keepdims=True)
    inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0), 0.0)
    coef = jnp.einsum("...kj,...k->...j", evecs, b) * inv
    return jnp.einsum("...kj,...j->...k", evecs, coef)


def solve_ridge_rows(A, b, ridge, counts=None):
    """Solve ``(A_i + diag(ridge_i)) x_i = b_i`` for all rows (batched Cholesky).

    Rows with ``counts == 0`` and a zero ridge get a unit ridge (their
    ``b_i = 0``, so the solution stays 0).  Rows whose ridge has a zero entry
    (possibly singular) or whose Cholesky solve is not finite are solved by
    an eigendecomposition pseudo-inverse instead: the minimum-norm
    least-squares solution, as ``numpy.linalg.lstsq``.

    Args:
      A: (m, k, k) symmetric PSD; b: (m, k); ridge: broadcastable to (m, k);
      counts: optional (m,) observed counts.
    """
    m, k = b.shape
    ridge = jnp.broadcast_to(jnp.asarray(ridge, A.dtype), (m, k))
    if counts is not None:
        ridge = jnp.where((counts == 0)[:, None] & (ridge <= 0), 1.0, ridge)
    M = A + jax.vmap(jnp.diag)(ridge)
    L = jnp.linalg.cholesky(M)
    x = jax.scipy.linalg.cho_solve((L, True), b[..., None])[..., 0]
    bad = ~jnp.all(jnp.isfinite(x), axis=-1) | jnp.any(ridge <= 0, axis=-1)
    return jax.lax.cond(
        jnp.any(bad),
        lambda: jnp.where(bad[:, None], _pinv_solve(M, b), x),
        lambda: x,
    )


def als_half_sweep(V, ratings: Ratings, l2=0.0, *, weighted_l2: bool = False,
                   chunk_size: int = CHUNK_SIZE) -> jax.Array:
    """``U = argmin_U f(U, V)`` for fixed ``V``: every row's ridge regression at once.

    ``u_i = (V_{Omega_i}^T V_{Omega_i} + l2 w_i I)^{-1} V_{Omega_i}^T x_{Omega_i}``
    with ``w_i = 1`` or ``n_i`` (``weighted_l2``).  For the columns call it
    with ``(U, ratings.T)``.

    Args:
      V: (n, r) fixed factor.
      ratings: (m, n) entries.
      l2: ridge weight (>= 0).

    Returns:
      U: (m, r); rows without entries are 0.

    Example::

        U = als_half_sweep(V, train, l2=0.1)
        V = als_half_sweep(U, train.T, l2=0.1)
    """
    _check_l2(l2)
    A, b, n = normal_equations(V, ratings, chunk_size=chunk_size)
    ridge = l2 * (n[:, None] if weighted_l2 else 1.0)
    return solve_ridge_rows(A, b, ridge, n)


def _swap(params: Params) -> Params:
    """The same model for the transposed matrix (rows <-> columns)."""
    if isinstance(params, BiasedFactors):
        return BiasedFactors(params.V, params.U, params.col_bias, params.row_bias, params.mean)
    return Factors(params.V, params.U)


def als_update_rows(params: Params, ratings: Ratings, l2=0.0, *, l2_bias=None,
                    weighted_l2: bool = False, chunk_size: int = CHUNK_SIZE) -> Params:
    """Exact minimisation over the row block (``U``, and ``row_bias`` if biased).

    For :class:`BiasedFactors` the systems are in ``[u_i, b_i]`` with features
    ``[v_j, 1]``, targets ``x_ij - mean - c_j`` and ridge
    ``diag(l2, ..., l2, l2_bias) w_i``.
    """
    _check_l2(l2)
    if l2_bias is not None:
        _check_l2(l2_bias, "l2_bias")
    if not isinstance(params, BiasedFactors):
        return Factors(als_half_sweep(params.V, ratings, l2, weighted_l2=weighted_l2,
                                      chunk_size=chunk_size), params.V)
    lb = l2 if l2_bias is None else l2_bias
    V = params.V
    F = jnp.concatenate([V, jnp.ones((V.shape[0], 1), V.dtype)], axis=1)
    y = jnp.asarray(ratings.values).astype(V.dtype) - params.mean - params.col_bias[ratings.cols]
    A, b, n = normal_equations(F, ratings, y, chunk_size=chunk_size)
    diag = jnp.concatenate([jnp.full((V.shape[1],), l2, V.dtype), jnp.full((1,), lb, V.dtype)])
    ridge = diag[None, :] * (n[:, None] if weighted_l2 else 1.0)
    sol = solve_ridge_rows(A, b, ridge, n)
    return BiasedFactors(sol[:, :-1], V, sol[:, -1], params.col_bias, params.mean)


def als_update_cols(params: Params, ratings: Ratings, l2=0.0, *, l2_bias=None,
                    weighted_l2: bool = False, chunk_size: int = CHUNK_SIZE) -> Params:
    """Exact minimisation over the column block: :func:`als_update_rows` on ``ratings.T``."""
    return _swap(als_update_rows(_swap(params), ratings.T, l2, l2_bias=l2_bias,
                                 weighted_l2=weighted_l2, chunk_size=chunk_size))


def als_sweep(params: Params, ratings: Ratings, l2=0.0, *, l2_bias=None,
              weighted_l2: bool = False, chunk_size: int = CHUNK_SIZE) -> Params:
    """One ALS sweep: rows (``U``) then columns (``V``)."""
    kw = dict(l2_bias=l2_bias, weighted_l2=weighted_l2, chunk_size=chunk_size)
    params = als_update_rows(params, ratings, l2, **kw)
    return als_update_cols(params, ratings, l2, **kw)


# ----------------------------------------------------------------- the solver
def _check_l2(l2, name: str = "l2") -> None:
    if isinstance(l2, jax.core.Tracer):
        return
    v = np.asarray(l2)
    if v.ndim != 0 or not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} (lambda) must be a finite number >= 0, got {l2}")


def _objective(params, train, l2, l2_bias, weighted_l2):
    weights = None
    if weighted_l2:
        m, n = train.shape
        ones = jnp.ones_like(jnp.asarray(train.values))
        weights = (jax.ops.segment_sum(ones, train.rows, num_segments=m),
                   jax.ops.segment_sum(ones, train.cols, num_segments=n))
    return masked_sq_loss(params, train, l2, scale="sum", l2_bias=l2_bias, l2_weights=weights)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "weighted_l2", "chunk_size", "clip"))
def _run(params, train, eval_set, l2, l2_bias, *, num_sweeps, weighted_l2, chunk_size, clip):
    def step(p, _):
        p = als_sweep(p, train, l2, l2_bias=l2_bias, weighted_l2=weighted_l2,
                      chunk_size=chunk_size)
        loss = _objective(p, train, l2, l2_bias, weighted_l2)
        ev = (rmse(p, eval_set, clip=clip) if eval_set is not None
              else jnp.full((), jnp.nan, loss.dtype))
        return p, (loss, ev)

    return jax.lax.scan(step, params, None, length=num_sweeps)


def als(
    train: Ratings,
    rank: int,
    l2=0.1,
    num_sweeps: int = 20,
    *,
    weighted_l2: bool = False,
    biases: bool = False,
    l2_bias=None,
    init: Params | None = None,
    key=None,
    eval: Ratings | None = None,  # noqa: A002  (shared solver keyword)
    clip: tuple[float, float] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> SolverResult:
    """Alternating least squares on the observed entries (see the module docstring).

    Args:
      train: training ratings (m x n).
      rank: number of latent factors ``r``, ``1 <= r <= min(m, n)``.
      l2: ridge weight ``lambda >= 0`` in the "sum" scaling of
        :func:`mfjax.losses.masked_sq_loss`.
      num_sweeps: number of full sweeps (rows then columns).
      weighted_l2: frequency-weighted ridge ``lambda n_i`` (ALS-WR).
      biases: fit the biased model ``mean + b_i + c_j + u_i . v_j``
        (``mean`` = training mean, fixed); returns :class:`BiasedFactors`.
      l2_bias: ridge on the biases (default ``l2``).
      init: starting parameters (only ``V`` and, if biased, ``col_bias``
        matter: the first half sweep solves for ``U``); default random
        ``N(0, 1/r)`` factors from ``key``.
      key: PRNG key for the default init (default ``jax.random.key(0)``).
      eval: held-out ratings; their RMSE after each sweep is traced.
      clip: clip predictions to ``(lo, hi)`` for the traced RMSE.
      chunk_size: entries per chunk when building the normal equations.

    Returns:
      :class:`~mfjax.solvers.base.SolverResult` with ``params`` (``Factors``
      or ``BiasedFactors``) and a trace of length ``num_sweeps``: the training
      objective (:func:`mfjax.losses.masked_sq_loss`, "sum" scale, with the
      weighted penalty when ``weighted_l2``) and the held-out RMSE (NaN
      without ``eval``).

    Raises:
      ValueError: rank out of range, ``l2 < 0`` / non-finite, ``num_sweeps < 1``,
        non-finite ratings, ``eval`` of another shape.

    Example::

        res = mfjax.solvers.als(train, rank=10, l2=0.05, weighted_l2=True,
                                biases=True, num_sweeps=20, eval=test)
        res.trace.eval_rmse[-1]
    """
    check_ratings(train, "training")
    m, n = train.shape
    if not isinstance(rank, (int, np.integer)) or rank <= 0 or rank > min(m, n):
        raise ValueError(f"rank must be an integer in 1..min(m, n) = {min(m, n)} for shape "
                         f"{(m, n)}, got {rank!r}")
    _check_l2(l2)
    if l2_bias is not None:
        _check_l2(l2_bias, "l2_bias")
    if int(num_sweeps) < 1:
        raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
    if eval is not None:
        check_ratings(eval, "evaluation")
        if tuple(eval.shape) != (m, n):
            raise ValueError(f"eval shape {tuple(eval.shape)} differs from train shape {(m, n)}")
    dtype = np.asarray(train.values).dtype
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
    dtype = jax.dtypes.canonicalize_dtype(dtype)  # float64 only when x64 is enabled
    if init is None:
        key = jax.random.key(0) if key is None else key
        if biases:
            init = init_biased_factors(key, (m, n), int(rank), mean=train.mean(), dtype=dtype)
        else:
            init = init_factors(key, (m, n), int(rank), dtype=dtype)
    else:
        if biases != isinstance(init, BiasedFactors):
            raise ValueError(f"init is {type(init).__name__} but biases={biases}")
        if init.U.shape != (m, rank) or init.V.shape != (n, rank):
            raise ValueError(f"init shapes {init.U.shape}, {init.V.shape} do not match "
                             f"{(m, rank)}, {(n, rank)}")
    train_d = train.device_put()
    eval_d = eval.device_put() if eval is not None else None
    l2 = jnp.asarray(l2, dtype)
    l2_bias = None if l2_bias is None else jnp.asarray(l2_bias, dtype)
    params, (losses, evals) = _run(
        init, train_d, eval_d, l2, l2_bias, num_sweeps=int(num_sweeps),
        weighted_l2=bool(weighted_l2), chunk_size=int(chunk_size),
        clip=None if clip is None else (float(clip[0]), float(clip[1])),
    )
    return SolverResult(params, SolverTrace(losses, evals))
