"""Tests of mfjax.solvers.als: per-row solutions vs numpy, monotone loss, empty rows, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors, masked_sq_loss
from mfjax.metrics import rmse
from mfjax.solvers.als import (
    als,
    als_half_sweep,
    als_update_cols,
    als_update_rows,
    normal_equations,
    solve_ridge_rows,
)

M, N, R = 10, 8, 3


def enable_x64():
    """float64 only inside the block."""
    return jax.enable_x64(True)


def problem(seed=0, dtype=np.float64, empty_row=4, empty_col=5, density=0.6):
    """Random ratings with one empty row and one empty column."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, N))
    W = rng.random((M, N)) < density
    W[empty_row, :] = False
    W[:, empty_col] = False
    W[1, :] = False
    W[1, 0] = True  # a row with fewer entries than the rank
    return X, W, Ratings.from_dense(X, W, dtype=dtype), rng


_half = jax.jit(als_half_sweep, static_argnames=("weighted_l2", "chunk_size"))


@pytest.mark.parametrize("weighted", [False, True])
def test_half_sweep_matches_numpy_solve(weighted):
    with enable_x64():
        X, W, ratings, rng = problem()
        V = rng.normal(size=(N, R))
        lam = 0.7
        U = np.asarray(_half(jnp.asarray(V), ratings, lam, weighted_l2=weighted, chunk_size=7))
        for i in range(M):
            om = W[i]
            n_i = om.sum()
            if n_i == 0:
                np.testing.assert_array_equal(U[i], 0.0)
                continue
            Vo = V[om]
            reg = lam * (n_i if weighted else 1.0)
            ref = np.linalg.solve(Vo.T @ Vo + reg * np.eye(R), Vo.T @ X[i, om])
            np.testing.assert_allclose(U[i], ref, rtol=1e-10, atol=1e-12)
        # optimality through the one masked loss: zero gradient w.r.t. U
        wts = None
        if weighted:
            wts = (jnp.asarray(W.sum(1), jnp.float64), jnp.asarray(W.sum(0), jnp.float64))
        g = jax.grad(lambda u: masked_sq_loss(Factors(u, jnp.asarray(V)), ratings, lam,
                                              l2_weights=wts))(jnp.asarray(U))
        assert float(jnp.max(jnp.abs(g))) < 1e-9


def test_lambda_zero_min_norm_lstsq_and_empty_rows():
    """l2 = 0: singular rows (fewer ratings than rank) get numpy's min-norm lstsq; empty rows 0."""
    with enable_x64():
        X, W, ratings, rng = problem(1)
        V = rng.normal(size=(N, R))
        U = np.asarray(_half(jnp.asarray(V), ratings, 0.0))
        assert np.all(np.isfinite(U))
        for i in range(M):
            om = W[i]
            ref = np.linalg.lstsq(V[om], X[i, om], rcond=None)[0] if om.any() else np.zeros(R)
            np.testing.assert_allclose(U[i], ref, rtol=1e-7, atol=1e-9)


def test_normal_equations_and_solver_pieces():
    with enable_x64():
        X, W, ratings, rng = problem(2)
        F = rng.normal(size=(N, 4))
        y = rng.normal(size=ratings.nnz)
        A, b, n = normal_equations(jnp.asarray(F), ratings, jnp.asarray(y), chunk_size=5)
        rows, cols = np.asarray(ratings.rows), np.asarray(ratings.cols)
        for i in range(M):
            k = rows == i
            np.testing.assert_allclose(np.asarray(A[i]), F[cols[k]].T @ F[cols[k]], atol=1e-12)
            np.testing.assert_allclose(np.asarray(b[i]), F[cols[k]].T @ y[k], atol=1e-12)
            assert float(n[i]) == k.sum()
        # zero ridge + empty row: finite zero solution
        x = solve_ridge_rows(A, b, 0.0, n)
        assert np.all(np.isfinite(np.asarray(x)))
        np.testing.assert_array_equal(np.asarray(x[4]), 0.0)


@pytest.mark.parametrize("biased,weighted", [(False, False), (True, True), (True, False)])
def test_loss_monotone_per_half_sweep(biased, weighted):
    with enable_x64():
        X, W, ratings, rng = problem(3)
        p = Factors(jnp.asarray(rng.normal(size=(M, R))), jnp.asarray(rng.normal(size=(N, R))))
        if biased:
            p = BiasedFactors(p.U, p.V, jnp.zeros(M), jnp.asarray(rng.normal(size=N)),
                              jnp.asarray(float(np.mean(ratings.values))))
        lam, lb = 0.3, 0.1
        wts = (jnp.asarray(W.sum(1), jnp.float64), jnp.asarray(W.sum(0), jnp.float64)) if weighted else None
        kw = dict(l2_bias=lb if biased else None, weighted_l2=weighted)
        rows_fn = jax.jit(lambda q: als_update_rows(q, ratings, lam, **kw))
        cols_fn = jax.jit(lambda q: als_update_cols(q, ratings, lam, **kw))
        loss = jax.jit(lambda q: masked_sq_loss(q, ratings, lam, l2_bias=kw["l2_bias"], l2_weights=wts))
        grad = jax.jit(jax.grad(lambda q: masked_sq_loss(q, ratings, lam, l2_bias=kw["l2_bias"],
                                                          l2_weights=wts)))
        vals = [float(loss(p))]
        for _ in range(4):
            p = rows_fn(p)
            vals.append(float(loss(p)))
            # block optimality: gradient w.r.t. the row block vanishes
            g = grad(p)
            assert float(jnp.max(jnp.abs(g.U))) < 1e-8
            if biased:
                assert float(jnp.max(jnp.abs(g.row_bias))) < 1e-8
            p = cols_fn(p)
            vals.append(float(loss(p)))
        d = np.diff(vals)
        assert np.all(d <= 1e-10 * np.abs(vals[:-1])), vals
        assert vals[-1] < vals[0]
        # empty row / column: factors 0, biases 0 -> prediction falls back to the mean
        np.testing.assert_array_equal(np.asarray(p.U[4]), 0.0)
        np.testing.assert_array_equal(np.asarray(p.V[5]), 0.0)
        if biased:
            assert float(p.row_bias[4]) == 0.0 and float(p.col_bias[5]) == 0.0


def _lowrank(seed=0, m=40, n=30, r=3, density=0.8, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) + noise * rng.normal(size=(m, n))
    mask = rng.random((m, n)) < density
    test = rng.random((m, n)) < 0.2
    train = Ratings.from_dense(X, mask & ~test)
    heldout = Ratings.from_dense(X, mask & test)
    return X, train, heldout


def test_als_end_to_end_and_trace():
    X, train, test = _lowrank()
    res = als(train, 3, l2=0.05, num_steps=12, eval_set=test)
    loss, ev = np.asarray(res.trace.loss), np.asarray(res.trace.eval_metric)
    assert loss.shape == ev.shape == (12,)
    assert np.all(np.diff(loss) <= 1e-4 * loss[1:])
    assert ev[-1] < 0.2 < float(np.std(np.asarray(test.values)))
    np.testing.assert_allclose(ev[-1], float(rmse(res.params, test)), rtol=1e-5)
    np.testing.assert_allclose(loss[-1], float(masked_sq_loss(res.params, train, 0.05)), rtol=1e-5)
    # the biased, weighted variant on data with an empty row
    keep = np.asarray(train.rows) != 7
    train2 = train.select(keep)
    res2 = als(train2, 3, l2=0.01, num_steps=5, biases=True, weighted_l2=True, eval_set=test, clip=(-10.0, 10.0))
    p = res2.params
    assert isinstance(p, BiasedFactors)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in p)
    np.testing.assert_array_equal(np.asarray(p.U[7]), 0.0)
    assert float(p.row_bias[7]) == 0.0
    assert np.isclose(float(p.mean), train2.mean(), rtol=1e-6)


def test_als_lambda_zero_with_empty_row_no_nan():
    X, train, test = _lowrank(1)
    train = train.select(np.asarray(train.rows) != 0)
    res = als(train, 3, l2=0.0, num_steps=3)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in res.params)
    assert np.all(np.isnan(np.asarray(res.trace.eval_metric)))  # no eval set
    np.testing.assert_array_equal(np.asarray(res.params.U[0]), 0.0)


def test_bad_input():
    X, train, test = _lowrank()
    m, n = train.shape
    with pytest.raises(ValueError, match="rank"):
        als(train, 0, l2=0.1)
    with pytest.raises(ValueError, match="rank"):
        als(train, min(m, n) + 1, l2=0.1)
    with pytest.raises(ValueError, match=r"l2 \(lambda\).*-0.1"):
        als(train, 2, l2=-0.1)
    with pytest.raises(ValueError, match="l2_bias"):
        als(train, 2, l2=0.1, biases=True, l2_bias=-1.0)
    with pytest.raises(ValueError, match="num_sweeps"):
        als(train, 2, l2=0.1, num_steps=0)
    bad = train.with_values(np.where(np.arange(train.nnz) == 3, np.nan, np.asarray(train.values)))
    with pytest.raises(ValueError, match="non-finite value nan at entry 3"):
        als(bad, 2, l2=0.1)
    other = Ratings.create([0, 1], [0, 1], [1.0, 2.0], (m + 1, n))
    with pytest.raises(ValueError, match="eval shape"):
        als(train, 2, l2=0.1, eval_set=other)
    with pytest.raises(ValueError, match="l2"):
        als_half_sweep(jnp.ones((n, 2)), train, -1.0)
