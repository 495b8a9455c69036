"""Smooth / hard quantizers of DMF-D (mfjax.models.quantizer)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from mfjax.models import quantizer as Q

LEVELS = (1.0, 2.0, 3.0, 4.0, 5.0)


def eq2_reference(x, b, levels):
    """Paper eq. 2 (interval form), numpy: I_v for b_{v-1} <= x < b_v."""
    return np.asarray(levels)[np.searchsorted(np.asarray(b), np.asarray(x), side="right")]


def test_check_levels_errors():
    with pytest.raises(ValueError, match="at least 2"):
        Q.check_levels([3.0])
    with pytest.raises(ValueError, match="increasing"):
        Q.check_levels([1.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="equally spaced"):
        Q.check_levels([1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="d-1 = 4"):
        Q.quantize_hard(jnp.ones(3), jnp.ones(3), LEVELS)
    np.testing.assert_allclose(Q.uniform_boundaries(LEVELS), [1.5, 2.5, 3.5, 4.5])


def test_hard_quantizer_matches_interval_form_and_rounding():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 7.0, 4000)
    b = np.array([1.3, 2.7, 3.4, 4.6])  # each b_v inside (I_v, I_{v+1}): eq. 3 == eq. 2
    np.testing.assert_array_equal(np.asarray(Q.quantize_hard(x, b, LEVELS)), eq2_reference(x, b, LEVELS))
    # uniform boundaries = rounding to the nearest level, clipped to [1, 5]
    xr = x[np.abs(x - np.round(x)) != 0.5]
    np.testing.assert_array_equal(np.asarray(Q.round_to_levels(xr, LEVELS)), np.clip(np.round(xr), 1, 5))
    out = np.asarray(Q.quantize_hard(x, b, LEVELS))
    assert set(np.unique(out)) <= set(LEVELS)


def test_smooth_approaches_hard_as_lambda_grows():
    rng = np.random.default_rng(1)
    b = np.array([1.4, 2.6, 3.5, 4.45])
    x = rng.uniform(0.0, 6.0, 5000)
    x = x[np.min(np.abs(x[:, None] - b[None, :]), axis=1) > 0.02]  # away from the jumps
    hard = np.asarray(Q.quantize_hard(x, b, LEVELS))
    errs = [float(np.max(np.abs(np.asarray(Q.smooth_quantize(x, b, LEVELS, lam)) - hard)))
            for lam in (1.0, 10.0, 100.0, 1e4)]
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-6
    # at lam -> 0 every interval maps to its midpoint I_v + Delta / 2
    g0 = np.asarray(Q.smooth_quantize(x, b, LEVELS, 1e-9))
    v = np.clip(np.searchsorted([2.0, 3.0, 4.0], x, side="right"), 0, 3)
    np.testing.assert_allclose(g0, np.asarray(LEVELS)[v] + 0.5, atol=1e-6)


def test_huge_lambda_is_finite_with_finite_gradients():
    b = jnp.asarray([1.5, 2.5, 3.5, 4.5])
    x = jnp.asarray([-1e3, 0.0, 1.5, 2.5 + 1e-7, 3.0, 4.5, 5.0, 1e3])  # includes points on boundaries
    for lam in (1e8, 1e20):
        g = Q.smooth_quantize(x, b, LEVELS, lam)
        assert np.all(np.isfinite(np.asarray(g)))
        f = lambda x, b: jnp.sum(Q.smooth_quantize(x, b, LEVELS, lam) ** 2)
        gx, gb = jax.grad(f, argnums=(0, 1))(x, b)
        assert np.all(np.isfinite(np.asarray(gx))) and np.all(np.isfinite(np.asarray(gb)))
    # G at lam=1e8 equals Q_b except exactly at a boundary
    xs = jnp.asarray([0.3, 1.49, 1.51, 2.2, 3.7, 4.49, 4.51, 9.0])
    np.testing.assert_array_equal(np.asarray(Q.smooth_quantize(xs, b, LEVELS, 1e8)),
                                  np.asarray(Q.quantize_hard(xs, b, LEVELS)))


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.uniform(0.5, 5.5, 50), jnp.float64)
        b = jnp.asarray([1.4, 2.6, 3.5, 4.45], jnp.float64)
        # keep FD steps inside one interval
        x = x[np.min(np.abs(np.asarray(x)[:, None] - np.array([2.0, 3.0, 4.0])), axis=1) > 1e-3]
        t = jnp.asarray(rng.integers(1, 6, x.shape[0]), jnp.float64)
        f = lambda x, b: jnp.mean((Q.smooth_quantize(x, b, LEVELS, 3.0) - t) ** 2)
        gx, gb = jax.grad(f, argnums=(0, 1))(x, b)
        h = 1e-6
        for k in range(4):
            e = jnp.zeros(4, jnp.float64).at[k].set(h)
            fd = (f(x, b + e) - f(x, b - e)) / (2 * h)
            np.testing.assert_allclose(float(gb[k]), float(fd), rtol=1e-5, atol=1e-9)
        for k in range(3):
            e = jnp.zeros(x.shape[0], jnp.float64).at[k].set(h)
            fd = (f(x + e, b) - f(x - e, b)) / (2 * h)
            np.testing.assert_allclose(float(gx[k]), float(fd), rtol=1e-5, atol=1e-9)


def test_penalty_and_lambda_schedule():
    b = jnp.asarray([1.0, 2.0, 4.0, 4.0])
    ref = Q.uniform_boundaries(LEVELS)
    np.testing.assert_allclose(float(Q.boundary_penalty(b, ref, "sum")), 0.25 + 0.25 + 0.25 + 0.25)
    np.testing.assert_allclose(float(Q.boundary_penalty(b, ref, "mean")), 0.25)
    lam = Q.exponential_lambda(0.1, 1.015, every=10)
    np.testing.assert_allclose(float(lam(0)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(lam(25)), 0.1 * 1.015**2, rtol=1e-5)
    np.testing.assert_allclose(float(lam(10_000)), 0.1 * 1.015**1000, rtol=1e-3)
    with pytest.raises(ValueError, match="growth"):
        Q.exponential_lambda(0.1, 0.9)


def test_fit_boundaries_recovers_shifted_quantizer():
    rng = np.random.default_rng(3)
    b_true = np.array([1.3, 2.7, 3.4, 4.6])
    pred = rng.uniform(0.8, 5.2, 6000).astype(np.float32)
    target = eq2_reference(pred, b_true, LEVELS).astype(np.float32)
    res = Q.fit_boundaries(pred, target, LEVELS, steps=600, gamma2=0.0, learning_rate=0.01, lam_end=300.0)
    b = np.asarray(res.boundaries)
    np.testing.assert_allclose(b, b_true, atol=0.05)
    fitted = np.asarray(Q.quantize_hard(pred, b, LEVELS))
    rounded = np.asarray(Q.round_to_levels(pred, LEVELS))
    assert np.sqrt(np.mean((fitted - target) ** 2)) < 0.5 * np.sqrt(np.mean((rounded - target) ** 2))
    assert np.all(np.isfinite(np.asarray(res.loss)))
    # never worse (on the fitting data) than the uniform start
    assert np.mean((fitted - target) ** 2) <= float(res.hard_mse[0]) + 1e-7
