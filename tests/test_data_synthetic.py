"""Synthetic data: deterministic, MovieLens-like (levels, mean, skewed degrees), low-rank truth."""

import numpy as np
import pytest

from mfjax.data import synthetic


@pytest.fixture(scope="module")
def default():
    return synthetic(return_truth=True)


def test_deterministic():
    a = synthetic(200, 150, seed=3)
    b = synthetic(200, 150, seed=3)
    c = synthetic(200, 150, seed=4)
    for x, y in ((a.rows, b.rows), (a.cols, b.cols), (a.values, b.values)):
        np.testing.assert_array_equal(x, y)
    assert not (a.nnz == c.nnz and np.array_equal(a.cols, c.cols))


def test_movielens_like(default):
    r, _ = default
    assert r.shape == (600, 400)
    v = np.asarray(r.values)
    assert v.dtype == np.float32
    assert set(np.unique(v).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert r.mean() == pytest.approx(3.6, abs=0.05)
    assert 0.7 < v.std() < 1.3
    assert r.nnz == pytest.approx(0.05 * 600 * 400, rel=0.02)
    rc, cc = r.row_counts(), r.col_counts()
    assert rc.min() >= 3 and cc.min() >= 3
    # skewed (heavy-tailed) degrees: max far above the median, mean above the median
    for d in (rc, cc):
        assert d.max() > 5 * np.median(d) and d.mean() > np.median(d)
    # distinct entries, sorted by (row, col)
    keys = np.asarray(r.rows, np.int64) * 400 + r.cols
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(r.row_ids.original, np.arange(600))


def test_truth_is_low_rank_and_noiseless_values_match():
    r, (U, V) = synthetic(120, 90, rank=4, noise=0.0, levels=None, seed=2, return_truth=True)
    X = U @ V.T
    s = np.linalg.svd(X, compute_uv=False)
    assert np.linalg.matrix_rank(X) == 4 and s[4] < 1e-9 * s[0]
    np.testing.assert_allclose(r.values, X[r.rows, r.cols], rtol=1e-6, atol=1e-5)


def test_noise_and_levels_relation():
    r, (U, V) = synthetic(300, 200, rank=3, noise=0.3, seed=5, return_truth=True)
    x = np.einsum("kr,kr->k", U[r.rows], V[r.cols])
    err = r.values - x
    # rounding to integers + clipping + noise 0.3: error std about sqrt(0.3^2 + 1/12) ~ 0.42
    assert 0.3 < np.sqrt(np.mean(err**2)) < 0.6
    r1 = synthetic(300, 200, rank=3, noise=0.0, seed=5, levels=(0, 10))
    assert np.asarray(r1.values).min() >= 0 and np.asarray(r1.values).max() <= 10
    assert r1.mean() == pytest.approx(6.5, abs=0.1)


@pytest.mark.parametrize("rank", [1, 2, 10])
def test_shapes_and_ranks(rank):
    r, (U, V) = synthetic(40, 30, rank=rank, density=0.1, seed=0, return_truth=True)
    assert U.shape == (40, rank) and V.shape == (30, rank)
    assert np.linalg.matrix_rank(U @ V.T) == rank


def test_tiny_and_dense():
    r = synthetic(5, 4, density=0.01, min_count=3)
    assert r.row_counts().min() >= 3 and r.col_counts().min() >= 3
    full = synthetic(10, 8, density=1.0)
    assert full.nnz == 80


def test_larger_runs():
    r = synthetic(3000, 2000, rank=10, density=0.02, seed=1)
    assert r.nnz == pytest.approx(0.02 * 3000 * 2000, rel=0.01)


@pytest.mark.parametrize("kw,match", [({"m": 0}, "positive"), ({"rank": 0}, "rank"), ({"density": 0.0}, "density"),
                                      ({"density": 1.5}, "density"), ({"noise": -1.0}, "noise"),
                                      ({"levels": (5, 1)}, "levels"), ({"levels": (1.5, 5)}, "levels")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        synthetic(**kw)


# ------------------------------------------------------------ the "rows" sampler (large data)
import importlib

_syn = importlib.import_module("mfjax.data.synthetic")


def test_alias_table_reproduces_the_distribution_exactly():
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.full(37, 0.3))
    prob, alias = _syn._alias_table(q)
    n = q.size
    recon = prob / n + np.bincount(alias, weights=(1.0 - prob) / n, minlength=n)
    np.testing.assert_allclose(recon, q, atol=1e-12)
    draws = _syn._alias_draw(np.random.default_rng(0), (prob, alias), 400_000)
    freq = np.bincount(draws, minlength=n) / draws.size
    assert np.max(np.abs(freq - q) / np.sqrt(q * (1 - q) / draws.size + 1e-300)) < 5.0  # within 5 sigma


def test_rows_sampler_gives_a_valid_pattern_of_the_requested_size():
    m, n, density = 500, 300, 0.04
    r = synthetic(m, n, rank=4, density=density, seed=5, sampler="rows")
    keys = np.asarray(r.rows, np.int64) * n + np.asarray(r.cols)
    assert np.all(np.diff(keys) > 0)                      # sorted by (row, col), no duplicates
    assert r.nnz >= round(density * m * n) and r.nnz < 1.05 * density * m * n  # top-up adds few
    assert np.bincount(r.rows, minlength=m).min() >= 3 and np.bincount(r.cols, minlength=n).min() >= 3
    assert set(np.unique(r.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0} and abs(float(np.mean(r.values)) - 3.6) < 0.05
    again = synthetic(m, n, rank=4, density=density, seed=5, sampler="rows")
    np.testing.assert_array_equal(np.asarray(again.cols), np.asarray(r.cols))
    np.testing.assert_array_equal(np.asarray(again.values), np.asarray(r.values))


def test_rows_and_pairs_samplers_draw_the_same_degree_distribution():
    m, n, density = 2000, 500, 0.03
    deg = {}
    for s in ("pairs", "rows"):
        deg[s] = [np.sort(np.bincount(np.asarray(r.rows), minlength=m))[::-1] for r in
                  (synthetic(m, n, rank=2, density=density, seed=k, sampler=s) for k in range(3))]
    for part in (slice(0, 20), slice(0, 200), slice(1000, 2000)):  # head, top decile, tail: mean degrees agree
        a = np.mean([d[part].mean() for d in deg["pairs"]])
        b = np.mean([d[part].mean() for d in deg["rows"]])
        assert abs(a - b) / a < 0.08, (part, a, b)


def test_auto_sampler_keeps_the_original_data_below_the_threshold():
    a = synthetic(120, 80, rank=3, density=0.1, seed=9)
    b = synthetic(120, 80, rank=3, density=0.1, seed=9, sampler="pairs")
    np.testing.assert_array_equal(np.asarray(a.cols), np.asarray(b.cols))
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values))
    with pytest.raises(ValueError, match="sampler"):
        synthetic(10, 10, sampler="fast")


# ------------------------------------------------------------ the "rows32" sampler (float32 fast path)
def test_alias_draw32_has_the_distribution():
    q = np.random.default_rng(4).dirichlet(np.full(29, 0.4))
    draws = _syn._alias_draw32(np.random.default_rng(1), _syn._alias_table(q), 400_000)
    assert draws.dtype == np.int32
    freq = np.bincount(draws, minlength=q.size) / draws.size
    assert np.max(np.abs(freq - q) / np.sqrt(q * (1 - q) / draws.size + 1e-300)) < 5.0


def test_rows32_sampler_is_deterministic_and_has_the_documented_distribution():
    m, n, density = 2000, 500, 0.03
    r = synthetic(m, n, rank=4, density=density, seed=5, sampler="rows32")
    again = synthetic(m, n, rank=4, density=density, seed=5, sampler="rows32")
    for x, y in ((r.rows, again.rows), (r.cols, again.cols), (r.values, again.values)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    keys = np.asarray(r.rows, np.int64) * n + np.asarray(r.cols)
    assert np.all(np.diff(keys) > 0) and r.rows.dtype == np.int32 and r.values.dtype == np.float32
    assert round(density * m * n) <= r.nnz < 1.05 * density * m * n
    assert np.bincount(r.rows, minlength=m).min() >= 3 and np.bincount(r.cols, minlength=n).min() >= 3
    assert set(np.unique(r.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0} and abs(float(np.mean(r.values)) - 3.6) < 0.02
    # same per-row degree distribution as the float64 "rows" sampler (head, top decile, tail)
    d32 = np.sort(np.bincount(r.rows, minlength=m))[::-1]
    d64 = np.sort(np.bincount(synthetic(m, n, rank=4, density=density, seed=5, sampler="rows").rows,
                              minlength=m))[::-1]
    for part in (slice(0, 20), slice(0, 200), slice(1000, 2000)):
        assert abs(d32[part].mean() - d64[part].mean()) / d64[part].mean() < 0.1, part


def test_rows32_values_are_the_low_rank_truth_in_float32():
    r, (U, V) = synthetic(300, 200, rank=4, density=0.1, noise=0.0, levels=None, seed=2, return_truth=True,
                          sampler="rows32")
    s = np.linalg.svd(U @ V.T, compute_uv=False)
    assert s[4] < 1e-9 * s[0]
    x = np.einsum("kr,kr->k", U[r.rows], V[r.cols])
    np.testing.assert_allclose(r.values, x, rtol=1e-5, atol=1e-5)
    assert abs(float(np.mean(r.values)) - 3.0) < 1e-3   # calibrated mean (continuous values)
    r1, (U1, V1) = synthetic(300, 200, rank=4, density=0.1, noise=0.3, seed=2, return_truth=True, sampler="rows32")
    err = r1.values - np.einsum("kr,kr->k", U1[r1.rows], V1[r1.cols])
    assert 0.3 < np.sqrt(np.mean(err ** 2)) < 0.6         # noise 0.3 + rounding, as the float64 samplers


def test_auto_sampler_uses_rows32_above_the_threshold(monkeypatch):
    monkeypatch.setattr(_syn, "_ROWS_SAMPLER_ABOVE", 100)
    a = synthetic(60, 40, rank=3, density=0.2, seed=1)
    b = synthetic(60, 40, rank=3, density=0.2, seed=1, sampler="rows32")
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values))
    np.testing.assert_array_equal(np.asarray(a.cols), np.asarray(b.cols))


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_blocks_sampler_parts_union_to_the_whole_data_set(parts):
    """sampler="blocks" is row-local: the rows of any partition, generated alone, concatenate to exactly the
    single-process data set (same (row, col, value) triples); 9001 rows: several blocks, not divisible by 2 or
    3, cuts inside blocks."""
    import importlib

    syn_mod = importlib.import_module("mfjax.data.synthetic")  # the module (mfjax.data.synthetic is the function)

    kw = dict(m=2 * syn_mod.BLOCK_ROWS + 809, n=60, rank=3, density=0.01, seed=7, sampler="blocks")
    whole = synthetic(**kw)
    edges = np.linspace(0, kw["m"], parts + 1).round().astype(int)
    got = [synthetic(**kw, row_range=(a, b)) for a, b in zip(edges[:-1], edges[1:])]
    for (a, b), part in zip(zip(edges[:-1], edges[1:]), got):
        assert part.shape == whole.shape and ((part.rows >= a) & (part.rows < b)).all()
    for f in ("rows", "cols", "values"):
        np.testing.assert_array_equal(np.concatenate([np.asarray(getattr(p, f)) for p in got]),
                                      np.asarray(getattr(whole, f)))
    # MovieLens-like: every row and column has min_count entries, the mean rating near 3.6
    assert np.bincount(whole.rows, minlength=kw["m"]).min() >= 3 and np.bincount(whole.cols).min() >= 3
    assert abs(float(np.mean(whole.values)) - 3.6) < 0.1


def test_row_range_needs_the_blocks_sampler():
    with pytest.raises(ValueError, match="row_range needs sampler='blocks'"):
        synthetic(30, 20, row_range=(0, 10))
    with pytest.raises(ValueError, match="row_range must satisfy"):
        synthetic(30, 20, sampler="blocks", row_range=(5, 40))
