"""Tests of mfjax.solvers.svd: power iteration vs jnp.linalg.svd, SVD completion baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data import Ratings
from mfjax.losses import Factors, masked_sq_loss
from mfjax.metrics import rmse, rmse_from_predictions
from mfjax.solvers.svd import power_iteration_svd, power_iteration_svd_operator, svd_complete


def gapped_matrix(m, n, s_top, seed=0):
    """``Q1 diag(s) Q2^T`` with the given top singular values and a small tail."""
    rng = np.random.default_rng(seed)
    k = min(m, n)
    Q1, _ = np.linalg.qr(rng.normal(size=(m, k)))
    Q2, _ = np.linalg.qr(rng.normal(size=(n, k)))
    s = np.concatenate([s_top, np.linspace(1.0, 0.05, k - len(s_top))])
    return (Q1 * s) @ Q2.T


@pytest.mark.parametrize("m,n", [(30, 20), (15, 25)])
def test_power_iteration_matches_linalg_svd(m, n):
    with jax.enable_x64(True):
        A = jnp.asarray(gapped_matrix(m, n, [12.0, 9.0, 6.5, 4.5, 3.0], seed=m))
        k = 4
        U, s, Vt = power_iteration_svd(A, k, num_iters=2000, tol=1e-12, key=jax.random.key(1))
        Ur, sr, Vtr = jnp.linalg.svd(A, full_matrices=False)
        np.testing.assert_allclose(np.asarray(s), np.asarray(sr[:k]), rtol=1e-9)
        # singular vectors up to sign
        np.testing.assert_allclose(np.abs(np.asarray(U)), np.abs(np.asarray(Ur[:, :k])), atol=1e-6)
        np.testing.assert_allclose(np.abs(np.asarray(Vt)), np.abs(np.asarray(Vtr[:k])), atol=1e-6)
        signs = np.sign(np.sum(np.asarray(U) * np.asarray(Ur[:, :k]), axis=0))
        np.testing.assert_allclose(np.asarray(Vt) * signs[:, None], np.asarray(Vtr[:k]), atol=1e-6)
        # orthonormality and the rank-k reconstruction
        np.testing.assert_allclose(np.asarray(U.T @ U), np.eye(k), atol=1e-9)
        np.testing.assert_allclose(np.asarray(Vt @ Vt.T), np.eye(k), atol=1e-9)


def test_power_iteration_float32_and_lecture_example():
    # the lecture's 4 x 6 example: singular values 14.74, 4.1, 0, 0
    A = np.array([[1, 2, 3, 4, 3, 3], [1, 2, 3, 4, 3, 3], [3, 3, 3, 1, 4, 5], [3, 3, 3, 1, 4, 5]],
                 np.float32)
    U, s, Vt = power_iteration_svd(A, 2)
    np.testing.assert_allclose(np.asarray(s), np.linalg.svd(A, compute_uv=False)[:2], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(U * s @ Vt), A, atol=1e-3)  # A has rank 2
    # k beyond the rank: the extra singular value is ~0 and nothing is NaN
    U3, s3, Vt3 = power_iteration_svd(A, 3, num_iters=50)
    assert np.all(np.isfinite(np.asarray(U3))) and abs(float(s3[2])) < 1e-2


def test_operator_form_equals_dense():
    A = jnp.asarray(gapped_matrix(12, 9, [5.0, 3.0], seed=3), jnp.float32)
    d = power_iteration_svd(A, 2, key=jax.random.key(2))
    o = jax.jit(lambda M: power_iteration_svd_operator(lambda v: M @ v, lambda u: M.T @ u, M.shape, 2,
                                                       key=jax.random.key(2)))(A)
    for a, b in zip(d, o):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_power_iteration_bad_input():
    A = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="k"):
        power_iteration_svd(A, 0)
    with pytest.raises(ValueError, match=r"1\.\.min\(m, n\) = 3"):
        power_iteration_svd(A, 4)
    with pytest.raises(ValueError, match="2-d"):
        power_iteration_svd(np.ones(3), 1)
    with pytest.raises(ValueError, match="NaN"):
        power_iteration_svd(np.array([[1.0, np.nan], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="num_iters"):
        power_iteration_svd(A, 1, num_iters=0)


def _lowrank_ratings(seed=0, m=50, n=40, r=3, density=0.5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = 3.0 + rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) * 0.6 + 0.1 * rng.normal(size=(m, n))
    obs = rng.random((m, n)) < density
    test = rng.random((m, n)) < 0.2
    return (X, Ratings.from_dense(X, obs & ~test, dtype=dtype),
            Ratings.from_dense(X, obs & test, dtype=dtype))


@pytest.mark.parametrize("fill", ["mean", "row_mean", "col_mean"])
def test_svd_complete_beats_mean_predictor(fill):
    X, train, test = _lowrank_ratings()
    res = svd_complete(train, 3, fill, eval_set=test, num_refits=3)
    ev = np.asarray(res.trace.eval_metric)
    mean_rmse = float(rmse_from_predictions(jnp.full(test.nnz, train.mean()), test.values))
    assert ev.shape == (4,)
    assert ev[0] < mean_rmse and ev[-1] < 0.8 * mean_rmse
    assert ev[-1] < ev[0]  # refits help on low-rank data
    np.testing.assert_allclose(ev[-1], float(rmse(res.params, test)), rtol=1e-5)
    np.testing.assert_allclose(float(res.trace.loss[-1]),
                               float(masked_sq_loss(res.params, train, 0.0)), rtol=1e-5)


def test_svd_complete_equals_dense_reference():
    """One-shot baseline == rank-r truncation of the explicitly filled matrix (numpy SVD)."""
    with jax.enable_x64(True):
        X, train, test = _lowrank_ratings(1, m=20, n=15, dtype=np.float64)
        res = svd_complete(train, 2, "row_mean", num_iters=3000, tol=1e-12)
        Xd, Wd = (np.asarray(a) for a in train.to_dense())
        rows = np.asarray(train.rows)
        rm = np.bincount(rows, np.asarray(train.values), 20) / np.maximum(np.bincount(rows, minlength=20), 1)
        F = np.where(Wd > 0, Xd, rm[:, None])
        u, s, vt = np.linalg.svd(F)
        ref = (u[:, :2] * s[:2]) @ vt[:2]
        P = np.asarray(res.params.U @ res.params.V.T)
        np.testing.assert_allclose(P, ref, atol=1e-8)
        assert isinstance(res.params, Factors)


def test_svd_complete_bad_input():
    X, train, test = _lowrank_ratings()
    with pytest.raises(ValueError, match="fill"):
        svd_complete(train, 2, "median")
    with pytest.raises(ValueError, match="rank"):
        svd_complete(train, 0)
    with pytest.raises(ValueError, match="rank"):
        svd_complete(train, 41)
    with pytest.raises(ValueError, match="num_refits"):
        svd_complete(train, 2, num_refits=-1)
    bad = train.with_values(np.where(np.arange(train.nnz) == 0, np.nan, np.asarray(train.values)))
    with pytest.raises(ValueError, match="non-finite"):
        svd_complete(bad, 2)
