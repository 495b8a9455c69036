"""Ranking evaluation: top-k recommendation lists and ranking metrics.

- :func:`top_k` (:class:`TopK`): the ``k`` best items per user from
  ``Factors`` / ``BiasedFactors``, batched over users on the device with
  ``jax.lax.top_k``, seen items excluded (scores set to ``-inf`` from a
  per-batch CSR layout, never a dense ``m x n`` matrix).
- :func:`ranking_metrics`: precision, recall, NDCG, MAP, MRR and hit rate
  at several ``k`` against held-out :class:`~mfjax.data.Ratings`
  (binary relevance, optionally ``rating >= threshold``); the steps
  :func:`relevance`, :func:`hits_at_k`, :func:`metrics_from_hits`.

Layer 3, beside :mod:`mfjax.metrics`: imports ``data`` and ``core`` only.

>>> import jax.numpy as jnp
>>> from mfjax.core.factors import Factors
>>> from mfjax.data import Ratings
>>> p = Factors(jnp.array([[1.0], [2.0]]), jnp.array([[3.0], [1.0], [2.0]]))
>>> train = Ratings.create([0], [0], [5.0], shape=(2, 3))
>>> test = Ratings.create([0, 1], [2, 1], [4.0, 3.0], shape=(2, 3))
>>> out = ranking_metrics(p, train, test, ks=(1, 2))
>>> out["precision@1"], out["recall@2"], out["n_users"]
(0.5, 0.5, 2)
"""

from mfjax.eval.ranking import METRIC_NAMES, hits_at_k, metrics_from_hits, ranking_metrics, relevance
from mfjax.eval.topk import TopK, check_k, exclusion_layout, top_k

__all__ = [
    "top_k",
    "TopK",
    "check_k",
    "exclusion_layout",
    "ranking_metrics",
    "relevance",
    "hits_at_k",
    "metrics_from_hits",
    "METRIC_NAMES",
]
