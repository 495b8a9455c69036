"""The Gram-layout ALS path equals the scatter-add path (issue 11: speed never changes results)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
from mfjax.objective import build_gram_layout, curvature, solve_rows


@pytest.fixture(scope="module")
def data():
    r = mf.data.synthetic(90, 60, rank=3, density=0.25, noise=0.1, seed=3)
    return mf.data.split(r, (0.8, 0.2), seed=0)


def _reference(obj, F, y, ridge):
    A, b, n = curvature.normal_equations(obj, F, y)
    return curvature.solve_ridge_rows(A, b, ridge, n)


@pytest.mark.parametrize("segment,chunk_entries", [(4, 16), (8, 1 << 19), (64, 64)])
def test_layout_holds_every_entry_once_and_solves_the_same_systems(data, segment, chunk_entries):
    train, _ = data
    obj = mf.objective.mf_objective(train)
    m, n = train.shape
    lay = build_gram_layout(obj.rows, obj.cols, m, segment=segment, chunk_entries=chunk_entries)
    ent = np.asarray(lay.entry)[np.asarray(lay.mask) > 0]
    np.testing.assert_array_equal(np.sort(ent), np.arange(obj.num_entries))
    np.testing.assert_array_equal(np.asarray(lay.cols)[np.asarray(lay.mask) > 0], np.asarray(obj.cols)[ent])
    rows = np.asarray(lay.rows)
    live = rows[rows < m]
    assert len(np.unique(live)) == live.size  # a row lives in one chunk
    F = jax.random.normal(jax.random.key(1), (n, 5))
    y = jax.random.normal(jax.random.key(2), (obj.num_entries,))
    ridge = jnp.linspace(0.1, 1.0, m)[:, None]
    got = solve_rows(lay, F, y, obj.weights, ridge, m)
    np.testing.assert_allclose(got, _reference(obj, F, y, ridge), rtol=2e-4, atol=2e-5)


def test_weights_padding_and_empty_rows(data):
    """Weight-0 entries (padding) are left out; rows without entries solve to 0."""
    train, _ = data
    m, n = train.shape
    keep = np.asarray(train.rows) >= 5  # rows 0..4 empty
    sub = mf.data.Ratings.create(np.asarray(train.rows)[keep], np.asarray(train.cols)[keep],
                                 np.asarray(train.values)[keep], train.shape)
    w = np.random.default_rng(0).uniform(0.5, 2.0, sub.nnz)
    obj = mf.objective.mf_objective(sub, entry_weights=w, pad_to=sub.nnz + 37)
    lay = build_gram_layout(obj.rows, obj.cols, m, segment=8, chunk_entries=64, weights=obj.weights)
    assert int(np.asarray(lay.mask).sum()) == sub.nnz
    F = jax.random.normal(jax.random.key(0), (n, 4))
    got = solve_rows(lay, F, obj.values, obj.weights, 0.3, m)
    np.testing.assert_allclose(got, _reference(obj, F, obj.values, 0.3), rtol=2e-4, atol=2e-5)
    assert not np.any(np.asarray(got)[:5])


@pytest.mark.parametrize("biases,weighted_l2", [(False, False), (False, True), (True, False), (True, True)])
def test_als_gram_path_equals_the_scatter_path(data, biases, weighted_l2):
    train, test = data
    kw = dict(l2=0.5, num_steps=3, biases=biases, weighted_l2=weighted_l2, eval_set=test)
    fast = mf.solvers.als(train, 6, gram=True, **kw)
    ref = mf.solvers.als(train, 6, gram=False, **kw)
    for a, b in zip(jax.tree.leaves(fast.params), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fast.trace.loss, ref.trace.loss, rtol=1e-5)
    np.testing.assert_allclose(fast.trace.eval_metric, ref.trace.eval_metric, rtol=1e-5)


def test_als_problem_is_traced_one_compilation_for_a_second_lambda(data):
    train, _ = data
    from mfjax.solvers.base import _run_jit

    solver = mf.solvers.als_solver()
    p0 = mf.init_factors(jax.random.key(0), train.shape, 4)
    prob = mf.solvers.als_problem(mf.solvers.als_objective(train, l2=0.5))
    mf.solvers.run(solver, prob, solver.init(p0, prob), 2)
    before = _run_jit._cache_size()
    prob2 = prob._replace(objective=prob.objective.replace(l2=jnp.asarray(2.0, jnp.float32)))
    res = mf.solvers.run(solver, prob2, solver.init(p0, prob2), 2)
    assert _run_jit._cache_size() == before
    ref = mf.solvers.als(train, 4, l2=2.0, num_steps=2, init=p0, gram=False)
    np.testing.assert_allclose(res.trace.loss, ref.trace.loss, rtol=1e-5)


def test_bad_layout_arguments_are_named():
    with pytest.raises(ValueError, match="segment and chunk_entries"):
        build_gram_layout(np.zeros(3), np.zeros(3), 2, segment=0)
    with pytest.raises(ValueError, match="row index out of range"):
        build_gram_layout(np.array([0, 5]), np.array([0, 1]), 2)


# ------------------------------------------------------------ tiers: bounded padding with long rows
def _skewed(seed=0):
    """Rows 0 and 7 far longer than a chunk, the rest short; unsorted entries, one empty row."""
    rng = np.random.default_rng(seed)
    m, n = 40, 300
    keys = [i * n + rng.choice(n, size=(250 if i in (0, 7) else int(rng.integers(1, 12))), replace=False)
            for i in range(m) if i != 3]
    keys = rng.permutation(np.concatenate(keys))
    return mf.data.Ratings.create(keys // n, keys % n, rng.normal(size=keys.size).astype(np.float32), (m, n))


def test_tiers_bound_the_padding_and_solve_the_same_systems():
    from mfjax.objective import build_gram_tiers

    r = _skewed()
    obj = mf.objective.mf_objective(r)
    m, n = r.shape
    one = build_gram_layout(obj.rows, obj.cols, m, segment=8, chunk_entries=64)
    tiers = build_gram_tiers(obj.rows, obj.cols, m, segment=8, chunk_entries=64)
    assert len(tiers) == 2
    slots = sum(int(np.asarray(t.mask).size) for t in tiers)
    assert slots <= 2 * (r.nnz + m * 8) < int(np.asarray(one.mask).size)   # the single layout pads every chunk
    assert int(np.asarray(tiers[0].mask).shape[1]) * 8 <= 64                # tier 0: chunks within the budget
    ent = np.concatenate([np.asarray(t.entry)[np.asarray(t.mask) > 0] for t in tiers])
    np.testing.assert_array_equal(np.sort(ent), np.arange(obj.num_entries))  # every entry once
    F = jax.random.normal(jax.random.key(1), (n, 6))
    ridge = jnp.linspace(0.1, 1.0, m)[:, None]
    want = _reference(obj, F, obj.values, ridge)
    got = sum(solve_rows(t, F, obj.values, obj.weights, ridge, m) for t in tiers)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(solve_rows(one, F, obj.values, obj.weights, ridge, m), want, rtol=2e-4, atol=2e-5)
    # no long row: one tier, identical to the single layout
    short = build_gram_tiers(obj.rows, obj.cols, m, segment=8, chunk_entries=1 << 12)
    full = build_gram_layout(obj.rows, obj.cols, m, segment=8, chunk_entries=1 << 12)
    assert len(short) == 1 and all(np.array_equal(a, b) for a, b in zip(short[0], full))


def test_row_major_order_equals_lexsort():
    from mfjax.objective import gram

    rng = np.random.default_rng(2)
    r, c = rng.integers(0, 70_000, 5000), rng.integers(0, 50, 5000)   # duplicates, rows above 2**16
    for rr, cc in ((r, c), (np.sort(r), c), (r[np.lexsort((r, c))], c[np.lexsort((r, c))])):
        np.testing.assert_array_equal(gram._row_major_order(rr, cc), np.lexsort((cc, rr)))
    s = np.lexsort((c, r))
    np.testing.assert_array_equal(gram._row_major_order(r[s], c[s]), np.arange(5000))


def test_als_sweeps_on_tiers_equal_the_single_layout_and_the_scatter_path():
    """ALS on tiered layouts (long rows split off) = one padded layout (CG) = scatter-add (exact)."""
    r = _skewed(1)
    obj = mf.solvers.als_objective(r, l2=0.5)
    p0 = mf.init_factors(jax.random.key(0), r.shape, 5)
    kw = dict(segment=8, chunk_entries=64)
    tiered, single = mf.solvers.als_problem(obj, **kw), mf.solvers.als_problem(obj, tiers=False, **kw)
    assert len(tiered.rows) == 2 and isinstance(single.rows, mf.objective.GramLayout)
    for solver, ref in ((mf.solvers.als_solver(), obj), (mf.solvers.als_solver(method="cg", cg_steps=3), single)):
        a = mf.solvers.run(solver, tiered, solver.init(p0, tiered), 2)
        b = mf.solvers.run(solver, ref, solver.init(p0, ref), 2)
        for x, y in zip(a.params, b.params):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(a.trace.loss, b.trace.loss, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 12])
def test_cholesky_solve_columns_matches_a_float64_solve(k):
    """The LAPACK-free batched Cholesky solve (the mesh path on CPU devices) equals numpy's float64
    solve to float32 rounding, and equals the LAPACK path of solve_ridge_rows; a non-SPD matrix
    gives NaN, which solve_ridge_rows then replaces by its pseudo-inverse fallback."""
    rng = np.random.default_rng(k)
    X = rng.standard_normal((40, k + 5, k))
    M = np.einsum("bik,bij->bkj", X, X) + 0.3 * np.eye(k)
    b = rng.standard_normal((40, k))
    ref = np.linalg.solve(M, b[..., None])[..., 0]
    x = np.asarray(curvature.cholesky_solve_columns(jnp.asarray(M, jnp.float32), jnp.asarray(b, jnp.float32)))
    assert np.max(np.abs(x - ref)) <= 1e-4 * np.max(np.abs(ref))
    A, bb = jnp.asarray(M - 0.3 * np.eye(k), jnp.float32), jnp.asarray(b, jnp.float32)
    xl = curvature.solve_ridge_rows(A, bb, 0.3)
    xj = curvature.solve_ridge_rows(A, bb, 0.3, lapack=False)
    np.testing.assert_allclose(np.asarray(xj), np.asarray(xl), rtol=1e-4, atol=1e-5)
    bad = np.asarray(curvature.cholesky_solve_columns(-jnp.eye(k)[None], jnp.ones((1, k))))
    assert np.all(np.isnan(bad))
