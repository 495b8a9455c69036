"""Nonnegative matrix factorization of partially observed data (masked MU).

Find ``U >= 0`` (m, r) and ``V >= 0`` (n, r) with ``X ~ U V^T`` on the observed
entries ``Omega`` (mask ``W``), minimising one of the divergences of
:mod:`mfjax.losses.divergences` (``Y = U V^T``; our ``V`` is the slides' ``V^T``).
All sums run over ``Omega`` only, as ``segment_sum`` over the COO entries
(``(W o A) V`` at row ``i`` is ``sum_{j in Omega_i} a_ij v_j``): no m x n array.

* ``loss="l2"`` -- the masked multiplicative updates of the slides (eqs 12-13)::

      U <- U o ((W o X) V) / ((W o Y) V + l2 U + eps)
      V <- V o ((W o X)^T U) / ((W o Y)^T U + l2 V + eps)      (Y recomputed with the new U)

  monotone for ``||W o (X - Y)||^2 + l2 (||U||^2 + ||V||^2)`` (Lee & Seung's
  auxiliary function; a ridge term adds ``l2 U`` to the denominator).
* ``loss="kl"`` -- masked Lee-Seung updates for the generalized KL::

      U <- U o ((W o X / Y) V) / (W V + eps)

* ``loss="is"`` -- the majorization-minimization update of Fevotte & Idier
  (2011) for the Itakura-Saito divergence (beta = 0), masked::

      U <- U o [((W o X / Y^2) V) / ((W o 1 / Y) V + eps)]^(1/2)

  The exponent 1/2 makes it provably monotone; the heuristic exponent 1 of
  Fevotte et al. (2009) is usually monotone too but not guaranteed.
* ``loss="l1"`` -- no classical MU exists.  We use iteratively reweighted
  least squares inside MU: at each iteration the weights
  ``w_ij = 1 / max(|x_ij - y_ij|, delta)`` are frozen and one weighted-L2 MU
  step is taken for ``U`` and (with re-computed weights) for ``V``.  Since
  ``r^2 / (2 max(|r_t|, delta)) + const`` majorizes the Huber-smoothed
  absolute value ``phi(r) = |r|`` (``|r| >= delta``), ``r^2/(2 delta) + delta/2``
  (else), and the weighted MU step decreases the majorizer, the smoothed
  objective ``sum phi(r_ij) (+ l2 terms)`` is monotone non-increasing; it
  differs from the L1 objective by at most ``delta/2`` per entry.

The V half of every loss is the same update on the transposed ratings.
``weighted_l2=True`` scales the ridge of row ``i`` by its count ``n_i``
(``l2 sum_i n_i ||u_i||^2``, as scikit-surprise's NMF does).  ``l2 > 0`` is
supported for ``"l2"`` and ``"l1"``; for KL and IS the ratio update would lose
its monotonicity, so it is refused.

Initialisation: ``"random"`` (``sqrt(mean(x) / r) |N(0, 1)|``, as sklearn),
``"nndsvd"`` (Boutsidis & Gallopoulos 2008: nonnegative parts of the top-r
singular triplets of the mean-filled matrix), ``"nndsvda"`` (NNDSVD with its
zeros replaced by the mean of the data: MU cannot move an exact zero, so this
is the better start for MU), or given ``Factors``.  The singular triplets come
from a randomized subspace iteration (Halko, Martinsson & Tropp 2011) on the
mean-filled matrix ``mu 1 1^T + S`` with ``S`` the sparse centred data, applied
through segment sums -- no m x n array, so it scales to MovieLens; with
``svd_iters`` power iterations the triplets are accurate when the spectrum
decays (exact on the tests' small low-rank matrices); it is an initialiser,
not an SVD solver (see :mod:`mfjax.solvers.svd` for that).

References:
  Lee, D. D., Seung, H. S. "Algorithms for non-negative matrix
  factorization", NIPS 2001.

  Fevotte, C., Bertin, N., Durrieu, J.-L. "Nonnegative matrix factorization
  with the Itakura-Saito divergence", Neural Computation 21(3), 2009.

  Fevotte, C., Idier, J. "Algorithms for nonnegative matrix factorization with
  the beta-divergence", Neural Computation 23(9), 2011.

  Boutsidis, C., Gallopoulos, E. "SVD based initialization: A head start for
  nonnegative matrix factorization", Pattern Recognition 41(4), 2008.

  Halko, N., Martinsson, P.-G., Tropp, J. A. "Finding structure with
  randomness", SIAM Review 53(2), 2011.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core import check_l2
from mfjax.data.ratings import Ratings
from mfjax.losses.divergences import DEFAULT_EPS, _canonical, divergence
from mfjax.losses.masked import Factors, l2_penalty
from mfjax.solvers import _args
from mfjax.solvers._args import UNSET
from mfjax.solvers.base import RMSE, Solver, SolverResult, check_ratings, run

__all__ = ["nmf", "nmf_solver", "nmf_problem", "NMFProblem", "NMFState", "NMFInfo",
           "nmf_init", "nndsvd", "NMF_LOSSES"]

#: The divergences the multiplicative updates minimise (names accepted by :func:`nmf`).
NMF_LOSSES = ("l2", "l1", "kl", "is")


def _seg(a, idx, num):
    return jax.ops.segment_sum(a, idx, num_segments=num)


def _half_step(A, B, rows, cols, x, num_rows, loss, l2_row, eps, delta):
    """Update the factor ``A`` (rows indexed by ``rows``) with ``B`` fixed.

    ``A`` is U (``rows`` = row index) or V (``rows`` = column index).
    """
    y = jnp.einsum("kr,kr->k", A[rows], B[cols])
    Bc = B[cols]
    if loss == "l2":
        num = _seg(x[:, None] * Bc, rows, num_rows)
        den = _seg(y[:, None] * Bc, rows, num_rows) + l2_row[:, None] * A
        return A * num / (den + eps)
    if loss == "l1":
        w = 1.0 / jnp.maximum(jnp.abs(x - y), delta)
        num = _seg((w * x)[:, None] * Bc, rows, num_rows)
        den = _seg((w * y)[:, None] * Bc, rows, num_rows) + 2.0 * l2_row[:, None] * A
        return A * num / (den + eps)
    ys = jnp.maximum(y, eps)
    if loss == "kl":
        num = _seg((x / ys)[:, None] * Bc, rows, num_rows)
        den = _seg(Bc, rows, num_rows)
        return A * num / (den + eps)
    # "is": Fevotte & Idier (2011) MM update, exponent 1/2 for beta = 0.
    num = _seg((x / (ys * ys))[:, None] * Bc, rows, num_rows)
    den = _seg((1.0 / ys)[:, None] * Bc, rows, num_rows)
    return A * jnp.sqrt(num / (den + eps))


class NMFProblem(NamedTuple):
    """The data and numeric hyperparameters of masked NMF (all traced).

    Attributes:
      train: the observed nonnegative ratings.
      l2: ridge ``lambda`` (``"l2"``, ``"l1"`` only).
      row_weights, col_weights: ``(m,)`` / ``(n,)`` ridge weights (1 or the counts).
      eps: denominator guard and prediction floor (KL, IS).
      delta: IRLS floor of ``|residual|`` (``"l1"``).
    """

    train: Ratings
    l2: jax.Array
    row_weights: jax.Array
    col_weights: jax.Array
    eps: jax.Array
    delta: jax.Array


class NMFState(NamedTuple):
    """State of :func:`nmf_solver`: the nonnegative factors."""

    params: Factors


class NMFInfo(NamedTuple):
    """Diagnostics of one NMF iteration: ``loss``, the divergence plus the ridge
    (the true L1 for ``"l1"``, whose smoothed form is the one made monotone)."""

    loss: jax.Array


def nmf_problem(train: Ratings, *, l2=0.0, weighted_l2: bool = False, eps: float = DEFAULT_EPS,
                delta: float = 1e-3, dtype=jnp.float32) -> NMFProblem:
    """Build the :class:`NMFProblem` (``weighted_l2``: ridge weights = the rating counts)."""
    m, n = train.shape
    train = train.astype(np.dtype(dtype)).device_put()
    x = jnp.asarray(train.values)
    ones = jnp.ones_like(x)
    row_w = _seg(ones, jnp.asarray(train.rows), m) if weighted_l2 else jnp.ones((m,), x.dtype)
    col_w = _seg(ones, jnp.asarray(train.cols), n) if weighted_l2 else jnp.ones((n,), x.dtype)
    return NMFProblem(train, jnp.asarray(l2, x.dtype), row_w, col_w, jnp.asarray(eps, x.dtype),
                      jnp.asarray(delta, x.dtype))


def nmf_objective(params: Factors, problem: NMFProblem, loss: str) -> jax.Array:
    """Divergence ``loss`` on the observed entries plus ``l2 sum w ||row||^2``."""
    train = problem.train
    if loss in ("kl", "is"):
        val = divergence(loss)(params, train, problem.eps)
    else:
        val = divergence(loss)(params, train)
    return val + l2_penalty(params, problem.l2,
                            l2_weights=(problem.row_weights, problem.col_weights))


def _nmf_init(params, problem=None, key=None) -> NMFState:
    del problem, key
    return NMFState(Factors(*params))


@functools.lru_cache(maxsize=None)
def _mu_step(loss: str):
    """The cached ``step`` of :func:`nmf_solver` for a canonical divergence name."""

    def step(state: NMFState, problem: NMFProblem):
        train = problem.train
        m, n = train.shape
        rows, cols = jnp.asarray(train.rows), jnp.asarray(train.cols)
        x = jnp.asarray(train.values)
        l2_row, l2_col = problem.l2 * problem.row_weights, problem.l2 * problem.col_weights
        U, V = state.params
        U = _half_step(U, V, rows, cols, x, m, loss, l2_row, problem.eps, problem.delta)
        V = _half_step(V, U, cols, rows, x, n, loss, l2_col, problem.eps, problem.delta)
        p = Factors(U, V)
        return NMFState(p), NMFInfo(nmf_objective(p, problem, loss))

    return step


def nmf_solver(loss: str = "l2") -> Solver:
    """Masked NMF as a :class:`~mfjax.solvers.base.Solver`: one step = U update, then V.

    Args:
      loss: the divergence, a name of the :data:`NMF_LOSSES` registry
        (``"l2"``/``"frobenius"``, ``"kl"``, ``"is"``, ``"l1"``; module docstring).

    Returns:
      ``Solver(init, step)`` on an :class:`NMFProblem`: ``init(params, problem,
      key=None) -> NMFState``, ``step(state, problem) -> (NMFState, NMFInfo)``.
    """
    return Solver(_nmf_init, _mu_step(_canonical(loss)))


# ------------------------------------------------------------------ init


def _mean_filled_matvecs(train: Ratings, mu):
    """``A q`` and ``A^T p`` for ``A = mu 1 1^T + S`` (S: centred observed data)."""
    m, n = train.shape
    rows, cols = jnp.asarray(train.rows), jnp.asarray(train.cols)
    s = jnp.asarray(train.values) - mu

    def A(Q):  # (n, k) -> (m, k)
        return mu * jnp.sum(Q, 0, keepdims=True) + _seg(s[:, None] * Q[cols], rows, m)

    def AT(P):  # (m, k) -> (n, k)
        return mu * jnp.sum(P, 0, keepdims=True) + _seg(s[:, None] * P[rows], cols, n)

    return A, AT


def _randomized_svd(train, mu, key, *, rank, iters, oversample):
    m, n = train.shape
    A, AT = _mean_filled_matvecs(train, mu)
    k = min(rank + oversample, m, n)
    Q, _ = jnp.linalg.qr(A(jax.random.normal(key, (n, k), jnp.asarray(train.values).dtype)))

    def power(Q, _):
        Z, _ = jnp.linalg.qr(AT(Q))
        Q, _ = jnp.linalg.qr(A(Z))
        return Q, None

    Q, _ = jax.lax.scan(power, Q, None, length=iters)
    Bt = AT(Q)  # (n, k) = (Q^T A)^T
    Ub, s, Vbt = jnp.linalg.svd(Bt.T, full_matrices=False)
    return (Q @ Ub)[:, :rank], s[:rank], Vbt[:rank].T


def nndsvd(train: Ratings, rank: int, *, key=None, fill_zeros: bool = True,
           svd_iters: int = 8, oversample: int = 10) -> Factors:
    """NNDSVD initial factors (Boutsidis & Gallopoulos 2008) of the mean-filled data.

    For each of the top ``rank`` singular triplets ``(s, a, b)`` of
    ``A = mean-filled X`` (the first taken as ``|a|, |b|``), split ``a, b`` into
    positive and negative parts, keep the pair with the larger
    ``||a_+|| ||b_+||`` vs ``||a_-|| ||b_-||`` and scale it by
    ``sqrt(s * product of norms)``.  ``fill_zeros`` (NNDSVDa) replaces exact
    zeros by the data mean, which multiplicative updates need.
    """
    key = jax.random.key(0) if key is None else key
    mu = jnp.asarray(np.mean(np.asarray(train.values, np.float64)), jnp.asarray(train.values).dtype)
    return _nndsvd(train.device_put(), mu, key, rank=rank, fill_zeros=fill_zeros,
                   iters=svd_iters, oversample=oversample)


@functools.partial(jax.jit, static_argnames=("rank", "fill_zeros", "iters", "oversample"))
def _nndsvd(train, mu, key, *, rank, fill_zeros, iters, oversample):
    a, s, b = _randomized_svd(train, mu, key, rank=rank, iters=iters, oversample=oversample)
    ap, an = jnp.maximum(a, 0), jnp.maximum(-a, 0)
    bp, bn = jnp.maximum(b, 0), jnp.maximum(-b, 0)
    nap, nan_ = jnp.linalg.norm(ap, axis=0), jnp.linalg.norm(an, axis=0)
    nbp, nbn = jnp.linalg.norm(bp, axis=0), jnp.linalg.norm(bn, axis=0)
    mp, mn = nap * nbp, nan_ * nbn
    pos = mp >= mn
    tiny = jnp.finfo(a.dtype).tiny
    ua = jnp.where(pos, ap / jnp.maximum(nap, tiny), an / jnp.maximum(nan_, tiny))
    vb = jnp.where(pos, bp / jnp.maximum(nbp, tiny), bn / jnp.maximum(nbn, tiny))
    sc = jnp.sqrt(s * jnp.where(pos, mp, mn))
    U, V = ua * sc, vb * sc
    # first triplet: Perron vector of a nonnegative matrix, sign-fixed
    U = U.at[:, 0].set(jnp.sqrt(s[0]) * jnp.abs(a[:, 0]))
    V = V.at[:, 0].set(jnp.sqrt(s[0]) * jnp.abs(b[:, 0]))
    if fill_zeros:
        U = jnp.where(U > 0, U, mu)
        V = jnp.where(V > 0, V, mu)
    return Factors(U, V)


def nmf_init(train: Ratings, rank: int, init="nndsvda", *, key=None, dtype=jnp.float32) -> Factors:
    """Nonnegative starting factors: ``"random"``, ``"nndsvd"``, ``"nndsvda"``."""
    m, n = train.shape
    key = jax.random.key(0) if key is None else key
    if init == "random":
        scale = float(np.sqrt(np.mean(np.asarray(train.values, np.float64)) / rank))
        ku, kv = jax.random.split(key)
        return Factors(scale * jnp.abs(jax.random.normal(ku, (m, rank), dtype)),
                       scale * jnp.abs(jax.random.normal(kv, (n, rank), dtype)))
    if init in ("nndsvd", "nndsvda"):
        U, V = nndsvd(train.astype(np.dtype(dtype)), rank, key=key, fill_zeros=init == "nndsvda")
        return Factors(U.astype(dtype), V.astype(dtype))
    raise ValueError(f"init must be 'random', 'nndsvd', 'nndsvda' or Factors, got {init!r}")


# ------------------------------------------------------------------ solver


def _check_values(r: Ratings, what: str, loss: str):
    vals = check_ratings(r, what)
    if what == "training":
        neg = vals < 0
        if neg.any():
            k = int(np.argmax(neg))
            raise ValueError(
                f"NMF needs nonnegative data; training value {float(vals[k])} at entry {k} "
                f"(row {int(np.asarray(r.rows)[k])}, col {int(np.asarray(r.cols)[k])}) is negative"
            )
        if loss == "is" and (vals == 0).any():
            k = int(np.argmax(vals == 0))
            raise ValueError(
                "the Itakura-Saito divergence needs strictly positive data; "
                f"training entry {k} is 0"
            )


def nmf(
    train: Ratings,
    rank: int,
    *,
    loss: str = "l2",
    num_steps: int = UNSET,
    l2: float = 0.0,
    weighted_l2: bool = False,
    init="nndsvda",
    key=None,
    eps: float = DEFAULT_EPS,
    delta: float = 1e-3,
    eval_set: Ratings | None = None,
    eval_every: int = 1,
    clip: tuple[float, float] | None = None,
    dtype=jnp.float32,
    num_iters: int = UNSET,
    eval: Ratings | None = UNSET,  # noqa: A002  (deprecated alias of eval_set)
    callback=None,
    callback_every: int = 1,
) -> SolverResult:
    """Masked NMF ``X ~ U V^T`` with ``U, V >= 0`` by multiplicative updates.

    A thin alias: :func:`nmf_problem` + :func:`nmf_solver` + :func:`mfjax.solvers.run`.

    Args:
      train: observed nonnegative training ratings.
      rank: ``1 <= r <= min(m, n)``.
      loss: ``"l2"`` (``"frobenius"``), ``"kl"``, ``"is"`` or ``"l1"`` (module docstring).
      num_steps: iterations (one U update then one V update each); default 100.
      l2: ridge ``l2 (||U||^2 + ||V||^2)`` (``"l2"``/``"l1"`` only; default 0.0,
        the default of every solver).
      weighted_l2: scale the ridge of each row/column by its rating count.
      init: ``"random"``, ``"nndsvd"``, ``"nndsvda"`` (default) or ``Factors``.
      key: PRNG key for the random / randomized-SVD initialisation.
      eps: denominator guard and prediction floor (KL, IS).
      delta: IRLS floor of ``|residual|`` (``"l1"``).
      eval_set: optional held-out ratings (RMSE traced per iteration).
      eval_every: trace the held-out RMSE every this many iterations.
      callback: optional progress hook ``callback(Progress)`` every ``callback_every``
        iterations and at the stop (:mod:`mfjax.core.progress`, :func:`mfjax.solvers.run`); off by default.
      callback_every: iterations between progress reports.
      clip: clip predictions to ``(lo, hi)`` for the traced RMSE.
      dtype: float dtype.
      num_iters, eval: deprecated aliases of ``num_steps``, ``eval_set``.

    Returns:
      :class:`SolverResult` with ``Factors(U, V)`` (nonnegative), ``status``
      ``MAX_STEPS`` and per iteration the objective (divergence + ridge; the
      true L1 for ``"l1"``) and held-out RMSE (``eval_metric``; NaN without
      ``eval_set``).

    Raises:
      ValueError: bad rank, negative / NaN / empty data (zeros for IS),
        ``l2 < 0``, ``l2 > 0`` with KL/IS, negative ``init`` factors.
      FloatingPointError: a non-finite objective (reports the iteration).

    Example::

        res = mfjax.solvers.nmf(train, 15, loss="kl", num_steps=200, eval_set=test)
    """
    num_steps = _args.renamed("nmf", "num_steps", num_steps, "num_iters", num_iters, 100)
    eval_set = _args.eval_alias("nmf", eval_set, eval)
    m, n = train.shape
    loss = _canonical(loss)
    rank = _args.check_rank(rank, train.shape)
    num_steps = _args.check_num_steps(num_steps, "num_iters")
    check_l2("l2", l2)
    if l2 > 0 and loss in ("kl", "is"):
        raise ValueError(
            f"l2 > 0 is supported for the 'l2' and 'l1' losses only, got loss={loss!r}"
        )
    if not eps > 0 or not delta > 0:
        raise ValueError(f"eps and delta must be > 0, got eps={eps}, delta={delta}")
    _check_values(train, "training", loss)
    _args.check_eval_set(eval_set, train, lambda r, what: _check_values(r, what, loss))

    if isinstance(init, str):
        params = nmf_init(train, rank, init, key=key, dtype=dtype)
    else:
        U, V = np.asarray(init[0]), np.asarray(init[1])
        if U.shape != (m, rank) or V.shape != (n, rank):
            raise ValueError(
                f"init factors have shapes {U.shape}, {V.shape}; expected {(m, rank)}, {(n, rank)}"
            )
        if (U < 0).any() or (V < 0).any() or not (np.isfinite(U).all() and np.isfinite(V).all()):
            raise ValueError("init factors must be finite and nonnegative")
        params = Factors(jnp.asarray(U, dtype), jnp.asarray(V, dtype))

    problem = nmf_problem(train, l2=l2, weighted_l2=weighted_l2, eps=eps, delta=delta, dtype=dtype)
    eval_d = eval_set.astype(np.dtype(dtype)).device_put() if eval_set is not None else None
    solver = nmf_solver(loss)
    res = run(solver, problem, solver.init(params, problem), num_steps, eval_set=eval_d,
              eval_every=eval_every, metric=RMSE(None if clip is None else tuple(map(float, clip))),
              callback=callback, callback_every=callback_every)
    return _args.raise_if_nonfinite(res, f"NMF ({loss})", "iteration")
