"""Masked NMF: monotone MU, nonnegativity, the slides' dense formula step by step,
L1 by reweighting, NNDSVD init, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data import Ratings
from mfjax.losses import Factors
from mfjax.losses import divergences as dv
from mfjax.solvers.nmf import nmf, nmf_init, nndsvd

ITERS = 40


@pytest.fixture(scope="module")
def data():
    """Nonnegative rank-3 data plus noise, 50% observed, 80/20 split."""
    rng = np.random.default_rng(0)
    m, n = 40, 30
    X = rng.random((m, 3)) @ rng.random((3, n)) + 0.1 * rng.random((m, n)) + 0.05
    rows, cols = np.nonzero(rng.random((m, n)) < 0.5)
    perm = rng.permutation(rows.size)
    k = int(0.8 * rows.size)
    tr, te = perm[:k], perm[k:]
    train = Ratings.create(rows[tr], cols[tr], X[rows[tr], cols[tr]], (m, n))
    test = Ratings.create(rows[te], cols[te], X[rows[te], cols[te]], (m, n))
    return train, test


@pytest.mark.parametrize("loss", ["l2", "kl", "is"])
def test_mu_monotone_and_nonnegative(data, loss):
    train, test = data
    res = nmf(train, 3, loss=loss, num_steps=ITERS, init="random", key=jax.random.key(1),
              eval_set=test)
    L = np.asarray(res.trace.loss)
    assert np.all(np.isfinite(L))
    # non-increasing up to float32 round-off
    assert np.all(np.diff(L) <= 1e-5 * np.abs(L[:-1]) + 1e-6), np.diff(L).max()
    assert L[-1] < 0.5 * L[0]
    assert float(jnp.min(res.params.U)) >= 0 and float(jnp.min(res.params.V)) >= 0
    # the trace is the divergence of mfjax.losses.divergences
    np.testing.assert_allclose(L[-1], float(dv.divergence(loss)(res.params, train)), rtol=1e-5)
    # and it generalises: held-out RMSE well below the mean predictor's
    mean_rmse = np.sqrt(np.mean((np.asarray(test.values) - train.mean()) ** 2))
    assert float(res.trace.eval_metric[-1]) < 0.6 * mean_rmse


def test_l2_with_ridge_monotone(data):
    train, test = data
    for weighted in (False, True):
        res = nmf(train, 3, loss="l2", l2=0.5, weighted_l2=weighted, num_steps=ITERS,
                  init="random", key=jax.random.key(1), eval_set=test)
        L = np.asarray(res.trace.loss)
        assert np.all(np.diff(L) <= 1e-5 * np.abs(L[:-1]) + 1e-6)


def _slides_mu_dense(U, V, X, W, eps):
    """Slides eqs 12-13 verbatim with their V_s = our V.T (dense numpy, float64)."""
    Vs = V.T
    U = U * ((W * X) @ Vs.T) / ((W * (U @ Vs)) @ Vs.T + eps)
    Vs = Vs * (U.T @ (W * X)) / (U.T @ (W * (U @ Vs)) + eps)
    return U, Vs.T


@pytest.mark.parametrize("observed", ["full", "masked"])
def test_l2_mu_matches_slides_formula_step_by_step(observed):
    rng = np.random.default_rng(2)
    m, n, r = 8, 6, 2
    X = rng.random((m, n)) * 4 + 0.5
    W = np.ones((m, n)) if observed == "full" else (rng.random((m, n)) < 0.6).astype(float)
    W[:, 0] = 1.0
    W[0, :] = 1.0  # no empty rows / columns
    U0, V0 = rng.random((m, r)) + 0.1, rng.random((n, r)) + 0.1
    eps = 1e-10
    with jax.enable_x64(True):
        train = Ratings.from_dense(X, W, dtype=np.float64)
        p = Factors(jnp.asarray(U0), jnp.asarray(V0))
        U, V = U0, V0
        for _ in range(5):
            p = nmf(train, r, loss="l2", num_steps=1, init=p, eps=eps, dtype=jnp.float64).params
            U, V = _slides_mu_dense(U, V, X, W, eps)
            np.testing.assert_allclose(np.asarray(p.U), U, rtol=1e-10)
            np.testing.assert_allclose(np.asarray(p.V), V, rtol=1e-10)


def test_l1_reweighted_decreases(data):
    train, _ = data
    delta = 1e-3
    res = nmf(train, 3, loss="l1", num_steps=ITERS, init="random", key=jax.random.key(1),
              delta=delta)
    L = np.asarray(res.trace.loss)
    assert np.all(np.isfinite(L))
    assert L[-1] < 0.5 * L[0]
    # the true L1 never rises by more than the smoothing slack delta/2 per entry
    assert np.all(np.diff(L) <= delta / 2 * train.nnz)
    np.testing.assert_allclose(L[-1], float(dv.l1_divergence(res.params, train)), rtol=1e-5)
    assert float(jnp.min(res.params.U)) >= 0


def test_l1_smoothed_objective_monotone_per_iteration(data):
    """One iteration at a time (init = previous factors) in float64: the Huber-
    smoothed L1 (what the reweighted MU majorizes) is non-increasing."""
    train, _ = data
    delta = 1e-2
    x = np.asarray(train.values, np.float64)
    r_, c_ = np.asarray(train.rows), np.asarray(train.cols)

    def smoothed(p):
        r = np.abs(x - np.sum(np.asarray(p.U)[r_] * np.asarray(p.V)[c_], 1))
        return np.sum(np.where(r >= delta, r, r * r / (2 * delta) + delta / 2))

    with jax.enable_x64(True):
        p = nmf_init(train, 3, "random", key=jax.random.key(4), dtype=jnp.float64)
        vals = [smoothed(p)]
        for _ in range(8):
            p = nmf(train.astype(np.float64), 3, loss="l1", num_steps=1, init=p, delta=delta,
                    dtype=jnp.float64).params
            vals.append(smoothed(p))
    assert np.all(np.diff(vals) <= 1e-9 * vals[0]), np.diff(vals)
    assert vals[-1] < vals[0]


def test_nndsvd_init_matches_dense_svd_and_is_nonnegative(data):
    rng = np.random.default_rng(3)
    m, n, r = 30, 20, 3
    X = rng.random((m, r)) @ rng.random((r, n)) + 1.0
    W = (rng.random((m, n)) < 0.7).astype(float)
    train = Ratings.from_dense(X, W)
    with jax.enable_x64(True):
        t64 = train.astype(np.float64)
        p = nndsvd(t64, r, fill_zeros=False, svd_iters=30)
        # reference: dense SVD of the mean-filled matrix (NNDSVD's first triplet)
        mu = np.mean(np.asarray(train.values, np.float64))
        A = np.where(W > 0, X, mu)
        Ud, s, Vt = np.linalg.svd(A)
        np.testing.assert_allclose(np.asarray(p.U[:, 0]), np.sqrt(s[0]) * np.abs(Ud[:, 0]),
                                   rtol=1e-6)
        np.testing.assert_allclose(np.asarray(p.V[:, 0]), np.sqrt(s[0]) * np.abs(Vt[0]),
                                   rtol=1e-6)
        # each later column is the dominant sign part of a singular pair, scaled
        for k in range(1, r):
            a, b = Ud[:, k], Vt[k]
            ap, an, bp, bn = (np.maximum(z, 0) for z in (a, -a, b, -b))
            mp = np.linalg.norm(ap) * np.linalg.norm(bp)
            mn = np.linalg.norm(an) * np.linalg.norm(bn)
            uu, vv, mm = (ap, bp, mp) if mp >= mn else (an, bn, mn)
            exp_u = np.sqrt(s[k] * mm) * uu / np.linalg.norm(uu)
            exp_v = np.sqrt(s[k] * mm) * vv / np.linalg.norm(vv)
            got_u, got_v = np.asarray(p.U[:, k]), np.asarray(p.V[:, k])
            # the SVD's sign is arbitrary: accept the pair of either sign
            ok = np.allclose(got_u, exp_u, atol=1e-6) and np.allclose(got_v, exp_v, atol=1e-6)
            if not ok:  # flipped singular pair: roles of + and - swap
                a, b = -a, -b
                ap, an, bp, bn = (np.maximum(z, 0) for z in (a, -a, b, -b))
                uu, vv = (ap, bp) if mp >= mn else (an, bn)
                exp_u = np.sqrt(s[k] * mm) * uu / np.linalg.norm(uu)
                exp_v = np.sqrt(s[k] * mm) * vv / np.linalg.norm(vv)
                ok = np.allclose(got_u, exp_u, atol=1e-6) and np.allclose(got_v, exp_v,
                                                                           atol=1e-6)
            assert ok, k
        assert np.all(np.asarray(p.U) >= 0) and np.all(np.asarray(p.V) >= 0)
    train, test = data
    pa = nmf_init(train, r, "nndsvda")
    assert float(jnp.min(pa.U)) > 0 and float(jnp.min(pa.V)) > 0  # zeros filled for MU
    res = nmf(train, r, loss="l2", num_steps=ITERS, init="nndsvda", eval_set=test)
    L = np.asarray(res.trace.loss)
    assert np.all(np.diff(L) <= 1e-5 * np.abs(L[:-1]) + 1e-6)


def test_bad_input(data):
    train, _ = data
    neg = train.with_values(np.where(np.arange(train.nnz) == 3, -1.0, train.values))
    with pytest.raises(ValueError, match="nonnegative data; training value -1.0 at entry 3"):
        nmf(neg, 2)
    nan = train.with_values(np.where(np.arange(train.nnz) == 4, np.nan, train.values))
    with pytest.raises(ValueError, match="non-finite value nan at entry 4"):
        nmf(nan, 2)
    zero = train.with_values(np.where(np.arange(train.nnz) == 0, 0.0, train.values))
    with pytest.raises(ValueError, match="strictly positive"):
        nmf(zero, 2, loss="is")
    with pytest.raises(ValueError, match="rank"):
        nmf(train, 0)
    with pytest.raises(ValueError, match="rank"):
        nmf(train, 31)
    with pytest.raises(ValueError, match="l2"):
        nmf(train, 2, l2=-0.1)
    with pytest.raises(ValueError, match="only"):
        nmf(train, 2, loss="kl", l2=0.1)
    with pytest.raises(ValueError, match="unknown divergence"):
        nmf(train, 2, loss="hinge")
    with pytest.raises(ValueError, match="init"):
        nmf(train, 2, init="svd++")
    with pytest.raises(ValueError, match="nonnegative"):
        nmf(train, 2, init=Factors(-jnp.ones((40, 2)), jnp.ones((30, 2))))
