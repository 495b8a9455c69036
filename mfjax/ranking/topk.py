r"""Top-k items per user, with the items a user has already rated excluded.

For user ``i`` the score of item ``j`` is the model's prediction
``s_ij = u_i . v_j`` (``+ mean + b_i + c_j`` for :class:`~mfjax.losses.BiasedFactors`).
Users are processed in batches of ``batch_size``: one ``(batch, n)`` block of
scores at a time (``lax.map`` over the batches, compiled once), the excluded
``(user, item)`` pairs of the batch set to ``-inf`` by a scatter from a
padded per-batch list (no dense ``m x n`` mask), then ``lax.top_k``.  Ties are
broken towards the lower item index.  A user with fewer than ``k`` items left
gets ``-1`` items (score ``-inf``) in the remaining places.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core.factors import BiasedFactors

__all__ = ["TopK", "top_k"]


class TopK(NamedTuple):
    """Top-k lists.

    Attributes:
      users: ``(u,)`` int32 the users (matrix rows), in the order asked.
      items: ``(u, k)`` int32 best items first (``-1``: no item left).
      scores: ``(u, k)`` their scores (``-inf`` where ``items`` is ``-1``).
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray


def _exclusion_lists(exclude, users: np.ndarray, batch_size: int, n: int):
    """Per batch, the (batch-local user, item) pairs to mask, padded with item ``n`` (dropped)."""
    nb = -(-users.size // batch_size)
    if exclude is None:
        return np.zeros((nb, 1), np.int32), np.full((nb, 1), n, np.int32)
    rows, cols = np.asarray(exclude.rows, np.int64), np.asarray(exclude.cols, np.int64)
    m = exclude.shape[0]
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))])
    deg = ptr[users + 1] - ptr[users]
    per_batch = np.add.reduceat(np.pad(deg, (0, nb * batch_size - users.size)), np.arange(0, nb * batch_size,
                                                                                          batch_size))
    width = max(1, int(per_batch.max()) if per_batch.size else 1)
    lu = np.zeros((nb, width), np.int32)
    it = np.full((nb, width), n, np.int32)
    # the pairs of user t of the list, in list order
    starts = ptr[users]
    owner = np.repeat(np.arange(users.size), deg)
    within = np.arange(owner.size) - np.repeat(np.cumsum(deg) - deg, deg)
    items = cols[np.repeat(starts, deg) + within]
    b = owner // batch_size
    slot = np.arange(owner.size) - np.repeat(np.concatenate([[0], np.cumsum(per_batch)])[:-1], per_batch)
    lu[b, slot] = owner % batch_size
    it[b, slot] = items
    return lu, it


def _scores(params, users):
    s = params.U[users] @ params.V.T
    if isinstance(params, BiasedFactors):
        s = s + params.mean + params.row_bias[users][:, None] + params.col_bias[None, :]
    return s


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_batches(params, user_batches, ex_user, ex_item, k):
    def one(args):
        users, lu, it = args
        s = _scores(params, users)
        s = s.at[lu, it].set(-jnp.inf, mode="drop")
        return jax.lax.top_k(s, k)

    return jax.lax.map(one, (user_batches, ex_user, ex_item))


def top_k(params, k: int, *, exclude=None, users=None, batch_size: int = 1024) -> TopK:
    """The ``k`` best-scored items of each user (module docstring).

    Args:
      params: :class:`~mfjax.Factors` or :class:`~mfjax.losses.BiasedFactors`.
      k: list length, ``1 <= k <= n``.
      exclude: optional :class:`~mfjax.data.Ratings` (e.g. the training set):
        each user's rated items are never recommended.
      users: matrix rows to rank for (default: every row).
      batch_size: users scored together (memory: ``batch_size x n`` scores).

    Raises:
      ValueError: ``k`` outside ``[1, n]``, users out of range, ``exclude`` of another shape.
    """
    m, n = params.U.shape[0], params.V.shape[0]
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n_items = {n}], got {k}")
    if exclude is not None and tuple(exclude.shape) != (m, n):
        raise ValueError(f"exclude has shape {tuple(exclude.shape)} but the model is {(m, n)}")
    users = np.arange(m, dtype=np.int64) if users is None else np.asarray(users, np.int64).ravel()
    if users.size and (users.min() < 0 or users.max() >= m):
        raise ValueError(f"user ids must be in [0, {m}), got {users.min()}..{users.max()}")
    if users.size == 0:
        return TopK(users.astype(np.int32), np.zeros((0, k), np.int32), np.zeros((0, k), np.float32))
    bs = max(1, min(int(batch_size), users.size))
    nb = -(-users.size // bs)
    lu, it = _exclusion_lists(exclude, users, bs, n)
    padded = np.pad(users, (0, nb * bs - users.size)).reshape(nb, bs).astype(np.int32)
    scores, items = _top_k_batches(params, jnp.asarray(padded), jnp.asarray(lu), jnp.asarray(it), k)
    scores = np.asarray(scores).reshape(nb * bs, k)[:users.size]
    items = np.asarray(items).reshape(nb * bs, k)[:users.size].astype(np.int32)
    items[~np.isfinite(scores) & (scores < 0)] = -1
    return TopK(users.astype(np.int32), items, scores)
