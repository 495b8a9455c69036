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

Two samplers draw the same distribution of patterns.  ``sampler="pairs"``
draws (row, column) pairs as two shuffled multinomial streams; it is the
original one and stays the default up to ``2**24`` entries, so every data
set made before keeps its values.  ``sampler="rows"`` (the default above
that size) draws each row's count from the row multinomial and the columns
i.i.d. from ``q`` with Walker's alias method (no shuffle: the rows come out
in order), then tops up the distinct entries in small rounds merged into the
sorted keys; the values are computed in chunks.  Netflix size (480,189 x
17,770, 100M ratings) then builds in about 25 s and 5 GB instead of minutes
and 10 GB (``benchmarks/synthetic_netflix.py``).

Reference: A. J. Walker, "An efficient method for generating discrete random
variables with general distributions", ACM TOMS 3(3), 1977 (alias method).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mfjax.data.ratings import IdMap, Ratings

__all__ = ["synthetic", "LowRankTruth"]

_INTERACTION_STD = 0.8
_BIAS_STD = 0.5
_ROWS_SAMPLER_ABOVE = 2 ** 24  # entries; below it the original "pairs" sampler (same data as before)
_VALUE_CHUNK = 1 << 22          # entries per chunk when computing the values


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


def _alias_table(q: np.ndarray):
    """Walker's alias table of the distribution ``q``: ``(prob, alias)`` with ``P(j) = q_j``.

    Draw: ``u ~ U[0, n)``, ``j = floor(u)``; take ``j`` if ``frac(u) < prob[j]``, else ``alias[j]``.
    Built in O(n) (Vose's small/large worklists).
    """
    n = q.size
    scaled = q * n
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s_, l_ = small.pop(), large.pop()
        prob[s_], alias[s_] = scaled[s_], l_
        scaled[l_] -= 1.0 - scaled[s_]
        (small if scaled[l_] < 1.0 else large).append(l_)
    return prob, alias


def _alias_draw(rng, table, size: int) -> np.ndarray:
    prob, alias = table
    u = rng.random(size) * prob.size
    j = u.astype(np.int64)
    np.minimum(j, prob.size - 1, out=j)
    return np.where(u - j < prob[j], j, alias[j])


def _merge_new(keys: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert the distinct ``new`` keys not already in the sorted ``keys``; return (keys, inserted)."""
    new = _sorted_unique(new)
    new = new[~_in_sorted(new, keys)]
    return np.insert(keys, np.searchsorted(keys, new), new), new


def _sample_pattern_rows(rng, m, n, target, p_row, p_col, max_rounds=64):
    """``target`` distinct sorted keys ``i n + j`` with row counts ~ Multinomial(p) and columns ~ q.

    The first round draws ``target`` pairs (rows in order, no shuffle), the later
    rounds draw only the shortfall left by duplicates; when the last round
    overshoots, a uniformly random subset of its new keys is dropped.
    """
    table = _alias_table(p_col)
    keys = np.zeros(0, np.int64)
    for _ in range(max_rounds):
        need = target - keys.size
        if need <= 0:
            break
        k = need if keys.size == 0 else int(need * 1.1) + 16
        rows = np.repeat(np.arange(m, dtype=np.int64), rng.multinomial(k, p_row))
        new = rows * n
        del rows
        new += _alias_draw(rng, table, k)
        if keys.size == 0:
            keys = _sorted_unique(new)
            continue
        merged, added = _merge_new(keys, new)
        if merged.size > target:  # keep a random subset of this round's additions
            keep = np.sort(rng.choice(added.size, size=target - keys.size, replace=False))
            merged, _ = _merge_new(keys, added[keep])
        keys = merged
    return keys


def _in_sorted(x: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(x, sorted_keys)`` for sorted ``sorted_keys``, by binary search (no sort of the big side)."""
    pos = np.searchsorted(sorted_keys, x)
    hit = np.zeros(x.size, bool)
    inside = pos < sorted_keys.size
    hit[inside] = sorted_keys[pos[inside]] == x[inside]
    return hit


def _top_up(rng, keys, m, n, min_count, axis, max_rounds=200):
    """Add uniformly drawn entries until every row (axis 0) / column (axis 1) has min_count.

    ``keys`` must be sorted; the result is sorted.
    """
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
        new = _unique_in_order(new[~_in_sorted(new, keys)])
        # keep at most the deficit per owner, first draws first
        own = new // n if axis == 0 else new % n
        order = np.argsort(own, kind="stable")
        so = own[order]
        start = np.searchsorted(so, so, side="left")
        rank = np.arange(so.size) - start
        keep = np.zeros(new.size, bool)
        keep[order] = rank < deficit[so]
        add = np.sort(new[keep])
        keys = np.insert(keys, np.searchsorted(keys, add), add)  # stays sorted
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
    sampler: str = "auto",
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
      sampler: ``"pairs"``, ``"rows"`` or ``"auto"`` (``"rows"`` above ``2**24`` entries); the
        two draw the same distribution, the second fast and lean at Netflix size (module docstring).

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
    if sampler not in ("auto", "pairs", "rows"):
        raise ValueError(f"sampler must be 'auto', 'pairs' or 'rows', got {sampler!r}")
    if sampler == "auto":
        sampler = "rows" if target > _ROWS_SAMPLER_ABOVE else "pairs"
    draw = _sample_pattern_rows if sampler == "rows" else _sample_pattern
    keys = draw(rng, m, n, target, p_row, p_col)
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
    base = bias[cols]  # (bias + interaction) + noise, chunked: never holds (nnz, rank) gathers
    if rank > 1:
        U1, V1 = np.ascontiguousarray(U[:, 1:]), np.ascontiguousarray(V[:, 1:])
        for a in range(0, keys.size, _VALUE_CHUNK):
            b = min(a + _VALUE_CHUNK, keys.size)
            base[a:b] += np.einsum("kr,kr->k", U1[rows[a:b]], V1[cols[a:b]])
    base += eps
    del eps

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
