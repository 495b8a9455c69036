"""The per-rating SGD update on one stacked buffer (the kernel of :mod:`mfjax.solvers.sgd`).

For a rating ``(i, j)`` with error ``e = x_ij - xhat_ij``, step ``a`` and the
regulariser's shares ``l_i``, ``l_j``::

    u_i <- u_i + a (e v_j - l_i u_i),   v_j <- v_j + a (e u_i - l_j v_j)
    b_i <- b_i + a (e - l_i b_i),       c_j <- c_j + a (e - l_j c_j)      (biased)

A minibatch applies all its ratings' updates together (scatter-add).
:class:`SGDProblem` carries the shares ``w_i / n_i`` of the ridge
(``l_i = l2 w_i / n_i``), computed once per data set.  The rows
of ``U`` and ``V`` (and the biases, as an extra column) live in one buffer
``Z = [[U, b], [V, c]]`` so that XLA updates it in place inside a scan.

With an accumulator (``adaptive=True`` of :func:`mfjax.solvers.sgd`) each
row's step is ``a / sqrt(G_z)``, ``G_z = 1 + sum ||g_z||^2 / c`` over its
past updates (LIBMF's per-row AdaGrad, Chin et al. 2015).

References:
  Funk, S. "Netflix Update: Try This at Home", 2006.

  Chin, W.-S., Zhuang, Y., Juan, Y.-C., Lin, C.-J. "A learning-rate schedule
  for stochastic gradient methods to matrix factorization", PAKDD 2015.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mfjax import objective as _objective
from mfjax.data.ratings import Ratings
from mfjax.losses.masked import BiasedFactors, Factors
from mfjax.objective import MFObjective, mf_objective

__all__ = ["sgd_step", "SGDProblem", "sgd_problem", "as_sgd_problem"]

Params = Factors | BiasedFactors


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


def _update(Z, idx, values, mask, lr, reg, mean, biases: bool, accum=None):
    """The per-rating update of a batch on the stacked buffer.

    ``idx = [i_1..i_B, m + j_1..m + j_B]`` (rows of ``Z``), ``reg`` (2B,) the
    regularisation weight of each of those rows' entries (masked entries: 0),
    or (2B, c) with one weight per column of ``Z`` (the bias column's ridge
    ``l2_bias``).
    With ``z_i = [u_i, b_i]``, ``z_j = [v_j, c_j]`` (biased) the error is
    ``e = mask (x - mean - u_i.v_j - b_i - c_j)`` and the update, for both
    halves at once, ``z <- z + lr (e p - reg z)`` with ``p = [v_j, 1]`` for
    row ``i`` and ``p = [u_i, 1]`` for column ``j`` (``p`` = the partner row
    without bias column when unbiased); all ``2B`` row updates are added
    (scatter-add) to the old ``Z``.  Returns ``(Z_new, e)``.

    ``accum`` (optional, ``(m + n,)``): the per-row adaptive step of LIBMF
    (Chin, Zhuang, Juan & Lin 2015): row ``z``'s step is ``lr / sqrt(G_z)``
    with ``G_z`` its accumulated mean squared gradient, and ``G_z`` grows by
    ``||g_z||^2 / c`` (``c`` columns of ``Z``) for each of its entries in the
    batch, after the batch's step.  Returns ``(Z_new, e, G_new)`` then.
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
    neg_grad = e2[:, None] * other - (reg if reg.ndim == 2 else reg[:, None]) * zz
    if accum is None:
        upd = lr * neg_grad
        # the barrier materialises the updates: without it XLA fuses their whole
        # computation into the scatter and runs it element by element (~3x slower)
        upd = jax.lax.optimization_barrier(upd)
        return Z.at[idx].add(upd), e
    upd = (lr * jax.lax.rsqrt(accum[idx]))[:, None] * neg_grad
    grow = jnp.mean(neg_grad * neg_grad, axis=1)  # 0 for masked-out entries (e = reg = 0 there)
    upd, grow = jax.lax.optimization_barrier((upd, grow))
    return Z.at[idx].add(upd), e, accum.at[idx].add(grow)


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


# ------------------------------------------------------------ the problem
class SGDProblem(NamedTuple):
    """The problem of :func:`sgd_solver`: the objective plus its per-row shares (all traced).

    Attributes:
      objective: the :class:`~mfjax.objective.MFObjective` ("sum" scale: twice
        the objective of the module docstring; padding entries have weight 0).
      share: ``(m + n,)`` ``w_i / n_i`` for the rows of ``U`` then ``V``: each
        of row ``i``'s ``n_i`` ratings carries ``l2 w_i / n_i`` of the ridge.
    """

    objective: MFObjective
    share: jax.Array


@jax.jit
def _share(obj: MFObjective) -> jax.Array:
    m, n = obj.shape
    dtype = obj.values.dtype
    n_row, n_col = (c.astype(dtype) for c in _objective.row_counts(obj))
    w_row = jnp.ones((m,), dtype) if obj.row_weights is None else obj.row_weights.astype(dtype)
    w_col = jnp.ones((n,), dtype) if obj.col_weights is None else obj.col_weights.astype(dtype)
    return jnp.concatenate([w_row / jnp.maximum(n_row, 1.0), w_col / jnp.maximum(n_col, 1.0)])


def as_sgd_problem(problem) -> SGDProblem:
    """``problem`` itself, or an :class:`~mfjax.objective.MFObjective` with its shares."""
    if isinstance(problem, SGDProblem):
        return problem
    return SGDProblem(problem, _share(problem))


def sgd_problem(train: Ratings, *, l2=0.0, l2_bias=None, weighted_l2: bool = False,
                dtype=None, pad_to: int | None = None) -> SGDProblem:
    """The problem SGD solves, with the row counts computed once.

    ``weighted_l2`` sets the regulariser weights to the counts (Funk /
    surprise: ``l2`` per rating); otherwise they are 1 (``l2 / n_i`` per
    rating).  ``pad_to``: pad the entries (weight 0) so that folds share one
    compiled run (:func:`mfjax.objective.bucket_size`).
    """
    obj = mf_objective(train, l2, l2_bias=l2_bias, dtype=dtype, pad_to=pad_to)
    if weighted_l2:
        obj = obj.replace(**dict(zip(("row_weights", "col_weights"), _objective.row_counts(obj))))
    return as_sgd_problem(obj)


def _regularisers(problem: SGDProblem, dtype):
    """Per-row-of-``Z`` ridge of one rating, ``(l2 w_i / n_i, l2_bias w_i / n_i)`` stacked.

    The data weight ``s`` rescales ``l2`` to ``l2 / s`` (the same minimiser
    as ``s * SSE + l2 * penalty``).
    """
    obj = problem.objective
    s = obj.data_weight.astype(dtype)
    share = problem.share.astype(dtype)
    return obj.l2.astype(dtype) / s * share, obj.l2_bias.astype(dtype) / s * share
