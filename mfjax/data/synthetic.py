"""Deterministic low-rank rating data that looks like MovieLens.

:func:`synthetic` draws

1. the observed pattern: entry ``(i, j)`` is drawn with probability
   proportional to ``p_i q_j``, where the row and column propensities follow
   power laws (Zipf weights ``k^-a`` on a random ordering), so row and column
   degrees are skewed like MovieLens users and movies; duplicates are dropped
   until ``round(density m n)`` distinct entries are found; then every row and
   column is topped up to at least ``min_count`` entries (so the density can
   end slightly above ``density`` for tiny or very sparse problems);
2. the noiseless rank-``rank`` truth ``X* = U V^T`` with
   ``U[:, 0] = 1``, ``V[:, 0] = mu + b`` (a global mean plus a movie bias
   ``b ~ N(0, 0.5^2)``) and the remaining ``rank - 1`` columns Gaussian,
   scaled so that the interaction part has standard deviation ``0.8``;
3. the observed ratings ``clip(round(X*_ij + noise * e_ij), lo, hi)`` with
   ``e ~ N(0, 1)``, integer levels ``lo..hi`` (``levels=None`` keeps the
   continuous values).  The global mean ``mu`` is calibrated (a few fixed-
   point steps on the same draws) so the mean observed rating is ``mean``
   (default ``lo + 0.65 (hi - lo)``: 3.6 on 1..5, MovieLens 1M has 3.58).

Everything is vectorised numpy driven by one :class:`numpy.random.Generator`
seeded with ``seed``: the same arguments give the same data on every machine.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mfjax.data.ratings import IdMap, Ratings

__all__ = ["synthetic", "LowRankTruth"]

_INTERACTION_STD = 0.8
_BIAS_STD = 0.5


class LowRankTruth(NamedTuple):
    """The noiseless factors of :func:`synthetic`: ``X* = U @ V.T`` (float64 numpy).

    The same fields, order and convention as :class:`mfjax.Factors` (``U``
    (m, r), ``V`` (n, r)), so it unpacks as ``U, V = truth`` and works with
    :func:`mfjax.losses.predict`; ``mfjax.Factors(*truth)`` gives the factor
    type itself.  Defined here because the data layer imports no other mfjax
    package.

    Attributes:
      U: (m, rank), ``U[:, 0] = 1``.
      V: (n, rank), ``V[:, 0] = mu + b`` (global mean plus item bias).
    """

    U: np.ndarray
    V: np.ndarray


def _zipf_propensity(rng, size: int, exponent: float) -> np.ndarray:
    w = np.arange(1, size + 1, dtype=np.float64) ** (-exponent)
    w = w[rng.permutation(size)]
    return w / w.sum()


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based; faster than numpy's hash unique here)."""
    s = np.sort(keys)
    keep = np.ones(s.size, bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


def _unique_in_order(keys: np.ndarray) -> np.ndarray:
    """Distinct values in order of first occurrence."""
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    first = np.ones(s.size, bool)
    first[1:] = s[1:] != s[:-1]
    return keys[np.sort(order[first])]


def _draw(rng, p: np.ndarray, size: int) -> np.ndarray:
    """``size`` indices drawn i.i.d. from the distribution ``p``, in random order.

    (Multinomial counts + repeat + shuffle: O(size), cache friendly.)
    """
    idx = np.repeat(np.arange(p.size, dtype=np.int64), rng.multinomial(size, p))
    rng.shuffle(idx)
    return idx


def _sample_pattern(rng, m, n, target, p_row, p_col, max_rounds=64):
    """``target`` distinct keys ``i n + j``, (i, j) drawn with probability ~ p_i q_j."""
    keys = np.zeros(0, np.int64)
    for _ in range(max_rounds):
        need = target - keys.size
        if need <= 0:
            break
        k = int(need * 1.3) + 16
        new = _draw(rng, p_row, k) * n + _draw(rng, p_col, k)
        keys = _sorted_unique(np.concatenate([keys, new]))
    if keys.size > target:  # a uniformly random subset of the distinct draws
        keys = np.sort(keys[rng.choice(keys.size, size=target, replace=False)])
    return keys


def _top_up(rng, keys, m, n, min_count, axis, max_rounds=200):
    """Add uniformly drawn entries until every row (axis 0) / column (axis 1) has min_count."""
    size, other = (m, n) if axis == 0 else (n, m)
    need_each = min(min_count, other)
    for _ in range(max_rounds):
        idx = keys // n if axis == 0 else keys % n
        deficit = need_each - np.bincount(idx, minlength=size)
        deficit = np.maximum(deficit, 0)
        if not deficit.any():
            return keys
        owner = np.repeat(np.arange(size), deficit)
        partner = rng.integers(0, other, size=owner.size)
        new = owner * n + partner if axis == 0 else partner * n + owner
        new = _unique_in_order(new[~np.isin(new, keys)])
        # keep at most the deficit per owner, first draws first
        own = new // n if axis == 0 else new % n
        order = np.argsort(own, kind="stable")
        so = own[order]
        start = np.searchsorted(so, so, side="left")
        rank = np.arange(so.size) - start
        keep = np.zeros(new.size, bool)
        keep[order] = rank < deficit[so]
        keys = np.concatenate([keys, new[keep]])
    raise RuntimeError("synthetic: could not reach the minimum count per row/column")


def synthetic(
    m: int = 600,
    n: int = 400,
    rank: int = 5,
    density: float = 0.05,
    noise: float = 0.3,
    levels: tuple[int, int] | None = (1, 5),
    seed: int = 0,
    *,
    return_truth: bool = False,
    min_count: int = 3,
    row_exponent: float = 0.5,
    col_exponent: float = 0.7,
    mean: float | None = None,
):
    """MovieLens-like low-rank ratings (see the module docstring for the model).

    Args:
      m, n: matrix shape (users x items).
      rank: rank of the noiseless truth ``U V^T`` (>= 1).
      density: target fraction of observed entries, in (0, 1].
      noise: standard deviation of the Gaussian noise added before rounding.
      levels: ``(lo, hi)`` integer rating levels; None for continuous values.
      seed: seed of the :class:`numpy.random.Generator`.
      return_truth: also return the noiseless factors.
      min_count: minimum observed entries per row and per column (capped at
        n, resp. m).
      row_exponent, col_exponent: Zipf exponents of the row / column
        propensities (0 = uniform; larger = more skewed).
      mean: target mean rating (default ``lo + 0.65 (hi - lo)``; 3 without levels).

    Returns:
      :class:`Ratings` (float32 values, entries sorted by (row, col), identity
      id maps), or ``(ratings, LowRankTruth(U, V))`` with ``return_truth``
      where ``U @ V.T`` is the noiseless rank-``rank`` matrix (float64 numpy).

    Example (the defaults: 600 x 400, ~12k ratings in 1..5):

    >>> r = synthetic(60, 40, rank=3, density=0.2, seed=0)
    >>> r.shape, r.nnz, float(r.values.min()), float(r.values.max())
    ((60, 40), 485, 1.0, 5.0)
    >>> r, truth = synthetic(60, 40, rank=3, return_truth=True)
    >>> truth.U.shape, truth.V.shape
    ((60, 3), (40, 3))
    """
    m, n, rank = int(m), int(n), int(rank)
    if m < 1 or n < 1:
        raise ValueError(f"m and n must be positive, got m={m}, n={n}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if not (0.0 < density <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    if levels is not None:
        lo, hi = (int(levels[0]), int(levels[1]))
        if lo >= hi or (lo, hi) != tuple(levels):
            raise ValueError(f"levels must be two integers lo < hi, got {levels}")
        target_mean = lo + 0.65 * (hi - lo) if mean is None else float(mean)
    else:
        target_mean = 3.0 if mean is None else float(mean)

    rng = np.random.default_rng(seed)
    p_row = _zipf_propensity(rng, m, row_exponent)
    p_col = _zipf_propensity(rng, n, col_exponent)
    target = min(max(int(round(density * m * n)), 1), m * n)
    keys = _sample_pattern(rng, m, n, target, p_row, p_col)
    keys = _top_up(rng, keys, m, n, min_count, axis=0)
    keys = _top_up(rng, keys, m, n, min_count, axis=1)
    keys = np.sort(keys)
    rows, cols = keys // n, keys % n

    # noiseless low-rank truth: column 0 carries mean + item bias
    U = np.empty((m, rank))
    V = np.empty((n, rank))
    U[:, 0] = 1.0
    bias = _BIAS_STD * rng.standard_normal(n)
    if rank > 1:
        U[:, 1:] = rng.standard_normal((m, rank - 1))
        V[:, 1:] = rng.standard_normal((n, rank - 1)) * (_INTERACTION_STD / np.sqrt(rank - 1))
    eps = noise * rng.standard_normal(keys.size)
    inter = np.einsum("kr,kr->k", U[rows, 1:], V[cols, 1:]) if rank > 1 else 0.0
    base = bias[cols] + inter + eps

    def observe(mu):
        x = mu + base
        if levels is None:
            return x
        return np.clip(np.rint(x), lo, hi)

    mu = target_mean
    for _ in range(6):  # calibrate the global mean after rounding/clipping
        mu += target_mean - observe(mu).mean()
    values = observe(mu)
    V[:, 0] = mu + bias

    ratings = Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), (m, n),
        IdMap(np.arange(m)), IdMap(np.arange(n)),
    )
    if not return_truth:
        return ratings
    return ratings, LowRankTruth(U, V)
