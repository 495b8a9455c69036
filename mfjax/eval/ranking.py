r"""Ranking metrics of top-k lists against held-out ratings.

Relevance is binary: item ``j`` is relevant to user ``u`` when ``(u, j)`` is
a held-out (test) entry, and, with ``threshold``, its rating is
``>= threshold``.  For a user with ``R`` relevant items and the list
``j_1, ..., j_k`` (``rel_i = 1`` when ``j_i`` is relevant and was really
recommended, i.e. its score is not the ``-inf`` of an excluded item):

.. math::

   \mathrm{P@k} = \frac{1}{k}\sum_{i\le k} rel_i,\qquad
   \mathrm{R@k} = \frac{1}{R}\sum_{i\le k} rel_i,\qquad
   \mathrm{HR@k} = [\textstyle\sum_{i\le k} rel_i > 0],

   \mathrm{NDCG@k} = \frac{\sum_{i\le k} rel_i / \log_2(i+1)}
                          {\sum_{i\le \min(k, R)} 1 / \log_2(i+1)},\qquad
   \mathrm{MRR@k} = \max_{i \le k} rel_i / i,

   \mathrm{AP@k} = \frac{1}{\min(k, R)} \sum_{i\le k} rel_i\,\mathrm{P@i}.

Each is averaged over the users with ``R >= 1``; users without a relevant
test item are skipped and counted (``n_users_skipped``).  MAP@k is the
truncated definition of RecBole (average precision over the top k,
normalised by ``min(k, R)``); cornac's ``MAP`` ranks the full item list
instead and differs from it.  MRR is truncated at ``k`` as well (0 when no
relevant item is in the top k), as RecBole's ``MRR@k``.

References:
  W. X. Zhao et al., "RecBole: Towards a Unified, Comprehensive and
  Efficient Framework for Recommendation Algorithms", CIKM 2021
  (``recbole/evaluator/metrics.py``: Precision, Recall, NDCG, MAP, MRR, Hit).
  K. Järvelin, J. Kekäläinen, "Cumulated gain-based evaluation of IR
  techniques", ACM TOIS 20(4), 2002 (NDCG).
"""

from __future__ import annotations

import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.eval.topk import TopK, _check_params, _check_users, check_k, top_k

__all__ = ["METRIC_NAMES", "relevance", "hits_at_k", "metrics_from_hits", "ranking_metrics"]

#: The metrics :func:`ranking_metrics` reports, each as ``"<name>@<k>"``.
METRIC_NAMES = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")


def relevance(test: Ratings, threshold=None) -> Ratings:
    """The relevant test entries: all of them, or those with a rating ``>= threshold``."""
    if threshold is None:
        return test
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return test.select(np.asarray(test.values) >= t)


def hits_at_k(topk: TopK, relevant: Ratings) -> tuple[np.ndarray, np.ndarray]:
    """``hits[a, i]``: item ``topk.items[a, i]`` is relevant to ``topk.users[a]``; and ``R`` per user.

    An item whose score is ``-inf`` (excluded, listed only because the user
    has fewer than ``k`` unseen items) is never a hit.

    Returns:
      ``(hits, n_relevant)``: bool ``(u, k)`` and int ``(u,)`` host arrays.
    """
    m, n = relevant.shape
    items = np.asarray(topk.items, np.int64)
    users = np.asarray(topk.users, np.int64)
    keys = np.unique(np.asarray(relevant.rows, np.int64) * n + np.asarray(relevant.cols, np.int64))
    q = users[:, None] * n + items
    if keys.size:
        pos = np.clip(np.searchsorted(keys, q), 0, keys.size - 1)
        hits = keys[pos] == q
    else:
        hits = np.zeros(q.shape, bool)
    hits &= np.isfinite(np.asarray(topk.scores))
    n_rel = np.bincount(np.asarray(relevant.rows, np.int64), minlength=m)[users]
    return hits, n_rel


def metrics_from_hits(hits, n_relevant, ks) -> dict:
    """The metrics of the module docstring, averaged over users with ``n_relevant >= 1``.

    Args:
      hits: bool ``(u, K)``, relevance of each list position.
      n_relevant: ``(u,)``, relevant items per user (``R``).
      ks: cut-offs, each ``<= K``.

    Returns:
      ``{"precision@k": ..., "recall@k", "ndcg@k", "map@k", "mrr@k",
      "hit_rate@k"}`` (floats) for every ``k``, plus ``n_users`` (users
      averaged over) and ``n_users_skipped`` (users with ``R = 0``).

    >>> h = np.array([[True, False, True], [False, False, False]])
    >>> out = metrics_from_hits(h, np.array([2, 0]), ks=(1, 3))
    >>> out["precision@3"], out["recall@1"], out["mrr@3"], out["n_users_skipped"]
    (0.6666666666666666, 0.5, 1.0, 1)
    """
    hits = np.asarray(hits, bool)
    n_rel = np.asarray(n_relevant, np.int64)
    if hits.ndim != 2 or n_rel.shape != hits.shape[:1]:
        raise ValueError(f"hits must be (users, K) and n_relevant (users,), got {hits.shape} and {n_rel.shape}")
    K = hits.shape[1]
    keep = n_rel > 0
    h, R = hits[keep].astype(np.float64), n_rel[keep].astype(np.float64)
    out: dict = {}
    disc = 1.0 / np.log2(np.arange(2, K + 2, dtype=np.float64))  # 1/log2(i+1), i = 1..K
    cum_disc = np.cumsum(disc)
    cum_hits = np.cumsum(h, axis=1)
    prec_at_i = cum_hits / np.arange(1, K + 1)
    first = np.where(h.any(axis=1), np.argmax(h, axis=1), K)  # 0-based rank of the first hit
    for k in ks:
        k = check_k(k, K, "ks entry")
        hk = cum_hits[:, k - 1] if K else np.zeros(len(R))
        vals = {
            "precision": hk / k,
            "recall": hk / R,
            "ndcg": (h[:, :k] @ disc[:k]) / cum_disc[np.minimum(k, R).astype(np.int64) - 1],
            "map": (h[:, :k] * prec_at_i[:, :k]).sum(axis=1) / np.minimum(k, R),
            "mrr": np.where(first < k, 1.0 / (first + 1.0), 0.0),
            "hit_rate": (hk > 0).astype(np.float64),
        }
        for name in METRIC_NAMES:
            out[f"{name}@{k}"] = float(vals[name].mean()) if len(R) else float("nan")
    out["n_users"] = int(keep.sum())
    out["n_users_skipped"] = int((~keep).sum())
    return out


def ranking_metrics(params, train: Ratings | None, test: Ratings, ks=(5, 10, 20), *,
                    threshold=None, users=None, batch_size: int = 1024) -> dict:
    """Precision, recall, NDCG, MAP, MRR and hit rate at each ``k`` of the model's top-k lists.

    The lists come from :func:`~mfjax.eval.topk.top_k` with the items of
    ``train`` excluded (``train=None``: nothing excluded), for the users
    among ``users`` (default all ``m``) with at least one relevant test
    item; the others are skipped and counted.  A test entry that is also a
    training entry is excluded from the lists, so it can never be hit (but
    it counts in ``R``).

    Args:
      params: ``Factors``, ``BiasedFactors`` or ``(U, V)``.
      train: seen entries to exclude, shape ``(m, n)``, or None.
      test: held-out entries, shape ``(m, n)``.
      ks: cut-offs, each in ``[1, n]``.
      threshold: relevant = test rating ``>= threshold`` (None: every test entry).
      users: candidate row indices (default all).
      batch_size: users per device batch.

    Returns:
      dict: ``"<metric>@<k>"`` (see :data:`METRIC_NAMES` and the module
      docstring for the definitions) -> float, ``n_users`` (users scored),
      ``n_users_skipped`` (candidates without a relevant test item).

    Raises:
      ValueError: ``ks`` empty or an entry not in ``[1, n]``; shapes of the
        model, ``train`` and ``test`` disagreeing; and as :func:`top_k`.

    Example::

        mfjax.eval.ranking_metrics(als.params, train, test, ks=(10,), threshold=4)
        # {'precision@10': ..., 'recall@10': ..., 'ndcg@10': ..., 'n_users': ..., ...}
    """
    m, n = _check_params(params)
    ks = tuple(ks) if not isinstance(ks, (int, np.integer)) else (ks,)
    if not ks:
        raise ValueError("ks must name at least one cut-off k")
    ks = tuple(check_k(k, n, "ks entry") for k in ks)
    for name, r in (("test", test), ("train", train)):
        if r is not None and tuple(r.shape) != (m, n):
            raise ValueError(f"{name} has shape {tuple(r.shape)} but the model is {(m, n)} (users x items)")
    rel = relevance(test, threshold)
    cand = _check_users(users, m)
    n_rel_all = np.bincount(np.asarray(rel.rows, np.int64), minlength=m)
    scored = cand[n_rel_all[cand] > 0]
    K = max(ks)
    tk = top_k(params, K, exclude=train, users=scored, batch_size=batch_size)
    hits, n_rel = hits_at_k(tk, rel)
    out = metrics_from_hits(hits, n_rel, ks)
    out["n_users_skipped"] = int(cand.size - scored.size)
    return out
