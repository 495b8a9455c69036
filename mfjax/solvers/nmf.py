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

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.losses.divergences import DEFAULT_EPS, _canonical, divergence
from mfjax.losses.masked import Factors, l2_penalty
from mfjax.metrics import rmse
from mfjax.solvers.base import SolverResult, SolverTrace, check_ratings

__all__ = ["nmf", "nmf_init", "nndsvd", "NMF_LOSSES"]

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


def _objective(params, train, loss, l2, row_w, col_w, eps):
    if loss in ("kl", "is"):
        val = divergence(loss)(params, train, eps)
    else:
        val = divergence(loss)(params, train)
    return val + l2_penalty(params, l2, l2_weights=(row_w, col_w))


@functools.partial(
    jax.jit, static_argnames=("num_iters", "loss", "has_eval", "clip")
)
def _run(params, train, eval_set, l2, eps, delta, weighted_l2, *, num_iters, loss, has_eval,
         clip):
    m, n = train.shape
    rows, cols = jnp.asarray(train.rows), jnp.asarray(train.cols)
    x = jnp.asarray(train.values)
    dtype = x.dtype
    row_w = jnp.where(weighted_l2, _seg(jnp.ones_like(x), rows, m), 1.0)
    col_w = jnp.where(weighted_l2, _seg(jnp.ones_like(x), cols, n), 1.0)
    l2_row, l2_col = l2 * row_w, l2 * col_w

    def body(p, _):
        U, V = p
        U = _half_step(U, V, rows, cols, x, m, loss, l2_row, eps, delta)
        V = _half_step(V, U, cols, rows, x, n, loss, l2_col, eps, delta)
        p = Factors(U, V)
        # the trace reports the true divergence (for "l1" the method decreases
        # the Huber-smoothed one monotonically, see the module docstring)
        obj = _objective(p, train, loss, l2, row_w, col_w, eps)
        ev = rmse(p, eval_set, clip=clip) if has_eval else jnp.asarray(jnp.nan, dtype)
        return p, (obj, ev)

    params, (losses, evals) = jax.lax.scan(body, params, None, length=num_iters)
    return params, losses, evals


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
    num_iters: int = 100,
    l2: float = 0.0,
    weighted_l2: bool = False,
    init="nndsvda",
    key=None,
    eps: float = DEFAULT_EPS,
    delta: float = 1e-3,
    eval: Ratings | None = None,  # noqa: A002
    clip: tuple[float, float] | None = None,
    dtype=jnp.float32,
) -> SolverResult:
    """Masked NMF ``X ~ U V^T`` with ``U, V >= 0`` by multiplicative updates.

    Args:
      train: observed nonnegative training ratings.
      rank: ``1 <= r <= min(m, n)``.
      loss: ``"l2"`` (``"frobenius"``), ``"kl"``, ``"is"`` or ``"l1"`` (module docstring).
      num_iters: iterations (one U update then one V update each).
      l2: ridge ``l2 (||U||^2 + ||V||^2)`` (``"l2"``/``"l1"`` only).
      weighted_l2: scale the ridge of each row/column by its rating count.
      init: ``"random"``, ``"nndsvd"``, ``"nndsvda"`` (default) or ``Factors``.
      key: PRNG key for the random / randomized-SVD initialisation.
      eps: denominator guard and prediction floor (KL, IS).
      delta: IRLS floor of ``|residual|`` (``"l1"``).
      eval: optional held-out ratings (RMSE traced per iteration).
      clip: clip predictions to ``(lo, hi)`` for the traced RMSE.
      dtype: float dtype.

    Returns:
      :class:`SolverResult` with ``Factors(U, V)`` (nonnegative) and per
      iteration the objective (divergence + ridge; the true L1 for ``"l1"``)
      and held-out RMSE (NaN without ``eval``).

    Raises:
      ValueError: bad rank, negative / NaN / empty data (zeros for IS),
        ``l2 < 0``, ``l2 > 0`` with KL/IS, negative ``init`` factors.
      FloatingPointError: a non-finite objective (reports the iteration).

    Example::

        res = mfjax.solvers.nmf(train, 15, loss="kl", num_iters=200, eval=test)
    """
    m, n = train.shape
    loss = _canonical(loss)
    if not (isinstance(rank, (int, np.integer)) and 1 <= rank <= min(m, n)):
        raise ValueError(f"rank must be an integer in 1..min(m, n) = {min(m, n)}, got {rank!r}")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if not l2 >= 0:
        raise ValueError(f"l2 (lambda) must be >= 0, got {l2}")
    if l2 > 0 and loss in ("kl", "is"):
        raise ValueError(
            f"l2 > 0 is supported for the 'l2' and 'l1' losses only, got loss={loss!r}"
        )
    if not eps > 0 or not delta > 0:
        raise ValueError(f"eps and delta must be > 0, got eps={eps}, delta={delta}")
    _check_values(train, "training", loss)
    if eval is not None:
        _check_values(eval, "evaluation", loss)
        if tuple(eval.shape) != tuple(train.shape):
            raise ValueError(f"eval shape {eval.shape} differs from train shape {train.shape}")

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

    train_d = train.astype(np.dtype(dtype)).device_put()
    eval_d = eval.astype(np.dtype(dtype)).device_put() if eval is not None else None
    params, losses, evals = _run(
        params, train_d, eval_d, jnp.asarray(l2, dtype), jnp.asarray(eps, dtype),
        jnp.asarray(delta, dtype), jnp.asarray(bool(weighted_l2)), num_iters=int(num_iters),
        loss=loss, has_eval=eval is not None,
        clip=None if clip is None else tuple(map(float, clip)),
    )
    finite = np.isfinite(np.asarray(losses))
    if not finite.all():
        raise FloatingPointError(
            f"NMF ({loss}) objective became non-finite at iteration {int(np.argmin(finite))}"
        )
    return SolverResult(params, SolverTrace(losses, evals))
