"""Stochastic gradient descent for matrix factorization (the lecture's SGD).

Model.  ``x_ij ~ u_i . v_j`` (``Factors(U, V)``), or with ``biases=True`` the
biased model of Funk / Koren ("SVD" in scikit-surprise)::

    x_ij ~ mu + b_i + c_j + u_i . v_j

with ``mu`` the training mean (fixed), ``b`` row and ``c`` column biases.

Update.  For one observed rating ``(i, j)`` with error ``e = x_ij - xhat_ij``
and step size ``a`` (the lecture's stochastic gradient of
``f_ij = 1/2 (x_ij - u_i . v_j)^2`` plus the regulariser's share)::

    u_i <- u_i + a (e v_j - l_i u_i)
    v_j <- v_j + a (e u_i - l_j v_j)          (both with the old u_i, v_j)
    b_i <- b_i + a (e - l_i b_i),  c_j <- c_j + a (e - l_j c_j)   (biases=True)

The regulariser's share decides which objective SGD minimises:

* ``weighted_l2=False`` (default, the SVD/NMF lecture's rule): ``l_i = l2 / n_i``,
  ``l_j = l2 / n_j`` (``n_i`` = observed ratings of row ``i``), so one epoch's
  expected update is a gradient step on
  ``1/2 [sum_Omega e_ij^2 + l2 (||U||^2 + ||V||^2 (+ ||b||^2 + ||c||^2))]``,
  i.e. half of :func:`mfjax.losses.masked_sq_loss` with the same ``l2``.
* ``weighted_l2=True`` (Funk / scikit-surprise): ``l_i = l_j = l2`` at every
  rating, which minimises the frequency-weighted objective
  ``1/2 [sum_Omega e_ij^2 + l2 sum_i n_i ||u_i||^2 + l2 sum_j n_j ||v_j||^2 (+ biases)]``.

Minibatches.  With ``batch_size=B`` the entries of an epoch (a fresh random
order per epoch, from ``key``) are cut into batches of ``B``; all
entries of a batch read the same parameters and their updates are added
(scatter-add), i.e. ``B`` per-rating steps taken in parallel (the step size
keeps its per-rating meaning).  ``B=1`` is the faithful sequential
per-rating SGD; it is still one jit-compiled ``lax.scan`` over the entries
(a few microseconds per rating on CPU).  The epoch's order is a keyed
bijection of ``a b >= nnz`` slots (``a = ceil(sqrt(nnz))``, a mixed-radix
Feistel network, see :func:`_feistel`; O(nnz), no sort); the ``< a`` slots
beyond ``nnz``, and the tail that fills the last batch, are masked-out
entries, so an epoch has ``ceil(a b / B)`` batches, some with a few
masked-out entries.  A popular item can occur many times in one batch
and receives the sum of those updates, so large batches need a smaller
``lr`` than ``B`` suggests (on ML-1M, ``B=4096, lr=0.05`` is fine and
``B=16384, lr=0.1`` diverges -- reported as an error, not as NaN factors).

Step sizes.  ``lr`` is the constant step; ``decay=g`` multiplies it by ``g``
after every epoch (Koren's 0.9 rule); a callable ``schedule(step) -> lr``
(any optax schedule, ``step`` counting minibatches from 0) replaces both.

The whole run (all epochs, the per-epoch training loss and held-out RMSE) is
one jit-compiled ``lax.scan``, with no host round trip; each epoch gathers
its data into batch order once, then scans over the batches.  The trace
loss is the objective above without the factor ``1/2``:

* ``loss_trace="exact"`` (default): :func:`mfjax.losses.masked_sq_loss`
  (``"sum"`` scale, ``l2_weights`` = the counts when ``weighted_l2``) after
  each epoch -- one extra pass over all entries (on ML-1M, r=32, B=4096,
  one core: 4 epochs cost 0.59 s CPU with it, 0.37 s with the running trace);
* ``loss_trace="running"``: ``sum_k e_k^2 + l2 sum_rows w ||z||^2`` with
  ``e_k`` the residual of entry ``k`` computed in its minibatch *before*
  that minibatch's update (a by-product of the step) and the penalty of the
  parameters at the end of the epoch.  A running estimate: it mixes
  parameters from the whole epoch and is larger than the exact value while
  the loss is still falling fast; it converges to it.

Internally the rows of ``U`` and ``V`` (and the biases, as an extra column)
live in one stacked buffer so that XLA updates it in place.

References:
  Funk, S. "Netflix Update: Try This at Home", 2006.

  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009.

  Jaggi, M. "Matrix Factorizations", EPFL CS-433 lecture notes, 2024.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

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

__all__ = ["sgd", "sgd_step", "random_order"]

Params = Factors | BiasedFactors


def _mix32(x):
    """A 32-bit integer hash (xorshift-multiply finaliser)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _order_domain(n: int) -> tuple[int, int]:
    """Sides ``(a, b)`` of the mixed-radix domain ``Z_a x Z_b`` used for ``0..n-1``:
    ``a = ceil(sqrt(n))``, ``b = ceil(n / a)``, so ``n <= a b < n + a``."""
    n = max(int(n), 1)
    a = math.isqrt(n - 1) + 1
    return a, -(-n // a)


def _feistel(x, keys, a: int, b: int):
    """A keyed bijection of ``[0, a b)`` (mixed-radix Feistel network).

    Write ``x = L b + R`` with ``L in Z_a``, ``R in Z_b``.  Each round maps
    ``(L, R) in Z_s x Z_t`` to ``(R, (L + F_k(R)) mod s) in Z_t x Z_s``
    (``F_k`` = hash of ``R xor key_k``), which is invertible
    (``L = (L' - F_k(R)) mod s``); the sides swap every round and the result
    is read back as ``L t + R`` in the final radix.  Unlike a balanced
    Feistel network on ``[0, 4^h)``, the domain ``a b`` exceeds ``n`` by
    less than ``a ~ sqrt(n)``, so no (or hardly any) cycle walking is needed.
    """
    left, right = x // jnp.uint32(b), x % jnp.uint32(b)
    s, t = a, b
    for k in range(keys.shape[0]):
        left, right = right, (left + _mix32(right ^ keys[k]) % jnp.uint32(s)) % jnp.uint32(s)
        s, t = t, s
    return left * jnp.uint32(t) + right


def random_order(key, n: int, rounds: int = 4) -> jax.Array:
    """A pseudo-random permutation of ``0..n-1`` in O(n) work, without sorting.

    The keyed mixed-radix Feistel network of :func:`_feistel` (``rounds``
    rounds) is a bijection of ``[0, a b)`` with ``n <= a b < n + sqrt(n) + 1``;
    cycle walking (re-apply until the value lands in ``[0, n)``) restricts it
    to a bijection of ``[0, n)`` (Black & Rogaway 2002).  Since only
    ``< 1/sqrt(n)`` of the values start outside, the walk ends after a few
    passes.  On CPU this is several times cheaper than
    ``jax.random.permutation`` or an argsort of random keys.  Different keys
    give (pseudo-)independent orders.  (:func:`sgd` uses the network on the
    padded domain directly, without the walk: the ``a b - n`` extra slots
    become masked-out entries.)

    References:
      Black, J., Rogaway, P. "Ciphers with arbitrary finite domains",
      CT-RSA 2002.
    """
    a, b = _order_domain(n)
    keys = jax.random.bits(key, (rounds,), jnp.uint32)

    def walk(x):
        return jnp.where(x >= n, _feistel(x, keys, a, b), x)

    x = _feistel(jnp.arange(n, dtype=jnp.uint32), keys, a, b)
    x = jax.lax.while_loop(lambda x: jnp.any(x >= n), walk, x)
    return x.astype(jnp.int32)


def _stack(params: Params) -> jax.Array:
    """One buffer ``Z = [[U, b], [V, c]]`` of shape (m + n, r [+ 1]).

    All rows live in one array so that a step's reads and its single
    scatter touch one buffer: XLA then updates it in place inside the scan
    (with separate U and V buffers, the V update reads U's old rows after U
    was written, and XLA copies both whole arrays every step).
    """
    if isinstance(params, BiasedFactors):
        top = jnp.concatenate([params.U, params.row_bias[:, None]], axis=1)
        bot = jnp.concatenate([params.V, params.col_bias[:, None]], axis=1)
    else:
        top, bot = params.U, params.V
    return jnp.concatenate([top, bot], axis=0)


def _unstack(Z, like: Params, m: int) -> Params:
    if isinstance(like, BiasedFactors):
        return BiasedFactors(Z[:m, :-1], Z[m:, :-1], Z[:m, -1], Z[m:, -1], like.mean)
    return Factors(Z[:m], Z[m:])


def _update(Z, idx, values, mask, lr, reg, mean, biases: bool):
    """The per-rating update of a batch on the stacked buffer.

    ``idx = [i_1..i_B, m + j_1..m + j_B]`` (rows of ``Z``), ``reg`` (2B,) the
    regularisation weight of each of those rows' entries (masked entries: 0).
    With ``z_i = [u_i, b_i]``, ``z_j = [v_j, c_j]`` (biased) the error is
    ``e = mask (x - mean - u_i.v_j - b_i - c_j)`` and the update, for both
    halves at once, ``z <- z + lr (e p - reg z)`` with ``p = [v_j, 1]`` for
    row ``i`` and ``p = [u_i, 1]`` for column ``j`` (``p`` = the partner row
    without bias column when unbiased); all ``2B`` row updates are added
    (scatter-add) to the old ``Z``.  Returns ``(Z_new, e)``.
    """
    zz = Z[idx]
    B = values.shape[0]
    zi, zj = zz[:B], zz[B:]
    other = jnp.concatenate([zj, zi])
    if biases:
        r = Z.shape[1] - 1
        is_bias = jnp.arange(r + 1) == r
        dot = jnp.sum(jnp.where(is_bias, 0.0, zi * zj), axis=1)
        pred = mean + dot + zi[:, r] + zj[:, r]
        # d/du_i (u_i . v_j + b_i) = [v_j, 1]
        other = jnp.where(is_bias, jnp.ones((), Z.dtype), other)
    else:
        pred = jnp.sum(zi * zj, axis=1)
    e = mask * (values - pred)
    e2 = jnp.concatenate([e, e])
    upd = lr * (e2[:, None] * other - reg[:, None] * zz)
    # the barrier materialises the updates: without it XLA fuses their whole
    # computation into the scatter and runs it element by element (~3x slower)
    upd = jax.lax.optimization_barrier(upd)
    return Z.at[idx].add(upd), e


def _stacked_step(Z, m, rows, cols, values, mask, lr, reg_row, reg_col, mean, biases: bool):
    """The per-rating update on the stacked buffer (see :func:`sgd_step`)."""
    idx = jnp.concatenate([rows, cols + m])
    reg = jnp.concatenate([mask * reg_row, mask * reg_col])
    return _update(Z, idx, values, mask, lr, reg, mean, biases)[0]


def sgd_step(params: Params, rows, cols, values, mask, lr, reg_row, reg_col) -> Params:
    """One (mini)batch of per-rating SGD updates, applied together (scatter-add).

    Args:
      params: :class:`Factors` or :class:`BiasedFactors` (the mean stays fixed).
      rows, cols, values: the batch's entries, shape (B,).
      mask: (B,) 1 for real entries, 0 for padding.
      lr: step size ``a``.
      reg_row, reg_col: (B,) regularisation weight of each entry's row and
        column (``l2 / n_i`` or ``l2``, see the module docstring).

    With ``B = 1`` this is exactly the lecture's update for one rating::

        e = x_ij - xhat_ij;  u_i += a (e v_j - l_i u_i);  v_j += a (e u_i - l_j v_j)
        (biased: b_i += a (e - l_i b_i);  c_j += a (e - l_j c_j))

    (:func:`sgd` runs the same update on a stacked buffer inside ``lax.scan``.)
    """
    m = params.U.shape[0]
    biased = isinstance(params, BiasedFactors)
    mean = params.mean if biased else 0.0
    rows, cols = jnp.asarray(rows), jnp.asarray(cols)
    Z = _stacked_step(_stack(params), m, rows, cols, jnp.asarray(values), jnp.asarray(mask), lr,
                      jnp.asarray(reg_row), jnp.asarray(reg_col), mean, biased)
    return _unstack(Z, params, m)


@functools.partial(
    jax.jit,
    static_argnames=("num_epochs", "batch_size", "schedule", "has_eval", "clip", "loss_trace"),
)
def _run(params, train, eval_set, key, lr, decay, l2, weighted_l2, *, num_epochs, batch_size,
         schedule, has_eval, clip, loss_trace):
    m, n = train.shape
    rows = jnp.asarray(train.rows)
    cols = jnp.asarray(train.cols)
    vals = jnp.asarray(train.values)
    nnz = vals.shape[0]
    dtype = params.U.dtype
    biased = isinstance(params, BiasedFactors)
    mean = params.mean if biased else jnp.asarray(0.0, dtype)
    n_row = jnp.zeros((m,), dtype).at[rows].add(1.0)
    n_col = jnp.zeros((n,), dtype).at[cols].add(1.0)
    # objective l2 sum_i w_i ||u_i||^2 + ...: w = 1 (lecture) or n_i (Funk);
    # each of row i's n_i ratings carries l2 w_i / n_i of it
    w_row = jnp.where(weighted_l2, n_row, 1.0)
    w_col = jnp.where(weighted_l2, n_col, 1.0)
    reg_row_all = l2 * w_row / jnp.maximum(n_row, 1.0)
    reg_col_all = l2 * w_col / jnp.maximum(n_col, 1.0)
    reg_stacked = jnp.concatenate([reg_row_all, reg_col_all])  # per row of Z
    w_stacked = jnp.concatenate([w_row, w_col])
    l2_weights = (w_row, w_col)

    # the epoch's order: a keyed bijection of the slots [0, a b) (a b >= nnz,
    # see _feistel); slots >= nnz, and the tail that fills the last batch,
    # are masked-out entries (row 0, column 0, weight 0: no-ops)
    a, b = _order_domain(nnz)
    slots = a * b
    nb = -(-slots // batch_size)
    total = nb * batch_size
    pad = total - nnz
    ent_i = jnp.concatenate([rows, jnp.zeros((pad,), rows.dtype)])
    ent_j = jnp.concatenate([cols + m, jnp.full((pad,), m, cols.dtype)])
    ent_x = jnp.concatenate([vals, jnp.zeros((pad,), dtype)])

    def epoch(carry, epoch_key):
        Z, step0, ep = carry
        keys = jax.random.bits(epoch_key, (4,), jnp.uint32)
        perm = _feistel(jnp.arange(slots, dtype=jnp.uint32), keys, a, b).astype(jnp.int32)
        perm = jnp.concatenate([perm, jnp.arange(slots, total, dtype=jnp.int32)])
        # the data of the whole epoch, gathered once into batch order
        idx = jnp.concatenate([ent_i[perm].reshape(nb, batch_size),
                               ent_j[perm].reshape(nb, batch_size)], axis=1)
        xs = ent_x[perm].reshape(nb, batch_size)
        msk = (perm < nnz).astype(dtype).reshape(nb, batch_size)
        lr_epoch = lr * decay ** ep.astype(dtype)

        def batch(c, inp):
            Z, step, sse = c
            ix, x, mk = inp
            a_ = lr_epoch if schedule is None else jnp.asarray(schedule(step), dtype)
            reg = reg_stacked[ix] * jnp.concatenate([mk, mk])
            Z, e = _update(Z, ix, x, mk, a_, reg, mean, biased)
            return (Z, step + 1, sse + jnp.sum(e * e)), None

        (Z, step, sse), _ = jax.lax.scan(batch, (Z, step0, jnp.zeros((), dtype)), (idx, xs, msk))
        p = _unstack(Z, params, m)
        if loss_trace == "exact":
            loss = masked_sq_loss(p, train, l2, scale="sum", l2_weights=l2_weights)
        else:  # "running": residuals seen during the epoch + exact penalty at its end
            loss = sse + l2 * jnp.sum(w_stacked * jnp.sum(Z * Z, axis=1))
        ev = rmse(p, eval_set, clip=clip) if has_eval else jnp.asarray(jnp.nan, dtype)
        return (Z, step, ep + 1), (loss, ev)

    keys = jax.random.split(key, num_epochs)
    (Z, _, _), (losses, evals) = jax.lax.scan(
        epoch, (_stack(params), jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32)), keys
    )
    return _unstack(Z, params, m), losses, evals


def sgd(
    train: Ratings,
    rank: int,
    *,
    key,
    lr: float = 0.01,
    l2: float = 0.02,
    num_epochs: int = 20,
    batch_size: int = 1,
    biases: bool = False,
    weighted_l2: bool = False,
    decay: float = 1.0,
    schedule: Callable[[Any], Any] | None = None,
    eval: Ratings | None = None,  # noqa: A002  (shared solver keyword)
    clip: tuple[float, float] | None = None,
    init: Factors | BiasedFactors | None = None,
    init_scale: float = 0.1,
    dtype=jnp.float32,
    loss_trace: str = "exact",
) -> SolverResult:
    """Fit ``X ~ U V^T`` (optionally with biases) by shuffled-epoch SGD.

    Args:
      train: observed training ratings.
      rank: number of latent factors ``r`` (``1 <= r <= min(m, n)``).
      key: PRNG key (initialisation and the per-epoch permutations).
      lr: constant step size ``a`` (> 0).
      l2: regularisation ``lambda >= 0`` (see ``weighted_l2``).
      num_epochs: passes over the training entries.
      batch_size: entries updated together (1 = sequential per-rating SGD).
      biases: fit the biased model ``mean + b_i + c_j + u_i . v_j``.
      weighted_l2: ``False``: ``l2/n_i`` per rating (uniform objective, the
        lecture); ``True``: ``l2`` per rating (Funk / surprise).
      decay: multiply the step by ``decay`` after each epoch (1 = constant).
      schedule: optional optax-style schedule ``step -> lr`` (step counts
        minibatches); replaces ``lr`` and ``decay``.
      eval: optional held-out ratings; their RMSE is traced per epoch.
      clip: clip predictions to ``(lo, hi)`` for the traced RMSE.
      init: optional starting ``Factors`` / ``BiasedFactors``.
      init_scale: std of the random normal initial factors (biases start at 0).
      dtype: float dtype of the parameters.
      loss_trace: ``"exact"`` (default): the trace's loss is the objective
        after each epoch, one extra pass over the training entries
        (:func:`mfjax.losses.masked_sq_loss`); ``"running"``: a running
        estimate at no extra pass, ``sum_k e_k^2`` over the epoch's
        entries, each residual ``e_k`` taken when its minibatch was visited
        (before that minibatch's update, so with parameters that drift
        during the epoch; it lags the exact value, by more in early epochs),
        plus the exact regulariser of the parameters at the epoch's end.
        Both detect divergence.

    Returns:
      :class:`SolverResult` with ``params`` a :class:`Factors` (or
      :class:`BiasedFactors` when ``biases``) and the per-epoch trace
      (training objective without the 1/2, held-out RMSE or NaN).

    Raises:
      ValueError: bad rank, ``lr <= 0``, ``l2 < 0``, ``num_epochs < 1``,
        ``batch_size < 1``, ``decay`` outside (0, 1], empty or non-finite data.
      FloatingPointError: the run diverged (non-finite loss); lower ``lr``.

    Example::

        res = mfjax.solvers.sgd(train, 10, key=jax.random.key(0), lr=0.01,
                                l2=0.05, num_epochs=20, biases=True, eval=test)
        res.trace.eval_rmse[-1]
    """
    m, n = train.shape
    if not (isinstance(rank, (int, np.integer)) and 1 <= rank <= min(m, n)):
        raise ValueError(f"rank must be an integer in 1..min(m, n) = {min(m, n)}, got {rank!r}")
    if schedule is None and not lr > 0:
        raise ValueError(f"lr (step size) must be > 0, got {lr}")
    if not l2 >= 0:
        raise ValueError(f"l2 (lambda) must be >= 0, got {l2}")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    if loss_trace not in ("exact", "running"):
        raise ValueError(f"loss_trace must be 'exact' or 'running', got {loss_trace!r}")
    check_ratings(train, "training")
    if eval is not None:
        check_ratings(eval, "evaluation")
        if tuple(eval.shape) != tuple(train.shape):
            raise ValueError(f"eval shape {eval.shape} differs from train shape {train.shape}")
    # the epoch is cut from a ab >= nnz slots (see _feistel): a batch never needs more
    a, b = _order_domain(train.nnz)
    batch_size = int(min(batch_size, a * b))

    k_init, k_run = jax.random.split(key)
    if init is None:
        if biases:
            params = init_biased_factors(k_init, (m, n), rank, mean=train.mean(),
                                         scale=init_scale, dtype=dtype)
        else:
            params = init_factors(k_init, (m, n), rank, scale=init_scale, dtype=dtype)
    else:
        U, V = jnp.asarray(init.U, dtype), jnp.asarray(init.V, dtype)
        if U.shape != (m, rank) or V.shape != (n, rank):
            raise ValueError(
                f"init factors have shapes {U.shape}, {V.shape}; expected {(m, rank)}, {(n, rank)}"
            )
        if biases:
            if isinstance(init, BiasedFactors):
                params = BiasedFactors(U, V, jnp.asarray(init.row_bias, dtype),
                                       jnp.asarray(init.col_bias, dtype),
                                       jnp.asarray(init.mean, dtype))
            else:
                params = BiasedFactors(U, V, jnp.zeros((m,), dtype), jnp.zeros((n,), dtype),
                                       jnp.asarray(train.mean(), dtype))
        else:
            if isinstance(init, BiasedFactors):
                raise ValueError("init is BiasedFactors but biases=False")
            params = Factors(U, V)

    train_d = train.astype(np.dtype(dtype)).device_put()
    eval_d = eval.astype(np.dtype(dtype)).device_put() if eval is not None else None
    params, losses, evals = _run(
        params, train_d, eval_d, k_run,
        jnp.asarray(lr if schedule is None else 0.0, dtype), jnp.asarray(decay, dtype),
        jnp.asarray(l2, dtype), jnp.asarray(bool(weighted_l2)),
        num_epochs=int(num_epochs), batch_size=batch_size, schedule=schedule,
        has_eval=eval is not None, clip=None if clip is None else tuple(map(float, clip)),
        loss_trace=loss_trace,
    )
    finite = np.isfinite(np.asarray(losses))
    if not finite.all():
        first = int(np.argmin(finite))
        raise FloatingPointError(
            f"SGD diverged: training loss became non-finite at epoch {first} "
            f"(lr={lr}, batch_size={batch_size}); lower the step size"
        )
    return SolverResult(params, SolverTrace(losses, evals))
