"""Recommender evaluation: top-k lists with seen-item exclusion and ranking metrics.

:func:`top_k` scores every item for a set of users on device (batched over
users, one compiled ``lax.map``), masks the items each user has already
rated, and keeps the ``k`` best; :func:`ranking_metrics` turns the lists into
precision / recall / NDCG / MAP / MRR / hit rate at several cut-offs against
a held-out :class:`~mfjax.data.Ratings`.

>>> import jax, mfjax as mf
>>> train, test = mf.data.split(mf.data.synthetic(60, 40, rank=3, density=0.3, seed=0), (0.8, 0.2), seed=0)
>>> res = mf.solvers.als(train, 3, l2=1.0, num_steps=5)
>>> m = mf.ranking.ranking_metrics(res.params, test, exclude=train, ks=(5,))
>>> sorted(m)[:3], 0.0 <= m["ndcg@5"] <= 1.0
(['hit_rate@5', 'map@5', 'mrr'], True)
"""

from mfjax.ranking.metrics import ranking_metrics, ranking_from_hits
from mfjax.ranking.topk import TopK, top_k

__all__ = ["TopK", "top_k", "ranking_metrics", "ranking_from_hits"]
