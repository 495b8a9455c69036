"""Tests of mfjax.losses.masked: values vs numpy, dense == COO, gradients vs jax.grad and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data import Ratings
from mfjax.losses import (
    BiasedFactors,
    Factors,
    init_biased_factors,
    init_factors,
    l2_penalty,
    masked_mse,
    masked_sq_grad,
    masked_sq_grad_dense,
    masked_sq_loss,
    masked_sq_loss_biased,
    masked_sq_loss_dense,
    masked_sq_value_and_grad,
    predict,
    predict_dense,
)
from mfjax.losses import masked as masked_mod

M, N, R = 9, 7, 3

# jit once per module (eager calls of the chunked scans would re-trace every call)
_loss = jax.jit(masked_sq_loss, static_argnames=("scale",))
_loss_dense = jax.jit(masked_sq_loss_dense, static_argnames=("scale",))
_vg = jax.jit(masked_sq_value_and_grad, static_argnames=("scale", "chunk_size"))


def enable_x64():
    """float64 only inside the block."""
    return jax.enable_x64(True)


def problem(seed=0, density=0.5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, N))
    W = rng.random((M, N)) < density
    W[0, 0] = True
    ratings = Ratings.from_dense(X, W, dtype=dtype)
    return X, W, ratings, rng


def rand_params(rng, biased=False, dtype=np.float64):
    U = jnp.asarray(rng.normal(size=(M, R)), dtype)
    V = jnp.asarray(rng.normal(size=(N, R)), dtype)
    if not biased:
        return Factors(U, V)
    return BiasedFactors(U, V, jnp.asarray(rng.normal(size=M), dtype),
                         jnp.asarray(rng.normal(size=N), dtype), jnp.asarray(0.7, dtype))


def numpy_loss(p, X, W, l2, scale="sum", l2_bias=None, wr=None, wc=None):
    U, V = np.asarray(p.U), np.asarray(p.V)
    P = U @ V.T
    wr = np.ones(M) if wr is None else np.asarray(wr)
    wc = np.ones(N) if wc is None else np.asarray(wc)
    reg = l2 * (np.sum(wr * np.sum(U**2, 1)) + np.sum(wc * np.sum(V**2, 1)))
    if isinstance(p, BiasedFactors):
        b, c = np.asarray(p.row_bias), np.asarray(p.col_bias)
        P = P + float(p.mean) + b[:, None] + c[None, :]
        lb = l2 if l2_bias is None else l2_bias
        reg += lb * (np.sum(wr * b**2) + np.sum(wc * c**2))
    data = np.sum(W * (X - P) ** 2)
    if scale == "mean":
        data /= W.sum()
    return data + reg


CASES = [
    dict(biased=False, scale="sum", l2=0.3, l2_bias=None, weighted=False),
    dict(biased=False, scale="mean", l2=0.0, l2_bias=None, weighted=False),
    dict(biased=True, scale="sum", l2=0.2, l2_bias=0.05, weighted=False),
    dict(biased=True, scale="mean", l2=0.1, l2_bias=None, weighted=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_values_grads_all_forms_agree_float64(case):
    with enable_x64():
        X, W, ratings, rng = problem()
        p = rand_params(rng, case["biased"])
        wts = None
        if case["weighted"]:
            wts = (jnp.asarray(ratings.row_counts(), jnp.float64),
                   jnp.asarray(ratings.col_counts(), jnp.float64))
        kw = dict(scale=case["scale"], l2_bias=case["l2_bias"], l2_weights=wts)
        l2 = case["l2"]
        ref = numpy_loss(p, X, W, l2, case["scale"], case["l2_bias"],
                         *(wts if wts is not None else (None, None)))
        Xj, Wj = jnp.asarray(X * W), jnp.asarray(W, jnp.float64)
        v_coo = _loss(p, ratings, l2, **kw)
        v_dense = _loss_dense(p, Xj, Wj, l2, **kw)
        v_vg, g_vg = _vg(p, ratings, l2, **kw)
        np.testing.assert_allclose(float(v_coo), ref, rtol=1e-12)
        np.testing.assert_allclose(float(v_dense), ref, rtol=1e-12)
        np.testing.assert_allclose(float(v_vg), ref, rtol=1e-12)

        g_ad = jax.jit(jax.grad(lambda q: masked_sq_loss(q, ratings, l2, **kw)))(p)
        g_ad_dense = jax.jit(jax.grad(lambda q: masked_sq_loss_dense(q, Xj, Wj, l2, **kw)))(p)
        g_cf = jax.jit(lambda q: masked_sq_grad(q, ratings, l2, **kw))(p)
        g_cf_dense = jax.jit(lambda q: masked_sq_grad_dense(q, Xj, Wj, l2, **kw))(p)
        for g in (g_ad_dense, g_cf, g_cf_dense, g_vg):
            assert type(g) is type(p)
            for a, b in zip(g, g_ad):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)

        # central finite differences along a random direction
        d = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p)
        if case["biased"]:
            d = d._replace(mean=jnp.asarray(0.3))
        f = lambda q: float(_loss(q, ratings, l2, **kw))  # noqa: E731
        h = 1e-6
        plus = jax.tree_util.tree_map(lambda a, b: a + h * b, p, d)
        minus = jax.tree_util.tree_map(lambda a, b: a - h * b, p, d)
        fd = (f(plus) - f(minus)) / (2 * h)
        an = sum(float(jnp.vdot(a, b)) for a, b in zip(g_cf, d))
        np.testing.assert_allclose(an, fd, rtol=1e-6)


def test_slides_equations_literally():
    """Eqs 5, 6 written with the slides' V (r x n) equal our closed form (our V = theirs^T)."""
    with enable_x64():
        X, W, ratings, rng = problem(1)
        p = rand_params(rng)
        lam = 0.4
        U, Vs = np.asarray(p.U), np.asarray(p.V).T  # slides' V is (r, n)
        dU = -2 * (W * X) @ Vs.T + 2 * (W * (U @ Vs)) @ Vs.T + 2 * lam * U
        dV = -2 * U.T @ (W * X) + 2 * U.T @ (W * (U @ Vs)) + 2 * lam * Vs
        g = masked_sq_grad(p, ratings, lam)
        np.testing.assert_allclose(np.asarray(g.U), dU, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(g.V), dV.T, rtol=1e-12)
        # the lecture's 1/2 convention: same minimiser, gradient halved
        half = lambda q: 0.5 * masked_sq_loss(q, ratings, lam)  # noqa: E731
        np.testing.assert_allclose(np.asarray(jax.grad(half)(p).U), dU / 2, rtol=1e-12)


def test_chunked_paths_match_flat_reference():
    """The chunked scan (several chunks, padded tail) equals one flat pass."""
    with enable_x64():
        X, W, ratings, rng = problem(2, density=0.8)
        p = rand_params(rng, biased=True)
        e = np.asarray(ratings.values) - np.asarray(predict(p, ratings.rows, ratings.cols))
        for cs in (4, 10_000):
            v, g = _vg(p, ratings, 0.1, chunk_size=cs)
            v_ref, g_ref = _vg(p, ratings, 0.1, chunk_size=ratings.nnz)
            np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-12)
            for a, b in zip(g, g_ref):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
            s = jax.jit(masked_mod._sum_sq_residuals, static_argnums=2)(p, ratings, cs)
            np.testing.assert_allclose(float(s), np.sum(e * e), rtol=1e-12)


@pytest.mark.parametrize("biased", [False, True])
def test_masked_mse_closed_form_is_wired_into_jax_grad(biased):
    with enable_x64():
        X, W, ratings, rng = problem(3)
        p = rand_params(rng, biased)
        f_ad = masked_mse(ratings, 0.25, scale="mean")
        f_cf = masked_mse(ratings, 0.25, scale="mean", grad="closed_form")
        v1, g1 = jax.value_and_grad(f_ad)(p)
        v2, g2 = jax.jit(jax.value_and_grad(f_cf))(p)
        np.testing.assert_allclose(float(v1), float(v2), rtol=1e-12)
        for a, b in zip(g1, g2):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
        # a cotangent other than 1 scales the gradient
        g3 = jax.grad(lambda q: 3.0 * f_cf(q))(p)
        np.testing.assert_allclose(np.asarray(g3.U), 3 * np.asarray(g1.U), rtol=1e-10)


def test_float32_coo_and_dense_values_equal():
    X, W, ratings, rng = problem(4, dtype=np.float32)
    p = rand_params(rng, dtype=np.float32)
    Xj, Wj = ratings.to_dense()
    a = masked_sq_loss(p, ratings, 0.1)
    b = masked_sq_loss_dense(p, Xj, Wj, 0.1)
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_biased_predict_and_loss():
    X, W, ratings, rng = problem(5)
    p = rand_params(rng, biased=True, dtype=np.float32)
    P = np.asarray(p.U) @ np.asarray(p.V).T + 0.7 + np.asarray(p.row_bias)[:, None] \
        + np.asarray(p.col_bias)[None, :]
    np.testing.assert_allclose(np.asarray(predict_dense(p)), P, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(predict(p, ratings.rows, ratings.cols)),
                               P[ratings.rows, ratings.cols], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(masked_sq_loss_biased(p, ratings, 0.1, 0.2)),
                               float(masked_sq_loss(p, ratings, 0.1, l2_bias=0.2)), rtol=1e-6)
    with pytest.raises(TypeError, match="BiasedFactors"):
        masked_sq_loss_biased(Factors(p.U, p.V), ratings, 0.1)
    q = init_biased_factors(jax.random.key(0), (M, N), R, mean=3.5)
    assert float(q.mean) == 3.5 and not np.any(np.asarray(q.row_bias))
    # mean is not regularised, biases are
    assert float(l2_penalty(q._replace(mean=jnp.asarray(100.0)), 1.0)) == pytest.approx(
        float(l2_penalty(q, 1.0)))


def test_bad_input():
    X, W, ratings, rng = problem()
    p = rand_params(rng, dtype=np.float32)
    with pytest.raises(ValueError, match=r"l2 \(lambda\) must be >= 0, got -1"):
        masked_sq_loss(p, ratings, -1.0)
    with pytest.raises(ValueError, match="l2"):
        masked_sq_grad(p, ratings, -0.5)
    with pytest.raises(ValueError, match="l2"):
        masked_mse(ratings, -2.0)
    with pytest.raises(ValueError, match="l2_bias"):
        masked_sq_loss(p, ratings, 1.0, l2_bias=-1.0)
    with pytest.raises(ValueError, match="scale"):
        masked_sq_loss(p, ratings, 0.0, scale="avg")
    with pytest.raises(ValueError, match="grad"):
        masked_mse(ratings, 0.0, grad="numeric")
    with pytest.raises(ValueError, match="rank"):
        init_factors(jax.random.key(0), (M, N), 0)
    with pytest.raises(ValueError, match="rank"):
        init_factors(jax.random.key(0), (M, N), N + 1)
    # a traced l2 is not checked (and works)
    v = jax.jit(lambda lam: masked_sq_loss(p, ratings, lam))(0.5)
    assert np.isfinite(float(v))
