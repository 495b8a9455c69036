"""Seeded, reproducible splits of observed entries (host numpy).

- :func:`split`: a random partition of the entries with arbitrary fractions
  (the DMF paper's 75/5/20 train/validation/test; 90/10; 80/20...).
- :func:`hash_split`: the same by a hash of each entry's ``(row, col, seed)``:
  local to the entry, so splitting any partition of the entries part by part
  (each process its rows) gives exactly the split of the whole.
- :func:`row_ranges`, :func:`check_row_ranges`: contiguous row blocks that
  partition ``0..m-1`` (one per process).
- :func:`kfold`: ``k`` (train, test) pairs whose test parts partition the entries.
- :func:`extendability_split`: the DMF paper's areas I-IV (rows and columns
  unseen during training), with "revealed" entries as post-training input.
- :func:`coverage_report`: rows / columns without training entries.
- time-based, from ``Ratings.timestamps``: :func:`leave_last_out` (each
  user's latest ``n`` ratings are the test part, the protocol of sequential
  and top-n evaluation) and :func:`temporal_split` (one global cut in time:
  train on the past, test on the future).

Every part keeps the full ``(m, n)`` shape and the id maps of its source, so
indices mean the same in all parts; entries keep their original relative
order.  Randomness comes from ``numpy.random.default_rng(seed)`` only, except in
:func:`hash_split` (a counter-based hash of the ids, SplitMix64).

References:
  G. L. Steele, D. Lea, C. H. Flood, "Fast splittable pseudorandom number
  generators", OOPSLA 2014 (SplitMix64, the hash of :func:`hash_split`).
  D. M. Nguyen, E. Tsiligianni, N. Deligiannis, "Matrix Factorization via
  Deep Learning", 2018 (areas I-IV; ML-1M protocol 75/5/20, 5 random splits).
  D. M. Nguyen, E. Tsiligianni, N. Deligiannis, "Extendable neural matrix
  completion", ICASSP 2018.
  X. He, L. Liao, H. Zhang, L. Nie, X. Hu, T.-S. Chua, "Neural
  Collaborative Filtering", WWW 2017 (leave-one-out: each user's latest
  interaction is held out).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.data.errors import RatingsError
from mfjax.data.validation import check_fractions

__all__ = [
    "ExtendabilitySplit",
    "SPLIT_METHODS",
    "check_row_ranges",
    "coverage_report",
    "extendability_split",
    "entry_uniforms",
    "hash_split",
    "kfold",
    "leave_last_out",
    "row_ranges",
    "split",
    "temporal_split",
]


def _cut(perm: np.ndarray, fractions: np.ndarray) -> list[np.ndarray]:
    """Cut a permutation into consecutive pieces of the given fractions (sorted pieces)."""
    bounds = np.rint(np.cumsum(fractions) * perm.size).astype(np.int64)
    bounds[-1] = perm.size
    return [np.sort(p) for p in np.split(perm, bounds[:-1])]


#: The methods of :func:`split`: ``"random"`` (a seeded permutation, the default) and ``"hash"`` (:func:`hash_split`).
SPLIT_METHODS = ("random", "hash")


def split(ratings: Ratings, fractions=(0.9, 0.1), seed: int = 0, *, method: str = "random") -> tuple[Ratings, ...]:
    """Random partition of the observed entries.

    ``method="random"`` (the default): a seeded permutation of the ``nnz``
    entries is cut at ``round(cumsum(fractions) * nnz)``; part ``k`` has
    ``round(F_k nnz) - round(F_{k-1} nnz)`` entries (``F`` the cumulative
    fractions), i.e. within one entry of ``fractions[k] * nnz``.
    ``method="hash"``: :func:`hash_split` (each entry placed by a hash of its
    ``(row, col, seed)``; part sizes binomial; the split of a union of row
    blocks is the union of the blocks' splits).

    Args:
      ratings: the entries to split.
      fractions: non-negative, summing to 1, e.g. ``(0.75, 0.05, 0.2)``.
      seed: seed of ``numpy.random.default_rng`` (of the hash for ``"hash"``).
      method: ``"random"`` or ``"hash"`` (:data:`SPLIT_METHODS`).

    Returns:
      one :class:`Ratings` per fraction (host numpy arrays; full shape and id
      maps; a zero fraction gives an empty part).  The parts are disjoint and
      together hold every entry.

    Example (``train, valid, test = split(ratings, (0.75, 0.05, 0.2), seed=0)``):

    >>> r = Ratings.create([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 0, 1, 0, 1], [1, 2, 3, 4, 5, 4, 3, 2])
    >>> [p.nnz for p in split(r, (0.75, 0.25), seed=0)]
    [6, 2]
    """
    if method == "hash":
        return hash_split(ratings, fractions, seed)
    if method != "random":
        raise ValueError(f"split method must be one of {SPLIT_METHODS}, got {method!r}")
    f = check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(ratings.nnz)
    return tuple(ratings.select(p) for p in _cut(perm, f))


_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of ``x + golden gamma`` (uint64, wrapping), element-wise."""
    with np.errstate(over="ignore"):
        z = x + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def entry_uniforms(rows, cols, seed: int = 0) -> np.ndarray:
    r"""One uniform number in ``[0, 1)`` per entry, a pure function of ``(row, col, seed)``.

    .. math:: u_k = 2^{-53} \lfloor h(h(h(s) + i_k) + j_k) / 2^{11} \rfloor,

    ``h`` the SplitMix64 mixer on 64-bit words (wrapping).  Vectorised numpy,
    no state: the value of an entry does not depend on the other entries or
    their order.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    s = _splitmix64(np.asarray([int(seed) % (1 << 64)], dtype=np.uint64))
    r = np.ascontiguousarray(rows, dtype=np.int64).view(np.uint64)
    c = np.ascontiguousarray(cols, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        x = _splitmix64(_splitmix64(s + r) + c)
    return (x >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_split(ratings: Ratings, fractions=(0.9, 0.1), seed: int = 0) -> tuple[Ratings, ...]:
    r"""Partition of the entries by a hash of each entry's ``(row, col, seed)``.

    Entry ``k`` goes to the first part ``p`` with ``u_k < F_p``, ``F`` the
    cumulative fractions and ``u_k`` :func:`entry_uniforms` (a counter-based
    hash, SplitMix64, of the ids): each entry lands in part ``p`` with
    probability ``fractions[p]``, independently, so part sizes are binomial
    (within a few ``sqrt(nnz)`` of ``fractions[p] * nnz``, unlike
    :func:`split`'s exact cut).  Since the part of an entry depends on the
    entry alone,

    .. math:: \mathrm{hash\_split}(A \cup B) = \mathrm{hash\_split}(A) \cup \mathrm{hash\_split}(B)

    for any disjoint sets of entries: each process of a multi-process run
    splits only its own rows and the parts together are exactly the split of
    the whole data set, however the rows are distributed.  Entries keep
    their relative order.

    Args:
      ratings: the entries to split.
      fractions: non-negative, summing to 1.
      seed: an integer; another seed gives another, independent split.

    Returns:
      one :class:`Ratings` per fraction (disjoint, together every entry).

    >>> r = Ratings.create([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 0, 1, 0, 1], [1, 2, 3, 4, 5, 4, 3, 2])
    >>> train, test = hash_split(r, (0.75, 0.25), seed=0)
    >>> train.nnz + test.nnz
    8
    """
    f = check_fractions(fractions)
    u = entry_uniforms(ratings.rows, ratings.cols, seed)
    bounds = np.cumsum(f)
    bounds[-1] = np.inf  # rounding of the cumulative sum never leaves an entry out
    part = np.searchsorted(bounds, u, side="right")
    return tuple(ratings.select(np.flatnonzero(part == p)) for p in range(f.size))


def row_ranges(m: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges ``[(lo, hi), ...]`` of (almost) equal length covering ``0..m-1``.

    Range ``k`` is ``[floor(k m / parts), floor((k + 1) m / parts))``: lengths
    differ by at most one row.  Equal row counts, not equal rating counts
    (which would need every row's count first); for data whose row
    propensities are shuffled over the rows (:func:`mfjax.data.synthetic`)
    the rating counts are equal in expectation.

    >>> row_ranges(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    m, parts = int(m), int(parts)
    if m < 1 or parts < 1:
        raise ValueError(f"row_ranges needs m >= 1 and parts >= 1, got m={m}, parts={parts}")
    edges = (np.arange(parts + 1, dtype=np.int64) * m) // parts
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def check_row_ranges(ranges, m: int) -> list[tuple[int, int]]:
    """Check that the row ranges ``[(lo, hi), ...]`` (in order) partition ``0..m-1``; return them as int pairs.

    Raises:
      ValueError: a range that is not a pair ``lo <= hi`` inside ``[0, m]``,
        or ranges that leave rows uncovered or overlap (the message names the
        rows and the ranges).
    """
    m = int(m)
    out = []
    for k, r in enumerate(ranges):
        try:
            lo, hi = (int(v) for v in r)
        except (TypeError, ValueError):
            raise ValueError(f"row range #{k} must be a pair (lo, hi) of integers, got {r!r}") from None
        if not 0 <= lo <= hi <= m:
            raise ValueError(f"row range #{k} {(lo, hi)} must satisfy 0 <= lo <= hi <= m = {m}")
        out.append((lo, hi))
    if not out:
        raise ValueError(f"no row ranges given for {m} rows")
    end = 0
    for k, (lo, hi) in enumerate(out):
        if lo > end:
            raise ValueError(f"row ranges leave rows {end}..{lo - 1} uncovered (before range #{k} {(lo, hi)}); "
                             f"the ranges must partition 0..{m - 1} in order")
        if lo < end:
            raise ValueError(f"row ranges overlap on rows {lo}..{min(end, hi) - 1} (range #{k} {(lo, hi)} "
                             f"starts before the end {end} of the ranges before it)")
        end = hi
    if end != m:
        raise ValueError(f"row ranges leave rows {end}..{m - 1} uncovered (the last range ends at {end})")
    return out


def kfold(ratings: Ratings, k: int = 5, seed: int = 0) -> list[tuple[Ratings, Ratings]]:
    """``k``-fold cross-validation over the observed entries.

    A seeded permutation is cut into ``k`` folds of sizes differing by at
    most one (:func:`numpy.array_split`); fold ``i`` is the test part of pair
    ``i`` and the other folds its training part.  The test parts partition
    the entries.

    Returns:
      list of ``(train, test)`` :class:`Ratings` pairs.

    >>> r = Ratings.create([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], [1, 2, 3, 4, 5, 4])
    >>> [(tr.nnz, te.nnz) for tr, te in kfold(r, k=3, seed=0)]
    [(4, 2), (4, 2), (4, 2)]
    """
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    k = int(k)
    if k > ratings.nnz:
        raise ValueError(f"k={k} folds need at least {k} entries, got {ratings.nnz}")
    perm = np.random.default_rng(seed).permutation(ratings.nnz)
    folds = np.array_split(perm, k)
    out = []
    for i in range(k):
        test = np.sort(folds[i])
        train = np.sort(np.concatenate([folds[j] for j in range(k) if j != i]))
        out.append((ratings.select(train), ratings.select(test)))
    return out


def coverage_report(train: Ratings, *others: Ratings) -> dict:
    """Rows / columns with no training entries, and how many entries of ``others`` fall in them.

    Models like MF cannot predict for a row or column without training
    entries (a "cold" row / column).  Splits report these rather than drop
    them.

    Args:
      train: training entries.
      *others: e.g. validation and test parts (same shape).

    Returns:
      dict with ``rows_without_train`` / ``cols_without_train`` (sorted int
      arrays), their counts ``n_rows_without_train`` /
      ``n_cols_without_train``, and ``cold_entries``: for each of ``others``,
      the number of its entries whose row or column has no training entry.
    """
    rc, cc = train.row_counts(), train.col_counts()
    rows0, cols0 = np.flatnonzero(rc == 0), np.flatnonzero(cc == 0)
    cold = []
    for o in others:
        if tuple(o.shape) != tuple(train.shape):
            raise RatingsError(f"shapes disagree: train {train.shape}, other part {o.shape}")
        r, c = np.asarray(o.rows), np.asarray(o.cols)
        cold.append(int(np.count_nonzero((rc[r] == 0) | (cc[c] == 0))))
    return {
        "rows_without_train": rows0,
        "cols_without_train": cols0,
        "n_rows_without_train": int(rows0.size),
        "n_cols_without_train": int(cols0.size),
        "cold_entries": cold,
    }


class ExtendabilitySplit(NamedTuple):
    """The parts of :func:`extendability_split` (all share the full ``(m, n)`` index space).

    Attributes:
      train, valid: area I training / validation entries.
      test: ``{"I", "II", "III", "IV"}`` -> test entries of each area.
      revealed: entries of held-out rows (area II) and columns (area III)
        available as model input after training; disjoint from every test part.
      held_rows, held_cols: sorted int arrays of the held-out rows / columns.
      report: counts and coverage (see :func:`extendability_split`).
    """

    train: Ratings
    valid: Ratings
    test: dict
    revealed: Ratings
    held_rows: np.ndarray
    held_cols: np.ndarray
    report: dict


def _reveal(rng, idx: np.ndarray, group: np.ndarray, frac: float):
    """Split entry indices ``idx`` per group: ``round(frac * size)`` revealed, the rest test."""
    if idx.size == 0:
        return idx, idx
    g = group[idx]
    order = np.lexsort((rng.random(idx.size), g))  # random order within each group
    gs = g[order]
    start = np.searchsorted(gs, gs, side="left")
    rank = np.arange(gs.size) - start
    size = np.bincount(gs)[gs]
    keep = np.floor(frac * size + 0.5)
    revealed = np.zeros(idx.size, bool)
    revealed[order] = rank < keep
    return np.sort(idx[revealed]), np.sort(idx[~revealed])


def _held(rng, size: int, frac: float, what: str) -> np.ndarray:
    if not (0.0 <= frac < 1.0):
        raise ValueError(f"{what}_frac must be in [0, 1), got {frac}")
    k = int(np.floor(frac * size + 0.5))
    if k >= size:
        raise ValueError(f"{what}_frac={frac} would hold out all {size} {what}s")
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


def extendability_split(
    ratings: Ratings,
    row_frac: float = 0.1,
    col_frac: float = 0.1,
    reveal_frac: float = 0.5,
    fractions=(0.75, 0.05, 0.2),
    seed: int = 0,
) -> ExtendabilitySplit:
    """Split for the DMF paper's extendability experiment (areas I-IV, Table 1).

    The paper does not specify how areas II-IV are built (nor does the
    authors' code); mfjax uses this protocol:

    1. Hold out ``round(row_frac * m)`` rows and ``round(col_frac * n)``
       columns, chosen uniformly at random.  No entry in a held-out row or
       column is ever used for training.
    2. Area I = entries with a seen row and a seen column.  They are split
       at random by ``fractions`` = (train, validation, test), as :func:`split`.
    3. Area II = entries with a held-out row and a seen column.  For each
       held-out row, ``round(reveal_frac * k)`` of its ``k`` area-II entries
       (chosen at random) are *revealed*: available as model input after
       training (e.g. the row vector fed to DMF's row branch, or for
       folding in a new user); the rest are area II test entries.
    4. Area III = seen row, held-out column: the same per held-out column.
    5. Area IV = held-out row and held-out column: all are test entries
       (their rows/columns are described only by revealed entries of
       areas II/III).

    Every entry lands in exactly one of train, valid, revealed, test I-IV,
    so test entries never leak into training or revealed input.  Rows or
    columns left without training entries are reported, not dropped.

    Args:
      ratings: all observed entries.
      row_frac, col_frac: fractions of rows / columns held out, in [0, 1).
      reveal_frac: fraction of each held-out row's / column's entries (in
        seen columns / rows) that is revealed, in [0, 1].
      fractions: (train, valid, test) fractions of area I (sum 1); a pair
        (train, test) means no validation part.
      seed: seed of ``numpy.random.default_rng``.

    Returns:
      :class:`ExtendabilitySplit`.  ``report`` holds ``nnz`` per part,
      ``n_held_rows`` / ``n_held_cols``, ``seen_rows_without_train`` /
      ``seen_cols_without_train`` (seen rows / columns whose area-I entries
      all went to valid/test), ``held_rows_without_revealed`` /
      ``held_cols_without_revealed`` (held-out rows / columns with nothing
      revealed, hence no input to extend them from).

    Example::

      s = extendability_split(ratings, 0.1, 0.1, 0.5, (0.75, 0.05, 0.2), seed=0)
      model = fit(s.train, valid=s.valid)
      rmse_II = evaluate(model, inputs=s.revealed, targets=s.test["II"])
    """
    f = check_fractions(fractions)
    if f.size == 2:
        f = np.array([f[0], 0.0, f[1]])
    if f.size != 3:
        raise ValueError(f"fractions must be (train, valid, test) or (train, test), got {fractions!r}")
    if not (0.0 <= reveal_frac <= 1.0):
        raise ValueError(f"reveal_frac must be in [0, 1], got {reveal_frac}")
    m, n = ratings.shape
    rng = np.random.default_rng(seed)
    held_rows = _held(rng, m, row_frac, "row")
    held_cols = _held(rng, n, col_frac, "col")
    hr = np.zeros(m, bool)
    hr[held_rows] = True
    hc = np.zeros(n, bool)
    hc[held_cols] = True
    rows, cols = np.asarray(ratings.rows), np.asarray(ratings.cols)
    er, ec = hr[rows], hc[cols]

    area1 = np.flatnonzero(~er & ~ec)
    tr, va, te1 = _cut(area1[rng.permutation(area1.size)], f)
    rev2, te2 = _reveal(rng, np.flatnonzero(er & ~ec), rows, reveal_frac)
    rev3, te3 = _reveal(rng, np.flatnonzero(~er & ec), cols, reveal_frac)
    te4 = np.flatnonzero(er & ec)
    revealed = np.sort(np.concatenate([rev2, rev3]))

    train = ratings.select(tr)
    rc, cc = train.row_counts(), train.col_counts()
    rev_r = np.bincount(rows[rev2], minlength=m)
    rev_c = np.bincount(cols[rev3], minlength=n)
    report = {
        "shape": (m, n),
        "n_held_rows": int(held_rows.size),
        "n_held_cols": int(held_cols.size),
        "nnz": {
            "train": int(tr.size), "valid": int(va.size), "revealed": int(revealed.size),
            "revealed_II": int(rev2.size), "revealed_III": int(rev3.size),
            "test_I": int(te1.size), "test_II": int(te2.size),
            "test_III": int(te3.size), "test_IV": int(te4.size),
        },
        "seen_rows_without_train": np.flatnonzero((rc == 0) & ~hr),
        "seen_cols_without_train": np.flatnonzero((cc == 0) & ~hc),
        "held_rows_without_revealed": held_rows[rev_r[held_rows] == 0],
        "held_cols_without_revealed": held_cols[rev_c[held_cols] == 0],
    }
    return ExtendabilitySplit(
        train=train,
        valid=ratings.select(va),
        test={"I": ratings.select(te1), "II": ratings.select(te2),
              "III": ratings.select(te3), "IV": ratings.select(te4)},
        revealed=ratings.select(revealed),
        held_rows=held_rows,
        held_cols=held_cols,
        report=report,
    )


def _timestamps(ratings: Ratings, what: str) -> np.ndarray:
    if ratings.timestamps is None:
        raise RatingsError(
            f"{what} needs the time of each rating, but these ratings have no timestamps; load them "
            "with load_movielens(...) (timestamps=True, the default), load_triplets(..., timestamps=True) "
            "or pass timestamps= to Ratings.create / from_pandas")
    return np.asarray(ratings.timestamps)


def leave_last_out(ratings: Ratings, n: int = 1) -> tuple[Ratings, Ratings]:
    """Per user (row), the latest ``n`` ratings are the test part; the rest train.

    Entries of a row are ordered by ``(timestamp, column)``: equal timestamps
    are broken by the column index (the larger index counts as later), so
    the split does not depend on the order of the entries.  A row with at
    most ``n`` ratings stays entirely in train (holding out all of it would
    leave nothing to learn the user from).

    Returns:
      ``(train, test)`` (full shape, id maps and timestamps; entries in
      their original relative order); ``test`` has ``n`` entries for each
      row with more than ``n`` ratings.

    Raises:
      RatingsError: the ratings have no timestamps.
      ValueError: ``n`` not a positive integer.

    >>> r = Ratings.create([0, 0, 0, 1, 1, 2], [0, 1, 2, 0, 2, 1], [5, 4, 3, 2, 1, 5],
    ...                    timestamps=[30, 10, 30, 7, 9, 1])
    >>> train, test = leave_last_out(r)
    >>> list(zip(test.rows.tolist(), test.cols.tolist())), train.nnz
    ([(0, 2), (1, 2)], 4)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    t = _timestamps(ratings, "leave_last_out")
    rows, cols = np.asarray(ratings.rows), np.asarray(ratings.cols)
    order = np.lexsort((cols, t, rows))  # by row, then time, then column
    counts = np.bincount(rows, minlength=ratings.shape[0])
    end = np.cumsum(counts)  # one past each row's last sorted position
    r_sorted = rows[order]
    rank_from_end = end[r_sorted] - np.arange(order.size)  # 1 = the row's latest entry
    test_sorted = (rank_from_end <= n) & (counts[r_sorted] > n)
    is_test = np.zeros(order.size, bool)
    is_test[order] = test_sorted
    return ratings.select(np.flatnonzero(~is_test)), ratings.select(np.flatnonzero(is_test))


def temporal_split(ratings: Ratings, test_fraction: float | None = None, *,
                   cutoff=None) -> tuple[Ratings, Ratings]:
    """One global cut in time: ratings before it train, the rest test.

    Give exactly one of:

    - ``cutoff``: train = ratings with ``timestamp < cutoff``, test = the
      others (``timestamp >= cutoff``);
    - ``test_fraction`` in ``[0, 1]``: the latest ``round(test_fraction *
      nnz)`` ratings are the test part, ordered by ``(timestamp, row,
      column)`` so that equal timestamps at the cut are split
      deterministically.

    Users and items that appear only after the cut have no training entries
    (see :func:`coverage_report`); they are kept, not dropped.

    Returns:
      ``(train, test)``, full shape, id maps and timestamps; entries in their
      original relative order.

    Raises:
      RatingsError: the ratings have no timestamps.
      ValueError: neither or both of ``test_fraction`` / ``cutoff``; a
        fraction outside ``[0, 1]``.

    >>> r = Ratings.create([0, 0, 1, 1], [0, 1, 0, 1], [5, 4, 3, 2], timestamps=[4, 1, 3, 2])
    >>> [p.timestamps.tolist() for p in temporal_split(r, cutoff=3)]
    [[1, 2], [4, 3]]
    >>> [p.timestamps.tolist() for p in temporal_split(r, 0.25)]
    [[1, 3, 2], [4]]
    """
    if (test_fraction is None) == (cutoff is None):
        raise ValueError("give exactly one of test_fraction (the latest share of ratings to test) "
                         "or cutoff (a time: ratings at or after it are test)")
    t = _timestamps(ratings, "temporal_split")
    if cutoff is not None:
        c = np.asarray(cutoff)
        if np.issubdtype(c.dtype, np.datetime64):
            c = c.astype("datetime64[s]").astype(np.int64)
        is_test = t >= c
    else:
        f = float(test_fraction)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
        k = int(np.rint(f * t.size))
        order = np.lexsort((np.asarray(ratings.cols), np.asarray(ratings.rows), t))
        is_test = np.zeros(t.size, bool)
        is_test[order[t.size - k:]] = True
    return ratings.select(np.flatnonzero(~is_test)), ratings.select(np.flatnonzero(is_test))
