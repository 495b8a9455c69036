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

Three samplers draw the same distribution of patterns.  ``sampler="pairs"``
draws (row, column) pairs as two shuffled multinomial streams; it is the
original one and stays the default up to ``2**24`` entries, so every data
set made before keeps its values.  ``sampler="rows"`` draws each row's count
from the row multinomial and the columns i.i.d. from ``q`` with Walker's
alias method (no shuffle: the rows come out in order), then tops up the
distinct entries in small rounds merged into the sorted keys; its values are
computed in float64 as for ``"pairs"`` (the data it gave before stays
bit-identical).  ``sampler="rows32"`` (the default above ``2**24`` entries)
is the same pattern model with int32/float32 alias draws, and the values
computed in float32 chunk by chunk in one pass (float32 noise draws, the
mean calibrated on a strided subsample of ``2**22`` entries): the same
model, different draws than ``"rows"``, and no 100M-element float64
temporary.  Netflix size (480,189 x 17,770, 100M ratings) then builds in
the time and memory recorded in ``BENCHMARKS.md``
(``benchmarks/synthetic_netflix.py``).

``sampler="blocks"`` is row-local: rows are generated in fixed blocks of
:data:`BLOCK_ROWS` rows, block ``b`` from its own generator seeded with
``(seed, b)``, given only O(m + n) global draws (the propensities, the
rows' multinomial counts, the column factors and biases, each column's
``min_count`` guaranteed rows, and ``mu`` calibrated on a fixed-size model
sample).  So any set of rows can be generated alone --
``synthetic(..., sampler="blocks", row_range=(lo, hi))`` holds only rows
``lo..hi-1`` (about ``(hi - lo) / m`` of the entries plus at most two
partial blocks while building) -- and the union of the parts of any
partition of the rows is exactly the whole data set: what a process of a
multi-process run needs (``tests/test_data_synthetic.py`` checks N = 1, 2,
3).  Its model differs from the others only in the top-ups: every column
gets ``min_count`` distinct uniformly drawn rows (Floyd's algorithm) and
every row is topped up inside its block; duplicates within a row are
dropped, not redrawn, so the density ends below ``density`` where rows
are dense in popular columns (40,000 x 4,000 at 0.02: 2.91M ratings for
a target of 3.2M).

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
#: The pattern/value samplers of :func:`synthetic` (``"auto"``: ``"pairs"`` up to ``2**24`` entries, else ``"rows32"``).
SAMPLERS = ("auto", "pairs", "rows", "rows32", "blocks")
#: Rows per block of ``sampler="blocks"`` (part of the data's definition: changing it changes the data).
BLOCK_ROWS = 4096
_CALIBRATION_SAMPLE = 1 << 16  # model draws the global mean of ``sampler="blocks"`` is calibrated on


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


def _alias_draw32(rng, table, size: int) -> np.ndarray:
    """:func:`_alias_draw` with an int32 column draw and a float32 coin (``sampler="rows32"``)."""
    prob, alias = table
    j = rng.integers(0, prob.size, size=size, dtype=np.int32)
    take = rng.random(size, dtype=np.float32) < np.take(prob.astype(np.float32), j)
    return np.where(take, j, np.take(alias.astype(np.int32), j))


def _merge_new(keys: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert the distinct ``new`` keys not already in the sorted ``keys``; return (keys, inserted)."""
    new = _sorted_unique(new)
    new = new[~_in_sorted(new, keys)]
    return np.insert(keys, np.searchsorted(keys, new), new), new


def _sample_pattern_rows(rng, m, n, target, p_row, p_col, max_rounds=64, draw=_alias_draw):
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
        new += draw(rng, table, k)
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


def _split_keys(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys // n, keys % n)`` as int32, chunk by chunk (no 64-bit temporaries of the full size)."""
    rows = np.empty(keys.size, np.int32)
    cols = np.empty(keys.size, np.int32)
    for a in range(0, keys.size, _VALUE_CHUNK):
        q, r = np.divmod(keys[a:a + _VALUE_CHUNK], n)
        rows[a:a + q.size], cols[a:a + q.size] = q, r
    return rows, cols


def _observe(x: np.ndarray, mu: float, levels) -> np.ndarray:
    """``clip(rint(mu + x), lo, hi)`` (``mu + x`` without levels), in ``x``'s dtype."""
    x = x + x.dtype.type(mu)
    if levels is None:
        return x
    return np.clip(np.rint(x, out=x), levels[0], levels[1], out=x)


def _calibrate(base: np.ndarray, target_mean: float, levels, steps: int = 6) -> float:
    """The global mean ``mu`` with ``mean(observe(mu + base)) ~ target_mean`` (fixed-point steps)."""
    mu = target_mean
    for _ in range(steps):  # calibrate the global mean after rounding/clipping
        mu += target_mean - float(_observe(base, mu, levels).mean(dtype=np.float64))
    return mu


def _values64(rng, rows, cols, U, V, bias, noise, levels, target_mean):
    """The observed values in float64 (``"pairs"`` / ``"rows"``: the data of every seed before ``rows32``)."""
    eps = noise * rng.standard_normal(rows.size)
    base = bias[cols]  # (bias + interaction) + noise, chunked: never holds (nnz, rank) gathers
    if U.shape[1] > 1:
        U1, V1 = np.ascontiguousarray(U[:, 1:]), np.ascontiguousarray(V[:, 1:])
        for a in range(0, rows.size, _VALUE_CHUNK):
            b = min(a + _VALUE_CHUNK, rows.size)
            base[a:b] += np.einsum("kr,kr->k", np.take(U1, rows[a:b], axis=0), np.take(V1, cols[a:b], axis=0))
    base += eps
    del eps
    mu = target_mean
    for _ in range(6):  # calibrate the global mean after rounding/clipping (as before: full passes)
        mu += target_mean - _observe(base, mu, levels).mean()
    return _observe(base, mu, levels).astype(np.float32), mu


def _values32(rng, rows, cols, U, V, bias, noise, levels, target_mean):
    """The observed values of ``sampler="rows32"``: float32, chunk by chunk, one pass.

    Per chunk of entries: ``base = b_j + u_i[1:] . v_j[1:] + noise e`` with
    ``e ~ N(0, 1)`` drawn in float32; ``mu`` is calibrated on a strided
    subsample of at most ``2**22`` entries, then ``clip(rint(mu + base))`` is
    taken in place.  Same model as :func:`_values64`, different draws.
    """
    f32 = np.float32
    nnz = rows.size
    b32 = bias.astype(f32)
    U1, V1 = U[:, 1:].astype(f32), V[:, 1:].astype(f32)
    base = np.empty(nnz, f32)
    for a in range(0, nnz, _VALUE_CHUNK):
        b = min(a + _VALUE_CHUNK, nnz)
        r, c = rows[a:b], cols[a:b]
        x = np.take(b32, c)
        if U1.shape[1]:  # np.take: ~4x faster than fancy indexing for row gathers
            x += np.einsum("kr,kr->k", np.take(U1, r, axis=0), np.take(V1, c, axis=0))
        x += f32(noise) * rng.standard_normal(b - a, dtype=f32)
        base[a:b] = x
    mu = _calibrate(base[:: max(1, nnz // _VALUE_CHUNK)], target_mean, levels)
    for a in range(0, nnz, _VALUE_CHUNK):
        base[a:a + _VALUE_CHUNK] = _observe(base[a:a + _VALUE_CHUNK], mu, levels)
    return base, mu


def _floyd_rows(rng, m: int, n: int, k: int) -> np.ndarray:
    """``(n, k)`` rows: for each of ``n`` columns ``k <= m`` distinct rows drawn uniformly (Floyd's
    algorithm, vectorised over the columns)."""
    chosen = np.empty((n, k), np.int64)
    for t, top in enumerate(range(m - k, m)):
        j = rng.integers(0, top + 1, size=n)
        dup = (chosen[:, :t] == j[:, None]).any(axis=1)
        chosen[:, t] = np.where(dup, top, j)
    return chosen


class _BlockModel(NamedTuple):
    """The O(m + n) global part of ``sampler="blocks"`` (every process draws the same)."""

    row_counts: np.ndarray   # (m,) multinomial counts of each row's column draws
    col_table: tuple         # alias table of the column propensities
    col_rows: np.ndarray     # (n, k) each column's guaranteed rows
    bias: np.ndarray         # (n,) item biases
    V: np.ndarray            # (n, rank) with V[:, 0] = 0 (filled with mu + bias at the end)
    mu: float


def _block_model(seed, m, n, rank, target, min_count, row_exponent, col_exponent, noise, levels, target_mean):
    rng = np.random.default_rng([seed, 0])
    p_row = _zipf_propensity(rng, m, row_exponent)
    p_col = _zipf_propensity(rng, n, col_exponent)
    row_counts = rng.multinomial(target, p_row)
    col_rows = _floyd_rows(rng, m, n, min(min_count, m))
    bias = _BIAS_STD * rng.standard_normal(n)
    V = np.zeros((n, rank))
    if rank > 1:
        V[:, 1:] = rng.standard_normal((n, rank - 1)) * (_INTERACTION_STD / np.sqrt(rank - 1))
    table = _alias_table(p_col)
    # the global mean, calibrated on model draws (not on the data: no process has all of it)
    k = _CALIBRATION_SAMPLE
    cols = _alias_draw(rng, table, k)
    base = bias[cols] + noise * rng.standard_normal(k)
    if rank > 1:
        base += np.einsum("kr,kr->k", rng.standard_normal((k, rank - 1)), V[cols, 1:])
    return _BlockModel(row_counts, table, col_rows, bias, V, _calibrate(base, target_mean, levels))


def _block_U(seed, b: int, lo: int, hi: int, rank: int) -> np.ndarray:
    """Rows ``lo..hi-1`` (block ``b``) of the truth's ``U``: ``U[:, 0] = 1``, the rest N(0, 1)."""
    U = np.ones((hi - lo, rank))
    if rank > 1:
        U[:, 1:] = np.random.default_rng([seed, 2, b]).standard_normal((hi - lo, rank - 1))
    return U


def _block_entries(seed, b: int, lo: int, hi: int, n: int, model: _BlockModel, min_count: int, rank: int,
                   noise, levels):
    """Rows ``lo..hi-1`` (block ``b``): sorted keys ``i n + j`` and their float32 values."""
    rng = np.random.default_rng([seed, 1, b])
    counts = model.row_counts[lo:hi]
    local = np.repeat(np.arange(hi - lo, dtype=np.int64), counts) * n + _alias_draw(rng, model.col_table,
                                                                                     int(counts.sum()))
    # each column's guaranteed rows that fall in this block
    cr = model.col_rows
    hit = (cr >= lo) & (cr < hi)
    guaranteed = (cr[hit] - lo) * n + np.nonzero(hit)[0]
    keys = _sorted_unique(np.concatenate([local, guaranteed]))
    keys = _top_up(rng, keys, hi - lo, n, min_count, axis=0)
    r_loc, cols = _split_keys(keys, n)
    U = _block_U(seed, b, lo, hi, rank)
    base = model.bias[cols] + noise * rng.standard_normal(keys.size)
    if rank > 1:
        base += np.einsum("kr,kr->k", np.take(U[:, 1:], r_loc, axis=0), np.take(model.V[:, 1:], cols, axis=0))
    return keys + lo * n, _observe(base, model.mu, levels).astype(np.float32)


def _synthetic_blocks(seed, m, n, rank, target, min_count, row_exponent, col_exponent, noise, levels,
                      target_mean, row_range, return_truth):
    """``sampler="blocks"``: the rows ``row_range`` (default all) of the row-local data set."""
    lo, hi = (0, m) if row_range is None else (int(row_range[0]), int(row_range[1]))
    if not 0 <= lo <= hi <= m:
        raise ValueError(f"row_range must satisfy 0 <= lo <= hi <= m = {m}, got {row_range!r}")
    model = _block_model(seed, m, n, rank, target, min_count, row_exponent, col_exponent, noise, levels,
                         target_mean)
    keys, values = [], []
    for b in range(lo // BLOCK_ROWS, -(-hi // BLOCK_ROWS)):
        a, z = b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, m)
        k, v = _block_entries(seed, b, a, z, n, model, min_count, rank, noise, levels)
        keep = (k >= lo * n) & (k < hi * n)  # a block cut by the range keeps only its rows
        keys.append(k[keep])
        values.append(v[keep])
    keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    values = np.concatenate(values) if values else np.zeros(0, np.float32)
    rows, cols = _split_keys(keys, n)
    ratings = Ratings(rows, cols, values, (m, n), IdMap(np.arange(m)), IdMap(np.arange(n)))
    if not return_truth:
        return ratings
    U = np.concatenate([_block_U(seed, b, b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, m), rank)
                        for b in range(-(-m // BLOCK_ROWS))])
    V = model.V.copy()
    V[:, 0] = model.mu + model.bias
    return ratings, LowRankTruth(U, V)


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
    row_range: tuple[int, int] | None = None,
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
      sampler: ``"pairs"``, ``"rows"``, ``"rows32"``, ``"blocks"`` or ``"auto"`` (``"pairs"`` up to
        ``2**24`` entries, ``"rows32"`` above); all draw the same distribution; ``"rows32"`` (float32
        values, chunked) is the fast and lean one at Netflix size; ``"blocks"`` is row-local
        (module docstring).
      row_range: ``(lo, hi)``: only rows ``lo..hi-1`` (``sampler="blocks"`` only; the shape stays
        ``(m, n)``).  The parts of any partition of ``0..m`` concatenate to the whole data set.

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

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    target = min(max(int(round(density * m * n)), 1), m * n)
    if sampler == "blocks":
        return _synthetic_blocks(seed, m, n, rank, target, min_count, row_exponent, col_exponent, noise, levels,
                                 target_mean, row_range, return_truth)
    if row_range is not None:
        raise ValueError(f"row_range needs sampler='blocks' (sampler {sampler!r} draws the whole pattern at once)")
    rng = np.random.default_rng(seed)
    p_row = _zipf_propensity(rng, m, row_exponent)
    p_col = _zipf_propensity(rng, n, col_exponent)
    if sampler == "auto":
        sampler = "rows32" if target > _ROWS_SAMPLER_ABOVE else "pairs"
    if sampler == "pairs":
        keys = _sample_pattern(rng, m, n, target, p_row, p_col)
    else:
        draw = _alias_draw32 if sampler == "rows32" else _alias_draw
        keys = _sample_pattern_rows(rng, m, n, target, p_row, p_col, draw=draw)
    keys = _top_up(rng, keys, m, n, min_count, axis=0)
    keys = _top_up(rng, keys, m, n, min_count, axis=1)
    if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):  # every sampler returns sorted keys
        keys = np.sort(keys)
    rows, cols = _split_keys(keys, n)
    del keys

    # noiseless low-rank truth: column 0 carries mean + item bias
    U = np.empty((m, rank))
    V = np.empty((n, rank))
    U[:, 0] = 1.0
    bias = _BIAS_STD * rng.standard_normal(n)
    if rank > 1:
        U[:, 1:] = rng.standard_normal((m, rank - 1))
        V[:, 1:] = rng.standard_normal((n, rank - 1)) * (_INTERACTION_STD / np.sqrt(rank - 1))
    if sampler == "rows32":
        values, mu = _values32(rng, rows, cols, U, V, bias, noise, levels, target_mean)
    else:
        values, mu = _values64(rng, rows, cols, U, V, bias, noise, levels, target_mean)
    V[:, 0] = mu + bias

    ratings = Ratings(
        rows, cols, values, (m, n),
        IdMap(np.arange(m)), IdMap(np.arange(n)),
    )
    if not return_truth:
        return ratings
    return ratings, LowRankTruth(U, V)
