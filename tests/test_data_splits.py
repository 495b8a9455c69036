"""Splits: disjoint, complete, fractions, reproducible; extendability areas and no leakage."""

import numpy as np
import pytest

from mfjax.data import (
    ExtendabilitySplit,
    Ratings,
    check_row_ranges,
    coverage_report,
    entry_uniforms,
    extendability_split,
    hash_split,
    kfold,
    row_ranges,
    split,
    synthetic,
)


@pytest.fixture(scope="module")
def ratings():
    return synthetic(300, 200, rank=3, density=0.08, seed=1)


def _keys(r):
    return np.asarray(r.rows, np.int64) * r.shape[1] + np.asarray(r.cols, np.int64)


def _entries(r):
    return {(int(a), int(b), float(v)) for a, b, v in zip(r.rows, r.cols, r.values)}


@pytest.mark.parametrize("fractions", [(0.9, 0.1), (0.8, 0.2), (0.75, 0.05, 0.2), (0.5, 0.0, 0.5), (1.0,)])
def test_split_partition(ratings, fractions):
    parts = split(ratings, fractions, seed=3)
    assert len(parts) == len(fractions)
    nnz = ratings.nnz
    keys = [set(_keys(p).tolist()) for p in parts]
    assert sum(len(k) for k in keys) == nnz  # disjoint ...
    assert set().union(*keys) == set(_keys(ratings).tolist())  # ... and complete
    assert set().union(*[_entries(p) for p in parts]) == _entries(ratings)  # values travel with entries
    for p, f in zip(parts, fractions):
        assert abs(p.nnz - f * nnz) <= 1
        assert p.shape == ratings.shape
        assert p.row_ids is ratings.row_ids and p.col_ids is ratings.col_ids


def test_split_reproducible(ratings):
    a = split(ratings, (0.75, 0.05, 0.2), seed=7)
    b = split(ratings, (0.75, 0.05, 0.2), seed=7)
    c = split(ratings, (0.75, 0.05, 0.2), seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.rows, y.rows)
        np.testing.assert_array_equal(x.cols, y.cols)
        np.testing.assert_array_equal(x.values, y.values)
    assert set(_keys(a[2]).tolist()) != set(_keys(c[2]).tolist())


@pytest.mark.parametrize("bad,match", [((0.5, 0.4), "sum to 1"), ((1.2, -0.2), r"\[0, 1\]"),
                                       ((), "empty"), (("a", "b"), "numbers"), ((np.nan, 1.0), r"\[0, 1\]")])
def test_split_bad_fractions(ratings, bad, match):
    with pytest.raises(ValueError, match=match):
        split(ratings, bad)


def test_split_accepts_device_arrays(ratings):
    a, b = split(ratings.device_put(), (0.5, 0.5), seed=0)
    c, d = split(ratings, (0.5, 0.5), seed=0)
    np.testing.assert_array_equal(np.asarray(a.rows), c.rows)


def test_kfold(ratings):
    folds = kfold(ratings, k=4, seed=2)
    assert len(folds) == 4
    all_keys = set(_keys(ratings).tolist())
    tests = []
    for train, test in folds:
        kt, ks = set(_keys(train).tolist()), set(_keys(test).tolist())
        assert not kt & ks and kt | ks == all_keys
        assert abs(test.nnz - ratings.nnz / 4) <= 1
        tests.append(ks)
    assert set().union(*tests) == all_keys and sum(map(len, tests)) == ratings.nnz
    again = kfold(ratings, k=4, seed=2)
    np.testing.assert_array_equal(again[1][1].rows, folds[1][1].rows)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        kfold(ratings, k=1)
    with pytest.raises(ValueError, match="at least"):
        kfold(Ratings.create([0, 1], [0, 1], [1.0, 2.0]), k=3)


def test_coverage_report_brute_force():
    r = Ratings.create([0, 0, 1, 3, 3], [0, 2, 2, 0, 4], [1, 2, 3, 4, 5.0], shape=(4, 6))
    train = r.select([0, 1, 2])
    test = r.select([3, 4])
    rep = coverage_report(train, test)
    np.testing.assert_array_equal(rep["rows_without_train"], [2, 3])
    np.testing.assert_array_equal(rep["cols_without_train"], [1, 3, 4, 5])
    assert rep["n_rows_without_train"] == 2 and rep["n_cols_without_train"] == 4
    assert rep["cold_entries"] == [2]  # both test entries lie in row 3


# ---------------------------------------------------------- extendability
@pytest.fixture(scope="module")
def ext(ratings):
    return extendability_split(ratings, 0.1, 0.15, 0.5, (0.75, 0.05, 0.2), seed=4)


def test_extendability_is_a_partition(ratings, ext):
    assert isinstance(ext, ExtendabilitySplit)
    parts = [ext.train, ext.valid, ext.revealed] + [ext.test[a] for a in ("I", "II", "III", "IV")]
    keys = [_keys(p) for p in parts]
    allk = np.concatenate(keys)
    assert allk.size == ratings.nnz and np.unique(allk).size == ratings.nnz
    assert set().union(*[_entries(p) for p in parts]) == _entries(ratings)
    for p in parts:
        assert p.shape == ratings.shape and p.row_ids is ratings.row_ids


def test_extendability_no_leakage(ext):
    test_keys = set(np.concatenate([_keys(t) for t in ext.test.values()]).tolist())
    for part in (ext.train, ext.valid, ext.revealed):
        assert not (set(_keys(part).tolist()) & test_keys)
    # nothing of a held-out row or column reaches training or validation
    for part in (ext.train, ext.valid):
        assert not np.isin(part.rows, ext.held_rows).any()
        assert not np.isin(part.cols, ext.held_cols).any()


def test_extendability_areas(ratings, ext):
    m, n = ratings.shape
    assert ext.held_rows.size == round(0.1 * m) and ext.held_cols.size == round(0.15 * n)
    hr, hc = np.zeros(m, bool), np.zeros(n, bool)
    hr[ext.held_rows] = True
    hc[ext.held_cols] = True
    expect = {"I": (False, False), "II": (True, False), "III": (False, True), "IV": (True, True)}
    for area, (row_held, col_held) in expect.items():
        t = ext.test[area]
        assert t.nnz > 0
        assert (hr[t.rows] == row_held).all() and (hc[t.cols] == col_held).all()
    rev = ext.revealed
    # revealed entries are in areas II or III only (never IV, never I)
    assert (hr[rev.rows] ^ hc[rev.cols]).all()
    # per held-out row: round(0.5 * k) of its k area-II entries revealed (brute force)
    r_all, c_all = np.asarray(ratings.rows), np.asarray(ratings.cols)
    for i in ext.held_rows[:10]:
        k = int(np.sum((r_all == i) & ~hc[c_all]))
        got = int(np.sum((rev.rows == i) & ~hc[rev.cols]))
        assert got == int(np.floor(0.5 * k + 0.5))
    for j in ext.held_cols[:10]:
        k = int(np.sum((c_all == j) & ~hr[r_all]))
        got = int(np.sum((rev.cols == j) & ~hr[rev.rows]))
        assert got == int(np.floor(0.5 * k + 0.5))
    # area I split by the fractions
    n1 = ext.train.nnz + ext.valid.nnz + ext.test["I"].nnz
    for part, f in ((ext.train, 0.75), (ext.valid, 0.05), (ext.test["I"], 0.2)):
        assert abs(part.nnz - f * n1) <= 1
    nnz = ext.report["nnz"]
    assert nnz["train"] == ext.train.nnz and nnz["test_IV"] == ext.test["IV"].nnz
    assert nnz["revealed"] == nnz["revealed_II"] + nnz["revealed_III"] == rev.nnz


def test_extendability_reproducible_and_seeded(ratings, ext):
    again = extendability_split(ratings, 0.1, 0.15, 0.5, (0.75, 0.05, 0.2), seed=4)
    np.testing.assert_array_equal(again.held_rows, ext.held_rows)
    np.testing.assert_array_equal(again.test["II"].cols, ext.test["II"].cols)
    np.testing.assert_array_equal(again.train.rows, ext.train.rows)
    other = extendability_split(ratings, 0.1, 0.15, 0.5, (0.75, 0.05, 0.2), seed=5)
    assert not np.array_equal(other.held_rows, ext.held_rows)


def test_extendability_reports_uncovered():
    # tiny case: with half of area I in test, some rows / columns end up without training entries
    r = Ratings.create([0, 0, 1, 1, 2, 3, 3], [0, 1, 0, 1, 2, 2, 3], np.arange(1, 8.0), shape=(4, 4))
    s = extendability_split(r, row_frac=0.0, col_frac=0.0, fractions=(0.5, 0.0, 0.5), seed=0)
    tr_rows = set(s.train.rows.tolist())
    expected_rows = [i for i in range(4) if i not in tr_rows]
    assert expected_rows  # this seed leaves a row uncovered
    np.testing.assert_array_equal(s.report["seen_rows_without_train"], expected_rows)
    assert s.valid.nnz == 0 and s.revealed.nnz == 0 and s.test["IV"].nnz == 0
    # a held-out row whose entries are all in held-out columns has nothing revealed: reported
    s2 = extendability_split(r, row_frac=0.5, col_frac=0.5, reveal_frac=1.0, seed=1)
    assert s2.report["held_rows_without_revealed"].size > 0
    for i in s2.report["held_rows_without_revealed"]:
        assert not np.isin(r.cols[r.rows == i], np.setdiff1d(np.arange(4), s2.held_cols)).any()
    assert s2.test["II"].nnz == 0 and s2.test["III"].nnz == 0  # reveal_frac=1 reveals all of II/III


def test_extendability_zero_reveal(ratings):
    s = extendability_split(ratings, 0.2, 0.2, reveal_frac=0.0, fractions=(0.8, 0.2), seed=0)
    assert s.revealed.nnz == 0 and s.valid.nnz == 0


@pytest.mark.parametrize("kw,match", [({"row_frac": 1.0}, "row_frac"), ({"col_frac": -0.1}, "col_frac"),
                                      ({"reveal_frac": 1.5}, "reveal_frac"),
                                      ({"fractions": (0.5, 0.2, 0.2, 0.1)}, "fractions"),
                                      ({"fractions": (0.5, 0.2)}, "sum to 1")])
def test_extendability_bad_args(ratings, kw, match):
    with pytest.raises(ValueError, match=match):
        extendability_split(ratings, **kw)


# ------------------------------------------------------------ the hash split (row-local)
def _concat(parts):
    """The entries of ``parts`` (disjoint row blocks, in row order) as one tuple of arrays."""
    return tuple(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in ("rows", "cols", "values"))


def _arrays(r):
    return tuple(np.asarray(getattr(r, f)) for f in ("rows", "cols", "values"))


@pytest.mark.parametrize("num_blocks", [1, 2, 3])
@pytest.mark.parametrize("fractions", [(0.9, 0.1), (0.75, 0.05, 0.2)])
def test_hash_split_of_the_union_of_row_blocks_is_the_union_of_their_splits(num_blocks, fractions):
    m = 90
    kw = dict(m=m, n=50, rank=3, density=0.2, seed=3, sampler="blocks")
    whole = synthetic(**kw)
    blocks = [synthetic(**kw, row_range=r) for r in row_ranges(m, num_blocks)]
    assert all(np.array_equal(a, b) for a, b in zip(_concat(blocks), _arrays(whole)))
    ref = hash_split(whole, fractions, seed=7)
    per_block = [hash_split(b, fractions, seed=7) for b in blocks]
    for p in range(len(fractions)):
        got = _concat([parts[p] for parts in per_block])
        for a, b in zip(got, _arrays(ref[p])):
            np.testing.assert_array_equal(a, b)
    # and it is a partition with about the asked fractions (binomial sizes)
    assert sum(p.nnz for p in ref) == whole.nnz
    assert len(set().union(*(set(_keys(p).tolist()) for p in ref))) == whole.nnz
    for p, f in zip(ref, fractions):
        assert abs(p.nnz - f * whole.nnz) < 5 * np.sqrt(whole.nnz * f * (1 - f)) + 1


def test_hash_split_is_order_free_seeded_and_the_split_method(ratings):
    a = hash_split(ratings, (0.8, 0.2), seed=0)
    perm = np.random.default_rng(0).permutation(ratings.nnz)
    b = hash_split(ratings.select(perm), (0.8, 0.2), seed=0)
    assert _entries(a[1]) == _entries(b[1])  # the part of an entry does not depend on the others
    c = hash_split(ratings, (0.8, 0.2), seed=1)
    assert _entries(a[1]) != _entries(c[1])
    via = split(ratings, (0.8, 0.2), seed=0, method="hash")
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(via[1]), _arrays(a[1])))
    # the default method is unchanged: the seeded permutation's exact cut
    default = split(ratings, (0.8, 0.2), seed=0)
    assert default[1].nnz == int(np.rint(0.2 * ratings.nnz))
    with pytest.raises(ValueError, match="split method"):
        split(ratings, (0.8, 0.2), method="blocks")
    with pytest.raises(ValueError, match="seed must be an integer"):
        hash_split(ratings, (0.8, 0.2), seed=0.5)
    empty, full = hash_split(ratings, (0.0, 1.0), seed=0)
    assert empty.nnz == 0 and full.nnz == ratings.nnz


def test_entry_uniforms_are_uniform_and_a_function_of_the_ids():
    rows = np.repeat(np.arange(200), 100)
    cols = np.tile(np.arange(100), 200)
    u = entry_uniforms(rows, cols, seed=5)
    assert u.min() >= 0.0 and u.max() < 1.0
    hist = np.bincount((u * 10).astype(int), minlength=10)
    assert np.all(np.abs(hist - 2000) < 250), hist
    np.testing.assert_array_equal(entry_uniforms(rows[::-1], cols[::-1], seed=5), u[::-1])


def test_row_ranges_partition_and_bad_ranges_are_named():
    assert row_ranges(10, 1) == [(0, 10)]
    assert row_ranges(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert check_row_ranges(row_ranges(1000, 7), 1000) == row_ranges(1000, 7)
    with pytest.raises(ValueError, match=r"leave rows 5\.\.5 uncovered"):
        check_row_ranges([(0, 5), (6, 10)], 10)
    with pytest.raises(ValueError, match=r"overlap on rows 4\.\.4"):
        check_row_ranges([(0, 5), (4, 10)], 10)
    with pytest.raises(ValueError, match=r"leave rows 8\.\.9 uncovered"):
        check_row_ranges([(0, 4), (4, 8)], 10)
    with pytest.raises(ValueError, match=r"leave rows 0\.\.1 uncovered"):
        check_row_ranges([(2, 10)], 10)
    with pytest.raises(ValueError, match="0 <= lo <= hi <= m"):
        check_row_ranges([(0, 11)], 10)
    with pytest.raises(ValueError, match="pair"):
        check_row_ranges([(0, 5, 7)], 10)
