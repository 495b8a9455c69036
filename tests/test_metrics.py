"""Tests of mfjax.metrics against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors
from mfjax.metrics import mae, mae_from_predictions, postprocess, rmse, rmse_from_predictions


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    m, n, r = 8, 6, 2
    X = rng.integers(1, 6, size=(m, n)).astype(np.float32)
    W = rng.random((m, n)) < 0.6
    ratings = Ratings.from_dense(X, W)
    U = rng.normal(size=(m, r)).astype(np.float32) + 1.0
    V = rng.normal(size=(n, r)).astype(np.float32) + 1.0
    b = rng.normal(size=m).astype(np.float32)
    c = rng.normal(size=n).astype(np.float32)
    return ratings, X, W, U, V, b, c


def _np_metrics(P, X, W, clip=None, discrete=False):
    P = P[W]
    if clip is not None:
        P = np.clip(P, *clip)
    if discrete:
        P = np.round(P)
    e = P - X[W]
    return np.sqrt(np.mean(e**2)), np.mean(np.abs(e))


@pytest.mark.parametrize("clip,discrete", [(None, False), ((1, 5), False), ((1, 5), True), (None, True)])
@pytest.mark.parametrize("biased", [False, True])
def test_rmse_mae_vs_numpy(clip, discrete, biased):
    ratings, X, W, U, V, b, c = _setup()
    P = U @ V.T
    if biased:
        params = BiasedFactors(jnp.asarray(U), jnp.asarray(V), jnp.asarray(b), jnp.asarray(c),
                               jnp.asarray(3.0, jnp.float32))
        P = P + 3.0 + b[:, None] + c[None, :]
    else:
        params = Factors(jnp.asarray(U), jnp.asarray(V))
    r_ref, a_ref = _np_metrics(P, X, W, clip, discrete)
    np.testing.assert_allclose(float(rmse(params, ratings, clip, discrete)), r_ref, rtol=1e-5)
    np.testing.assert_allclose(float(mae(params, ratings, clip, discrete)), a_ref, rtol=1e-5)


def test_from_predictions_and_postprocess():
    pred = np.array([0.2, 1.49, 2.5, 3.51, 7.0], np.float32)
    vals = np.array([1, 1, 3, 4, 5], np.float32)
    np.testing.assert_allclose(np.asarray(postprocess(pred, (1, 5))), np.clip(pred, 1, 5))
    np.testing.assert_allclose(np.asarray(postprocess(pred, (1, 5), True)), [1, 1, 2, 4, 5])
    e = np.clip(pred, 1, 5) - vals
    np.testing.assert_allclose(float(rmse_from_predictions(pred, vals, (1, 5))), np.sqrt(np.mean(e**2)),
                               rtol=1e-6)
    np.testing.assert_allclose(float(mae_from_predictions(pred, vals, (1, 5))), np.mean(np.abs(e)),
                               rtol=1e-6)
    # jit-compatible (clip as static numbers)
    f = jax.jit(lambda p: rmse_from_predictions(p, vals, (1.0, 5.0), True))
    np.testing.assert_allclose(float(f(pred)), np.sqrt(np.mean(([1, 1, 2, 4, 5] - vals) ** 2)), rtol=1e-6)


def test_perfect_model_zero_error():
    ratings, X, W, U, V, b, c = _setup(1)
    P = U @ V.T
    exact = Ratings.from_dense(P, W)
    params = Factors(jnp.asarray(U), jnp.asarray(V))
    assert float(rmse(params, exact)) < 1e-5
    assert float(mae(params, exact)) < 1e-5


def test_bad_clip():
    with pytest.raises(ValueError, match="lo <= hi"):
        postprocess(jnp.ones(3), (5, 1))
    with pytest.raises(ValueError, match="pair"):
        postprocess(jnp.ones(3), 5)
