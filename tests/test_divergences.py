"""NMF divergences: against numpy/scipy formulas, COO vs dense mask, >= 0, zero at X = U V^T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from mfjax.data import Ratings
from mfjax.losses import Factors, masked_sq_loss
from mfjax.losses import divergences as dv

NAMES = ["l2", "l1", "kl", "is"]


def _np_div(name, x, y, eps=dv.DEFAULT_EPS):
    """Reference formulas in float64 numpy / scipy."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if name == "l2":
        return np.sum((x - y) ** 2)
    if name == "l1":
        return np.sum(np.abs(x - y))
    if name == "kl":
        return np.sum(scipy.special.kl_div(x, np.maximum(y, eps)))
    xs, ys = np.maximum(x, eps), np.maximum(y, eps)
    return np.sum(xs / ys - np.log(xs / ys) - 1.0)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    m, n, r = 7, 5, 2
    U = rng.random((m, r)) + 0.1
    V = rng.random((n, r)) + 0.1
    X = rng.random((m, n)) * 3 + 0.5
    X[0, 0] = 0.0  # exercises 0 log 0 for KL (IS floors x)
    W = (rng.random((m, n)) < 0.6).astype(np.float64)
    W[0, 0] = 1.0
    return U, V, X, W


@pytest.mark.parametrize("name", NAMES)
def test_coo_and_dense_match_reference(problem, name):
    U, V, X, W = problem
    with jax.enable_x64(True):
        ratings = Ratings.from_dense(X, W, dtype=np.float64)
        p = Factors(jnp.asarray(U), jnp.asarray(V))
        rows, cols = np.nonzero(W)
        ref = _np_div(name, X[rows, cols], (U @ V.T)[rows, cols])
        coo = float(dv.divergence(name)(p, ratings))
        dense = float(dv.divergence_dense(name)(p, jnp.asarray(X), jnp.asarray(W)))
    np.testing.assert_allclose(coo, ref, rtol=1e-10)
    np.testing.assert_allclose(dense, ref, rtol=1e-10)


def test_l2_is_the_masked_sq_loss_data_term(problem):
    U, V, X, W = problem
    ratings = Ratings.from_dense(X, W)
    p = Factors(jnp.asarray(U, jnp.float32), jnp.asarray(V, jnp.float32))
    assert float(dv.l2_divergence(p, ratings)) == float(masked_sq_loss(p, ratings, 0.0))


def test_kl_zero_data_and_zero_prediction_are_finite():
    x = jnp.array([0.0, 0.0, 2.0, 2.0])
    y = jnp.array([0.0, 1.5, 0.0, 2.0])
    v = np.asarray(dv.kl_elementwise(x, y))
    assert np.all(np.isfinite(v))
    assert v[0] == pytest.approx(dv.DEFAULT_EPS)  # 0 log 0 = 0 -> y (floored)
    assert v[1] == pytest.approx(1.5)             # x = 0 contributes y
    assert v[2] > 10                              # large but finite
    assert v[3] == 0.0
    # finite gradient as well
    g = jax.grad(lambda y: jnp.sum(dv.kl_elementwise(x, y)))(y)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("name", NAMES)
def test_nonnegative_and_zero_at_exact_factorization(name):
    rng = np.random.default_rng(1)
    U = rng.random((6, 2)) + 0.05
    V = rng.random((4, 2)) + 0.05
    X = U @ V.T
    W = (rng.random(X.shape) < 0.7).astype(np.float64)
    with jax.enable_x64(True):
        ratings = Ratings.from_dense(X, W, dtype=np.float64)
        p = Factors(jnp.asarray(U), jnp.asarray(V))
        assert float(dv.divergence(name)(p, ratings)) == pytest.approx(0.0, abs=1e-12)
        assert float(
            dv.divergence_dense(name)(p, jnp.asarray(X), jnp.asarray(W))
        ) == pytest.approx(0.0, abs=1e-12)
        # random nonnegative perturbations are strictly positive
        for k in range(5):
            q = Factors(jnp.asarray(U * rng.uniform(0.5, 1.5, U.shape)), jnp.asarray(V))
            assert float(dv.divergence(name)(q, ratings)) > 0.0


def test_elementwise_nonnegative_on_grid():
    x = jnp.linspace(0.0, 5.0, 41)[:, None]
    y = jnp.linspace(0.0, 5.0, 41)[None, :]
    assert float(jnp.min(dv.kl_elementwise(x, y))) >= 0.0
    assert float(jnp.min(dv.is_elementwise(x + 0.01, y))) >= 0.0


def test_dense_ignores_unobserved_infinities():
    X = np.array([[0.0, 1.0], [2.0, 3.0]])
    W = np.array([[0.0, 1.0], [1.0, 1.0]])
    p = Factors(jnp.zeros((2, 1)), jnp.zeros((2, 1)))  # Y = 0 everywhere
    v = dv.is_divergence_dense(p, jnp.asarray(X), jnp.asarray(W))
    assert np.isfinite(float(v))


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown divergence 'huber'"):
        dv.divergence("huber")
    assert dv.divergence("Frobenius") is dv.l2_divergence
    assert dv.divergence_dense("itakura-saito") is dv.is_divergence_dense
