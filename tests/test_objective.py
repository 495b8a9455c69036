"""Tests of mfjax.objective: the one masked-MF objective and its formulas.

References: numpy (values, normal equations), ``jax.grad`` / ``jax.hessian``
(gradients, Gauss-Newton blocks), direct evaluation along a line (the
quartic), and the compile cache (one program for every fold and lambda).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
from mfjax import objective as O
from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors

M, N, R = 11, 8, 3


def problem(seed=0, density=0.5):
    rng = np.random.default_rng(seed)
    mask = rng.random((M, N)) < density
    rows, cols = np.nonzero(mask)
    vals = rng.normal(3.0, 1.0, rows.size)
    return Ratings(rows.astype(np.int32), cols.astype(np.int32), vals, (M, N)), rng


def params(rng, biased=False):
    U, V = rng.normal(size=(M, R)), rng.normal(size=(N, R))
    if biased:
        return BiasedFactors(jnp.asarray(U), jnp.asarray(V), jnp.asarray(rng.normal(size=M)),
                             jnp.asarray(rng.normal(size=N)), jnp.asarray(0.3))
    return Factors(jnp.asarray(U), jnp.asarray(V))


def numpy_value(p, r, l2, s=1.0, w=None, l2_bias=None):
    U, V = np.asarray(p.U), np.asarray(p.V)
    rows, cols, x = np.asarray(r.rows), np.asarray(r.cols), np.asarray(r.values)
    pred = np.sum(U[rows] * V[cols], axis=1)
    if isinstance(p, BiasedFactors):
        pred = pred + float(p.mean) + np.asarray(p.row_bias)[rows] + np.asarray(p.col_bias)[cols]
    w = np.ones_like(x) if w is None else w
    out = s * np.sum(w * (x - pred) ** 2) + l2 * (np.sum(U * U) + np.sum(V * V))
    if isinstance(p, BiasedFactors):
        lb = l2 if l2_bias is None else l2_bias
        out += lb * (np.sum(np.asarray(p.row_bias) ** 2) + np.sum(np.asarray(p.col_bias) ** 2))
    return out


@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("scale", ["sum", "mean"])
def test_value_and_grad_match_numpy_and_autodiff(biased, scale):
    with jax.enable_x64(True):
        r, rng = problem()
        p = params(rng, biased)
        obj = O.mf_objective(r, 0.3, scale=scale, l2_bias=0.7, chunk_size=7)
        s = 1.0 if scale == "sum" else 1.0 / r.nnz
        ref = numpy_value(p, r, 0.3, s, l2_bias=0.7)
        v, g = jax.jit(O.value_and_grad)(obj, p)
        np.testing.assert_allclose(float(v), ref, rtol=1e-12)
        np.testing.assert_allclose(float(jax.jit(O.value)(obj, p)), ref, rtol=1e-12)
        g_ad = jax.grad(lambda q: O.value(obj, q))(p)
        g_cf = jax.grad(O.loss)(p, obj)
        for a, b, c in zip(g, g_ad, g_cf):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(np.asarray(c), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_padding_and_entry_weights():
    """Weight-0 padding changes nothing; entry weights weight the squared residuals."""
    with jax.enable_x64(True):
        r, rng = problem(1)
        p = params(rng)
        base = O.mf_objective(r, 0.2, scale="mean")
        padded = O.mf_objective(r, 0.2, scale="mean", pad_to=O.bucket_size(r.nnz) + 5)
        assert padded.num_entries > r.nnz and float(padded.num_ratings) == r.nnz
        np.testing.assert_allclose(float(O.value(padded, p)), float(O.value(base, p)), rtol=1e-12)
        for a, b in zip(O.grad(padded, p), O.grad(base, p)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
        w = rng.uniform(0.5, 2.0, r.nnz)
        weighted = O.mf_objective(r, 0.2, entry_weights=w)
        np.testing.assert_allclose(float(O.value(weighted, p)), numpy_value(p, r, 0.2, w=w),
                                   rtol=1e-12)
        g = O.grad(weighted, p)
        g_ad = jax.grad(lambda q: O.value(weighted, q))(p)
        for a, b in zip(g, g_ad):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
        with pytest.raises(ValueError, match="pad_to"):
            O.mf_objective(r, 0.2, pad_to=r.nnz - 1)


def test_losses_are_the_objective():
    """The public losses are wrappers of the objective: same numbers."""
    with jax.enable_x64(True):
        r, rng = problem(2)
        p = params(rng, biased=True)
        obj = O.mf_objective(r, 0.4, scale="mean")
        np.testing.assert_allclose(float(mf.losses.masked_sq_loss(p, r, 0.4, scale="mean")),
                                   float(O.value(obj, p)), rtol=1e-13)
        assert mf.losses.masked_mse(r, 0.4, scale="mean").objective.shape == r.shape


def test_quartic_along_a_direction():
    with jax.enable_x64(True):
        r, rng = problem(3)
        x, d = params(rng), params(rng)
        w = rng.uniform(0.5, 2.0, r.nnz)
        obj = O.mf_objective(r, 0.3, scale="mean", entry_weights=w, chunk_size=5,
                             l2_weights=(jnp.arange(1.0, M + 1), jnp.ones(N)))
        c = np.asarray(O.quartic_coefficients(obj, x, d))
        for a in (0.0, 0.3, -1.1, 2.0):
            pa = Factors(x.U + a * d.U, x.V + a * d.V)
            np.testing.assert_allclose(np.polyval(c[::-1], a), float(O.value(obj, pa)), rtol=1e-11)
        coeffs, es = O.quartic_with_products(obj, x, d)
        a = 0.37
        pa = Factors(x.U + a * d.U, x.V + a * d.V)
        g = O.grad_from_products(obj, pa, es, a)
        for u, v in zip(g, O.grad(obj, pa)):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-10, atol=1e-12)


def test_normal_equations_and_gauss_newton_blocks():
    with jax.enable_x64(True):
        r, rng = problem(4)
        p = params(rng)
        w = rng.uniform(0.5, 2.0, r.nnz)
        obj = O.mf_objective(r, 0.5, scale="mean", entry_weights=w)
        A, b, n = O.normal_equations(obj, p.V, chunk_size=4)
        rows, cols, x = np.asarray(r.rows), np.asarray(r.cols), np.asarray(r.values)
        V = np.asarray(p.V)
        for i in range(M):
            k = rows == i
            np.testing.assert_allclose(np.asarray(A[i]), (V[cols[k]].T * w[k]) @ V[cols[k]],
                                       atol=1e-12)
            np.testing.assert_allclose(np.asarray(b[i]), V[cols[k]].T @ (w[k] * x[k]), atol=1e-12)
            np.testing.assert_allclose(float(n[i]), np.sum(w[k]), atol=1e-12)
        # Gauss-Newton block of U's rows = Hessian of f in U for fixed V (f is quadratic in U)
        (AU, ridge, _), _ = O.gauss_newton_blocks(obj, p)
        H = jax.hessian(lambda U: O.value(obj, Factors(U, p.V)))(p.U)
        for i in range(M):
            np.testing.assert_allclose(np.asarray(AU[i] + jnp.diag(ridge[i])),
                                       np.asarray(H[i, :, i, :]), rtol=1e-10, atol=1e-12)
        dU, dV = O.gauss_newton_diagonal(obj, p)
        np.testing.assert_allclose(np.asarray(dU), np.asarray(jnp.diagonal(AU, axis1=1, axis2=2)
                                                              + ridge), rtol=1e-10)
        # the ridge solve is the normal-equation solution: zero gradient in U
        sol = O.solve_ridge_rows(obj.data_weight * A, obj.data_weight * b, obj.l2, n)
        gU = O.grad(obj, Factors(sol, p.V)).U
        assert float(jnp.max(jnp.abs(gU))) < 1e-10


def test_one_compilation_for_every_fold_and_lambda():
    """The objective is a traced argument: a second lambda and a second fold do not recompile."""
    ratings = mf.data.synthetic(m=60, n=40, rank=2, density=0.3, seed=0)
    folds = [mf.data.split(ratings, (0.8, 0.2), seed=s)[0] for s in (0, 1)]
    size = O.bucket_size(max(f.nnz for f in folds))
    objs = [O.mf_objective(f, 0.5, pad_to=size) for f in folds]
    p = mf.init_factors(jax.random.key(0), ratings.shape, 2)
    opt = mf.optim.gd(linesearch=mf.linesearch.exact_mf())  # reads the objective from the loss
    step = jax.jit(lambda o, q: mf.fit(O.loss, opt, q, 5, loss_args=(o,)).value)
    v0 = step(objs[0], p)
    v1 = step(objs[0].replace(l2=jnp.asarray(3.0, jnp.float32)), p)
    v2 = step(objs[1], p)
    assert step._cache_size() == 1
    assert float(v1) > float(v0) and np.isfinite(float(v2))
    # the traced run equals the closure run
    ref = mf.fit(mf.losses.masked_mse(folds[1], 0.5),
                 mf.optim.gd(linesearch=mf.linesearch.exact_mf(folds[1], 0.5)), p, 5)
    np.testing.assert_allclose(float(v2), float(ref.value), rtol=1e-5)


def test_fit_accepts_an_objective_and_problem_free_rules():
    ratings = mf.data.synthetic(m=50, n=30, rank=2, density=0.4, seed=1)
    obj = O.mf_objective(ratings, 1.0)
    p = mf.init_factors(jax.random.key(1), ratings.shape, 2)
    import optax

    opt = optax.chain(mf.optim.mf_preconditioner(kind="block"), mf.optim.gd_direction(),
                      mf.linesearch.exact_mf())
    res = mf.fit(obj, opt, p, 8)
    ref_opt = optax.chain(mf.optim.mf_preconditioner(ratings, 1.0, kind="block"),
                          mf.optim.gd_direction(), mf.linesearch.exact_mf(ratings, 1.0))
    ref = mf.fit(mf.losses.masked_mse(ratings, 1.0), ref_opt, p, 8)
    np.testing.assert_allclose(float(res.value), float(ref.value), rtol=1e-5)
    assert float(res.value) < float(O.value(obj, p))
    # a problem-free rule with a loss that carries no objective: a clear error
    with pytest.raises(TypeError, match="objective"):
        mf.fit(lambda q: jnp.sum(q.U ** 2) + jnp.sum(q.V ** 2),
               mf.optim.gd(linesearch=mf.linesearch.exact_mf()), p, 2)


def test_bad_input():
    r, _ = problem()
    with pytest.raises(ValueError, match="l2"):
        O.mf_objective(r, -1.0)
    with pytest.raises(ValueError, match="l2_bias"):
        O.mf_objective(r, 1.0, l2_bias=float("nan"))
    with pytest.raises(ValueError, match="scale"):
        O.mf_objective(r, 1.0, scale="avg")
    with pytest.raises(TypeError, match="Factors"):
        O.quartic_coefficients(O.mf_objective(r), params(np.random.default_rng(0), True),
                               params(np.random.default_rng(1), True))


def test_factors_and_ids_are_checked_against_the_ratings():
    """Issue 12 #2: a transposed init and out-of-range ids give a clear error, not a loss."""
    r, rng = problem()
    obj = O.mf_objective(r, 0.1)
    bad = mf.init_factors(jax.random.key(0), (N, M), 2)
    with pytest.raises(ValueError, match="transposed"):
        O.value(obj, bad)
    with pytest.raises(ValueError, match="do not fit"):
        mf.fit(mf.losses.masked_mse(r), mf.optim.gd(), bad, 3)
    with pytest.raises(ValueError, match="do not fit"):
        O.quartic_coefficients(obj, bad, bad)
    with pytest.raises(ValueError, match="14"):  # Ratings itself refuses the id
        Ratings(np.array([0, M + 3]), np.array([0, 1]), np.array([1.0, 2.0]), (M, N))
    # anything ratings-like (rows, cols, values, shape) is checked by the objective too
    from types import SimpleNamespace

    raw = SimpleNamespace(rows=np.array([0, M + 3]), cols=np.array([0, 1]),
                          values=np.array([1.0, 2.0]), shape=(M, N))
    with pytest.raises(ValueError, match=r"row index 14 is outside"):
        O.mf_objective(raw)
    raw.rows, raw.cols = np.array([0, 1]), np.array([0, -1])
    with pytest.raises(ValueError, match=r"column index -1 is outside"):
        O.mf_objective(raw)
