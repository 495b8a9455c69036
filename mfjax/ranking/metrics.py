r"""Ranking metrics of top-k lists against held-out ratings.

For a user with relevant set ``R`` (held-out items, optionally only those
rated ``>= threshold``) and a list ``l_1, l_2, ...`` (best first), with
``h_t = 1[l_t in R]`` and cut-off ``k``:

* precision@k ``= sum_{t<=k} h_t / k``; recall@k ``= sum_{t<=k} h_t / |R|``;
  hit_rate@k ``= 1[sum_{t<=k} h_t > 0]``;
* NDCG@k ``= DCG / IDCG`` with ``DCG = sum_{t<=k} h_t / log2(t + 1)`` and
  ``IDCG = sum_{t <= min(k, |R|)} 1 / log2(t + 1)`` (binary relevance;
  Järvelin & Kekäläinen, ACM TOIS 2002; cornac's and RecBole's NDCG@k);
* MAP@k ``= sum_{t<=k} h_t precision@t / min(k, |R|)`` (RecBole's MAP@k);
* MRR ``= 1 / t*`` for the first hit ``t*`` in the whole list (0 without a hit).

Each metric is averaged over the users with ``|R| > 0``; users without
relevant items are skipped and counted (``skipped_users``).
"""

from __future__ import annotations

import numpy as np

from mfjax.ranking.topk import top_k

__all__ = ["ranking_metrics", "ranking_from_hits"]


def ranking_from_hits(hits: np.ndarray, num_relevant: np.ndarray, ks=(5, 10, 20)) -> dict:
    """The metrics of the module docstring from a ``(users, K)`` 0/1 hit matrix and ``|R|`` per user.

    Users with ``num_relevant == 0`` are skipped.  ``max(ks)`` must not exceed ``K``.
    """
    hits = np.asarray(hits, np.float64)
    rel = np.asarray(num_relevant, np.float64)
    K = hits.shape[1]
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > K:
        raise ValueError(f"cut-offs must be in [1, {K}] (the list length), got {ks}")
    keep = rel > 0
    hits, rel = hits[keep], rel[keep]
    out = {"users": int(keep.sum()), "skipped_users": int((~keep).sum())}
    if not keep.any():
        return out
    t = np.arange(1, K + 1, dtype=np.float64)
    disc = 1.0 / np.log2(t + 1.0)
    cum = np.cumsum(hits, axis=1)
    prec_at = cum / t
    for k in ks:
        h = hits[:, :k]
        nh = h.sum(axis=1)
        ideal = np.minimum(rel, k).astype(int)
        idcg = np.concatenate([[0.0], np.cumsum(disc[:k])])[ideal]
        out[f"precision@{k}"] = float(np.mean(nh / k))
        out[f"recall@{k}"] = float(np.mean(nh / rel))
        out[f"hit_rate@{k}"] = float(np.mean(nh > 0))
        out[f"ndcg@{k}"] = float(np.mean((h @ disc[:k]) / idcg))
        out[f"map@{k}"] = float(np.mean(np.sum(h * prec_at[:, :k], axis=1) / np.minimum(rel, k)))
    first = np.where(hits.any(axis=1), np.argmax(hits > 0, axis=1) + 1.0, np.inf)
    out["mrr"] = float(np.mean(1.0 / first))
    return out


def ranking_metrics(params, test, *, exclude=None, ks=(5, 10, 20), threshold: float | None = None,
                    batch_size: int = 1024) -> dict:
    """Top-k ranking metrics of a factor model on held-out ratings (module docstring).

    Args:
      params: :class:`~mfjax.Factors` or :class:`~mfjax.losses.BiasedFactors`.
      test: held-out :class:`~mfjax.data.Ratings` (same shape); its items are the relevant ones.
      exclude: ratings whose items are never recommended (usually the training set).
      ks: cut-offs; the lists have ``max(ks)`` items.
      threshold: only test items rated ``>= threshold`` are relevant (default: all).
      batch_size: users scored together on device.

    Returns:
      ``{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k"`` for each ``k``,
      ``"mrr"`` (over the ``max(ks)`` list), ``"users"``, ``"skipped_users"}``.

    Raises:
      ValueError: shapes disagree, a cut-off outside ``[1, n_items]``.
    """
    m, n = params.U.shape[0], params.V.shape[0]
    if tuple(test.shape) != (m, n):
        raise ValueError(f"test has shape {tuple(test.shape)} but the model is {(m, n)}")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"cut-offs must be in [1, n_items = {n}], got {ks}")
    rows, cols = np.asarray(test.rows, np.int64), np.asarray(test.cols, np.int64)
    if threshold is not None:
        good = np.asarray(test.values) >= threshold
        rows, cols = rows[good], cols[good]
    num_rel = np.bincount(rows, minlength=m)
    users = np.nonzero(num_rel)[0]
    lists = top_k(params, ks[-1], exclude=exclude, users=users, batch_size=batch_size)
    relevant = np.unique(rows * n + cols)
    keys = lists.users[:, None].astype(np.int64) * n + lists.items
    pos = np.minimum(np.searchsorted(relevant, keys), max(relevant.size - 1, 0))
    hits = (lists.items >= 0) & (relevant.size > 0) & (relevant[pos] == keys)
    out = ranking_from_hits(hits, num_rel[users], ks)
    out["skipped_users"] = int(m - users.size)
    return out
