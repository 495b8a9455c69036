"""Top-k recommendation lists from a factor model, batched over users on the device.

For user ``u`` the score of item ``j`` is the model's prediction
``s_uj = u_u . v_j`` (:class:`~mfjax.core.factors.Factors`) or
``mean + b_u + c_j + u_u . v_j`` (:class:`~mfjax.core.factors.BiasedFactors`).
:func:`top_k` returns, per user, the ``k`` items of largest score, in
descending order, with ``jax.lax.top_k`` (equal scores: the lower item index
first, so the lists are deterministic).

Seen items (e.g. the training entries) are excluded by setting their scores
to ``-inf`` before the selection.  The exclusion is laid out on the host once
from a CSR view of the ``exclude`` entries (rows sorted, ``indptr``): for
each batch of ``B`` users the (local row, item) pairs of their seen items,
padded to one common length ``L`` (a power of two); on the device a batch's
``B x n`` score block is built, the ``L`` pairs are scattered to ``-inf``
(padding pairs fall outside the block and are dropped) and ``lax.top_k``
runs on it.  All batches run in one compiled ``lax.map``: memory is
``O(B n + n_batches L)``, never a dense ``m x n`` matrix, and there is no
host round trip per batch.

A user with fewer than ``k`` unseen items gets excluded items at the end of
the list with score ``-inf``; :func:`~mfjax.eval.ranking.ranking_metrics`
never counts those as recommended.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core.factors import BiasedFactors
from mfjax.data.ratings import Ratings

__all__ = ["TopK", "top_k", "check_k", "exclusion_layout"]


class TopK(NamedTuple):
    """Top-k lists: ``items[a]`` are the recommended item indices of user ``users[a]``.

    Attributes:
      users: int array (u,), the users, in the order asked for (host numpy).
      items: int32 array (u, k), item indices by descending score.
      scores: float array (u, k), their scores (``-inf``: an excluded item,
        only where a user has fewer than ``k`` unseen items).
    """

    users: np.ndarray
    items: jax.Array
    scores: jax.Array


def check_k(k, n_items: int, name: str = "k") -> int:
    """``k`` as a Python int in ``[1, n_items]``, or ``ValueError`` naming the problem.

    >>> check_k(3, 10)
    3
    >>> check_k(12, 10)
    Traceback (most recent call last):
      ...
    ValueError: k=12 exceeds the number of items (10): a top-k list cannot hold more items than exist
    """
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    try:
        kk = operator.index(k)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {k!r}") from None
    if kk < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if kk > n_items:
        raise ValueError(f"{name}={kk} exceeds the number of items ({n_items}): a top-k list cannot "
                         f"hold more items than exist")
    return int(kk)


def _check_params(params) -> tuple[int, int]:
    U, V = getattr(params, "U", None), getattr(params, "V", None)
    if U is None and isinstance(params, tuple) and len(params) == 2:
        U, V = params
    if U is None or V is None:
        raise TypeError(f"params must be Factors(U, V), BiasedFactors or a (U, V) pair, "
                        f"got {type(params).__name__}")
    if jnp.ndim(U) != 2 or jnp.ndim(V) != 2 or jnp.shape(U)[1] != jnp.shape(V)[1]:
        raise ValueError(f"factors must be U (m, r) and V (n, r) with one rank r, got U {jnp.shape(U)} "
                         f"and V {jnp.shape(V)}")
    if not bool(jax.tree_util.tree_reduce(
            lambda a, x: a & jnp.all(jnp.isfinite(x)), params, jnp.asarray(True))):
        raise ValueError("the model has non-finite entries (NaN / inf in its factors or biases): "
                         "its rankings would be meaningless")
    return int(jnp.shape(U)[0]), int(jnp.shape(V)[0])


def _check_users(users, m: int) -> np.ndarray:
    if users is None:
        return np.arange(m, dtype=np.int64)
    u = np.asarray(users)
    if u.ndim != 1 or not (u.size == 0 or np.issubdtype(u.dtype, np.integer)):
        raise ValueError(f"users must be a 1-d array of integer row indices, got {u.dtype} of shape {u.shape}")
    if u.size and (u.min() < 0 or u.max() >= m):
        bad = u[(u < 0) | (u >= m)][0]
        raise ValueError(f"user index {bad} is out of range for a model with {m} users")
    return u.astype(np.int64)


def _bucket(x: int) -> int:
    """The smallest power of two >= max(x, 1)."""
    return 1 << max(int(x) - 1, 0).bit_length()


def exclusion_layout(exclude: Ratings, users: np.ndarray, batch_size: int, shape):
    """Per-batch (local row, item) pairs of the seen items of ``users``, padded (host numpy).

    User ``users[a]`` is row ``a % batch_size`` of batch ``a // batch_size``.
    Returns ``(rows, cols)``, each ``(n_batches, L)`` int32 with ``L`` the
    largest number of seen items of one batch rounded up to a power of two;
    padding pairs have the local row ``batch_size`` (outside the block,
    dropped by the scatter).

    >>> seen = Ratings.create([0, 0, 2], [1, 2, 0], [1.0, 1.0, 1.0], shape=(3, 3))
    >>> r, c = exclusion_layout(seen, np.array([2, 0, 1]), 2, (3, 3))
    >>> r.tolist(), c.tolist()
    ([[0, 1, 1, 2], [2, 2, 2, 2]], [[0, 1, 2, 0], [0, 0, 0, 0]])
    """
    m, n = shape
    nb = -(-users.size // batch_size)
    r, c = np.asarray(exclude.rows, np.int64), np.asarray(exclude.cols, np.int64)
    order = np.argsort(r, kind="stable")
    c_sorted = c[order]
    indptr = np.zeros(m + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=m), out=indptr[1:])
    starts, lens = indptr[users], indptr[users + 1] - indptr[users]
    total = int(lens.sum())
    pos = np.arange(users.size)
    batch, local = pos // batch_size, pos % batch_size
    per_batch = np.bincount(batch, weights=lens, minlength=nb).astype(np.int64)
    L = _bucket(per_batch.max() if nb else 1)
    out_r = np.full((nb, L), batch_size, np.int32)
    out_c = np.zeros((nb, L), np.int32)
    if total:
        # entry t of user a: source index starts[a] + t; slot in its batch: offset of a + t
        owner = np.repeat(np.arange(users.size), lens)
        first = np.cumsum(lens) - lens  # start of each user's run in the concatenation
        t = np.arange(total) - first[owner]
        batch_start = np.cumsum(per_batch) - per_batch
        user_off = first - batch_start[batch]  # offset of user a inside its batch
        b = batch[owner]
        slot = user_off[owner] + t
        out_r[b, slot] = local[owner]
        out_c[b, slot] = c_sorted[starts[owner] + t]
    return out_r, out_c


def _scores(params, users):
    s = params.U[users] @ params.V.T
    if isinstance(params, BiasedFactors):
        s = s + (params.mean + params.row_bias[users])[:, None] + params.col_bias[None, :]
    return s


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_batches(params, user_batches, ex_rows, ex_cols, *, k: int):
    def one(args):
        users, er, ec = args
        s = _scores(params, users)
        s = s.at[er, ec].set(-jnp.inf, mode="drop")
        return jax.lax.top_k(s, k)

    vals, idx = jax.lax.map(one, (user_batches, ex_rows, ex_cols))
    return vals.reshape(-1, k), idx.reshape(-1, k)


def top_k(params, k: int, *, exclude: Ratings | None = None, users=None,
          batch_size: int = 1024) -> TopK:
    """The ``k`` highest-scoring items per user, seen items excluded.

    Args:
      params: :class:`~mfjax.core.factors.Factors` ``(U (m, r), V (n, r))``,
        :class:`~mfjax.core.factors.BiasedFactors`, or a plain ``(U, V)`` pair.
      k: list length, ``1 <= k <= n``.
      exclude: entries whose items are not recommended to their user
        (typically the training ratings); shape ``(m, n)``.
      users: row indices to rank for (default all ``m``).
      batch_size: users per device batch (memory ``batch_size x n`` scores).

    Returns:
      :class:`TopK`; ``items[a, 0]`` is user ``users[a]``'s best item.
      Equal scores: the lower item index first.

    Raises:
      ValueError: ``k`` not in ``[1, n]``; ``exclude`` of another shape;
        a user index out of range; non-finite factors; bad ``batch_size``.

    >>> import jax.numpy as jnp
    >>> from mfjax.core.factors import Factors
    >>> p = Factors(jnp.array([[1.0], [-1.0]]), jnp.array([[0.1], [0.3], [0.2]]))
    >>> top_k(p, 2).items.tolist()
    [[1, 2], [0, 2]]
    >>> seen = Ratings.create([0], [1], [5.0], shape=(2, 3))
    >>> top_k(p, 2, exclude=seen).items.tolist()
    [[2, 0], [0, 2]]
    """
    if isinstance(params, tuple) and not hasattr(params, "U"):
        from mfjax.core.factors import Factors
        params = Factors(*params)
    m, n = _check_params(params)
    k = check_k(k, n)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    u = _check_users(users, m)
    if exclude is not None and tuple(exclude.shape) != (m, n):
        raise ValueError(f"exclude has shape {tuple(exclude.shape)} but the model is {(m, n)} "
                         f"(users x items)")
    if u.size == 0:
        return TopK(u, jnp.zeros((0, k), jnp.int32), jnp.zeros((0, k), jnp.asarray(params.U).dtype))
    B = int(min(batch_size, u.size))
    nb = -(-u.size // B)
    padded = np.zeros(nb * B, np.int32)
    padded[: u.size] = u
    if exclude is None:
        er = np.full((nb, 1), B, np.int32)
        ec = np.zeros((nb, 1), np.int32)
    else:
        er, ec = exclusion_layout(exclude, u, B, (m, n))
    vals, idx = _top_k_batches(params, jnp.asarray(padded.reshape(nb, B)), jnp.asarray(er),
                               jnp.asarray(ec), k=k)
    return TopK(u, idx[: u.size], vals[: u.size])
