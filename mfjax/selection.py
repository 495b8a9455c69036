r"""Cross-validation and hyperparameter search for :class:`~mfjax.estimator.Recommender`, resumable.

:func:`cross_validate` fits one configuration on ``k`` folds of the ratings
it is given (:func:`mfjax.data.kfold`) and scores each held-out fold;
:func:`grid_search` and :func:`random_search` do that for many
configurations and select the one with the best mean validation score.
They only ever see the ratings passed in: call them on the *training* part
of a split and keep the test part for one final :meth:`Recommender.test`
of the selected model (selection on validation folds only).

With ``store=`` (a directory), every (configuration, fold) result is a
record of a :class:`mfjax.store.ResultStore` keyed by the hash of the
configuration, the fold, ``k``, the seed and the data checksum, written
atomically as it finishes: an interrupted search rerun with the same
arguments reuses the finished folds and computes only the rest.

>>> import mfjax as mf
>>> from mfjax.estimator import Recommender
>>> train = mf.data.synthetic(m=40, n=30, rank=3, density=0.5, seed=0)
>>> res = grid_search(Recommender("als", rank=3, num_steps=4), {"l2": [0.1, 1.0]}, train, k=2)
>>> sorted(res.best_params), len(res.records)
(['l2'], 2)
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from mfjax import data as mfdata
from mfjax.estimator import Recommender
from mfjax.store import ResultStore

__all__ = ["CVResult", "SearchResult", "cross_validate", "grid_search", "random_search", "METRICS"]

#: Validation metrics (lower is better).
METRICS = ("rmse", "mae")


class CVResult(NamedTuple):
    """Per-fold validation scores of one configuration.

    Attributes:
      params: the configuration (:meth:`Recommender.get_params`).
      scores: ``{metric: array (k,)}`` per fold.
      mean, std: ``{metric: float}`` over the folds.
    """

    params: dict
    scores: dict
    mean: dict
    std: dict


class SearchResult(NamedTuple):
    """A search: every configuration's :class:`CVResult`, the selected one and (with ``refit``) its estimator.

    Attributes:
      records: one :class:`CVResult` per candidate, in the order tried.
      best_params: the candidate's changed arguments with the best mean ``metric``.
      best_score: that mean validation score.
      best_estimator: refitted on all the given ratings (``refit=True``), else ``None``.
      metric: the selection metric.
    """

    records: list
    best_params: dict
    best_score: float
    best_estimator: Recommender | None
    metric: str

    def to_pandas(self):
        """One row per candidate: its parameters and mean / std of every metric (needs pandas)."""
        from mfjax.data.frames import _pandas

        rows = []
        for rec in self.records:
            row = dict(rec.params)
            for m in rec.mean:
                row[f"mean_{m}"], row[f"std_{m}"] = rec.mean[m], rec.std[m]
            rows.append(row)
        return _pandas().DataFrame(rows)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    return int(k)


def cross_validate(estimator: Recommender, ratings, *, k: int = 5, seed: int = 0, store=None,
                   folds=None) -> CVResult:
    """Fit ``estimator``'s configuration on ``k - 1`` folds and score the held-out one, for each fold.

    Args:
      estimator: a :class:`Recommender` (only its configuration is used; it is not fitted).
      ratings: the ratings to cross-validate on (the training part of a split).
      k, seed: :func:`mfjax.data.kfold`'s folds.
      store: optional directory of resumable fold records.
      folds: precomputed ``kfold(ratings, k, seed)`` (reused by the searches).

    Returns:
      :class:`CVResult` with RMSE and MAE per fold.
    """
    k = _check_k(k)
    folds = mfdata.kfold(ratings, k=k, seed=seed) if folds is None else folds
    rs = None if store is None else ResultStore(store)
    checksum = mfdata.data_checksum(ratings)
    scores = {m: [] for m in METRICS}
    for i, (tr, va) in enumerate(folds):
        config = {"estimator": estimator.config, "fold": i, "k": k, "seed": int(seed), "data_checksum": checksum}

        def compute(tr=tr, va=va):
            res = estimator.clone().fit(tr).test(va)
            return {m: res[m] for m in METRICS}

        rec = compute() if rs is None else rs.get_or_compute(f"cv-{rs.hash(config)}", config, compute)
        for m in METRICS:
            scores[m].append(float(rec[m]))
    arr = {m: np.asarray(v) for m, v in scores.items()}
    return CVResult(estimator.get_params(), arr, {m: float(v.mean()) for m, v in arr.items()},
                    {m: float(v.std()) for m, v in arr.items()})


def _search(estimator: Recommender, candidates: Sequence[dict], ratings, *, k, seed, metric, store, refit):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not candidates:
        raise ValueError("no candidates to search")
    k = _check_k(k)
    folds = mfdata.kfold(ratings, k=k, seed=seed)
    records, best, best_score = [], None, math.inf
    for cand in candidates:
        rec = cross_validate(estimator.clone(**cand), ratings, k=k, seed=seed, store=store, folds=folds)
        records.append(rec)
        if rec.mean[metric] < best_score:  # ties: the first candidate
            best, best_score = cand, rec.mean[metric]
    if best is None:
        raise FloatingPointError(f"no candidate gave a finite validation {metric}")
    best_est = estimator.clone(**best).fit(ratings) if refit else None
    return SearchResult(records, dict(best), float(best_score), best_est, metric)


def grid_search(estimator: Recommender, grid: Mapping[str, Sequence[Any]], ratings, *, k: int = 3, seed: int = 0,
                metric: str = "rmse", store=None, refit: bool = True) -> SearchResult:
    """Every combination of ``grid`` (``{argument: [values]}``) cross-validated on ``ratings``; the best selected.

    Selection uses the mean validation ``metric`` over the folds of
    ``ratings`` only; ``refit`` fits the selected configuration on all of
    ``ratings``.  Resumable with ``store`` (see the module docstring).

    Raises:
      ValueError: an empty grid or value list, an unknown metric, ``k < 2``,
        an argument :class:`Recommender` does not take.
    """
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError(f"grid must map each argument to a non-empty list of values, got {dict(grid)!r}")
    names = list(grid)
    candidates = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    return _search(estimator, candidates, ratings, k=k, seed=seed, metric=metric, store=store, refit=refit)


def _draw(rng: np.random.Generator, name: str, dist):
    if isinstance(dist, (list, tuple)) and len(dist) == 3 and dist[2] in ("log", "uniform", "int"):
        lo, hi, kind = dist
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi) or (kind == "log" and lo <= 0):
            raise ValueError(f"{name}: bad range {dist!r} (need lo <= hi, lo > 0 for 'log')")
        if kind == "log":
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        if kind == "int":
            return int(rng.integers(int(lo), int(hi) + 1))
        return float(rng.uniform(lo, hi))
    if isinstance(dist, (list, tuple)) and len(dist) > 0:
        v = dist[int(rng.integers(len(dist)))]
        return v.item() if isinstance(v, np.generic) else v
    raise ValueError(f"{name}: expected a list of values or (lo, hi, 'log'|'uniform'|'int'), got {dist!r}")


def random_search(estimator: Recommender, distributions: Mapping[str, Any], ratings, *, n_iter: int = 10,
                  k: int = 3, seed: int = 0, metric: str = "rmse", store=None, refit: bool = True) -> SearchResult:
    """``n_iter`` configurations drawn from ``distributions``, cross-validated; the best selected.

    ``distributions`` maps an argument to a list of values (drawn uniformly)
    or to ``(lo, hi, "log")`` (log-uniform), ``(lo, hi, "uniform")`` or
    ``(lo, hi, "int")`` (inclusive); draws come from ``numpy.random.default_rng(seed)``,
    so a rerun draws the same candidates (and resumes them with ``store``).
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    if not distributions:
        raise ValueError("distributions must name at least one argument")
    rng = np.random.default_rng(seed)
    candidates = [{n: _draw(rng, n, d) for n, d in distributions.items()} for _ in range(int(n_iter))]
    return _search(estimator, candidates, ratings, k=k, seed=seed, metric=metric, store=store, refit=refit)
