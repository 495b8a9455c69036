"""Conjugate-gradient ALS (issue 11, step 2): exact with enough steps, monotone with few, finite, one compile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import mfjax as mf
from mfjax import objective as O
from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors
from mfjax.objective import build_gram_layout, solve_rows, solve_rows_cg
from mfjax.objective.curvature import cg_ridge_rows, cg_solve_rows
from mfjax.solvers.als import als, als_solver, als_update_rows, check_method

M, N, R = 30, 20, 4


def _problem(seed=0, density=0.5, empty_row=3, empty_col=7):
    """Random ratings with one empty row and one empty column."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, N)).astype(np.float32)
    W = rng.random((M, N)) < density
    W[empty_row, :] = False
    W[:, empty_col] = False
    return X, W, Ratings.from_dense(X, W, dtype=np.float32), rng


def _numpy_rows(V, X, W, lam):
    """``(V_O^T V_O + lam I)^{-1} V_O^T x_O`` per row by numpy.linalg.solve (0 on empty rows)."""
    out = np.zeros((X.shape[0], V.shape[1]))
    for i in range(X.shape[0]):
        om = W[i]
        if om.any():
            Vo = V[om].astype(np.float64)
            out[i] = np.linalg.solve(Vo.T @ Vo + lam[i] * np.eye(V.shape[1]), Vo.T @ X[i, om])
    return out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("path", ["layout", "entries", "update_rows"])
def test_cg_with_rank_steps_equals_the_direct_solve(path, weighted):
    X, W, ratings, rng = _problem()
    V = rng.normal(size=(N, R)).astype(np.float32)
    U0 = rng.normal(size=(M, R)).astype(np.float32)  # a warm start far from the solution
    lam = 0.5 * (W.sum(1) if weighted else np.ones(M))
    ridge = jnp.asarray(lam, jnp.float32)[:, None]
    obj = O.mf_objective(ratings)
    if path == "layout":
        lay = build_gram_layout(obj.rows, obj.cols, M, segment=4, chunk_entries=16)
        got = jax.jit(solve_rows_cg, static_argnums=(6, 7))(lay, jnp.asarray(V), obj.values, obj.weights,
                                                              ridge, jnp.asarray(U0), M, R)
        direct = solve_rows(lay, jnp.asarray(V), obj.values, obj.weights, ridge, M)
        np.testing.assert_allclose(got, direct, rtol=2e-3, atol=2e-4)
    elif path == "entries":
        got = cg_solve_rows(obj, jnp.asarray(V), None, ridge, jnp.asarray(U0), R, chunk_size=16)
    else:
        p = Factors(jnp.asarray(U0), jnp.asarray(V))
        got = als_update_rows(p, ratings, 0.5, weighted_l2=weighted, method="cg", cg_steps=R).U
    got = np.asarray(got)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _numpy_rows(V, X, W, lam), rtol=2e-3, atol=2e-4)
    np.testing.assert_array_equal(got[3], 0.0)  # the empty row


def test_cg_iteration_is_exact_on_spd_systems_and_guards_zero_residuals():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(5, 6, 6))
    A = B @ np.transpose(B, (0, 2, 1)) + 0.5 * np.eye(6)
    c = rng.normal(size=(5, 6))
    c[2] = 0.0  # x0 = 0 solves row 2: zero residual, p.Ap = 0
    A, c = jnp.asarray(A, jnp.float32), jnp.asarray(c, jnp.float32)
    apply = lambda P: jnp.einsum("mij,mj->mi", A, P)  # noqa: E731
    x0 = jnp.zeros_like(c)
    x = cg_ridge_rows(apply, x0, c - apply(x0), 9)  # more steps than the size: stays finite
    np.testing.assert_allclose(x, np.linalg.solve(np.asarray(A, np.float64), np.asarray(c)[..., None])[..., 0],
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(x[2]), 0.0)
    # every step lowers each row's quadratic 1/2 x^T A x - c^T x
    q = lambda x: 0.5 * jnp.einsum("mi,mi->m", x, apply(x)) - jnp.einsum("mi,mi->m", c, x)  # noqa: E731
    vals = np.stack([np.asarray(q(cg_ridge_rows(apply, x0, c, s))) for s in range(5)])
    assert np.all(np.diff(vals, axis=0) <= 1e-5 * np.abs(vals[:-1]) + 1e-6)


def _lowrank(seed=0, m=40, n=30, r=3, density=0.7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) + 3.0 + 0.1 * rng.normal(size=(m, n))
    mask = rng.random((m, n)) < density
    test = rng.random((m, n)) < 0.2
    mask[5, :] = False   # an empty row
    mask[:, 11] = False  # an empty column
    return Ratings.from_dense(X, mask & ~test), Ratings.from_dense(X, mask & test)


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("biases,weighted", [(False, False), (True, False), (True, True)])
def test_few_step_cg_lowers_the_objective_every_sweep(gram, biases, weighted):
    train, test = _lowrank()
    kw = dict(l2=0.3, num_steps=8, biases=biases, weighted_l2=weighted, eval_set=test, gram=gram)
    res = als(train, 5, method="cg", cg_steps=2, **kw)
    loss = np.asarray(res.trace.loss)
    assert np.all(np.isfinite(loss))
    assert np.all(np.diff(loss) <= 1e-5 * loss[1:]), loss
    assert loss[-1] < 0.8 * loss[0]
    # the traced loss (on the Gram path: from the CG residuals) is the objective's value
    obj = mf.solvers.als_objective(train, l2=0.3, weighted_l2=weighted)
    np.testing.assert_allclose(loss[-1], float(O.value(obj, res.params)), rtol=1e-5)
    # more sweeps reach the exact sweeps' objective (the same fixed points)
    kw["num_steps"] = 40
    far, ref = als(train, 5, method="cg", cg_steps=2, **kw), als(train, 5, **kw)
    np.testing.assert_allclose(far.trace.loss[-1], ref.trace.loss[-1], rtol=1e-2)
    np.testing.assert_array_equal(np.asarray(res.params.U[5]), 0.0)
    np.testing.assert_array_equal(np.asarray(res.params.V[11]), 0.0)


@pytest.mark.parametrize("gram", [True, False])
def test_biased_cg_with_enough_steps_equals_cholesky(gram):
    train, test = _lowrank(1)
    kw = dict(l2=0.5, l2_bias=0.1, num_steps=3, biases=True, eval_set=test, gram=gram)
    ref = als(train, 4, **kw)
    cg = als(train, 4, method="cg", cg_steps=12, **kw)
    assert isinstance(cg.params, BiasedFactors)
    assert float(jnp.max(jnp.abs(cg.params.row_bias))) > 0.01  # the biases are fitted
    for a, b in zip(jax.tree.leaves(cg.params), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(cg.trace.loss, ref.trace.loss, rtol=1e-4)
    np.testing.assert_allclose(cg.trace.eval_metric, ref.trace.eval_metric, rtol=1e-4)
    assert float(cg.params.row_bias[5]) == 0.0 and float(cg.params.col_bias[11]) == 0.0


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_zero_ridge_and_empty_rows_stay_finite(gram, weighted):
    train, _ = _lowrank(2, density=0.15)  # rows with fewer ratings than the rank
    res = als(train, 6, l2=0.0, num_steps=4, weighted_l2=weighted, biases=True, method="cg", cg_steps=3,
              gram=gram)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in res.params)
    assert np.all(np.isfinite(np.asarray(res.trace.loss)))
    np.testing.assert_array_equal(np.asarray(res.params.U[5]), 0.0)
    np.testing.assert_array_equal(np.asarray(res.params.V[11]), 0.0)


def test_a_row_already_at_its_solution_stays_finite():
    """Zero residual at the start (already the exact solution): p.Ap = 0 is guarded, x stays put."""
    X, W, ratings, rng = _problem(3)
    V = jnp.asarray(rng.normal(size=(N, R)), jnp.float32)
    obj = O.mf_objective(ratings)
    lay = build_gram_layout(obj.rows, obj.cols, M, segment=4, chunk_entries=16)
    exact = solve_rows(lay, V, obj.values, obj.weights, 0.5, M)
    again = solve_rows_cg(lay, V, obj.values, obj.weights, 0.5, exact, M, 6)
    assert np.all(np.isfinite(np.asarray(again)))
    np.testing.assert_allclose(again, exact, rtol=1e-4, atol=1e-5)
    p = Factors(exact, V)
    for _ in range(2):  # the entries path, twice: the second start has a ~0 residual
        p = als_update_rows(p, ratings, 0.5, method="cg", cg_steps=6)
    assert np.all(np.isfinite(np.asarray(p.U)))
    np.testing.assert_allclose(p.U, exact, rtol=1e-4, atol=1e-5)


def test_invalid_method_and_cg_steps_are_named():
    train, _ = _lowrank()
    with pytest.raises(ValueError, match=r"method must be one of \('cholesky', 'cg'\), got 'qr'"):
        als(train, 2, l2=0.1, method="qr")
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=rf"cg_steps must be an integer >= 1, got {bad!r}"):
            als(train, 2, l2=0.1, method="cg", cg_steps=bad)
    with pytest.raises(ValueError, match="got 'CG'"):
        als_solver(method="CG")
    with pytest.raises(ValueError, match="cg_steps"):
        als_solver(method="cg", cg_steps=0)
    p = Factors(jnp.ones((train.shape[0], 2)), jnp.ones((train.shape[1], 2)))
    with pytest.raises(ValueError, match="method"):
        als_update_rows(p, train, 0.1, method="lu")
    assert check_method("cholesky") is None and check_method("cg", np.int64(4)) == 4


def test_one_compilation_across_sweeps_and_lambdas():
    from mfjax.solvers.base import _run_jit

    train, _ = _lowrank()
    solver = als_solver(method="cg", cg_steps=3)
    assert als_solver(method="cg", cg_steps=3).step is solver.step  # cached: the same function
    prob = mf.solvers.als_problem(mf.solvers.als_objective(train, l2=0.5))
    p0 = mf.init_factors(jax.random.key(0), train.shape, 4)
    step = jax.jit(solver.step)
    state = solver.init(p0, prob)
    losses = []
    for _ in range(4):
        state, info = step(state, prob)
        losses.append(float(info.loss))
    assert step._cache_size() == 1
    assert np.all(np.diff(losses) <= 1e-5 * np.abs(losses[1:]))
    mf.solvers.run(solver, prob, solver.init(p0, prob), 3)
    before = _run_jit._cache_size()
    prob2 = prob.replace(objective=prob.objective.replace(l2=jnp.asarray(2.0, jnp.float32)))
    mf.solvers.run(solver, prob2, solver.init(p0, prob2), 3)
    assert _run_jit._cache_size() == before


@pytest.mark.parametrize("biases", [False, True])
def test_cg_on_a_one_device_mesh_equals_one_device(biases):
    train, test = _lowrank(4)
    mesh = Mesh(np.array(jax.devices()[:1]), ("rows",))
    kw = dict(l2=0.3, num_steps=3, biases=biases, eval_set=test, method="cg", cg_steps=2)
    ref = als(train, 3, **kw)
    got = als(train, 3, mesh=mesh, **kw)
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.trace.loss, ref.trace.loss, rtol=1e-5)
    # the scatter path on a sharded objective: the same iterates
    obj = O.shard_objective(mf.solvers.als_objective(train, l2=0.3), Mesh(np.array(jax.devices()[:1]), ("e",)))
    solver = als_solver(method="cg", cg_steps=2)
    plain = mf.solvers.als_objective(train, l2=0.3)
    step = jax.jit(solver.step)
    st, _ = step(solver.init(ref.params, obj), obj)
    st2, _ = step(solver.init(ref.params, plain), plain)
    for a, b in zip(jax.tree.leaves(st.params), jax.tree.leaves(st2.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
